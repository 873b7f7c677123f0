//! A directory as a shared cache (an NFS or CIFS mount, a USB disk), in the
//! same layout as the HTTP cache: `<dir>/ac/<key>`, `<dir>/cas/<blake3>`.
//!
//! The store's atomicity rules hold: everything is written to
//! `<dir>/tmp/` under a unique name, fsynced, then renamed into place, so
//! readers see a whole file or none. Blobs are checked on the way in like
//! any remote's.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_atomic::{Durability, TempFile};
use kiln_store::Digest;
use kiln_store::Staged;
use kiln_store::Store;

use super::backend::{send_stored, Backend, BackendError, Outgoing, TransferError};
use super::entry::BlobRef;

pub struct Dir {
    root: PathBuf,
}

impl Dir {
    pub fn new(root: &Path) -> Dir {
        Dir {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, kind: &str, d: &Digest) -> PathBuf {
        self.root.join(kind).join(d.to_hex())
    }

    fn err(&self, action: &str, path: &Path, e: io::Error) -> BackendError {
        BackendError::Unavailable(format!("{action} {}: {e}", path.display()))
    }

    /// Writes `dest` through a temp file in `<dir>/tmp/` that `fill`
    /// writes, durably (see kiln-atomic).
    fn write_atomic(
        &self,
        dest: &Path,
        fill: impl FnOnce(&mut File) -> io::Result<u64>,
    ) -> Result<u64, BackendError> {
        let tmp_dir = self.root.join("tmp");
        for dir in [tmp_dir.as_path(), dest.parent().unwrap_or(&self.root)] {
            fs::create_dir_all(dir).map_err(|e| self.err("creating", dir, e))?;
        }
        let mut tmp = TempFile::new_in(&tmp_dir, "put-").map_err(|e| self.atomic_err(e))?;
        let len = fill(tmp.file_mut()).map_err(|e| self.err("writing", dest, e))?;
        tmp.persist(dest, Durability::Durable)
            .map_err(|e| self.atomic_err(e))?;
        Ok(len)
    }

    fn atomic_err(&self, e: kiln_atomic::Error) -> BackendError {
        self.err(e.action, &e.path, e.source)
    }
}

impl Backend for Dir {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn get_entry(&self, key: &Digest) -> Result<Option<Vec<u8>>, BackendError> {
        let path = self.path("ac", key);
        match fs::read(&path) {
            Ok(doc) => Ok(Some(doc)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("reading", &path, e)),
        }
    }

    fn put_entry(&self, key: &Digest, doc: &[u8]) -> Result<(), BackendError> {
        let dest = self.path("ac", key);
        self.write_atomic(&dest, |f| {
            f.write_all(doc)?;
            Ok(doc.len() as u64)
        })
        .map(|_| ())
    }

    fn missing(&self, blobs: &[BlobRef]) -> Result<Vec<BlobRef>, BackendError> {
        if !self.root.is_dir() {
            return Err(BackendError::Unavailable(format!(
                "{}: not a directory",
                self.root.display()
            )));
        }
        Ok(blobs
            .iter()
            .filter(|b| !self.path("cas", &b.blake3).is_file())
            .cloned()
            .collect())
    }

    fn download(&self, blob: &BlobRef, store: &Store) -> Result<(Staged, u64), TransferError> {
        let path = self.path("cas", &blob.blake3);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TransferError::Refused {
                    digest: blob.blake3,
                    reason: "the cache does not have it".into(),
                })
            }
            Err(e) => return Err(self.err("opening", &path, e).into()),
        };
        store
            .import_compressed(&blob.blake3, blob.size, &mut file)
            .map_err(|e| TransferError::from_import(&blob.blake3, e, &path.display().to_string()))
    }

    fn upload(&self, blob: &BlobRef, store: &Store) -> Result<u64, TransferError> {
        let dest = self.path("cas", &blob.blake3);
        send_stored(store, blob, |out| {
            self.write_atomic(&dest, |f| match out {
                Outgoing::Whole(body) => f.write_all(body).map(|()| body.len() as u64),
                Outgoing::Stream { export, .. } => io::copy(export, f),
            })
            .map_err(TransferError::from)
        })
    }
}
