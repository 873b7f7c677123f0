//! The project on disk, and what evaluating one board of it gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Board, Recipe};

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
