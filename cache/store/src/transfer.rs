//! Moving blobs between the store and a remote cache.
//!
//! Two wire forms: the store's own zstd file (HTTP and directory caches,
//! which can hold any bytes under a blob's name) and the raw content (REAPI,
//! whose servers check that a blob hashes to its digest). Either way a
//! blob coming in is verified (blake3 and size of the content) *before* it
//! is renamed into the CAS, and a blob going out is checked before its last
//! byte is handed out (against its stamp, see `stamp`, or by decoding it),
//! so a damaged local blob aborts its upload instead of poisoning the
//! remote.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::stamp;
use crate::store::Store;
use kiln_atomic::{Durability, TempFile};

const BUF_SIZE: usize = 256 << 10;
/// Blobs stored in up to this many bytes are uploaded from memory, read
/// and checked whole (`Store::with_compressed`); bigger ones stream
/// through an [`Export`] (see `remote::backend::send_stored`).
pub const SEND_WHOLE: u64 = 4 << 20;
/// The store's zstd level (see `cas`); raw imports compress with it too.
const ZSTD_LEVEL: i32 = 3;

/// Why a blob from a remote was not imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading from the remote failed (network, server).
    #[error("reading from the remote: {0}")]
    Source(#[source] io::Error),
    /// The bytes are not the blob they claim to be.
    #[error("{0}")]
    Mismatch(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A verified blob in the store's temp directory, not yet in the CAS and
/// not yet synced: [`Store::install_staged`] makes a batch durable with one
/// `syncfs` instead of an fsync per blob, then renames them into place.
/// Dropped, it is deleted.
pub struct Staged {
    tmp: TempFile,
    digest: Digest,
}

/// Counts and hashes what is written to it.
struct HashSink {
    hasher: blake3::Hasher,
    len: u64,
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HashSink {
    fn new() -> HashSink {
        HashSink {
            hasher: blake3::Hasher::new(),
            len: 0,
        }
    }

    fn check(&self, d: &Digest, size: u64) -> Result<(), String> {
        let actual = Digest::from(self.hasher.finalize());
        if actual != *d {
            return Err(format!("content hashes to {actual}, not {d}"));
        }
        if self.len != size {
            return Err(format!("content is {} bytes, not {size}", self.len));
        }
        Ok(())
    }
}

fn read_chunk(src: &mut dyn Read, buf: &mut [u8]) -> Result<usize, ImportError> {
    loop {
        match src.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImportError::Source(e)),
        }
    }
}

/// Reads `src` to the end, giving each chunk to `take`, which returns how
/// much content it has seen so far: more than `size` is refused at once,
/// so a server can't make us store an endless blob. Returns bytes read.
fn pump(
    src: &mut dyn Read,
    size: u64,
    mut take: impl FnMut(&[u8]) -> Result<u64, ImportError>,
) -> Result<u64, ImportError> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut read = 0u64;
    loop {
        let n = read_chunk(src, &mut buf)?;
        if n == 0 {
            return Ok(read);
        }
        read += n as u64;
        if take(&buf[..n])? > size {
            return Err(ImportError::Mismatch(format!(
                "content is longer than {size} bytes"
            )));
        }
    }
}

impl Store {
    /// Stages blob `d` (content of `size` bytes) from its zstd form read
    /// from `src`, decoding as it arrives to check it. Returns it with the
    /// bytes read. Nothing is staged unless the content matches.
    pub fn import_compressed(
        &self,
        d: &Digest,
        size: u64,
        src: &mut dyn Read,
    ) -> Result<(Staged, u64), ImportError> {
        let tmp = self.temp_file("import-")?;
        let mut out = stamp::Hashing::new(BufWriter::with_capacity(BUF_SIZE, tmp.file()));
        let mut check = zstd::stream::write::Decoder::new(HashSink::new())
            .map_err(|e| ImportError::Mismatch(format!("cannot start decoding: {e}")))?;
        let wire = pump(src, size, |chunk| {
            out.write_all(chunk).ctx("writing", tmp.path())?;
            check
                .write_all(chunk)
                .map_err(|e| ImportError::Mismatch(format!("not zstd data: {e}")))?;
            Ok(check.get_ref().len)
        })?;
        check
            .flush()
            .map_err(|e| ImportError::Mismatch(format!("truncated zstd data: {e}")))?;
        check
            .get_ref()
            .check(d, size)
            .map_err(ImportError::Mismatch)?;
        let (mut out, stored) = out.finish();
        out.flush().ctx("writing", tmp.path())?;
        drop(out);
        stamp::set(tmp.file(), &stored);
        Ok((Staged { tmp, digest: *d }, wire))
    }

    /// Stages blob `d` from its raw content read from `src`, compressing
    /// it into the store's form. Returns it with the bytes read.
    pub fn import_raw(
        &self,
        d: &Digest,
        size: u64,
        src: &mut dyn Read,
    ) -> Result<(Staged, u64), ImportError> {
        let tmp = self.temp_file("import-")?;
        let out = stamp::Hashing::new(BufWriter::with_capacity(BUF_SIZE, tmp.file()));
        let mut enc = zstd::Encoder::new(out, ZSTD_LEVEL).ctx("compressing into", tmp.path())?;
        let mut sink = HashSink::new();
        pump(src, size, |chunk| {
            let _ = sink.write(chunk);
            enc.write_all(chunk).ctx("compressing into", tmp.path())?;
            Ok(sink.len)
        })?;
        sink.check(d, size).map_err(ImportError::Mismatch)?;
        let (mut out, stored) = enc.finish().ctx("compressing into", tmp.path())?.finish();
        out.flush().ctx("writing", tmp.path())?;
        drop(out);
        stamp::set(tmp.file(), &stored);
        Ok((Staged { tmp, digest: *d }, sink.len))
    }

    /// Makes staged blobs durable (one `syncfs` of the store's filesystem)
    /// and renames them into the CAS; a second `syncfs` makes the renames
    /// durable before anything (an action-cache entry) refers to them.
    pub fn install_staged(&self, staged: Vec<Staged>) -> Result<(), StoreError> {
        if staged.is_empty() {
            return Ok(());
        }
        kiln_atomic::syncfs(&self.tmp_dir())?;
        for s in staged {
            let dest = self.blob_path(&s.digest);
            if let Some(shard) = dest.parent() {
                // The closing syncfs makes a new shard durable, too.
                match std::fs::create_dir(shard) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e).ctx("creating directory", shard),
                }
            }
            s.tmp.persist(&dest, Durability::Scratch)?;
        }
        Ok(kiln_atomic::syncfs(&self.tmp_dir())?)
    }

    /// The stored (compressed) size of blob `d`: what an upload of its zstd
    /// form sends.
    pub fn stored_size(&self, d: &Digest) -> Result<u64, StoreError> {
        let path = self.blob_path(d);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::MissingBlob { digest: *d })
            }
            Err(e) => Err(e).ctx("inspecting blob", &path),
        }
    }

    /// The content size of blob `d` (decoding it, which also verifies it).
    pub fn content_size(&self, d: &Digest) -> Result<u64, StoreError> {
        self.decode_verified(d, |_| Ok(()))
    }

    /// A reader over blob `d`'s zstd form that fails (with `InvalidData`)
    /// at the end if the content does not hash to `d`.
    pub fn export_compressed(&self, d: &Digest) -> Result<Export, StoreError> {
        let file = self.open_blob(d)?;
        let remaining = file
            .metadata()
            .ctx("inspecting blob", &self.blob_path(d))?
            .len();
        let check = zstd::stream::write::Decoder::new(HashSink::new())
            .ctx("decoding blob", &self.blob_path(d))?;
        Ok(Export::new(
            self.blob_path(d),
            *d,
            identity(&file),
            ExportInner::Compressed {
                file,
                check,
                remaining,
            },
        ))
    }

    /// A reader over blob `d`'s content that fails (with `InvalidData`) at
    /// the end if it does not hash to `d`.
    pub fn export_raw(&self, d: &Digest) -> Result<Export, StoreError> {
        let file = self.open_blob(d)?;
        let opened = identity(&file);
        let dec = zstd::Decoder::new(file).ctx("decoding blob", &self.blob_path(d))?;
        Ok(Export::new(
            self.blob_path(d),
            *d,
            opened,
            ExportInner::Raw {
                dec,
                sink: HashSink::new(),
            },
        ))
    }

    fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(d);
        match File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::MissingBlob { digest: *d })
            }
            Err(e) => Err(e).ctx("opening blob", &path),
        }
    }
}

/// A file's device and inode.
fn identity(file: &File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

/// A blob on its way out; see [`Store::export_compressed`]. A blob found
/// damaged is removed from the store (as any read does), so that the next
/// build writes it again.
pub struct Export {
    digest: Digest,
    path: std::path::PathBuf,
    /// The opened file's identity: only that file is removed, not one a
    /// concurrent writer has meanwhile renamed into place.
    opened: Option<(u64, u64)>,
    damage: Option<String>,
    inner: ExportInner,
}

enum ExportInner {
    Compressed {
        file: File,
        check: zstd::stream::write::Decoder<'static, HashSink>,
        /// Bytes not yet read. The check runs before the last of them are
        /// handed out: a transport that stops reading once it has sent a
        /// Content-Length's worth never sends a damaged blob whole.
        remaining: u64,
    },
    Raw {
        dec: zstd::Decoder<'static, io::BufReader<File>>,
        sink: HashSink,
    },
}

impl Export {
    fn new(
        path: std::path::PathBuf,
        digest: Digest,
        opened: Option<(u64, u64)>,
        inner: ExportInner,
    ) -> Export {
        Export {
            digest,
            path,
            opened,
            damage: None,
            inner,
        }
    }

    /// Why the blob was found damaged, if it was: a transport that saw its
    /// body fail can tell this (the blob's fault) from a network error.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    fn corrupt(&mut self, why: String) -> io::Error {
        use std::os::unix::fs::MetadataExt;
        let same = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| Some((m.dev(), m.ino())) == self.opened);
        if same {
            let _ = std::fs::remove_file(&self.path);
        }
        let msg = format!(
            "local blob {} is corrupt ({why}); removed {}; not uploaded",
            self.digest,
            self.path.display()
        );
        self.damage = Some(msg.clone());
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }

    fn verify(&mut self) -> io::Result<()> {
        let sink = match &self.inner {
            ExportInner::Compressed { check, .. } => check.get_ref(),
            ExportInner::Raw { sink, .. } => sink,
        };
        let actual = Digest::from(sink.hasher.finalize());
        if actual != self.digest {
            return Err(self.corrupt(format!("content hashes to {actual}")));
        }
        Ok(())
    }
}

impl Read for Export {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(msg) = &self.damage {
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone()));
        }
        // The bytes read, and whether the check is due.
        let (n, last) = match &mut self.inner {
            ExportInner::Compressed {
                file,
                check,
                remaining,
            } => {
                let want = buf
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                let n = if want == 0 {
                    0
                } else {
                    file.read(&mut buf[..want])?
                };
                let decoded = if want > 0 && n == 0 {
                    Err(format!("{remaining} bytes short"))
                } else {
                    *remaining -= n as u64;
                    check
                        .write_all(&buf[..n])
                        .and_then(|()| {
                            if *remaining == 0 {
                                check.flush()
                            } else {
                                Ok(())
                            }
                        })
                        .map_err(|e| e.to_string())
                };
                match decoded {
                    // The last bytes go out only if the whole checks out.
                    Ok(()) => (n, *remaining == 0),
                    Err(why) => return Err(self.corrupt(why)),
                }
            }
            ExportInner::Raw { dec, sink } => match dec.read(buf) {
                Ok(n) => {
                    let _ = sink.write(&buf[..n]);
                    (n, n == 0)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    let why = e.to_string();
                    return Err(self.corrupt(why));
                }
            },
        };
        if last {
            self.verify()?;
        }
        Ok(n)
    }
}
