//! The store's error type.
//!
//! Every variant carries what a user needs to act on it: the path that could
//! not be read, the digest that failed verification, the manifest entry that
//! is malformed. I/O errors keep their `source` and also print it, so a plain
//! `{}` of the error is already a complete message.

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::manifest::ManifestError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing, e.g. "reading" or "renaming into place".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A blob's content does not hash to its name (bit rot, truncation by a
    /// crash on a filesystem without ordered writes, tampering). The blob has
    /// been deleted so that the next build re-creates it.
    #[error("blob {digest} is corrupt ({reason}); removed {}", path.display())]
    Corrupt {
        digest: Digest,
        path: PathBuf,
        reason: String,
    },

    /// A blob the caller (or a manifest/action result) refers to is absent.
    #[error("blob {digest} is not in the store")]
    MissingBlob { digest: Digest },

    /// A stored blob is intact but is not a valid manifest.
    #[error("blob {digest} is not a valid manifest: {reason}")]
    NotAManifest { digest: Digest, reason: String },

    /// A manifest violates the structural rules (sorting, paths, links).
    #[error("invalid manifest: {0}")]
    InvalidManifest(#[from] ManifestError),

    /// A build output contains something the store cannot represent.
    #[error("{}: {kind} in a build output is not supported (device nodes are declared as image metadata, not built)", path.display())]
    UnsupportedFileType { path: PathBuf, kind: &'static str },

    /// Manifest paths are UTF-8 strings; build outputs must use UTF-8 names.
    #[error("{}: file name or symlink target is not valid UTF-8", path.display())]
    NonUtf8Path { path: PathBuf },

    /// `ingest_tree` was given something other than a directory.
    #[error("{}: not a directory", path.display())]
    NotADirectory { path: PathBuf },

    /// A file changed while it was being stored (its hash differs between the
    /// two passes of a streaming put).
    #[error("{}: file changed while being stored", path.display())]
    FileChanged { path: PathBuf },

    /// A metadata override names a path that is not in the output tree.
    #[error("metadata override for {path:?}: no such path in the build output")]
    UnknownOverride { path: String },

    /// A metadata override is malformed or contradicts another.
    #[error("metadata override for {path:?}: {reason}")]
    InvalidOverride { path: String, reason: String },

    /// No `$KILN_STORE`, `$XDG_CACHE_HOME` or `$HOME` to place the store in.
    #[error("cannot find a store directory: set $KILN_STORE, $XDG_CACHE_HOME or $HOME")]
    NoDefaultRoot,

    /// GC root names become file names; they must be safe ones.
    #[error("invalid GC root name {name:?}: {reason}")]
    InvalidRootName { name: String, reason: &'static str },

    /// A GC root file exists but cannot be parsed. GC refuses to guess what it
    /// protected and stops instead of deleting data.
    #[error("GC root {} is unreadable: {source}", path.display())]
    BadRoot {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// `write_atomic` was asked to write outside the store.
    #[error("{}: not a path inside the store", path.display())]
    PathOutsideStore { path: PathBuf },

    /// Serializing one of our own documents failed (should not happen for
    /// well-formed values; reported rather than panicking).
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl From<kiln_atomic::Error> for StoreError {
    fn from(e: kiln_atomic::Error) -> StoreError {
        StoreError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

/// Attaches an action and a path to `io::Error`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}
