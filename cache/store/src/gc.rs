//! Mark-and-sweep garbage collection.
//!
//! Mark: everything reachable from the roots young enough to keep (their
//! action-cache entries, the manifests and logs those name, the file blobs
//! of those manifests). Sweep: every blob, action-cache entry and
//! materialized output not marked, stale temp files, the scratch
//! directories of killed builds, and the expired roots.
//! Runs under the exclusive lock, so no build is mid-way through writing
//! something that no root mentions yet.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::roots::Root;
use crate::store::{Store, STALE_TMP_AGE};

/// What a GC run did. `bytes_freed` counts on-disk bytes of everything
/// removed (compressed blobs, entries, roots, output trees, temp files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub ac_removed: u64,
    pub outputs_removed: u64,
    pub roots_removed: u64,
    pub blobs_kept: u64,
    /// Stale temp files and directories left by killed processes.
    pub tmp_removed: u64,
}

impl Store {
    /// Deletes roots last written more than `max_age` ago, then everything
    /// not reachable from the remaining roots. Blocks until no build holds
    /// the shared lock.
    ///
    /// A root that cannot be parsed stops GC with [`StoreError::BadRoot`]
    /// (unless it has expired anyway): guessing would risk deleting exactly
    /// what it protects. Likewise an I/O error while marking aborts before
    /// anything is swept.
    pub fn gc(&self, max_age: Duration) -> Result<GcReport, StoreError> {
        let _lock = self.lock_exclusive()?;
        let mut report = GcReport::default();

        // Mark.
        let mut live_keys: HashSet<Digest> = HashSet::new();
        let mut live_outputs: HashSet<Digest> = HashSet::new();
        let now = SystemTime::now();
        for (_, path) in self.root_files()? {
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("inspecting GC root", &path),
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or(Duration::ZERO);
            if age > max_age {
                remove_counted(&path, &mut report.bytes_freed, &mut report.roots_removed)?;
                continue;
            }
            let bytes = fs::read(&path).ctx("reading GC root", &path)?;
            let root: Root = serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::BadRoot { path, source })?;
            live_keys.extend(root.keys);
            live_outputs.extend(root.outputs);
        }
        let mut live_blobs: HashSet<Digest> = HashSet::new();
        for key in &live_keys {
            if let Some(r) = self.ac_get(key)? {
                live_outputs.insert(r.output);
                live_blobs.extend(r.log);
            }
        }
        for m in &live_outputs {
            live_blobs.insert(*m);
            match self.get_manifest(m) {
                Ok(manifest) => live_blobs.extend(manifest.blobs()),
                // Nothing to keep below a manifest that is gone or broken.
                Err(
                    StoreError::MissingBlob { .. }
                    | StoreError::Corrupt { .. }
                    | StoreError::NotAManifest { .. },
                ) => {}
                Err(e) => return Err(e),
            }
        }

        // Sweep.
        for (d, path) in sharded_entries(&self.cas_dir())? {
            if live_blobs.contains(&d) {
                report.blobs_kept += 1;
            } else {
                remove_counted(&path, &mut report.bytes_freed, &mut report.blobs_removed)?;
            }
        }
        for (key, path) in sharded_entries(&self.ac_dir())? {
            if !live_keys.contains(&key) {
                remove_counted(&path, &mut report.bytes_freed, &mut report.ac_removed)?;
            }
        }
        let outputs = self.outputs_dir();
        for entry in fs::read_dir(&outputs).ctx("reading directory", &outputs)? {
            let entry = entry.ctx("reading directory", &outputs)?;
            let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            if !live_outputs.contains(&d) {
                report.bytes_freed += kiln_atomic::remove_tree(&entry.path())?;
                report.outputs_removed += 1;
            }
        }
        let swept = kiln_atomic::sweep_stale(&self.tmp_dir(), STALE_TMP_AGE);
        report.tmp_removed = swept.entries;
        report.bytes_freed += swept.bytes;
        // Under the exclusive lock no build is running, so every scratch
        // directory left in work/ belongs to a build that was killed.
        let work = self.work_dir();
        for entry in fs::read_dir(&work).ctx("reading directory", &work)? {
            let entry = entry.ctx("reading directory", &work)?;
            report.bytes_freed += kiln_atomic::remove_tree(&entry.path())?;
            report.tmp_removed += 1;
        }
        Ok(report)
    }
}

/// `(digest, path)` of every `<dir>/<2 hex>/<64 hex>` file. Names that are
/// not digests are not ours and are left alone.
fn sharded_entries(dir: &Path) -> Result<Vec<(Digest, std::path::PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for shard in fs::read_dir(dir).ctx("reading directory", dir)? {
        let shard = shard.ctx("reading directory", dir)?;
        let shard_path = shard.path();
        if !shard.file_type().ctx("inspecting", &shard_path)?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&shard_path).ctx("reading directory", &shard_path)? {
            let entry = entry.ctx("reading directory", &shard_path)?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push((d, entry.path()));
            }
        }
    }
    Ok(out)
}

fn remove_counted(path: &Path, bytes: &mut u64, count: &mut u64) -> Result<(), StoreError> {
    let len = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
    match fs::remove_file(path) {
        Ok(()) => {
            *bytes += len;
            *count += 1;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("removing", path),
    }
}
