//! A node's scratch space in the store's `work/`, and its log.

use std::path::{Path, PathBuf};

use kiln_store::{Digest, Store};

/// How many lines of a failed build's log to print.
pub const LOG_TAIL_LINES: usize = 25;

/// A node's scratch directory, removed when dropped whatever happened.
/// Unique per process, so two kiln processes building the same key don't
/// share it; a `kill -9` leaves one that the next `kiln gc` sweeps.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// A fresh, empty scratch directory for `name` with `key`, holding an
    /// empty `out/` and an empty `build.log`.
    pub fn new(store: &Store, name: &str, key: &Digest) -> Result<WorkDir, kiln_atomic::Error> {
        use kiln_atomic::Context;
        let dir = format!("{name}-{}-{}", &key.to_hex()[..12], std::process::id());
        let work = WorkDir {
            path: store.work_dir().join(dir),
        };
        kiln_atomic::remove_tree(&work.path)?;
        std::fs::create_dir_all(work.out()).at("creating", &work.out())?;
        std::fs::File::create(work.log()).at("creating", &work.log())?;
        Ok(work)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The output tree the engine stores.
    pub fn out(&self) -> PathBuf {
        self.path.join("out")
    }

    /// The live log; the engine keeps it for `kiln log` when the node ends.
    pub fn log(&self) -> PathBuf {
        self.path.join("build.log")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Best effort: a leftover is swept by `kiln gc`.
        let _ = kiln_atomic::remove_tree(&self.path);
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
