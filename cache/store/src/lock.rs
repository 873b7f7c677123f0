//! `flock(2)` on `<root>/lock`: builds hold it shared, GC exclusive.
//!
//! flock locks belong to the open file description, so they vanish when the
//! process dies, including by `kill -9`: a crashed build can never wedge GC.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StoreError};

/// Which kind of lock a [`StoreLock`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// A held lock on the store; released on drop.
///
/// Note that a process holding a shared lock that then asks for the
/// exclusive one (e.g. calls `gc` during a build) waits for itself forever:
/// flock does not upgrade across separate opens of the file.
#[derive(Debug)]
pub struct StoreLock {
    // Kept open for its lock; closing the file releases it.
    _file: File,
    kind: LockKind,
    path: PathBuf,
}

impl StoreLock {
    pub fn kind(&self) -> LockKind {
        self.kind
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks until the lock is granted.
    pub(crate) fn acquire(path: &Path, kind: LockKind) -> Result<StoreLock, StoreError> {
        let file = open_lock_file(path)?;
        let op = match kind {
            LockKind::Shared => libc::LOCK_SH,
            LockKind::Exclusive => libc::LOCK_EX,
        };
        flock(&file, op).ctx("locking", path)?;
        Ok(StoreLock {
            _file: file,
            kind,
            path: path.to_path_buf(),
        })
    }

    /// Returns `None` instead of waiting when someone else holds a conflicting lock.
    pub(crate) fn try_acquire(
        path: &Path,
        kind: LockKind,
    ) -> Result<Option<StoreLock>, StoreError> {
        let file = open_lock_file(path)?;
        let op = match kind {
            LockKind::Shared => libc::LOCK_SH,
            LockKind::Exclusive => libc::LOCK_EX,
        };
        if !kiln_atomic::try_flock(&file, op).ctx("locking", path)? {
            return Ok(None);
        }
        Ok(Some(StoreLock {
            _file: file,
            kind,
            path: path.to_path_buf(),
        }))
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ctx("opening lock file", path)
}

/// Blocking flock, retried on EINTR.
pub(crate) fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps open.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
