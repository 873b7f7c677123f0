//! The engine's graph errors as diagnostics: the engine names nodes, the
//! recipes know where each dependency was written.

use kiln_engine::GraphError;
use kiln_model::{did_you_mean, Diagnostic, Evaluation, Span};

pub(crate) fn graph_errors(
    eval: &Evaluation,
    roots: &[(String, Span)],
    errors: Vec<GraphError>,
) -> Vec<Diagnostic> {
    let known = || eval.recipes.keys().map(String::as_str);
    errors
        .into_iter()
        .map(|e| match e {
            GraphError::MissingRoot { name } => {
                let span = roots
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| eval.board.span.clone());
                missing(&name, span, "is asked for", known())
            }
            GraphError::MissingDep { node, dep } => {
                let span = eval
                    .recipes
                    .get(&node)
                    .map(|r| {
                        r.dep_spans
                            .get(&dep)
                            .cloned()
                            .unwrap_or_else(|| r.span.clone())
                    })
                    .unwrap_or_else(|| eval.board.span.clone());
                missing(&dep, span, &format!("is a dependency of `{node}`"), known())
            }
            GraphError::Cycle { path } => cycle(eval, &path),
        })
        .collect()
}

fn missing<'a>(
    name: &str,
    span: Span,
    role: &str,
    known: impl Iterator<Item = &'a str>,
) -> Diagnostic {
    let known: Vec<&str> = known.collect();
    let d = Diagnostic::new(span, format!("no recipe named `{name}`, which {role}"));
    match did_you_mean(name, known.iter().copied()) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None => d.help(format!(
            "add recipes/{name}.rhai, or fix the name ({} recipes exist)",
            known.len()
        )),
    }
}

/// Where `from` names `to` among its dependencies.
fn edge_span(eval: &Evaluation, from: &str, to: &str) -> Span {
    match eval.recipes.get(from) {
        Some(r) => r
            .dep_spans
            .get(to)
            .cloned()
            .unwrap_or_else(|| r.span.clone()),
        None => eval.board.span.clone(),
    }
}

/// One diagnostic per cycle, naming every recipe on it and where each edge
/// was written.
fn cycle(eval: &Evaluation, path: &[String]) -> Diagnostic {
    let first = path.first().map(String::as_str).unwrap_or("");
    let second = path.get(1).map(String::as_str).unwrap_or(first);
    let mut d = Diagnostic::new(
        edge_span(eval, first, second),
        format!("dependency cycle: {}", path.join(" -> ")),
    );
    for pair in path.windows(2).skip(1) {
        d = d.note(
            edge_span(eval, &pair[0], &pair[1]),
            format!("`{}` build-depends on `{}` here", pair[0], pair[1]),
        );
    }
    d.help("a recipe can't need its own output to build; remove one of these build_deps")
}
