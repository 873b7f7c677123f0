//! Evaluation: Rhai scripts in, plain `model` data out.
//!
//! The flow is board → target → every recipe (in parallel, with `target` in
//! scope) → the board's overrides → conversion to `model::Recipe`. Nothing
//! after this module sees a Rhai value.

pub mod convert;
pub mod engine;
pub mod locate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rhai::{Dynamic, EvalAltResult, FnPtr, Map, Position, Scope, AST};

use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::model::{Board, Override, Recipe, Span, Target};
use locate::{Locator, Seg};

/// A Kiln project: the directory holding `kiln.toml`, `recipes/` and `boards/`.
#[derive(Clone, Debug)]
pub struct Project {
    pub root: PathBuf,
}

impl Project {
    /// Finds the project containing `start` by looking upward for `kiln.toml`.
    pub fn discover(start: &Path) -> Option<Project> {
        let start = start.canonicalize().ok()?;
        start
            .ancestors()
            .find(|d| d.join("kiln.toml").is_file())
            .map(|d| Project {
                root: d.to_path_buf(),
            })
    }

    pub fn at(root: impl Into<PathBuf>) -> Project {
        Project { root: root.into() }
    }

    pub fn recipes_dir(&self) -> PathBuf {
        self.root.join("recipes")
    }

    pub fn lib_dir(&self) -> PathBuf {
        self.recipes_dir().join("lib")
    }

    pub fn boards_dir(&self) -> PathBuf {
        self.root.join("boards")
    }

    /// The path as shown to users and stored in spans: relative to the project.
    pub fn rel(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.root)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| path.to_path_buf())
    }

    /// `qemu-aarch64`, `boards/qemu-aarch64.rhai` or a path: the board file.
    pub fn board_path(&self, name: &str) -> PathBuf {
        let p = Path::new(name);
        if name.ends_with(".rhai") || p.components().count() > 1 {
            if p.is_absolute() {
                return p.to_path_buf();
            }
            let cwd_rel = std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf());
            if cwd_rel.exists() {
                return cwd_rel;
            }
            return self.root.join(p);
        }
        self.boards_dir().join(format!("{name}.rhai"))
    }

    /// Every recipe script, sorted so evaluation order (and errors) are stable.
    pub fn recipe_files(&self) -> std::io::Result<Vec<PathBuf>> {
        rhai_files(&self.recipes_dir())
    }

    /// Every board file, sorted.
    pub fn board_files(&self) -> std::io::Result<Vec<PathBuf>> {
        rhai_files(&self.boards_dir())
    }
}

/// The `.rhai` files directly in `dir`, sorted (subdirectories hold files and modules).
fn rhai_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rhai") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// A board and every recipe, as data, with the board's overrides applied.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub board: Board,
    pub recipes: BTreeMap<String, Recipe>,
}

/// One evaluated script: the engine and AST are kept because a board's
/// override functions are called after the recipes are evaluated.
struct Script {
    engine: rhai::Engine,
    ast: AST,
    value: Dynamic,
    loc: Locator,
}

fn eval_script(
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
fn eval_error(file: &Path, err: &EvalAltResult) -> Diagnostic {
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
fn files_dir_of(path: &Path) -> PathBuf {
    path.with_extension("")
}

/// Evaluates a board and all recipes for it.
pub fn evaluate(project: &Project, board_path: &Path) -> Result<Evaluation, Diagnostics> {
    let board_script = eval_script(project, board_path, &files_dir_of(board_path), None)?;
    let board_map = map_of(&board_script.value);
    let target = convert::target(&board_map, &board_script.loc).map_err(Diagnostics)?;
    let board_dir = board_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| project.boards_dir());
    let mut board = convert::board(&board_map, &board_script.loc, target.clone(), &board_dir)
        .map_err(Diagnostics)?;

    let files = project.recipe_files().map_err(|e| {
        Diagnostic::new(
            Span {
                file: project.rel(&project.recipes_dir()),
                line: 0,
                column: 0,
            },
            format!("cannot list recipes: {e}"),
        )
    })?;
    let scripts: Vec<(PathBuf, Result<Script, Diagnostic>)> = files
        .par_iter()
        .map(|path| {
            (
                path.clone(),
                eval_script(project, path, &files_dir_of(path), Some(&target)),
            )
        })
        .collect();

    let mut errors = Vec::new();
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
    let mut overridden: BTreeMap<String, Vec<Seg>> = BTreeMap::new();
    if let Some(overrides) = board_map
        .get("overrides")
        .and_then(|o| o.read_lock::<Map>().map(|m| m.clone()))
    {
        for (name, change) in overrides {
            let name = name.to_string();
            let path = vec![Seg::Key("overrides".into()), Seg::Key(name.clone())];
            let span = board_script.loc.key(&path);
            let Some((_, script)) = by_name.get_mut(&name) else {
                let mut d = Diagnostic::new(span, format!("override for unknown recipe `{name}`"));
                if let Some(s) = did_you_mean(&name, by_name.keys().map(String::as_str)) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                errors.push(d);
                continue;
            };
            if let Some(fp) = change.read_lock::<FnPtr>().map(|f| f.clone()) {
                match fp.call::<Dynamic>(
                    &board_script.engine,
                    &board_script.ast,
                    (script.value.clone(),),
                ) {
                    Ok(v) if v.is_map() => script.value = v,
                    Ok(v) => errors.push(
                        Diagnostic::new(
                            span,
                            format!(
                                "override function for `{name}` returned {}, not a map",
                                convert::type_name(&v)
                            ),
                        )
                        .help("return the (changed) recipe map from the function"),
                    ),
                    Err(e) => errors.push(eval_error(board_script.loc.file(), &e)),
                }
            } else if let Some(m) = change.read_lock::<Map>() {
                let mut base = map_of(&script.value);
                deep_merge(&mut base, &m);
                script.value = Dynamic::from_map(base);
            } else {
                errors.push(
                    Diagnostic::new(
                        span,
                        format!(
                            "override for `{name}` is {}, expected a map or a function",
                            convert::type_name(&change)
                        ),
                    )
                    .help("write `name: #{ field: value }` or `name: |r| { ...; r }`"),
                );
                continue;
            }
            board.overrides.push(Override {
                recipe: name.clone(),
                span: board_script.loc.key(&path),
            });
            overridden.insert(name, path);
        }
    }

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
    apply_boot_sections(&board, &mut recipes, &mut errors);
    if errors.is_empty() {
        Ok(Evaluation { board, recipes })
    } else {
        Err(Diagnostics(errors))
    }
}

/// What a board's bootloader recipe must `provide`, besides the board's
/// partition table (`table:mbr`, `table:gpt`).
pub const AB_BOOT: &str = "ab-boot";

/// Hands the board's kernel and bootloader sections to their recipes as
/// sources and environment, so the configuration is part of their keys.
fn apply_boot_sections(
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
                        crate::model::Source::Local { dest, .. } => Some(dest.clone()),
                        crate::model::Source::Remote { .. } => None,
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
                // What the image needs of its bootloader, asked at evaluation
                // rather than found out as a hang in QEMU.
                let table = format!("table:{}", board.partitions.table);
                let needs = [
                    (
                        AB_BOOT,
                        "the balenaOS A/B root selection with boot counting".to_string(),
                    ),
                    (
                        table.as_str(),
                        format!("a {} partition table", board.partitions.table),
                    ),
                ];
                for (need, what) in needs {
                    if !r.provides.iter().any(|p| p == need) {
                        errors.push(
                            Diagnostic::new(
                                b.span.clone(),
                                format!(
                                    "bootloader recipe `{}` does not provide `{need}`: it can't do {what}",
                                    r.name
                                ),
                            )
                            .note(
                                r.span.clone(),
                                format!("`{}` provides: [{}]", r.name, r.provides.join(", ")),
                            )
                            .help(format!(
                                "use a bootloader recipe that provides `{need}`, or change the board's partitions"
                            )),
                        );
                    }
                }
            }
            None => missing(&b.recipe, &b.span, "bootloader", recipes),
        }
    }
}

fn map_of(v: &Dynamic) -> Map {
    v.read_lock::<Map>().map(|m| m.clone()).unwrap_or_default()
}

/// Maps merge key by key; anything else in `change` replaces what was there.
fn deep_merge(base: &mut Map, change: &Map) {
    for (k, v) in change {
        let merged = match (base.get_mut(k), v.read_lock::<Map>()) {
            (Some(existing), Some(vm)) if existing.is_map() => {
                let mut em = map_of(existing);
                deep_merge(&mut em, &vm);
                Some(Dynamic::from_map(em))
            }
            _ => None,
        };
        base.insert(k.clone(), merged.unwrap_or_else(|| v.clone()));
    }
}
