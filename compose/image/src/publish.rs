//! Putting an image into `out/`: `<board>.img` (sparse), `<board>.img.zst`
//! and `<board>.json`.
//!
//! The store keeps the compressed image and the manifest (a few tens of
//! MB); the sparse `.img` lives only in `out/`. A cache hit therefore
//! leaves an untouched `.img` alone — a stamp records the key and the
//! file's size and mtime — and only re-expands it from the `.zst` when it
//! is missing, from another key, or was changed (e.g. `kiln run --persist`).
//! Every file appears under its final name complete or not at all.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_atomic::Durability;

use crate::error::ImageError;
use crate::write::io_err;

/// Every `out/` file is written durably through a temporary beside it.
fn durable<T>(
    out: &Path,
    write: impl FnOnce(&mut File) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    kiln_atomic::write_with(out, Durability::Durable, write)
}

/// What `out/` holds for a board after publishing.
#[derive(Clone, Debug)]
pub struct Published {
    pub image: PathBuf,
    pub compressed: PathBuf,
    pub manifest: PathBuf,
    /// Whether `.img` had to be written (fresh build or re-expansion).
    pub image_written: bool,
}

/// Where the files go.
pub fn paths(out_dir: &Path, board: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        out_dir.join(format!("{board}.img")),
        out_dir.join(format!("{board}.img.zst")),
        out_dir.join(format!("{board}.json")),
        out_dir.join(format!(".{board}.img.stamp")),
    )
}

/// Publishes the image with `key` from the store output directory
/// `stored` (holding `disk.img.zst` and `image.json`). `fresh` is the
/// sparse image a build just wrote, moved into place instead of expanded.
pub fn publish(
    out_dir: &Path,
    board: &str,
    key: &str,
    stored: &Path,
    fresh: Option<&Path>,
) -> Result<Published, ImageError> {
    fs::create_dir_all(out_dir).map_err(io_err("creating", out_dir))?;
    let (img, zst, json, stamp) = paths(out_dir, board);

    let stored_json = stored.join(crate::STORED_MANIFEST);
    durable(&json, |f| {
        let mut from = File::open(&stored_json).map_err(io_err("reading", &stored_json))?;
        io::copy(&mut from, f).map_err(io_err("copying the manifest to", &json))?;
        Ok(())
    })?;
    let stored_zst = stored.join(crate::STORED_IMAGE);
    link_or_copy(&stored_zst, &zst)?;

    let image_written = match fresh {
        Some(f) => {
            let _ = fs::remove_file(&stamp);
            move_into_place(f, &img)?;
            true
        }
        None if stamp_matches(&stamp, &img, key) => false,
        None => {
            let _ = fs::remove_file(&stamp);
            expand(&stored_zst, &img)?;
            true
        }
    };
    let text = stamp_text(&img, key).map_err(io_err("reading", &img))?;
    durable(&stamp, |f| {
        f.write_all(text.as_bytes())
            .map_err(io_err("writing", &stamp))
    })?;
    Ok(Published {
        image: img,
        compressed: zst,
        manifest: json,
        image_written,
    })
}

fn stamp_text(img: &Path, key: &str) -> io::Result<String> {
    let m = fs::metadata(img)?;
    Ok(format!(
        "{key} {} {} {}.{}\n",
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

fn stamp_matches(stamp: &Path, img: &Path, key: &str) -> bool {
    match (fs::read_to_string(stamp), stamp_text(img, key)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A hard link to the store's copy when possible (same filesystem), else
/// a copy; the store's files are read-only, so sharing them is safe.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), ImageError> {
    if let (Ok(a), Ok(b)) = (fs::metadata(from), fs::metadata(to)) {
        if a.dev() == b.dev() && a.ino() == b.ino() {
            return Ok(());
        }
    }
    if kiln_atomic::hard_link(from, to, Durability::Durable).is_ok() {
        return Ok(());
    }
    durable(to, |f| {
        let mut src = File::open(from).map_err(io_err("reading", from))?;
        io::copy(&mut src, f).map_err(io_err("copying to", to))?;
        Ok(())
    })
}

/// Renames `from` to `to`, or copies it sparsely when they are on
/// different filesystems.
fn move_into_place(from: &Path, to: &Path) -> Result<(), ImageError> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            durable(to, |f| {
                let mut src = File::open(from).map_err(io_err("reading", from))?;
                sparse_copy(&mut src, f).map_err(io_err("copying to", to))
            })?;
            fs::remove_file(from).map_err(io_err("removing", from))
        }
        Err(e) => Err(io_err("moving the image to", to)(e)),
    }
}

/// Decompresses a `.img.zst` into a sparse image.
pub fn expand(zst: &Path, to: &Path) -> Result<(), ImageError> {
    durable(to, |f| {
        let file = File::open(zst).map_err(io_err("reading", zst))?;
        let mut dec =
            zstd::stream::read::Decoder::new(file).map_err(io_err("decompressing", zst))?;
        sparse_copy(&mut dec, f).map_err(io_err("expanding the image to", to))
    })
}

/// Copies `from` into `to`, seeking over all-zero 4 KiB blocks so they
/// stay holes, and sets the final length.
fn sparse_copy(from: &mut impl Read, to: &mut File) -> io::Result<()> {
    const BLOCK: usize = 4096;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos: u64 = 0;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match from.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        let mut i = 0;
        while i < filled {
            let end = (i + BLOCK).min(filled);
            if buf[i..end].iter().all(|&b| b == 0) {
                i = end;
                continue;
            }
            // A run of non-zero blocks is written in one call.
            let mut j = end;
            while j < filled {
                let e = (j + BLOCK).min(filled);
                if buf[j..e].iter().all(|&b| b == 0) {
                    break;
                }
                j = e;
            }
            to.seek(SeekFrom::Start(pos + i as u64))?;
            to.write_all(&buf[i..j])?;
            i = j;
        }
        pos += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    to.set_len(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_bytes_and_makes_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut data = vec![0u8; 8 << 20];
        data[5] = 1;
        data[3 << 20] = 7;
        let last = data.len() - 1;
        data[last] = 9;
        let dest = dir.path().join("img");
        durable(&dest, |f| {
            sparse_copy(&mut &data[..], f).map_err(io_err("copying", &dest))
        })
        .expect("copy");
        assert_eq!(fs::read(&dest).expect("read"), data);
        let blocks = fs::metadata(&dest).expect("meta").blocks();
        assert!(blocks * 512 < 1 << 20, "not sparse: {} blocks", blocks);
    }

    #[test]
    fn stamp_detects_a_changed_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("b.img");
        let stamp = dir.path().join(".b.img.stamp");
        fs::write(&img, b"one").expect("write");
        fs::write(&stamp, stamp_text(&img, "k1").expect("stamp")).expect("stamp");
        assert!(stamp_matches(&stamp, &img, "k1"));
        assert!(!stamp_matches(&stamp, &img, "k2"));
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&img, b"two").expect("write");
        assert!(!stamp_matches(&stamp, &img, "k1"));
    }
}
