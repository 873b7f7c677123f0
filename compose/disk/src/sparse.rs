//! Copying into the image without writing zeros.
//!
//! The image file starts as one hole of its full size (`set_len`), so an
//! all-zero block needs no write at all: skipping it keeps the image sparse
//! (an empty 192 MiB data partition costs nothing on the build host) and
//! saves the I/O. Blocks are 4 KiB, the page and filesystem block size, so
//! a skipped block is a block the filesystem never allocates.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

pub(crate) const BLOCK: usize = 4096;
const CHUNK: usize = 1 << 20;

/// Which side of a copy failed.
#[derive(Debug)]
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies at most `max` bytes from `src` into `dst` at `offset`, writing
/// only the 4 KiB blocks (counted from `offset`) that hold a non-zero
/// byte. Returns the bytes copied and the bytes actually written.
pub(crate) fn copy_sparse(
    src: &mut impl Read,
    dst: &File,
    offset: u64,
    max: u64,
) -> Result<(u64, u64), CopyError> {
    let put = |data: &[u8], at: u64| dst.write_all_at(data, at).map_err(CopyError::Write);
    let mut buf = vec![0u8; CHUNK];
    let mut copied = 0u64;
    let mut written = 0u64;
    while copied < max {
        let want = (max - copied).min(CHUNK as u64) as usize;
        let n = read_full(src, &mut buf[..want]).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        let data = &buf[..n];
        // Coalesce runs of non-zero blocks into one write each.
        let mut run: Option<usize> = None;
        let mut pos = 0;
        while pos < n {
            let end = (pos + BLOCK).min(n);
            let zero = is_zero(&data[pos..end]);
            match (zero, run) {
                (false, None) => run = Some(pos),
                (true, Some(start)) => {
                    put(&data[start..pos], offset + copied + start as u64)?;
                    written += (pos - start) as u64;
                    run = None;
                }
                _ => {}
            }
            pos = end;
        }
        if let Some(start) = run {
            put(&data[start..n], offset + copied + start as u64)?;
            written += (n - start) as u64;
        }
        copied += n as u64;
        if n < want {
            break;
        }
    }
    Ok((copied, written))
}

/// Reads until `buf` is full or the input ends.
pub(crate) fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Branch-free OR over the block, which compiles to SIMD; faster than an
/// early-exit loop on the zero blocks that dominate.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |acc, &x| acc | x) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn skips_zero_blocks_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(8 << 20).unwrap();
        let mut src = vec![0u8; 3 << 20];
        src[5] = 1;
        src[(2 << 20) + 4096 * 3 + 7] = 2;
        src[(3 << 20) - 1] = 3;
        let (copied, written) = copy_sparse(&mut &src[..], &f, 1 << 20, 8 << 20).unwrap();
        assert_eq!(copied, 3 << 20);
        assert_eq!(written, 3 * 4096);
        let all = std::fs::read(&path).unwrap();
        assert!(all[..1 << 20].iter().all(|&b| b == 0));
        assert_eq!(&all[1 << 20..4 << 20], &src[..]);
        assert!(f.metadata().unwrap().blocks() * 512 <= 64 << 10);
        // `max` limits the copy.
        let (copied, _) = copy_sparse(&mut &src[..], &f, 0, 100).unwrap();
        assert_eq!(copied, 100);
    }
}
