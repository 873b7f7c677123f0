//! One way to write a file so that it appears under its final name complete,
//! or not at all: write a temporary, then rename it over the destination.
//!
//! Every writer in Kiln goes through here: the store (blobs, action-cache
//! entries, outputs), the shared directory cache, downloads, the disk image,
//! stripped ELF copies and the files published to `out/`. There is one
//! fsync policy, chosen per call with [`Durability`]:
//!
//! - [`Durability::Durable`]: the data is fsynced before the rename and the
//!   directory after it, so after a crash the destination holds either the
//!   old bytes or the new ones. For anything a later run trusts (the store,
//!   `out/`).
//! - [`Durability::Scratch`]: rename only. For files whose durable copy is
//!   elsewhere (partition images inside a build's scratch directory), for
//!   outputs a user asked for like any `mkfs` (`kiln fs`), and for blobs
//!   whose data one `syncfs` already made durable.
//!
//! Temporaries carry an advisory lock for as long as they are being written;
//! [`sweep_stale`] removes only the ones whose writer is gone, so a killed
//! process leaves at worst a temporary that the next sweep removes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A filesystem operation that failed: what was being done, to which path.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct Error {
    /// "creating temp file", "renaming into place at", ...
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attaches an action and a path to `io::Error`s.
pub trait Context<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Whether a completed write must survive a crash (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync the data before the rename and the directory after it.
    Durable,
    /// Rename only.
    Scratch,
}

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

/// Takes an advisory lock on a fresh temporary for as long as it is being
/// written. [`sweep_stale`] skips anything it cannot lock, so a slow writer
/// is never robbed of its file, while a killed one (whose locks the kernel
/// dropped) is cleaned up. Failure to lock (a filesystem without flock) only
/// loses that protection, so it is ignored.
fn mark_in_use(file: &File) {
    let _ = try_flock(file, libc::LOCK_EX);
}

/// `flock(op | LOCK_NB)`: `Ok(false)` when someone else holds the lock.
pub fn try_flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    // SAFETY: flock only reads the descriptor number, which `file` keeps open.
    let r = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// A file being written that ends up either renamed into place or deleted.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    /// A fresh temporary in `dir` (which must exist), named `prefix` plus a
    /// unique suffix. Opened read-write: some writers (fatfs) read back what
    /// they wrote.
    pub fn new_in(dir: &Path, prefix: &str) -> Result<TempFile> {
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
                Err(e) => return Err(e).at("creating temp file", &path),
            }
        }
    }

    /// A fresh temporary next to `dest`, so the final rename stays on one
    /// filesystem: `.<name>.tmp-<unique>`.
    pub fn beside(dest: &Path) -> Result<TempFile> {
        let (dir, prefix) = beside_parts(dest);
        TempFile::new_in(&dir, &prefix)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temporary to `dest`, replacing whatever is there, with
    /// the syncs `durability` asks for.
    pub fn persist(mut self, dest: &Path, durability: Durability) -> Result<()> {
        if durability == Durability::Durable {
            self.file.sync_all().at("syncing", &self.path)?;
        }
        fs::rename(&self.path, dest).at("renaming into place at", dest)?;
        self.persisted = true;
        if durability == Durability::Durable {
            if let Some(parent) = parent_of(dest) {
                fsync_dir(parent)?;
            }
        }
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

/// The directory and temp-name prefix for a temporary next to `dest`.
fn beside_parts(dest: &Path) -> (PathBuf, String) {
    let dir = parent_of(dest).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, format!(".{name}.tmp-"))
}

/// `path`'s directory, or `None` for a bare file name in the current one.
fn parent_of(path: &Path) -> Option<&Path> {
    path.parent().filter(|d| !d.as_os_str().is_empty())
}

/// Writes `bytes` to `dest` through a temporary beside it.
pub fn write(dest: &Path, bytes: &[u8], durability: Durability) -> Result<()> {
    write_with(dest, durability, |f| {
        use std::io::Write;
        f.write_all(bytes).at("writing", dest)
    })
}

/// Creates `dest` through a temporary beside it that `fill` writes. On any
/// error the temporary is removed and `dest` is untouched.
pub fn write_with<T, E: From<Error>>(
    dest: &Path,
    durability: Durability,
    fill: impl FnOnce(&mut File) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let mut tmp = TempFile::beside(dest)?;
    let value = fill(tmp.file_mut())?;
    tmp.persist(dest, durability)?;
    Ok(value)
}

/// Puts a hard link to `from` at `dest`, replacing what is there.
pub fn hard_link(from: &Path, dest: &Path, durability: Durability) -> Result<()> {
    replace_with(dest, durability, |tmp| fs::hard_link(from, tmp))
}

/// Puts a symlink to `target` at `dest`, replacing what is there.
pub fn symlink(target: &Path, dest: &Path, durability: Durability) -> Result<()> {
    replace_with(dest, durability, |tmp| {
        std::os::unix::fs::symlink(target, tmp)
    })
}

/// Makes a directory entry at a fresh name beside `dest` with `make`, then
/// renames it over `dest`.
fn replace_with(
    dest: &Path,
    durability: Durability,
    make: impl Fn(&Path) -> io::Result<()>,
) -> Result<()> {
    let (dir, prefix) = beside_parts(dest);
    let mut attempts = 0;
    let tmp = loop {
        let tmp = dir.join(unique_name(&prefix));
        match make(&tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => attempts += 1,
            Err(e) => return Err(e).at("creating", &tmp),
        }
    };
    if let Err(e) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp);
        return Err(e).at("renaming into place at", dest);
    }
    if durability == Durability::Durable {
        if let Some(parent) = parent_of(dest) {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

/// A directory tree being built that ends up renamed into place or removed.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    // Open only to hold the in-use lock.
    _handle: File,
    persisted: bool,
}

impl TempDir {
    pub fn new_in(dir: &Path, prefix: &str) -> Result<TempDir> {
        let mut attempts = 0;
        loop {
            let path = dir.join(unique_name(prefix));
            match fs::create_dir(&path) {
                Ok(()) => {
                    // Own the directory before anything fails, so Drop cleans it up.
                    let handle = match File::open(&path).at("opening temp dir", &path) {
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
                Err(e) => return Err(e).at("creating temp dir", &path),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the tree to `dest` and syncs `dest`'s directory (the tree's
    /// own data is the caller's to sync, usually with one [`syncfs`]).
    /// Returns `false` (and removes the temporary tree) if `dest` already
    /// exists, i.e. another process won the race.
    pub fn persist(mut self, dest: &Path) -> Result<bool> {
        match fs::rename(&self.path, dest) {
            Ok(()) => {
                self.persisted = true;
                if let Some(parent) = parent_of(dest) {
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
            Err(e) => Err(e).at("renaming temp dir into place at", dest),
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
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).at("opening directory", dir)?;
    match f.sync_all() {
        Ok(()) => Ok(()),
        // Some filesystems don't support fsync on directories; their renames
        // are as durable as they get.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP)) => Ok(()),
        Err(e) => Err(e).at("syncing directory", dir),
    }
}

/// `syncfs(2)`: flushes the whole filesystem holding `path`. One call is far
/// cheaper than fsyncing every file of a large extracted tree.
pub fn syncfs(path: &Path) -> Result<()> {
    let f = File::open(path).at("opening", path)?;
    // SAFETY: syncfs only reads the descriptor number, which `f` keeps open.
    let r = unsafe { libc::syncfs(f.as_raw_fd()) };
    if r != 0 {
        return Err(io::Error::last_os_error()).at("syncing filesystem of", path);
    }
    Ok(())
}

/// Creates `dir` (one level) if it is missing, durably.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = parent_of(dir) {
                fsync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).at("creating directory", dir),
    }
}

/// Removes a file, symlink or directory tree; a missing path is not an error.
///
/// Directories without owner rwx (a materialized `0555` dir, a build's
/// read-only tree) are made writable first, since an unprivileged process
/// could otherwise not empty them. Returns the bytes freed, counting a
/// multiply-linked file once, when its last link goes.
pub fn remove_tree(path: &Path) -> Result<u64> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).at("inspecting", path),
    };
    if meta.is_dir() {
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            fs::set_permissions(path, fs::Permissions::from_mode((mode & 0o7777) | 0o700))
                .at("making directory writable", path)?;
        }
        let mut freed = 0;
        let entries = match fs::read_dir(path) {
            Ok(it) => it,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).at("reading directory", path),
        };
        for entry in entries {
            let entry = entry.at("reading directory", path)?;
            freed += remove_tree(&entry.path())?;
        }
        match fs::remove_dir(path) {
            Ok(()) => Ok(freed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(freed),
            Err(e) => Err(e).at("removing directory", path),
        }
    } else {
        let size = if meta.nlink() <= 1 { meta.len() } else { 0 };
        match fs::remove_file(path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).at("removing", path),
        }
    }
}

/// What a stale-temporary sweep removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Swept {
    pub entries: u64,
    pub bytes: u64,
}

/// Removes entries of `dir` last modified more than `older_than` ago whose
/// writer is gone (see [`TempFile`]).
///
/// Best effort: an entry that cannot be inspected or removed is skipped; it
/// is retried next time and never affects correctness (temporary names are
/// never read as content).
pub fn sweep_stale(dir: &Path, older_than: Duration) -> Swept {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("f");
        write(&dest, b"old", Durability::Durable).expect("write");
        let r: std::result::Result<(), Error> = write_with(&dest, Durability::Durable, |f| {
            use std::io::Write;
            f.write_all(b"half").at("writing", &dest)?;
            Err(io::Error::other("disk full")).at("writing", &dest)
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&dest).expect("read"), b"old");
        assert_eq!(entries(dir.path()), ["f"]);
    }

    #[test]
    fn links_replace_what_is_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        write(&a, b"a", Durability::Scratch).expect("write");
        let l = dir.path().join("l");
        symlink(Path::new("a"), &l, Durability::Durable).expect("symlink");
        symlink(Path::new("b"), &l, Durability::Durable).expect("symlink again");
        assert_eq!(fs::read_link(&l).expect("link"), Path::new("b"));
        let h = dir.path().join("h");
        write(&h, b"x", Durability::Scratch).expect("write");
        hard_link(&a, &h, Durability::Durable).expect("hard link");
        assert_eq!(fs::read(&h).expect("read"), b"a");
        assert_eq!(entries(dir.path()), ["a", "h", "l"]);
    }

    #[test]
    fn stale_temporaries_are_swept_unless_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = TempFile::new_in(dir.path(), "t-").expect("temp");
        let dead = dir.path().join("t-dead");
        fs::write(&dead, b"x").expect("write");
        let swept = sweep_stale(dir.path(), Duration::ZERO);
        assert_eq!(swept.entries, 1);
        assert!(live.path().exists());
        assert!(!dead.exists());
    }
}
