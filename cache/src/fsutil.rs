//! Filesystem primitives the rest of the crate is built on: temp files and
//! directories that are either renamed into place or cleaned up, directory
//! fsync, and tree removal that copes with read-only directories.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, StoreError};
use crate::lock::try_flock;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other process or thread will pick: pid, a per-process counter
/// and the clock (the clock guards against pid reuse after a crash).
fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("{prefix}{}-{n}-{nanos:08x}", std::process::id())
}

/// Takes an advisory lock on a fresh temp file or dir for as long as it is
/// being written. Stale-temp cleanup skips anything it cannot lock, so a
/// slow writer is never robbed of its file, while a killed one (whose locks
/// the kernel dropped) is cleaned up. Failure to lock (e.g. a filesystem
/// without flock) only loses that protection, so it is ignored.
fn mark_in_use(file: &File) {
    let _ = try_flock(file, libc::LOCK_EX);
}

/// A file being written that ends up either renamed into place or deleted.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    pub(crate) fn create_in(dir: &Path, prefix: &str) -> Result<TempFile, StoreError> {
        let mut attempts = 0;
        loop {
            let path = dir.join(unique_name(prefix));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(file) => {
                    mark_in_use(&file);
                    return Ok(TempFile {
                        path,
                        file,
                        persisted: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1;
                }
                Err(e) => return Err(e).ctx("creating temp file", &path),
            }
        }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// fsyncs the data, renames it to `dest` (replacing whatever is there)
    /// and fsyncs `dest`'s directory so the rename itself is durable.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), StoreError> {
        self.file.sync_all().ctx("syncing", &self.path)?;
        fs::rename(&self.path, dest).ctx("renaming temp file into place at", dest)?;
        self.persisted = true;
        if let Some(parent) = dest.parent() {
            fsync_dir(parent)?;
        }
        Ok(())
    }
}

impl TempFile {
    /// Renames without syncing: for files whose data a `syncfs` already
    /// made durable (see `Store::install_staged`).
    pub(crate) fn persist_synced(mut self, dest: &Path) -> Result<(), StoreError> {
        fs::rename(&self.path, dest).ctx("renaming temp file into place at", dest)?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A directory tree being built that ends up renamed into place or removed.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
    // Open only to hold the in-use lock.
    _handle: File,
    persisted: bool,
}

impl TempDir {
    pub(crate) fn create_in(dir: &Path, prefix: &str) -> Result<TempDir, StoreError> {
        let mut attempts = 0;
        loop {
            let path = dir.join(unique_name(prefix));
            match fs::create_dir(&path) {
                Ok(()) => {
                    // Own the directory before anything fails, so Drop cleans it up.
                    let handle = File::open(&path).ctx("opening temp dir", &path);
                    let handle = match handle {
                        Ok(h) => h,
                        Err(e) => {
                            let _ = fs::remove_dir(&path);
                            return Err(e);
                        }
                    };
                    mark_in_use(&handle);
                    return Ok(TempDir {
                        path,
                        _handle: handle,
                        persisted: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1;
                }
                Err(e) => return Err(e).ctx("creating temp dir", &path),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the tree to `dest`. Returns `false` (and removes the temp
    /// tree) if `dest` already exists, i.e. another process won the race.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<bool, StoreError> {
        match fs::rename(&self.path, dest) {
            Ok(()) => {
                self.persisted = true;
                if let Some(parent) = dest.parent() {
                    fsync_dir(parent)?;
                }
                Ok(true)
            }
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY))
                    && dest.is_dir() =>
            {
                Ok(false)
            }
            Err(e) => Err(e).ctx("renaming temp dir into place at", dest),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = remove_tree(&self.path);
        }
    }
}

/// Makes a completed rename or create in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    let f = File::open(dir).ctx("opening directory", dir)?;
    match f.sync_all() {
        Ok(()) => Ok(()),
        // Some filesystems don't support fsync on directories; their renames
        // are as durable as they get.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP)) => Ok(()),
        Err(e) => Err(e).ctx("syncing directory", dir),
    }
}

/// `syncfs(2)`: flushes the whole filesystem holding `path`. One call is far
/// cheaper than fsyncing every file of a large extracted tree.
pub(crate) fn syncfs(path: &Path) -> Result<(), StoreError> {
    let f = File::open(path).ctx("opening", path)?;
    // SAFETY: syncfs only reads the descriptor number, which `f` keeps open.
    let r = unsafe { libc::syncfs(f.as_raw_fd()) };
    if r != 0 {
        return Err(io::Error::last_os_error()).ctx("syncing filesystem of", path);
    }
    Ok(())
}

/// Creates `dir` (one level) if it is missing, durably.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).ctx("creating directory", dir),
    }
}

/// Removes a file, symlink or directory tree; a missing path is not an error.
///
/// Directories without owner rwx (a materialized `0555` dir, say) are made
/// writable first, since an unprivileged process could otherwise not empty
/// them. Returns the bytes freed, counting a multiply-linked file once, when
/// its last link goes.
pub(crate) fn remove_tree(path: &Path) -> Result<u64, StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).ctx("inspecting", path),
    };
    if meta.is_dir() {
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            fs::set_permissions(path, fs::Permissions::from_mode((mode & 0o7777) | 0o700))
                .ctx("making directory writable", path)?;
        }
        let mut freed = 0;
        let entries = match fs::read_dir(path) {
            Ok(it) => it,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).ctx("reading directory", path),
        };
        for entry in entries {
            let entry = entry.ctx("reading directory", path)?;
            freed += remove_tree(&entry.path())?;
        }
        match fs::remove_dir(path) {
            Ok(()) => Ok(freed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(freed),
            Err(e) => Err(e).ctx("removing directory", path),
        }
    } else {
        let size = if meta.nlink() <= 1 { meta.len() } else { 0 };
        match fs::remove_file(path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).ctx("removing", path),
        }
    }
}

/// What a stale-temp sweep removed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Swept {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// Removes entries of `dir` last modified more than `older_than` ago whose
/// writer is gone (see [`mark_in_use`]).
///
/// Best effort: an entry that cannot be inspected or removed is skipped, it
/// will be retried next time and never affects correctness (temp names are
/// never read as store content).
pub(crate) fn sweep_stale(dir: &Path, older_than: Duration) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return swept;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        if age <= older_than || in_use(&path, &meta) {
            continue;
        }
        if let Ok(bytes) = remove_tree(&path) {
            swept.entries += 1;
            swept.bytes += bytes;
        }
    }
    swept
}

fn in_use(path: &Path, meta: &fs::Metadata) -> bool {
    if meta.file_type().is_symlink() {
        return false;
    }
    let mut opts = OpenOptions::new();
    opts.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if meta.is_dir() {
        opts.custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    match opts.open(path) {
        Ok(f) => matches!(try_flock(&f, libc::LOCK_EX), Ok(false)),
        Err(_) => false,
    }
}
