//! Extracting a manifest's tree into `outputs/<digest>/`, where builds read it.

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::manifest::{EntryKind, Manifest};
use crate::store::Store;
use kiln_atomic::TempDir;

impl Store {
    /// Where manifest `d` is (or would be) materialized.
    pub fn output_path(&self, d: &Digest) -> PathBuf {
        self.outputs_dir().join(d.to_hex())
    }

    /// Extracts the tree described by manifest `d` into `outputs/<d>/` if it
    /// is not there yet, and returns that path.
    ///
    /// The tree is built in a temp dir under `<root>/tmp`, flushed to disk,
    /// and renamed into place, so `outputs/<d>` either does not exist or is
    /// complete; every file is verified against its digest on the way. When
    /// two processes materialize the same output at once, the loser discards
    /// its copy and returns the winner's.
    ///
    /// Modes (including setuid bits), symlinks, hardlinks and directories are
    /// reproduced. Ownership and xattrs are not: an unprivileged process
    /// cannot set them, and the image writer takes them from the manifest.
    pub fn materialize(&self, d: &Digest) -> Result<PathBuf, StoreError> {
        let dest = self.output_path(d);
        if dest.is_dir() {
            return Ok(dest);
        }
        let m = self.get_manifest(d)?;
        let tmp = TempDir::new_in(&self.tmp_dir(), "out-")?;
        self.extract(d, &m, tmp.path())?;
        kiln_atomic::syncfs(tmp.path())?;
        tmp.persist(&dest)?;
        Ok(dest)
    }

    fn extract(&self, d: &Digest, m: &Manifest, root: &Path) -> Result<(), StoreError> {
        // Directories first, left writable; their real modes are applied at
        // the end since e.g. a 0555 directory could not be filled.
        for e in m
            .entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Dir))
        {
            let p = root.join(&e.path);
            fs::create_dir(&p).ctx("creating directory", &p)?;
        }

        m.entries.par_iter().try_for_each(|e| {
            let EntryKind::File { blake3, size } = e.kind else {
                return Ok(());
            };
            let p = root.join(&e.path);
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .ctx("creating", &p)?;
            let mut w = BufWriter::with_capacity(128 << 10, &f);
            let written =
                self.decode_verified(&blake3, |chunk| w.write_all(chunk).ctx("writing", &p))?;
            w.flush().ctx("writing", &p)?;
            if written != size {
                return Err(StoreError::NotAManifest {
                    digest: *d,
                    reason: format!(
                        "{:?} is {written} bytes but the manifest says {size}",
                        e.path
                    ),
                });
            }
            // After writing: the mode may lack owner-write, and chmod after
            // the last write keeps setuid bits (writes may clear them).
            fs::set_permissions(&p, fs::Permissions::from_mode(e.mode)).ctx("setting mode of", &p)
        })?;

        // Links after files, so hardlink targets exist.
        for e in &m.entries {
            let p = root.join(&e.path);
            match &e.kind {
                EntryKind::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &p).ctx("creating symlink", &p)?;
                }
                EntryKind::Hardlink { target } => {
                    fs::hard_link(root.join(target), &p).ctx("creating hardlink", &p)?;
                }
                EntryKind::Dir | EntryKind::File { .. } => {}
            }
        }

        // Deepest first, so a parent's mode never blocks chmod of a child.
        for e in m
            .entries
            .iter()
            .rev()
            .filter(|e| matches!(e.kind, EntryKind::Dir))
        {
            let p = root.join(&e.path);
            fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))
                .ctx("setting mode of", &p)?;
        }
        Ok(())
    }
}
