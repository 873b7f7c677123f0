//! One pass over the finished image: SHA-256 of the whole image and of
//! each partition's range, and the `.zst`.
//!
//! Reading the image back (rather than hashing the inputs as they are
//! copied) makes the sums describe exactly the bytes a device will hold,
//! including the zeros of holes and padding: `dd` of a partition's range
//! piped to `sha256sum` gives the partition sum.
//!
//! The `.zst` is written with zstd's multi-threaded compressor. Its output
//! depends on the level and the job size zstd derives from it, not on the
//! number of workers (as long as there is at least one, which is always
//! the case here), so the `.zst` is the same on a 2-core builder and a
//! 64-core one.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

const CHUNK: usize = 4 << 20;

pub(crate) struct Sums {
    pub image: [u8; 32],
    /// In the order of the ranges passed in.
    pub ranges: Vec<[u8; 32]>,
    pub compressed_bytes: u64,
}

/// Reads `len` bytes of `img`, hashing the whole and each `[start, end)`
/// byte range, and compresses them into `zst`.
///
/// The partition hashes run on a second thread, fed the same chunks after
/// the main thread has hashed and compressed them, so the two SHA-256
/// passes over most bytes overlap.
pub(crate) fn hash_and_compress(
    img: &File,
    len: u64,
    ranges: &[(u64, u64)],
    zst: &File,
    level: i32,
    workers: u32,
) -> io::Result<Sums> {
    let mut enc = zstd::stream::write::Encoder::new(BufWriter::new(zst), level)?;
    enc.multithread(workers.max(1))?;
    enc.include_checksum(true)?;
    enc.set_pledged_src_size(Some(len))?;

    // Chunks go main thread -> partition hasher -> back to the main thread
    // for reuse: fresh 4 MiB allocations would cost a page fault per page
    // on every read.
    const BUFFERS: usize = 3;
    let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(BUFFERS);
    let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        free_tx
            .send(vec![0u8; CHUNK])
            .map_err(|_| io::Error::other("buffer pool closed"))?;
    }
    let owned: Vec<(u64, u64)> = ranges.to_vec();
    let (image, ranges_sums) = std::thread::scope(|s| -> io::Result<_> {
        let hasher = s.spawn(move || {
            let mut hs: Vec<Sha256> = owned.iter().map(|_| Sha256::new()).collect();
            for (off, chunk) in rx {
                let end = off + chunk.len() as u64;
                for (h, &(a, b)) in hs.iter_mut().zip(&owned) {
                    let (lo, hi) = (a.max(off), b.min(end));
                    if lo < hi {
                        h.update(&chunk[(lo - off) as usize..(hi - off) as usize]);
                    }
                }
                // The main thread may have stopped early; then the buffer
                // is simply dropped.
                let _ = free_tx.send(chunk);
            }
            hs.into_iter()
                .map(|h| h.finalize().into())
                .collect::<Vec<[u8; 32]>>()
        });
        let mut whole = Sha256::new();
        let mut off = 0u64;
        let mut result = Ok(());
        while off < len {
            let n = (len - off).min(CHUNK as u64) as usize;
            let Ok(mut buf) = free_rx.recv() else {
                break;
            };
            buf.resize(n, 0);
            if next_data(img, off, len) >= off + n as u64 {
                // A hole: zeros, without the read (reading holes runs
                // well below memory speed on some hosts).
                buf.fill(0);
            } else if let Err(e) = img.read_exact_at(&mut buf, off) {
                result = Err(e);
                break;
            }
            whole.update(&buf);
            if let Err(e) = enc.write_all(&buf) {
                result = Err(e);
                break;
            }
            if tx.send((off, buf)).is_err() {
                break;
            }
            off += n as u64;
        }
        drop(tx);
        let sums = hasher
            .join()
            .map_err(|_| io::Error::other("the partition hashing thread panicked"))?;
        result?;
        if off < len {
            return Err(io::Error::other(
                "the partition hashing thread stopped early",
            ));
        }
        Ok((whole.finalize().into(), sums))
    })?;
    let mut out = enc.finish()?;
    out.flush()?;
    drop(out);
    let compressed_bytes = zst.metadata()?.len();
    Ok(Sums {
        image,
        ranges: ranges_sums,
        compressed_bytes,
    })
}

/// The first offset at or after `off` that may hold data (`len` when only
/// a hole follows). When the filesystem cannot tell, `off` itself: the
/// caller then reads, which is always correct.
fn next_data(img: &File, off: u64, len: u64) -> u64 {
    let Ok(at) = libc::off_t::try_from(off) else {
        return off;
    };
    // SAFETY: lseek only reads the descriptor, which `img` keeps open for
    // the duration of the call; the file position it moves is not used
    // (every read here is positioned).
    let r = unsafe { libc::lseek(img.as_raw_fd(), at, libc::SEEK_DATA) };
    if r >= 0 {
        return r as u64;
    }
    match io::Error::last_os_error().raw_os_error() {
        // No data at or after `off`.
        Some(libc::ENXIO) => len,
        _ => off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8], workers: u32) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, data).unwrap();
        let zst = File::create(dir.path().join("zst")).unwrap();
        let sums = hash_and_compress(
            &File::open(&img).unwrap(),
            data.len() as u64,
            &[(0, 10), (5, 20)],
            &zst,
            3,
            workers,
        )
        .unwrap();
        assert_eq!(sums.image, <[u8; 32]>::from(Sha256::digest(data)));
        assert_eq!(
            sums.ranges[1],
            <[u8; 32]>::from(Sha256::digest(&data[5..20]))
        );
        std::fs::read(dir.path().join("zst")).unwrap()
    }

    #[test]
    fn zst_does_not_depend_on_the_worker_count() {
        // Several zstd jobs' worth of compressible, non-trivial data.
        let data: Vec<u8> = (0u32..24 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 27) as u8 & (i >> 12) as u8)
            .collect();
        let one = compress(&data, 1);
        let three = compress(&data, 3);
        assert!(one == three, "{} vs {} bytes", one.len(), three.len());
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }
}
