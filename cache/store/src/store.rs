//! The [`Store`] handle: the on-disk layout, opening, locking and atomic writes.
//!
//! Every directory under the root is named and created here, and nowhere
//! else: the engine asks the store where a log or a work directory goes.
//!
//! ```text
//! <root>/cas/<2 hex>/<64 hex>     zstd blobs named by the blake3 of their uncompressed bytes
//! <root>/ac/<2 hex>/<64 hex>      action-cache entries (JSON ActionResult)
//! <root>/outputs/<64 hex>/        materialized output trees
//! <root>/roots/<name>.json        GC roots
//! <root>/inputs/<board>/<node>.json  the last key inputs of a node, for `kiln why`
//! <root>/logs/<board>/<node>.log  the last log of a node, for `kiln log`
//! <root>/logs/remote.jsonl        what each command did with the shared cache
//! <root>/toolchains/<key>.json    memoised toolchain fingerprints
//! <root>/work/                    build scratch directories
//! <root>/tmp/                     temp files and dirs, renamed into place when complete
//! <root>/lock                     flock: shared for builds, exclusive for GC
//! ```
//!
//! Everything is written to `tmp/` first and renamed into place, so a reader
//! (or a process starting after a `kill -9`) only ever sees complete files.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use kiln_atomic::{Durability, TempFile};

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::lock::{LockKind, StoreLock};

/// The store's directories, in the order `open` creates them.
const DIRS: [&str; 9] = [CAS, AC, OUTPUTS, ROOTS, LOGS, TMP, INPUTS, WORK, TOOLCHAINS];
const CAS: &str = "cas";
const AC: &str = "ac";
const OUTPUTS: &str = "outputs";
const ROOTS: &str = "roots";
const LOGS: &str = "logs";
const TMP: &str = "tmp";
const INPUTS: &str = "inputs";
const WORK: &str = "work";
const TOOLCHAINS: &str = "toolchains";
/// Under `logs/`: one JSON line per command that used the shared cache.
const REMOTE_STATS: &str = "remote.jsonl";

/// Temp files untouched for this long belong to a dead process.
pub(crate) const STALE_TMP_AGE: Duration = Duration::from_secs(60 * 60);

/// A handle on a store directory. Cheap to share between threads (`&Store`
/// is all the API needs); several processes may use one store at once.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating the directory structure if
    /// missing, and removes temp files older than an hour left behind by
    /// killed processes.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).ctx("creating store directory", &root)?;
        let store = Store { root };
        for dir in DIRS {
            kiln_atomic::ensure_dir(&store.root.join(dir))?;
        }
        let lock = store.lock_path();
        if !lock.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock)
                .ctx("creating lock file", &lock)?;
        }
        kiln_atomic::sweep_stale(&store.tmp_dir(), STALE_TMP_AGE);
        Ok(store)
    }

    /// `$KILN_STORE`, else `$XDG_CACHE_HOME/kiln`, else `$HOME/.cache/kiln`.
    ///
    /// Empty variables count as unset, and a relative `$XDG_CACHE_HOME` is
    /// ignored as the XDG spec requires.
    pub fn default_root() -> Result<PathBuf, StoreError> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(p) = var("KILN_STORE") {
            return Ok(p);
        }
        if let Some(p) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
            return Ok(p.join("kiln"));
        }
        if let Some(p) = var("HOME") {
            return Ok(p.join(".cache").join("kiln"));
        }
        Err(StoreError::NoDefaultRoot)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where node logs are kept, one directory per board.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join(LOGS)
    }

    /// The last log of `node` built for `board`.
    pub fn log_path(&self, board: &str, node: &str) -> PathBuf {
        self.logs_dir().join(board).join(format!("{node}.log"))
    }

    /// Boards that have logs, sorted.
    pub fn boards_with_logs(&self) -> Vec<String> {
        let mut boards: Vec<String> = std::fs::read_dir(self.logs_dir())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        boards.sort();
        boards
    }

    /// The key inputs of the last build (or cache hit) of `node` for `board`.
    pub fn inputs_path(&self, board: &str, node: &str) -> PathBuf {
        self.root
            .join(INPUTS)
            .join(board)
            .join(format!("{node}.json"))
    }

    /// A memoised toolchain fingerprint, named by the hash of what it was
    /// computed from.
    pub fn toolchain_memo_path(&self, memo_key: &str) -> PathBuf {
        self.root.join(TOOLCHAINS).join(format!("{memo_key}.json"))
    }

    /// The shared cache's statistics, appended to by every command that used it.
    pub fn remote_stats_path(&self) -> PathBuf {
        self.logs_dir().join(REMOTE_STATS)
    }

    /// Where builds get their scratch directories.
    pub fn work_dir(&self) -> PathBuf {
        self.root.join(WORK)
    }

    /// A fresh temp file in the store's `tmp/` (same filesystem as the
    /// blobs, and swept if its writer is killed), for data that is then
    /// put into the store.
    pub fn scratch_file(&self, prefix: &str) -> Result<TempFile, StoreError> {
        self.temp_file(prefix)
    }

    /// Shared lock held by builds for their duration so GC can't delete what
    /// a build is using. Blocks while GC runs.
    pub fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        StoreLock::acquire(&self.lock_path(), LockKind::Shared)
    }

    /// Exclusive lock, as GC takes it. Blocks while any build holds the shared one.
    pub fn lock_exclusive(&self) -> Result<StoreLock, StoreError> {
        StoreLock::acquire(&self.lock_path(), LockKind::Exclusive)
    }

    /// Like [`Store::lock_exclusive`] but returns `None` instead of waiting,
    /// e.g. for an opportunistic GC that should not stall behind builds.
    pub fn try_lock_exclusive(&self) -> Result<Option<StoreLock>, StoreError> {
        StoreLock::try_acquire(&self.lock_path(), LockKind::Exclusive)
    }

    /// Atomically writes `bytes` to `path`, which is either relative to the
    /// root or an absolute path inside it: temp file in `<root>/tmp`, fsync,
    /// rename, fsync of the parent directory. Missing parent directories are
    /// created.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let dest = self.resolve_inside(path)?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).ctx("creating directory", parent)?;
        }
        self.write_file_atomic(&dest, bytes)
    }

    /// Atomic write to a path already known to be inside the store.
    pub(crate) fn write_file_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        let tmp = self.temp_file("w-")?;
        tmp.file().write_all(bytes).ctx("writing", tmp.path())?;
        Ok(tmp.persist(dest, Durability::Durable)?)
    }

    fn resolve_inside(&self, path: &Path) -> Result<PathBuf, StoreError> {
        let rel = if path.is_absolute() {
            path.strip_prefix(&self.root)
                .map_err(|_| StoreError::PathOutsideStore {
                    path: path.to_path_buf(),
                })?
        } else {
            path
        };
        let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain || rel.as_os_str().is_empty() {
            return Err(StoreError::PathOutsideStore {
                path: path.to_path_buf(),
            });
        }
        Ok(self.root.join(rel))
    }

    pub(crate) fn temp_file(&self, prefix: &str) -> Result<TempFile, StoreError> {
        Ok(TempFile::new_in(&self.tmp_dir(), prefix)?)
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP)
    }

    pub(crate) fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub(crate) fn cas_dir(&self) -> PathBuf {
        self.root.join(CAS)
    }

    pub(crate) fn ac_dir(&self) -> PathBuf {
        self.root.join(AC)
    }

    pub(crate) fn outputs_dir(&self) -> PathBuf {
        self.root.join(OUTPUTS)
    }

    pub(crate) fn roots_dir(&self) -> PathBuf {
        self.root.join(ROOTS)
    }

    /// `<dir>/<first 2 hex>/<64 hex>`: sharding keeps directories small.
    pub(crate) fn sharded(dir: PathBuf, d: &Digest) -> PathBuf {
        let hex = d.to_hex();
        let mut p = dir;
        p.push(&hex[..2]);
        p.push(hex);
        p
    }

    pub(crate) fn ac_path(&self, key: &Digest) -> PathBuf {
        Self::sharded(self.ac_dir(), key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_refuses_paths_outside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        for bad in ["../x", "a/../../x", "", "/etc/passwd"] {
            let err = store.write_atomic(Path::new(bad), b"x").unwrap_err();
            assert!(
                matches!(err, StoreError::PathOutsideStore { .. }),
                "{bad}: {err}"
            );
        }
        store
            .write_atomic(Path::new("logs/a/b.log"), b"hello")
            .unwrap();
        assert_eq!(
            std::fs::read(store.logs_dir().join("a/b.log")).unwrap(),
            b"hello"
        );
        let abs = store.root().join("logs/c.log");
        store.write_atomic(&abs, b"abs").unwrap();
        assert_eq!(std::fs::read(abs).unwrap(), b"abs");
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn open_creates_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("deep/store")).unwrap();
        for d in DIRS {
            assert!(store.root().join(d).is_dir(), "{d}");
        }
        assert!(store.root().join("lock").is_file());
        // Re-opening an existing store is fine.
        Store::open(store.root()).unwrap();
    }
}
