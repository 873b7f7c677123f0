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

use super::error::ImageError;

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
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    };
    fs::create_dir_all(out_dir).map_err(io("creating", out_dir))?;
    let (img, zst, json, stamp) = paths(out_dir, board);

    let stored_json = stored.join(super::STORED_MANIFEST);
    copy_atomic(&stored_json, &json).map_err(io("copying the manifest to", &json))?;
    let stored_zst = stored.join(super::STORED_IMAGE);
    link_or_copy(&stored_zst, &zst).map_err(io("copying the compressed image to", &zst))?;

    let image_written = match fresh {
        Some(f) => {
            let _ = fs::remove_file(&stamp);
            move_into_place(f, &img).map_err(io("moving the image to", &img))?;
            true
        }
        None if stamp_matches(&stamp, &img, key) => false,
        None => {
            let _ = fs::remove_file(&stamp);
            expand(&stored_zst, &img).map_err(io("expanding the image to", &img))?;
            true
        }
    };
    write_stamp(&stamp, &img, key).map_err(io("writing", &stamp))?;
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

fn write_stamp(stamp: &Path, img: &Path, key: &str) -> io::Result<()> {
    let text = stamp_text(img, key)?;
    let tmp = tmp_name(stamp);
    fs::write(&tmp, text)?;
    fs::rename(&tmp, stamp)
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Runs `write` on a temporary file next to `dest`, syncs it and renames
/// it over `dest`; the temporary is removed on any error.
fn atomically(dest: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let tmp = tmp_name(dest);
    let r = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

fn copy_atomic(from: &Path, to: &Path) -> io::Result<()> {
    atomically(to, |f| {
        io::copy(&mut File::open(from)?, f)?;
        Ok(())
    })
}

/// A hard link to the store's copy when possible (same filesystem), else
/// a copy; the store's files are read-only, so sharing them is safe.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    if let (Ok(a), Ok(b)) = (fs::metadata(from), fs::metadata(to)) {
        if a.dev() == b.dev() && a.ino() == b.ino() {
            return Ok(());
        }
    }
    let tmp = tmp_name(to);
    let _ = fs::remove_file(&tmp);
    match fs::hard_link(from, &tmp) {
        Ok(()) => fs::rename(&tmp, to).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        }),
        Err(_) => copy_atomic(from, to),
    }
}

/// Renames `from` to `to`, or copies it sparsely when they are on
/// different filesystems.
fn move_into_place(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            atomically(to, |f| sparse_copy(&mut File::open(from)?, f))?;
            fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// Decompresses a `.img.zst` into a sparse image.
pub fn expand(zst: &Path, to: &Path) -> io::Result<()> {
    atomically(to, |f| {
        let mut dec = zstd::stream::read::Decoder::new(File::open(zst)?)?;
        sparse_copy(&mut dec, f)
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
        atomically(&dest, |f| sparse_copy(&mut &data[..], f)).expect("copy");
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
        write_stamp(&stamp, &img, "k1").expect("stamp");
        assert!(stamp_matches(&stamp, &img, "k1"));
        assert!(!stamp_matches(&stamp, &img, "k2"));
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&img, b"two").expect("write");
        assert!(!stamp_matches(&stamp, &img, "k1"));
    }
}
