//! GC roots: named lists of what must survive garbage collection.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::store::Store;

/// What one root keeps alive. A root protects its action-cache entries (and
/// the outputs and logs they point to) and the listed manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// When the root was made, seconds since the epoch (informational; GC
    /// ages roots by their file's modification time, so rewriting a root
    /// refreshes it).
    pub created_unix: u64,
    /// Action-cache keys.
    pub keys: Vec<Digest>,
    /// Manifest digests.
    pub outputs: Vec<Digest>,
}

impl Store {
    /// Writes root `name` atomically, replacing any previous one.
    pub fn write_root(&self, name: &str, root: &Root) -> Result<(), StoreError> {
        check_root_name(name)?;
        let json = serde_json::to_vec_pretty(root).map_err(|source| StoreError::Serialize {
            what: "GC root",
            source,
        })?;
        self.write_file_atomic(&self.roots_dir().join(format!("{name}.json")), &json)
    }

    /// All roots, sorted by name. A root file that cannot be parsed is an
    /// error ([`StoreError::BadRoot`]) rather than skipped, since skipping it
    /// would let GC delete what it protects.
    pub fn read_roots(&self) -> Result<Vec<(String, Root)>, StoreError> {
        let mut roots = Vec::new();
        for (name, path) in self.root_files()? {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Removed by a concurrent GC or write_root's replacement.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("reading GC root", &path),
            };
            let root = serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::BadRoot { path, source })?;
            roots.push((name, root));
        }
        Ok(roots)
    }

    /// Removes root `name`; a missing root is not an error.
    pub fn remove_root(&self, name: &str) -> Result<(), StoreError> {
        check_root_name(name)?;
        let path = self.roots_dir().join(format!("{name}.json"));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx("removing GC root", &path),
        }
    }

    /// `(name, path)` of every `*.json` in `roots/`, sorted by name.
    pub(crate) fn root_files(&self) -> Result<Vec<(String, std::path::PathBuf)>, StoreError> {
        let dir = self.roots_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx("reading directory", &dir)? {
            let entry = entry.ctx("reading directory", &dir)?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if check_root_name(name).is_ok() {
                out.push((name.to_string(), entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Root names become file names: no separators, no hidden files, bounded length.
fn check_root_name(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 200 {
        Some("longer than 200 bytes")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.contains(['/', '\0']) {
        Some("contains '/' or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidRootName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}
