//! A blob file's stamp: the blake3 of its stored (zstd) bytes, taken as
//! they were written and kept in the file's `user.kiln.stored-b3` xattr.
//!
//! Checking a blob before it leaves the store (an upload) means decoding
//! it and hashing the content, which cost a push of many small blobs about
//! as much CPU as sending them. Hashing the stored bytes against the stamp
//! catches the same damage (any changed byte changes the hash) for a third
//! of that. The stamp is an optimisation, never a requirement: a blob
//! without one (written before stamps, copied by hand, on a filesystem
//! without user xattrs) or whose stamp does not match gets the full check,
//! which decides; a stamp that was the damaged part is then rewritten.
//! Reads that return content (builds, materializing) always decode and
//! hash it.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;

const NAME: &[u8] = b"user.kiln.stored-b3\0";

/// The stamp of `file`, if it has a well-formed one.
pub(crate) fn get(file: &File) -> Option<[u8; 32]> {
    let mut value = [0u8; 32];
    // SAFETY: the name is NUL-terminated, and the buffer is valid for
    // `value.len()` bytes, which is the size passed.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            NAME.as_ptr().cast(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    (n == 32).then_some(value)
}

/// Stamps `file` with `hash`. Best effort: without the stamp, the blob is
/// checked in full when it leaves the store.
pub(crate) fn set(file: &File, hash: &[u8; 32]) {
    // SAFETY: the name is NUL-terminated, and `hash` is valid for its
    // length, which is the size passed.
    unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            NAME.as_ptr().cast(),
            hash.as_ptr().cast(),
            hash.len(),
            0,
        );
    }
}

/// Whether `stored` is what `file`'s stamp says was written.
pub(crate) fn matches(file: &File, stored: &[u8]) -> bool {
    get(file).is_some_and(|stamp| *blake3::hash(stored).as_bytes() == stamp)
}

/// A writer that hashes what goes through it, for stamping a blob file as
/// it is written.
pub(crate) struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Hashing<W> {
    pub(crate) fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }

    /// The inner writer and the hash of everything written.
    pub(crate) fn finish(self) -> (W, [u8; 32]) {
        (self.inner, *self.hasher.finalize().as_bytes())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_matches_only_the_bytes_it_was_taken_of() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        let mut w = Hashing::new(File::create(&path).expect("create"));
        w.write_all(b"stored bytes").expect("write");
        let (file, hash) = w.finish();
        assert_eq!(hash, *blake3::hash(b"stored bytes").as_bytes());
        set(&file, &hash);
        let file = File::open(&path).expect("open");
        match get(&file) {
            // This filesystem keeps user xattrs: the stamp decides.
            Some(stamp) => {
                assert_eq!(stamp, hash);
                assert!(matches(&file, b"stored bytes"));
                assert!(!matches(&file, b"stored bytez"));
            }
            // It does not: nothing ever matches, so every check is in full.
            None => assert!(!matches(&file, b"stored bytes")),
        }
    }
}
