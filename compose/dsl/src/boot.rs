//! A board's `kernel` and `bootloader` sections handed to their recipes as
//! sources and environment, so the configuration is part of their keys.

use std::collections::BTreeMap;

use kiln_model::{did_you_mean, Board, Diagnostic, Recipe, Source, Span};

/// Hands the board's kernel and bootloader sections to their recipes as
/// sources and environment, so the configuration is part of their keys.
pub(crate) fn apply(
    board: &Board,
    recipes: &mut BTreeMap<String, Recipe>,
    errors: &mut Vec<Diagnostic>,
) {
    let mut missing = |name: &str, span: &Span, what: &str, recipes: &BTreeMap<String, Recipe>| {
        let mut d = Diagnostic::new(
            span.clone(),
            format!("{what} recipe `{name}` does not exist"),
        );
        d = match did_you_mean(name, recipes.keys().map(String::as_str)) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help(format!(
                "add recipes/{name}.rhai or name an existing recipe"
            )),
        };
        errors.push(d);
    };
    if let Some(k) = &board.kernel {
        match recipes.get_mut(&k.recipe) {
            Some(r) => {
                r.sources.extend(k.sources.iter().cloned());
                let frags: Vec<String> = k
                    .sources
                    .iter()
                    .filter_map(|s| match s {
                        Source::Local { dest, .. } => Some(dest.clone()),
                        Source::Remote { .. } => None,
                    })
                    .collect();
                r.env.insert("KILN_KCONFIG_BASE".into(), k.base.clone());
                r.env
                    .insert("KILN_KCONFIG_FRAGMENTS".into(), frags.join(" "));
            }
            None => missing(&k.recipe, &k.span, "kernel", recipes),
        }
    }
    if let Some(b) = &board.bootloader {
        match recipes.get_mut(&b.recipe) {
            Some(r) => {
                r.env
                    .insert("KILN_BOOTLOADER_CONFIG".into(), b.config.clone());
            }
            None => missing(&b.recipe, &b.span, "bootloader", recipes),
        }
    }
}
