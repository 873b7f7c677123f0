//! Content-addressed blobs: `cas/<2 hex>/<blake3>` holding zstd data.
//!
//! A blob is named by the blake3 of its *uncompressed* bytes, so its name can
//! be computed before (or without) compressing, and every read re-hashes the
//! decompressed data: a blob damaged by anything (crash, disk, hand edits) is
//! detected, deleted and reported as [`StoreError::Corrupt`], never returned.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::stamp;
use crate::store::Store;
use kiln_atomic::{Durability, TempFile};

/// zstd level: level 3 is zstd's default; higher levels cost far more CPU
/// than they save in disk for build outputs.
const ZSTD_LEVEL: i32 = 3;

/// Files up to this size are read into memory and hashed/compressed in one
/// go; larger ones are streamed in two passes (hash, then compress only if
/// the blob is new) so memory stays bounded.
const IN_MEMORY_LIMIT: u64 = 4 << 20;

const BUF_SIZE: usize = 256 << 10;

impl Store {
    /// Path of the compressed blob `d` (whether or not it exists), e.g. for
    /// uploading it to a remote cache as-is.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        Store::sharded(self.cas_dir(), d)
    }

    /// Whether blob `d` exists. Does not verify it; reads do.
    pub fn has(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Stores `data` and returns its digest. A no-op if the blob exists.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(data);
        if self.has(&d) {
            return Ok(d);
        }
        let tmp = self.temp_file("blob-")?;
        let mut enc = zstd::Encoder::new(stamp::Hashing::new(tmp.file()), ZSTD_LEVEL)
            .ctx("compressing into", tmp.path())?;
        enc.write_all(data).ctx("compressing into", tmp.path())?;
        let (_, stored) = enc.finish().ctx("compressing into", tmp.path())?.finish();
        stamp::set(tmp.file(), &stored);
        self.install_blob(tmp, &d)?;
        Ok(d)
    }

    /// Stores the content of the file at `path`, returning its digest and
    /// (uncompressed) size. Large files are streamed, never held in memory.
    pub fn put_file(&self, path: &Path) -> Result<(Digest, u64), StoreError> {
        let mut file = File::open(path).ctx("opening", path)?;
        let len = file.metadata().ctx("inspecting", path)?.len();
        if len <= IN_MEMORY_LIMIT {
            let mut data = Vec::with_capacity(len as usize);
            file.read_to_end(&mut data).ctx("reading", path)?;
            let d = self.put_bytes(&data)?;
            return Ok((d, data.len() as u64));
        }

        // Pass 1: hash only. Outputs are often identical to an earlier
        // build's, and then compressing would be wasted work.
        let mut hasher = blake3::Hasher::new();
        let size = copy_chunks(&mut file, path, |chunk| {
            hasher.update(chunk);
            Ok(())
        })?;
        let d = Digest::from(hasher.finalize());
        if self.has(&d) {
            return Ok((d, size));
        }

        // Pass 2: compress, re-hashing to make sure what we stored is what
        // we named (the file may be modified under us).
        file.seek(SeekFrom::Start(0)).ctx("rewinding", path)?;
        let tmp = self.temp_file("blob-")?;
        let mut enc = zstd::Encoder::new(stamp::Hashing::new(tmp.file()), ZSTD_LEVEL)
            .ctx("compressing into", tmp.path())?;
        let mut hasher = blake3::Hasher::new();
        let size2 = copy_chunks(&mut file, path, |chunk| {
            hasher.update(chunk);
            enc.write_all(chunk).ctx("compressing into", tmp.path())
        })?;
        let (_, stored) = enc.finish().ctx("compressing into", tmp.path())?.finish();
        stamp::set(tmp.file(), &stored);
        if size2 != size || Digest::from(hasher.finalize()) != d {
            return Err(StoreError::FileChanged {
                path: path.to_path_buf(),
            });
        }
        self.install_blob(tmp, &d)?;
        Ok((d, size))
    }

    /// Reads blob `d`, verifying it.
    pub fn get_bytes(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.decode_verified(d, |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// Gives `f` blob `d`'s stored (zstd) bytes, read whole, once they are
    /// checked: they must be what the blob's stamp says was written (see
    /// `stamp`), or else decode to exactly `size` bytes that hash to `d`.
    /// For uploading small blobs, which are most of them: one read, into
    /// buffers each thread reuses with its decoding context. A blob that
    /// fails the check is removed, as by `get_bytes`.
    pub fn with_compressed<R>(
        &self,
        d: &Digest,
        size: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, StoreError> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => self.with_compressed_in(&mut scratch, d, size, f),
            // Called from within `f`: this call gets its own buffers.
            Err(_) => self.with_compressed_in(&mut Scratch::default(), d, size, f),
        })
    }

    fn with_compressed_in<R>(
        &self,
        scratch: &mut Scratch,
        d: &Digest,
        size: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, StoreError> {
        let path = self.blob_path(d);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob { digest: *d })
            }
            Err(e) => return Err(e).ctx("opening blob", &path),
        };
        let Scratch {
            dctx,
            stored,
            content,
        } = scratch;
        stored.clear();
        file.read_to_end(stored).ctx("reading blob", &path)?;
        if stamp::matches(&file, stored) {
            return Ok(f(stored));
        }
        let checked = if size > IN_MEMORY_LIMIT {
            // Too big to decode into one buffer: stream it (a second read).
            match self.decode_verified(d, |_| Ok(()))? {
                total if total == size => Ok(()),
                total => Err(format!("content is {total} bytes, not {size}")),
            }
        } else {
            check_whole(dctx, stored, content, d, size)
        };
        match checked {
            Ok(()) => {
                // Sound: the next check of this blob can be the cheap one.
                stamp::set(&file, blake3::hash(stored).as_bytes());
                Ok(f(stored))
            }
            Err(reason) => Err(self.corrupt(d, &path, &file, reason)),
        }
    }

    /// Decompresses blob `d` to `dest`, atomically: the data goes to a temp
    /// file next to `dest` (so the rename stays on one filesystem) and only a
    /// verified, fsynced file is renamed into place.
    pub fn copy_to(&self, d: &Digest, dest: &Path) -> Result<(), StoreError> {
        let tmp = TempFile::beside(dest)?;
        let mut out = io::BufWriter::with_capacity(BUF_SIZE, tmp.file());
        self.decode_verified(d, |chunk| out.write_all(chunk).ctx("writing", tmp.path()))?;
        out.flush().ctx("writing", tmp.path())?;
        drop(out);
        Ok(tmp.persist(dest, Durability::Durable)?)
    }

    /// Streams the decompressed content of blob `d` to `sink`, then checks
    /// its hash. On a decode error or mismatch the blob is deleted and
    /// `Corrupt` returned; the caller must discard what the sink received.
    /// Errors returned by `sink` are passed through untouched: a full disk
    /// at the destination says nothing about the blob.
    pub(crate) fn decode_verified(
        &self,
        d: &Digest,
        mut sink: impl FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let path = self.blob_path(d);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob { digest: *d })
            }
            Err(e) => return Err(e).ctx("opening blob", &path),
        };
        let mut dec = match zstd::Decoder::new(&file) {
            Ok(dec) => dec,
            Err(e) => {
                return Err(self.corrupt(d, &path, &file, format!("cannot start decoding: {e}")))
            }
        };
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; BUF_SIZE];
        let mut total = 0u64;
        loop {
            let n = match dec.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(self.corrupt(d, &path, &file, format!("cannot decompress: {e}")))
                }
            };
            hasher.update(&buf[..n]);
            sink(&buf[..n])?;
            total += n as u64;
        }
        let actual = Digest::from(hasher.finalize());
        if actual != *d {
            return Err(self.corrupt(d, &path, &file, format!("content hashes to {actual}")));
        }
        Ok(total)
    }

    /// Deletes a blob found to be corrupt, unless it was meanwhile replaced
    /// by a concurrent writer (then the path names a different inode, which
    /// is a fresh, complete blob).
    fn corrupt(&self, d: &Digest, path: &Path, opened: &File, reason: String) -> StoreError {
        if let (Ok(a), Ok(b)) = (opened.metadata(), fs::symlink_metadata(path)) {
            if a.dev() == b.dev() && a.ino() == b.ino() {
                let _ = fs::remove_file(path);
            }
        }
        StoreError::Corrupt {
            digest: *d,
            path: path.to_path_buf(),
            reason,
        }
    }

    /// Renames a complete, compressed temp file to the blob's path. Two
    /// writers of the same blob both succeed: the second rename replaces
    /// identical content, and readers holding the first inode keep it.
    pub(crate) fn install_blob(&self, tmp: TempFile, d: &Digest) -> Result<(), StoreError> {
        let dest = self.blob_path(d);
        if let Some(shard) = dest.parent() {
            kiln_atomic::ensure_dir(shard)?;
        }
        Ok(tmp.persist(&dest, Durability::Durable)?)
    }
}

/// Reads `file` to the end in chunks, feeding each to `f`.
fn copy_chunks(
    file: &mut File,
    path: &Path,
    mut f: impl FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).ctx("reading", path),
        };
        f(&buf[..n])?;
        total += n as u64;
    }
}

/// Buffers and a decoding context for [`Store::with_compressed`].
#[derive(Default)]
struct Scratch {
    dctx: Option<zstd::bulk::Decompressor<'static>>,
    stored: Vec<u8>,
    content: Vec<u8>,
}

/// Decodes `stored` whole into `content` and checks it is `size` bytes
/// hashing to `d`.
fn check_whole(
    dctx: &mut Option<zstd::bulk::Decompressor<'static>>,
    stored: &[u8],
    content: &mut Vec<u8>,
    d: &Digest,
    size: u64,
) -> Result<(), String> {
    let dctx = match dctx {
        Some(dctx) => dctx,
        None => dctx.insert(
            zstd::bulk::Decompressor::new().map_err(|e| format!("cannot start decoding: {e}"))?,
        ),
    };
    content.clear();
    content.reserve(size as usize);
    dctx.decompress_to_buffer(stored, content)
        .map_err(|e| format!("cannot decompress into {size} bytes: {e}"))?;
    if content.len() as u64 != size {
        return Err(format!("content is {} bytes, not {size}", content.len()));
    }
    let actual = Digest::from(blake3::hash(content));
    if actual != *d {
        return Err(format!("content hashes to {actual}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stamp that is itself the damaged part costs a full check, which
    /// passes and rewrites it; the blob is kept.
    #[test]
    fn a_wrong_stamp_is_checked_in_full_and_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let data = vec![7u8; 10_000];
        let d = store.put_bytes(&data).expect("put");
        let path = store.blob_path(&d);
        let stored = fs::read(&path).expect("read");
        let file = File::open(&path).expect("open");
        if stamp::get(&file).is_none() {
            return; // No user xattrs here: every check is in full anyway.
        }
        stamp::set(&file, &[0u8; 32]);
        assert!(!stamp::matches(&file, &stored));
        let sent = store.with_compressed(&d, data.len() as u64, |b| b.to_vec());
        assert_eq!(sent.expect("checked in full"), stored);
        assert!(stamp::matches(&file, &stored));
    }
}
