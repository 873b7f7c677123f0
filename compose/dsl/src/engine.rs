//! The sandboxed Rhai engine that recipe and board scripts run in.
//!
//! A raw engine (no default module resolver, no printing) with the standard
//! value packages, hard limits so a runaway script stops with a position, and
//! exactly three doors to the outside: `read_file`, `file_blake3` and
//! `import` from `recipes/lib/`. Everything else a script could want to read
//! must be passed in as data, which is what keeps evaluation pure and keys
//! stable.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rhai::module_resolvers::FileModuleResolver;
use rhai::packages::{Package, StandardPackage};
use rhai::{Engine, EvalAltResult, ModuleResolver, OptimizationLevel, Position, Shared};

/// Operation budget for one script: generous for real recipes, small enough
/// that `loop {}` stops in well under a second.
pub const MAX_OPERATIONS: u64 = 5_000_000;

fn standard_package() -> Shared<rhai::Module> {
    static PKG: OnceLock<Shared<rhai::Module>> = OnceLock::new();
    PKG.get_or_init(|| StandardPackage::new().as_shared_module())
        .clone()
}

/// Builds the engine for one script whose private files live in `files_dir`.
pub fn new_engine(files_dir: &Path, lib_dir: &Path) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(standard_package());
    // Positions of map keys are only kept when map literals are not folded
    // into constants, so we keep the AST exactly as written.
    engine.set_optimization_level(OptimizationLevel::None);
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(4 << 20);
    engine.set_max_array_size(100_000);
    engine.set_max_map_size(100_000);
    engine.set_max_modules(64);
    engine.set_module_resolver(LibResolver::new(lib_dir));

    let dir = files_dir.to_path_buf();
    engine.register_fn(
        "read_file",
        move |path: &str| -> Result<String, Box<EvalAltResult>> {
            let full = recipe_file(&dir, path)?;
            std::fs::read_to_string(&full)
                .map_err(|e| runtime(format!("cannot read {}: {e}", full.display())))
        },
    );
    let dir = files_dir.to_path_buf();
    engine.register_fn(
        "file_blake3",
        move |path: &str| -> Result<String, Box<EvalAltResult>> {
            let full = recipe_file(&dir, path)?;
            crate::content::path_blake3(&full)
                .map(|d| d.to_hex().to_string())
                .map_err(|e| runtime(format!("cannot hash {}: {e}", full.display())))
        },
    );
    engine
}

fn runtime(msg: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(msg.into(), Position::NONE))
}

/// Resolves `path` inside `dir`, refusing anything that could escape it.
pub fn recipe_file(dir: &Path, path: &str) -> Result<PathBuf, Box<EvalAltResult>> {
    let rel = Path::new(path);
    if path.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(runtime(format!(
            "`{path}` is not a plain relative path: recipes may only read their own files in {}",
            dir.display()
        )));
    }
    let full = dir.join(rel);
    // A symlink inside the recipe's directory must not lead out of it.
    if let (Ok(real), Ok(base)) = (full.canonicalize(), dir.canonicalize()) {
        if !real.starts_with(&base) {
            return Err(runtime(format!(
                "`{path}` points outside {}",
                dir.display()
            )));
        }
    }
    Ok(full)
}

/// `import "name"` may only load `recipes/lib/<name>.rhai`.
struct LibResolver {
    inner: Arc<FileModuleResolver>,
    dir: PathBuf,
}

impl LibResolver {
    fn new(dir: &Path) -> LibResolver {
        LibResolver {
            inner: Arc::new(FileModuleResolver::new_with_path_and_extension(dir, "rhai")),
            dir: dir.into(),
        }
    }
}

impl ModuleResolver for LibResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<rhai::Module>, Box<EvalAltResult>> {
        let plain = !path.is_empty()
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !plain {
            return Err(Box::new(EvalAltResult::ErrorRuntime(
                format!(
                    "cannot import `{path}`: imports name a module in {} (like `import \"toolchains\" as tc;`), not a path",
                    self.dir.display()
                )
                .into(),
                pos,
            )));
        }
        // Resolve relative to the library, never to the importing file.
        let _ = source;
        self.inner.resolve(engine, None, path, pos)
    }
}
