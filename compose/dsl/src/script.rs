//! One script evaluated: read, compiled, run with `target` in scope, and
//! its runtime errors turned into diagnostics at their innermost position.

use std::path::{Path, PathBuf};

use kiln_model::{Diagnostic, Project, Span, Target};
use rhai::{Dynamic, EvalAltResult, Map, Position, Scope, AST};

use crate::convert;
use crate::engine;
use crate::locate::Locator;

/// One evaluated script: the engine and AST are kept because a board's
/// override functions are called after the recipes are evaluated.
pub(crate) struct Script {
    pub(crate) engine: rhai::Engine,
    pub(crate) ast: AST,
    pub(crate) value: Dynamic,
    pub(crate) loc: Locator,
}

pub(crate) fn eval_script(
    project: &Project,
    path: &Path,
    files_dir: &Path,
    target: Option<&Target>,
) -> Result<Script, Diagnostic> {
    let rel = project.rel(path);
    let file_span = Span {
        file: rel.clone(),
        line: 1,
        column: 1,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::new(
            file_span.clone(),
            format!("cannot read {}: {e}", path.display()),
        )
        .help("check the path and the file's permissions")
    })?;
    let engine = engine::new_engine(files_dir, &project.lib_dir());
    let mut ast = engine.compile(&text).map_err(|e| {
        let pos = e.position();
        Diagnostic::new(
            span_at(&rel, pos),
            format!("syntax error: {}", e.err_type()),
        )
        .help("see recipes/README.md for the recipe and board syntax")
    })?;
    ast.set_source(rel.to_string_lossy().to_string());
    let loc = Locator::new(rel.clone(), &ast);
    let mut scope = Scope::new();
    if let Some(t) = target {
        scope.push_constant("target", target_map(t));
    }
    let value = engine
        .eval_ast_with_scope::<Dynamic>(&mut scope, &ast)
        .map_err(|e| eval_error(&rel, &e))?;
    if !value.is_map() {
        return Err(Diagnostic::new(
            loc.top(),
            format!(
                "the script's value is {}, not a map",
                convert::type_name(&value)
            ),
        )
        .help("end the script with the `#{ ... }` map (no `;` after it)"));
    }
    Ok(Script {
        engine,
        ast,
        value,
        loc,
    })
}

fn span_at(file: &Path, pos: Position) -> Span {
    Span {
        file: file.to_path_buf(),
        line: pos.line().unwrap_or(1),
        column: pos.position().unwrap_or(1),
    }
}

/// Turns a Rhai runtime error into a diagnostic at its innermost position.
pub(crate) fn eval_error(file: &Path, err: &EvalAltResult) -> Diagnostic {
    let mut err = err;
    let mut file = file.to_path_buf();
    let mut context = Vec::new();
    loop {
        match err {
            EvalAltResult::ErrorInFunctionCall(name, src, inner, _) => {
                context.push(format!("in function `{name}`"));
                if !src.is_empty() {
                    file = PathBuf::from(src);
                }
                err = inner;
            }
            EvalAltResult::ErrorInModule(name, inner, _) => {
                context.push(format!("in module `{name}`"));
                err = inner;
            }
            _ => break,
        }
    }
    let pos = err.position();
    let (msg, help) = match err {
        EvalAltResult::ErrorTooManyOperations(_) => (
            format!(
                "evaluation stopped after {} operations: is there an endless loop?",
                engine::MAX_OPERATIONS
            ),
            "recipes must evaluate quickly; check loops and recursion near this line",
        ),
        EvalAltResult::ErrorStackOverflow(_) => (
            "evaluation stopped: calls nested too deep".to_string(),
            "check for unbounded recursion",
        ),
        EvalAltResult::ErrorVariableNotFound(name, _) => (
            format!("unknown variable `{name}`"),
            "recipes can use `target` and their own variables; boards can use imported modules",
        ),
        EvalAltResult::ErrorFunctionNotFound(sig, _) => (
            format!("unknown function `{sig}`"),
            "see recipes/README.md for the functions scripts can call",
        ),
        EvalAltResult::ErrorModuleNotFound(name, _) => (
            format!("no module `{name}` in recipes/lib/"),
            "create recipes/lib/<name>.rhai or fix the import name",
        ),
        other => (other.to_string(), "fix the expression at this position"),
    };
    let msg = if context.is_empty() {
        msg
    } else {
        format!("{msg} ({})", context.join(", "))
    };
    Diagnostic::new(span_at(&file, pos), msg).help(help)
}

fn target_map(t: &Target) -> Dynamic {
    let mut m = Map::new();
    m.insert("arch".into(), t.arch.clone().into());
    m.insert("triple".into(), t.triple.clone().into());
    m.insert("rust_triple".into(), t.rust_triple.clone().into());
    let flags: rhai::Array = t
        .cpu_flags
        .iter()
        .map(|f| Dynamic::from(f.clone()))
        .collect();
    m.insert("cpu_flags".into(), flags.into());
    Dynamic::from_map(m)
}

/// The files directory of `recipes/<stem>.rhai` is `recipes/<stem>/`.
pub(crate) fn files_dir_of(path: &Path) -> PathBuf {
    path.with_extension("")
}

pub(crate) fn map_of(v: &Dynamic) -> Map {
    v.read_lock::<Map>().map(|m| m.clone()).unwrap_or_default()
}
