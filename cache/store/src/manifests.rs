//! Manifests as stored blobs: the digest of a stored manifest is a node's
//! output hash.

use crate::digest::Digest;
use crate::error::StoreError;
use crate::manifest::Manifest;
use crate::store::Store;

fn encode(m: &Manifest) -> Result<Vec<u8>, StoreError> {
    m.to_canonical_json()
        .map_err(|source| StoreError::Serialize {
            what: "manifest",
            source,
        })
}

impl Store {
    /// Stores `m` as a blob (canonical JSON) and returns its digest, the
    /// output hash of a build. Refuses invalid manifests and manifests whose
    /// file blobs are missing, so a stored manifest always describes a tree
    /// that could be materialized when it was written.
    pub fn put_manifest(&self, m: &Manifest) -> Result<Digest, StoreError> {
        m.validate()?;
        if let Some(digest) = m.blobs().find(|d| !self.has(d)) {
            return Err(StoreError::MissingBlob { digest });
        }
        self.put_bytes(&encode(m)?)
    }

    /// Reads and validates manifest `d`.
    pub fn get_manifest(&self, d: &Digest) -> Result<Manifest, StoreError> {
        self.get_manifest_sized(d).map(|(m, _)| m)
    }

    /// The manifest and its blob's content size, from one read (a remote
    /// entry lists both).
    pub fn get_manifest_sized(&self, d: &Digest) -> Result<(Manifest, u64), StoreError> {
        let bytes = self.get_bytes(d)?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| StoreError::NotAManifest {
            digest: *d,
            reason: e.to_string(),
        })?;
        m.validate().map_err(|e| StoreError::NotAManifest {
            digest: *d,
            reason: e.to_string(),
        })?;
        Ok((m, bytes.len() as u64))
    }
}
