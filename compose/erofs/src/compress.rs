//! LZ4 compression into EROFS's fixed-size physical clusters.
//!
//! EROFS compresses with *fixed-size output*: every physical cluster
//! (pcluster) is exactly one 4 KiB block, filled with as much of the file as
//! LZ4 can squeeze into it, so an extent may start anywhere inside a logical
//! cluster. That beats fixed-size input (compress each 4 KiB alone), which
//! could never save a block per block. It needs an encoder with a
//! *destination size* mode — stop when the output is full and say how much
//! input it took — which is liblz4's `LZ4_compress_destSize` and
//! `LZ4_compress_HC_destSize`, used here through the `lzzzz` binding. The
//! pure-Rust `lz4_flex` has no such mode and no HC match finder, and
//! emulating destSize by re-compressing prefixes would cost many passes per
//! block; the HC encoder at level 9 is also what `mkfs.erofs -zlz4hc` uses,
//! so ratios are the real LZ4HC ones.
//!
//! A pcluster that would not hold more than a block of content stores the
//! content as is. The last extent of a file is also prepared for tail
//! packing (stored inline after the inode rather than in a block): as LZ4
//! when that is shorter, as is otherwise.
//!
//! Every pcluster is decompressed again and compared before it is accepted:
//! a mismatch is an encoder bug that would otherwise ship as silent image
//! corruption, and LZ4 decompression costs a fraction of compression.

use crate::error::ErofsError;
use crate::format::BLOCK_SIZE;
use crate::source::Source;

/// The most file content one pcluster may expand to. LZ4 could describe
/// about 1 MiB of zeros in 4 KiB, and kernels accept up to 12 MiB, but a
/// read of any byte decompresses from its extent's start: this bounds the
/// work of one random read while leaving the ratios of real data untouched.
pub const MAX_EXTENT: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Lz4,
    Lz4hc(i32),
}

/// A run of file content stored in one pcluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Offset in the file.
    pub start: u64,
    pub len: u32,
    /// LZ4 data, or the content itself (when LZ4 would not fit more than a
    /// block's worth of content into the block).
    pub compressed: bool,
}

/// A compressed file: one block per extent, in file order.
#[derive(Debug, Default)]
pub struct Compressed {
    pub extents: Vec<Extent>,
    pub blocks: Vec<u8>,
    /// The last extent as it would be stored inline after the inode
    /// (tail packing): its LZ4 stream without padding, or its content when
    /// that is not longer.
    pub tail: Vec<u8>,
    /// Whether `tail` is LZ4.
    pub tail_compressed: bool,
}

impl Compressed {
    pub fn block_count(&self) -> u64 {
        self.extents.len() as u64
    }
}

/// Compresses a whole file of `size` bytes.
pub fn compress(
    src: &mut Source<'_>,
    size: u64,
    algo: Algorithm,
) -> Result<Compressed, ErofsError> {
    let mut out = Compressed::default();
    // window[head..filled] is the content from offset `start` on, refilled
    // to up to two extents' worth whenever less than one is left, so moving
    // the unconsumed rest to the front happens once per MAX_EXTENT of input.
    let cap = usize::try_from(size).map_or(2 * MAX_EXTENT, |s| s.min(2 * MAX_EXTENT));
    let mut window = vec![0u8; cap];
    let (mut head, mut filled) = (0usize, 0usize);
    let mut start = 0u64;
    let mut dst = vec![0u8; BLOCK_SIZE];
    let mut check = vec![0u8; cap.min(MAX_EXTENT)];
    while start < size {
        let remaining = size - start;
        let want = remaining.min(MAX_EXTENT as u64) as usize;
        if filled - head < want {
            window.copy_within(head..filled, 0);
            filled -= head;
            head = 0;
            let target = remaining.min(cap as u64) as usize;
            src.fill(&mut window[filled..target])?;
            filled = target;
        }
        let input = &window[head..head + want];
        // Content that fits a block anyway is stored as is: compressing it
        // saves nothing and would only cost decompression.
        let packed = if want > BLOCK_SIZE {
            pack(input, algo, &mut dst, &mut check).map_err(|detail| ErofsError::Compress {
                path: src.path().to_string(),
                detail,
            })?
        } else {
            None
        };
        let block_start = out.blocks.len();
        out.blocks.extend_from_slice(&[0u8; BLOCK_SIZE]);
        let block = &mut out.blocks[block_start..];
        let (len, compressed) = match packed {
            Some((read, wrote)) => {
                // Zero padding first, the LZ4 stream flush with the end.
                block[BLOCK_SIZE - wrote..].copy_from_slice(&dst[..wrote]);
                if read == want && want as u64 == remaining {
                    out.tail = dst[..wrote].to_vec();
                    out.tail_compressed = true;
                }
                (read, true)
            }
            None => {
                let len = want.min(BLOCK_SIZE);
                block[..len].copy_from_slice(&input[..len]);
                if len as u64 == remaining {
                    let raw = &input[..len];
                    let packed =
                        pack_all(raw, algo, &mut check).map_err(|detail| ErofsError::Compress {
                            path: src.path().to_string(),
                            detail,
                        })?;
                    out.tail_compressed = packed.is_some();
                    out.tail = packed.unwrap_or_else(|| raw.to_vec());
                }
                (len, false)
            }
        };
        out.extents.push(Extent {
            start,
            len: len as u32,
            compressed,
        });
        head += len;
        start += len as u64;
    }
    Ok(out)
}

/// Compresses a prefix of `input` into one block. Returns the content and
/// LZ4 lengths, or `None` when the block would hold no more than a block of
/// content (storing it as is is then as small, and free to read).
fn pack(
    input: &[u8],
    algo: Algorithm,
    dst: &mut [u8],
    check: &mut [u8],
) -> Result<Option<(usize, usize)>, String> {
    let result = match algo {
        Algorithm::Lz4 => lzzzz::lz4::compress_fill(input, dst),
        Algorithm::Lz4hc(level) => lzzzz::lz4_hc::compress_fill(input, dst, level),
    };
    let (read, wrote) = result.map_err(|e| format!("lz4: {e}"))?;
    // The kernel finds the stream's start by skipping the zero padding, so
    // a stream must not start with a zero byte (LZ4's first token always
    // carries literals, so this only guards against the impossible).
    if read <= BLOCK_SIZE || wrote == 0 || wrote > BLOCK_SIZE || dst[0] == 0 {
        return Ok(None);
    }
    let got = lzzzz::lz4::decompress(&dst[..wrote], &mut check[..read])
        .map_err(|e| format!("lz4 round trip: {e}"))?;
    if got != read || check[..read] != input[..read] {
        return Err(format!(
            "lz4 round trip of {read} bytes gave different content"
        ));
    }
    Ok(Some((read, wrote)))
}

/// Compresses all of a short `input` (an uncompressed last extent, to be
/// stored inline), if that makes it shorter.
fn pack_all(input: &[u8], algo: Algorithm, check: &mut [u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    let result = match algo {
        Algorithm::Lz4 => {
            lzzzz::lz4::compress_to_vec(input, &mut out, lzzzz::lz4::ACC_LEVEL_DEFAULT)
        }
        Algorithm::Lz4hc(level) => lzzzz::lz4_hc::compress_to_vec(input, &mut out, level),
    };
    result.map_err(|e| format!("lz4: {e}"))?;
    if out.is_empty() || out.len() >= input.len() || out[0] == 0 {
        return Ok(None);
    }
    let got = lzzzz::lz4::decompress(&out, &mut check[..input.len()])
        .map_err(|e| format!("lz4 round trip: {e}"))?;
    if got != input.len() || check[..got] != *input {
        return Err(format!(
            "lz4 round trip of {} bytes gave different content",
            input.len()
        ));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_fstree::Data;

    fn run(content: Vec<u8>, algo: Algorithm) -> Compressed {
        let size = content.len() as u64;
        let data = Data::Bytes(content);
        let mut src = Source::open("/f", &data, size).unwrap();
        let c = compress(&mut src, size, algo).unwrap();
        src.finish().unwrap();
        c
    }

    fn decode(c: &Compressed, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (e, block) in c.extents.iter().zip(c.blocks.chunks(BLOCK_SIZE)) {
            assert_eq!(e.start as usize, out.len());
            let len = e.len as usize;
            if e.compressed {
                let pad = block.iter().take_while(|&&b| b == 0).count();
                let mut buf = vec![0; len];
                let n = lzzzz::lz4::decompress(&block[pad..], &mut buf).unwrap();
                assert_eq!(n, len);
                out.extend_from_slice(&buf);
            } else {
                out.extend_from_slice(&block[..len]);
            }
        }
        assert_eq!(out.len(), size);
        out
    }

    /// Text-like data that compresses but not trivially.
    fn text(len: usize) -> Vec<u8> {
        let words = ["erofs ", "kiln ", "block ", "cluster ", "image ", "tree\n"];
        let mut x = 12345u32;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            out.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn compressible_content_round_trips_in_fewer_blocks() {
        for algo in [Algorithm::Lz4, Algorithm::Lz4hc(9)] {
            let content = text(300_000);
            let c = run(content.clone(), algo);
            assert!(
                c.block_count() < 300_000 / 4096 / 2,
                "{algo:?}: {}",
                c.block_count()
            );
            assert!(c.extents.iter().any(|e| e.compressed));
            assert_eq!(decode(&c, content.len()), content);
        }
    }

    #[test]
    fn incompressible_content_is_stored_as_is() {
        let mut x = 7u64;
        let content: Vec<u8> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let c = run(content.clone(), Algorithm::Lz4hc(12));
        assert!(c.extents.iter().all(|e| !e.compressed));
        assert_eq!(c.block_count(), 5);
        assert_eq!(decode(&c, content.len()), content);
    }

    #[test]
    fn zeros_are_bounded_by_the_extent_limit() {
        let c = run(vec![0; 3 * MAX_EXTENT + 10], Algorithm::Lz4);
        assert!(c.extents.iter().all(|e| e.len as usize <= MAX_EXTENT));
        assert_eq!(c.block_count(), 4);
        decode(&c, 3 * MAX_EXTENT + 10);
    }
}
