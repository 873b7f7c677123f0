//! Evaluation: Rhai scripts in, plain [`kiln_model`] data out. The only
//! crate that depends on Rhai.
//!
//! The flow is board → target → every recipe (in parallel, with `target` in
//! scope) → the board's overrides → conversion to [`kiln_model::Recipe`] →
//! the board's kernel and bootloader sections handed to their recipes.
//! Nothing after this crate sees a Rhai value.

mod boot;
pub mod content;
pub mod convert;
pub mod engine;
pub mod locate;
mod overrides;
mod script;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_model::{Diagnostic, Diagnostics, Evaluation, Project, Recipe, Span};
use rayon::prelude::*;

use locate::Seg;
use script::{eval_script, files_dir_of, map_of, Script};

/// Evaluates a board and all recipes for it; every error, or none.
pub fn evaluate(project: &Project, board_path: &Path) -> Result<Evaluation, Diagnostics> {
    let p = evaluate_partial(project, board_path);
    match p.board {
        Some(board) if p.errors.is_empty() => Ok(Evaluation {
            board,
            recipes: p.recipes,
        }),
        _ => Err(Diagnostics(p.errors)),
    }
}

/// What evaluating a board gave, errors or not: the board if it converted,
/// the recipes that did, and every error. For the commands that must go on
/// past one bad script (`kiln sources`, which seeding relies on).
pub struct Partial {
    pub board: Option<kiln_model::Board>,
    pub recipes: BTreeMap<String, Recipe>,
    pub errors: Vec<Diagnostic>,
}

/// Like [`evaluate`], keeping whatever evaluated.
pub fn evaluate_partial(project: &Project, board_path: &Path) -> Partial {
    let failed = |errors| Partial {
        board: None,
        recipes: BTreeMap::new(),
        errors,
    };
    let board_script = match eval_script(project, board_path, &files_dir_of(board_path), None) {
        Ok(s) => s,
        Err(d) => return failed(vec![d]),
    };
    let board_map = map_of(&board_script.value);
    // Without a target no recipe can be evaluated.
    let target = match convert::target(&board_map, &board_script.loc) {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    let mut errors = Vec::new();
    let board_dir = board_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| project.boards_dir());
    let mut board = match convert::board(&board_map, &board_script.loc, target.clone(), &board_dir)
    {
        Ok(b) => Some(b),
        Err(mut e) => {
            errors.append(&mut e);
            None
        }
    };

    let files = match project.recipe_files() {
        Ok(f) => f,
        Err(e) => {
            errors.push(Diagnostic::new(
                Span {
                    file: project.rel(&project.recipes_dir()),
                    line: 0,
                    column: 0,
                },
                format!("cannot list recipes: {e}"),
            ));
            return failed(errors);
        }
    };
    let scripts: Vec<(PathBuf, Result<Script, Diagnostic>)> = files
        .par_iter()
        .map(|path| {
            (
                path.clone(),
                eval_script(project, path, &files_dir_of(path), Some(&target)),
            )
        })
        .collect();

    let mut by_name: BTreeMap<String, (PathBuf, Script)> = BTreeMap::new();
    for (path, result) in scripts {
        let script = match result {
            Ok(s) => s,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        let map = map_of(&script.value);
        let Some(name) = map
            .get("name")
            .and_then(|n| n.clone().into_immutable_string().ok())
        else {
            // Conversion reports the missing or mistyped name with its position.
            if let Err(mut e) = convert::recipe(&map, &script.loc, &files_dir_of(&path)) {
                errors.append(&mut e);
            }
            continue;
        };
        let name = name.to_string();
        if let Some((other, other_script)) = by_name.get(&name) {
            let here = script.loc.key(&[Seg::Key("name".into())]);
            let there = other_script.loc.key(&[Seg::Key("name".into())]);
            errors.push(
                Diagnostic::new(here, format!("duplicate recipe name `{name}`"))
                    .note(
                        there,
                        format!(
                            "`{name}` is already defined in {}",
                            project.rel(other).display()
                        ),
                    )
                    .help("rename one of the recipes or remove the copy"),
            );
            continue;
        }
        by_name.insert(name, (path, script));
    }

    // Overrides: maps deep-merge into the recipe, functions replace it.
    let applied = overrides::apply(&board_script, &board_map, &mut by_name, &mut errors);
    if let Some(b) = &mut board {
        b.overrides = applied.overrides;
    }
    let overridden = applied.paths;

    let converted: Vec<Result<Recipe, Vec<Diagnostic>>> = by_name
        .par_iter()
        .map(|(name, (path, script))| {
            let map = map_of(&script.value);
            // A field that came from an override is reported in the board.
            match overridden.get(name) {
                Some(prefix) => {
                    let loc = script.loc.with_overlay(&board_script.loc, prefix.clone());
                    convert::recipe(&map, &loc, &files_dir_of(path))
                }
                None => convert::recipe(&map, &script.loc, &files_dir_of(path)),
            }
        })
        .collect();
    let mut recipes = BTreeMap::new();
    for r in converted {
        match r {
            Ok(r) => {
                recipes.insert(r.name.clone(), r);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if let Some(b) = &board {
        boot::apply(b, &mut recipes, &mut errors);
    }
    Partial {
        board,
        recipes,
        errors,
    }
}
