//! Out of the store into a build tree: stored sources copied as they are,
//! or archives unpacked by their magic bytes (gz, bz2, xz, zst, plain
//! tar) with every path checked, so no archive writes outside its
//! destination.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use kiln_store::{Digest, Store, StoreError};

use crate::FetchError;

/// Copies a stored source as it is (`unpack: false`).
pub fn copy_file(store: &Store, digest: &Digest, dest: &Path) -> Result<(), FetchError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|source| FetchError::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    store
        .copy_to(digest, dest)
        .map_err(|source| FetchError::Store {
            what: format!("copying {digest} to {}", dest.display()),
            source,
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    Tar,
}

/// Recognises an archive by its first bytes; file names lie, magic doesn't.
fn detect(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Format::Gzip)
    } else if head.starts_with(b"BZh") {
        Some(Format::Bzip2)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Format::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Format::Zstd)
    } else if head.get(257..262) == Some(b"ustar") || is_v7_tar_header(head) {
        Some(Format::Tar)
    } else {
        None
    }
}

/// Pre-POSIX tar headers have no magic; their checksum is what identifies them.
fn is_v7_tar_header(head: &[u8]) -> bool {
    let Some(header) = head.get(..512) else {
        return false;
    };
    if header[0] == 0 {
        return false;
    }
    let field = &header[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let Some(recorded) = std::str::from_utf8(&digits)
        .ok()
        .and_then(|d| u32::from_str_radix(d, 8).ok())
    else {
        return false;
    };
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == recorded
}

/// Unpacks the stored archive `digest` into `dest`, dropping `strip` leading
/// path components.
///
/// Entries with absolute paths or `..` are refused, and nothing is written
/// through a symlink the archive created, so an archive cannot write outside
/// `dest`. Modes are kept (permission bits only: a source tree has no use for
/// setuid bits, and installed files get theirs from `permissions`); owners
/// and times are not, since outputs are normalised later anyway.
pub fn unpack(store: &Store, digest: &Digest, dest: &Path, strip: u32) -> Result<(), FetchError> {
    let label = digest.to_hex();
    read_blob(store, digest, dest, |blob| {
        unpack_reader(blob, &label, dest, strip)
    })
}

/// Unpacks the stored Debian binary package `digest` into `dest`: its
/// `data.tar.*` member, as `dpkg-deb --extract` does (no maintainer
/// scripts run), with the same checks as [`unpack`].
pub fn unpack_deb(store: &Store, digest: &Digest, dest: &Path) -> Result<(), FetchError> {
    let label = digest.to_hex();
    let not_a_deb = |reason: String| FetchError::NotADeb {
        digest: label.clone(),
        reason,
    };
    read_blob(store, digest, dest, |blob| {
        let mut archive = ar::Archive::new(blob);
        let mut data = false;
        while let Some(entry) = archive.next_entry() {
            let entry = entry.map_err(|e| not_a_deb(format!("not an ar archive: {e}")))?;
            if entry.header().identifier().starts_with(b"data.tar") {
                if data {
                    return Err(not_a_deb("two data.tar members".into()));
                }
                data = true;
                unpack_reader(entry, &label, dest, 0)?;
            }
        }
        if data {
            Ok(())
        } else {
            Err(not_a_deb("no data.tar member".into()))
        }
    })
}

/// Streams the stored blob `digest` to `read`, hashing it on the way (what
/// `read` leaves is drained), then checks the hash. Streamed straight from
/// the compressed blob, so a kernel tarball is never held in memory.
fn read_blob(
    store: &Store,
    digest: &Digest,
    dest: &Path,
    read: impl FnOnce(&mut dyn Read) -> Result<(), FetchError>,
) -> Result<(), FetchError> {
    let label = digest.to_hex();
    let path = store.blob_path(digest);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FetchError::Store {
                what: format!("unpacking into {}", dest.display()),
                source: StoreError::MissingBlob { digest: *digest },
            })
        }
        Err(source) => return Err(FetchError::Io { path, source }),
    };
    let result = zstd::stream::read::Decoder::new(file)
        .map_err(|source| FetchError::Corrupt {
            digest: label.clone(),
            source,
        })
        .and_then(|decoder| {
            let mut blob = HashingReader {
                inner: decoder,
                hasher: blake3::Hasher::new(),
            };
            read(&mut blob)?;
            // The archive may end before the blob does (tar padding).
            io::copy(&mut blob, &mut io::sink()).map_err(|source| FetchError::Corrupt {
                digest: label.clone(),
                source,
            })?;
            if Digest::from(blob.hasher.finalize()) == *digest {
                Ok(())
            } else {
                Err(FetchError::Corrupt {
                    digest: label.clone(),
                    source: io::Error::other("the stored blob does not match its digest"),
                })
            }
        });
    match result {
        // A damaged blob shows up as an undecodable archive or a wrong hash;
        // let the store verify it, which also removes it so the next fetch
        // downloads it again. If it is intact, the archive itself is broken.
        Err(err @ (FetchError::Corrupt { .. } | FetchError::NotADeb { .. })) => {
            match store.get_bytes(digest) {
                Err(source) => Err(FetchError::Store {
                    what: format!("unpacking into {}", dest.display()),
                    source,
                }),
                Ok(_) => Err(err),
            }
        }
        other => other,
    }
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn unpack_reader<'r, R: Read + 'r>(
    mut reader: R,
    label: &str,
    dest: &Path,
    strip: u32,
) -> Result<(), FetchError> {
    let corrupt = |source| FetchError::Corrupt {
        digest: label.to_owned(),
        source,
    };
    let head = read_head(&mut reader, 512).map_err(corrupt)?;
    let format = detect(&head).ok_or_else(|| FetchError::UnknownFormat {
        digest: label.to_owned(),
        magic: hex::encode(&head[..head.len().min(8)]),
    })?;
    let stream = Cursor::new(head).chain(reader);
    let decoded: Box<dyn Read + 'r> = match format {
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Format::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(stream)),
        Format::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(stream)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(stream).map_err(corrupt)?),
        Format::Tar => Box::new(stream),
    };
    fs::create_dir_all(dest).map_err(|source| FetchError::Io {
        path: dest.to_owned(),
        source,
    })?;
    Extractor::new(label, dest, strip).run(decoded)
}

/// Reads up to `n` bytes, fewer only at end of input.
fn read_head(reader: &mut dyn Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    reader.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// An archive path made relative and stripped, or why it is refused.
/// `Ok(None)` means nothing is left after stripping.
fn clean_path(raw: &Path, strip: u32) -> Result<Option<PathBuf>, &'static str> {
    let mut out = PathBuf::new();
    let mut skipped = 0;
    for component in raw.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err("absolute path"),
            Component::ParentDir => return Err("path contains `..`"),
            Component::CurDir => {}
            Component::Normal(_) if skipped < strip => skipped += 1,
            Component::Normal(name) => out.push(name),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

struct Extractor<'a> {
    label: &'a str,
    dest: &'a Path,
    strip: u32,
    /// Relative directories known to be real directories (not symlinks).
    dirs: HashSet<PathBuf>,
    /// Directory modes, applied at the end so read-only directories can
    /// still be filled.
    dir_modes: Vec<(PathBuf, u32)>,
}

impl<'a> Extractor<'a> {
    fn new(label: &'a str, dest: &'a Path, strip: u32) -> Extractor<'a> {
        Extractor {
            label,
            dest,
            strip,
            dirs: HashSet::new(),
            dir_modes: Vec::new(),
        }
    }

    fn run(mut self, input: Box<dyn Read + '_>) -> Result<(), FetchError> {
        let mut archive = tar::Archive::new(input);
        let entries = archive.entries().map_err(|source| FetchError::Corrupt {
            digest: self.label.to_owned(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| FetchError::Corrupt {
                digest: self.label.to_owned(),
                source,
            })?;
            self.entry(entry)?;
        }
        self.dir_modes
            .sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (rel, mode) in std::mem::take(&mut self.dir_modes) {
            let full = self.dest.join(&rel);
            // Only if it is still the directory we made (not since replaced
            // by a symlink, which chmod would follow).
            let is_dir = fs::symlink_metadata(&full)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if is_dir {
                fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                    .map_err(|source| self.unpack_err(&rel, source))?;
            }
        }
        Ok(())
    }

    fn unpack_err(&self, entry: &Path, source: io::Error) -> FetchError {
        FetchError::Unpack {
            digest: self.label.to_owned(),
            entry: entry.to_owned(),
            source,
        }
    }

    fn refuse(&self, entry: &Path, reason: impl Into<String>) -> FetchError {
        FetchError::UnsafeEntry {
            digest: self.label.to_owned(),
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), FetchError> {
        let raw = entry
            .path()
            .map_err(|source| FetchError::Corrupt {
                digest: self.label.to_owned(),
                source,
            })?
            .into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let Some(rel) = clean_path(&raw, self.strip).map_err(|why| self.refuse(&raw, why))? else {
            return Ok(());
        };
        // Only read for the kinds that use it: archivers often leave the
        // field empty on links.
        let mode = |entry: &tar::Entry<'_, R>| {
            entry
                .header()
                .mode()
                .map(|m| m & 0o777)
                .map_err(|source| self.unpack_err(&raw, source))
        };
        let full = self.dest.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                let mode = mode(&entry)?;
                self.ensure_dir(&raw, &rel)?;
                self.dir_modes.push((rel, mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mode = mode(&entry)?;
                self.prepare(&raw, &rel)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&full)
                    .map_err(|source| self.unpack_err(&raw, source))?;
                io::copy(&mut entry, &mut file).map_err(|source| self.unpack_err(&raw, source))?;
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|source| self.unpack_err(&raw, source))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|source| self.unpack_err(&raw, source))?
                    .ok_or_else(|| self.refuse(&raw, "symlink without a target"))?
                    .into_owned();
                self.prepare(&raw, &rel)?;
                std::os::unix::fs::symlink(&target, &full)
                    .map_err(|source| self.unpack_err(&raw, source))?;
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(|source| self.unpack_err(&raw, source))?
                    .ok_or_else(|| self.refuse(&raw, "hard link without a target"))?
                    .into_owned();
                let target = clean_path(&target_raw, self.strip)
                    .map_err(|why| {
                        self.refuse(
                            &raw,
                            format!("hard link target `{}`: {why}", target_raw.display()),
                        )
                    })?
                    .ok_or_else(|| {
                        self.refuse(
                            &raw,
                            format!(
                                "hard link target `{}` is empty after stripping {} components",
                                target_raw.display(),
                                self.strip
                            ),
                        )
                    })?;
                if target == rel {
                    return Ok(());
                }
                if let Some(parent) = target.parent() {
                    self.check_dirs(&raw, parent)?;
                }
                self.prepare(&raw, &rel)?;
                fs::hard_link(self.dest.join(&target), &full)
                    .map_err(|source| self.unpack_err(&raw, source))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(self.refuse(&raw, "device nodes and fifos are not unpacked"));
            }
            other => {
                return Err(self.refuse(
                    &raw,
                    format!("unknown entry type {:?}", char::from(other.as_byte())),
                ));
            }
        }
        Ok(())
    }

    /// Makes `rel`'s parent a real directory and removes whatever is at `rel`,
    /// so a non-directory entry can be created there.
    fn prepare(&mut self, raw: &Path, rel: &Path) -> Result<(), FetchError> {
        if let Some(parent) = rel.parent() {
            self.ensure_dir(raw, parent)?;
        }
        let full = self.dest.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {
                // Only an empty one: replacing a tree would lose entries.
                fs::remove_dir(&full).map_err(|source| self.unpack_err(raw, source))?;
                self.dirs.remove(rel);
            }
            Ok(_) => fs::remove_file(&full).map_err(|source| self.unpack_err(raw, source))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(self.unpack_err(raw, source)),
        }
        Ok(())
    }

    /// Makes every prefix of `rel` a directory, refusing to go through a
    /// symlink: that is how an archive would otherwise write outside `dest`.
    fn ensure_dir(&mut self, raw: &Path, rel: &Path) -> Result<(), FetchError> {
        self.walk_dirs(raw, rel, true)
    }

    /// Like `ensure_dir` but creates nothing (for hard link targets).
    fn check_dirs(&mut self, raw: &Path, rel: &Path) -> Result<(), FetchError> {
        self.walk_dirs(raw, rel, false)
    }

    fn walk_dirs(&mut self, raw: &Path, rel: &Path, create: bool) -> Result<(), FetchError> {
        if rel.as_os_str().is_empty() || self.dirs.contains(rel) {
            return Ok(());
        }
        let mut cur = PathBuf::new();
        for component in rel.components() {
            cur.push(component);
            if self.dirs.contains(&cur) {
                continue;
            }
            let full = self.dest.join(&cur);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(self.refuse(
                        raw,
                        format!(
                            "`{}` is a symlink; refusing to write through it",
                            cur.display()
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(self.unpack_err(
                        raw,
                        io::Error::other(format!("`{}` is not a directory", cur.display())),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&full).map_err(|source| self.unpack_err(raw, source))?;
                }
                Err(source) => return Err(self.unpack_err(raw, source)),
            }
            self.dirs.insert(cur.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_stripped() {
        let clean = |p: &str, n| clean_path(Path::new(p), n);
        assert_eq!(clean("./a/b/c", 1), Ok(Some(PathBuf::from("b/c"))));
        assert_eq!(clean("a/", 1), Ok(None));
        assert_eq!(clean("a/../b", 0), Err("path contains `..`"));
        assert_eq!(clean("/etc/passwd", 1), Err("absolute path"));
    }

    #[test]
    fn formats_are_detected_by_magic() {
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(detect(&tar), Some(Format::Tar));
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Some(Format::Gzip));
        assert_eq!(detect(b"BZh91AY"), Some(Format::Bzip2));
        assert_eq!(detect(b"\xfd7zXZ\x00\x00"), Some(Format::Xz));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some(Format::Zstd));
        assert_eq!(detect(b"PK\x03\x04"), None);
    }
}
