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
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::sync::Arc;

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
/// The partition hashes run on a second thread, fed the same chunks, so
/// the two SHA-256 passes over most bytes overlap.
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

    let (tx, rx) = mpsc::sync_channel::<(u64, Arc<Vec<u8>>)>(2);
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
            let mut buf = vec![0u8; n];
            if let Err(e) = img.read_exact_at(&mut buf, off) {
                result = Err(e);
                break;
            }
            let buf = Arc::new(buf);
            if tx.send((off, Arc::clone(&buf))).is_err() {
                break;
            }
            whole.update(&buf[..]);
            if let Err(e) = enc.write_all(&buf) {
                result = Err(e);
                break;
            }
            off += n as u64;
        }
        drop(tx);
        let sums = hasher
            .join()
            .map_err(|_| io::Error::other("the partition hashing thread panicked"))?;
        result?;
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
