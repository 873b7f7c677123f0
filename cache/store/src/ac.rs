//! The action cache: `ac/<2 hex>/<key>` maps an action key (computed by the
//! engine from everything that influences a build) to its result.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::store::Store;

/// What an action produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// Digest of the output manifest.
    pub output: Digest,
    /// Digest of the build log blob, if one was kept.
    pub log: Option<Digest>,
}

impl Store {
    /// Looks up `key`. A hit costs one small file read, a JSON parse and a
    /// stat per referenced blob.
    ///
    /// Anything that is not a usable entry (unreadable, unparseable, or
    /// referring to a manifest or log blob that is gone) is a miss, and the
    /// entry is removed so it is rebuilt rather than tripped over again.
    pub fn ac_get(&self, key: &Digest) -> Result<Option<ActionResult>, StoreError> {
        let path = self.ac_path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(_) => {
                let _ = fs::remove_file(&path);
                return Ok(None);
            }
        };
        let usable = match serde_json::from_slice::<ActionResult>(&bytes) {
            Ok(r) if self.has(&r.output) && r.log.is_none_or(|l| self.has(&l)) => Some(r),
            _ => None,
        };
        if usable.is_none() {
            let _ = fs::remove_file(&path);
        }
        Ok(usable)
    }

    /// Records `result` for `key`, atomically. The blobs it refers to must
    /// already be stored: writing them first is what guarantees that a crash
    /// can never leave an entry pointing at nothing.
    pub fn ac_put(&self, key: &Digest, result: &ActionResult) -> Result<(), StoreError> {
        for d in std::iter::once(result.output).chain(result.log) {
            if !self.has(&d) {
                return Err(StoreError::MissingBlob { digest: d });
            }
        }
        let json = serde_json::to_vec(result).map_err(|source| StoreError::Serialize {
            what: "action result",
            source,
        })?;
        let dest = self.ac_path(key);
        if let Some(shard) = dest.parent() {
            kiln_atomic::ensure_dir(shard)?;
        }
        self.write_file_atomic(&dest, &json)
    }

    /// Removes the entry for `key`, if any (e.g. when the engine finds its
    /// output unusable).
    pub fn ac_remove(&self, key: &Digest) -> Result<(), StoreError> {
        let path = self.ac_path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx("removing action cache entry", &path),
        }
    }
}
