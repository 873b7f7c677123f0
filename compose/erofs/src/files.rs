//! Regular files' data: compressed when that pays, copied as is otherwise,
//! written in inode order. Both the compressing and the reading (with the
//! hashing for the derived UUID) run in parallel over bounded batches of
//! files; only the writing is sequential, because block addresses follow
//! the order.

use std::io::{Seek, Write};

use rayon::prelude::*;

use crate::compress::{self, Algorithm, Compressed};
use crate::error::ErofsError;
use crate::format::BLOCK_SIZE;
use crate::image::Image;
use crate::plan::{Content, Inode};
use crate::record::{self, Stored};
use crate::source::Source;

/// Files compressed together in parallel are bounded by this much input,
/// which bounds the compressed output held before it is written in order.
const BATCH_BYTES: u64 = 64 << 20;
const BATCH_FILES: usize = 1024;
/// Read size when copying uncompressed content.
const COPY_CHUNK: usize = 256 << 10;
/// Uncompressed files up to this size are read whole by the parallel
/// stage; larger ones are streamed in `COPY_CHUNK`s by the writer.
const READ_WHOLE: u64 = 16 << 20;

/// What the parallel stage made of one file.
enum Prepared {
    Compressed(Compressed, bool),
    /// The whole content, the blake3 hash of its block part (everything but
    /// the inline tail) for the image hash, and the tail length.
    Read(Vec<u8>, blake3::Hash, usize),
    /// Left for the writer to stream.
    Stream,
}

/// Writes every regular file's data, in inode order, recording where it
/// went in `stored` and its inline bytes in `tails`.
pub fn write<W: Write + Seek>(
    inodes: &[Inode<'_>],
    algo: Option<Algorithm>,
    tail_packing: bool,
    img: &mut Image<'_, W>,
    stored: &mut [Stored],
    tails: &mut [Vec<u8>],
) -> Result<(), ErofsError> {
    let files: Vec<usize> = inodes
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i.content, Content::File(_)) && i.size > 0)
        .map(|(index, _)| index)
        .collect();
    let mut rest = files.as_slice();
    while !rest.is_empty() {
        let mut bytes = 0;
        let n = rest
            .iter()
            .take(BATCH_FILES)
            .take_while(|&&i| {
                let first = bytes == 0;
                bytes += inodes[i].size;
                first || bytes <= BATCH_BYTES
            })
            .count();
        let (batch, later) = rest.split_at(n);
        rest = later;
        let prepared: Vec<Prepared> = batch
            .par_iter()
            .map(|&index| prepare(&inodes[index], index, algo, tail_packing))
            .collect::<Result<_, _>>()?;
        for (&index, p) in batch.iter().zip(prepared) {
            stored[index] = match p {
                Prepared::Compressed(mut c, pack) => {
                    let blkaddr = img.block()?;
                    let mut blocks = c.extents.len();
                    let mut inline = 0;
                    if pack {
                        blocks -= 1;
                        inline = c.tail.len();
                        if let Some(last) = c.extents.last_mut() {
                            last.compressed = c.tail_compressed;
                        }
                        tails[index] = std::mem::take(&mut c.tail);
                    }
                    img.write(&c.blocks[..blocks * BLOCK_SIZE])?;
                    Stored::Compressed {
                        blkaddr,
                        extents: c.extents,
                        blocks: blocks as u32,
                        inline,
                    }
                }
                Prepared::Read(mut data, digest, tail) => {
                    let body = data.len() - tail;
                    let blkaddr = if body > 0 { img.block()? } else { 0 };
                    img.write_hashed(&data[..body], &digest)?;
                    img.pad()?;
                    tails[index] = data.split_off(body);
                    Stored::Flat { blkaddr, tail }
                }
                Prepared::Stream => {
                    let (s, tail) = write_plain(&inodes[index], index, img)?;
                    tails[index] = tail;
                    s
                }
            };
        }
    }
    Ok(())
}

/// The parallel stage for one file: its compressed form when compression
/// is on and pays, else its content read whole when it is small enough.
fn prepare(
    inode: &Inode<'_>,
    index: usize,
    algo: Option<Algorithm>,
    tail_packing: bool,
) -> Result<Prepared, ErofsError> {
    if let Some(algo) = algo {
        if let Some((c, pack)) = try_compress(inode, index, algo, tail_packing)? {
            return Ok(Prepared::Compressed(c, pack));
        }
    }
    let Content::File(content) = &inode.content else {
        return Ok(Prepared::Stream);
    };
    if inode.size > READ_WHOLE {
        return Ok(Prepared::Stream);
    }
    let mut src = Source::open(inode.path, content, inode.size)?;
    let mut data = vec![0u8; inode.size as usize];
    src.fill(&mut data)?;
    src.finish()?;
    let tail = record::inline_tail(inode, index);
    let digest = blake3::hash(&data[..data.len() - tail]);
    Ok(Prepared::Read(data, digest, tail))
}

/// The compressed form of a file, if it is worth it: it must take at least
/// one block less than the file's size in blocks, and less space overall
/// than storing it as is, counting inline tails and the map. The flag says
/// whether its last extent is packed inline after the inode.
fn try_compress(
    inode: &Inode<'_>,
    index: usize,
    algo: Algorithm,
    tail_packing: bool,
) -> Result<Option<(Compressed, bool)>, ErofsError> {
    let Content::File(content) = &inode.content else {
        return Ok(None);
    };
    let size_blocks = inode.size.div_ceil(BLOCK_SIZE as u64);
    if size_blocks < 2 {
        return Ok(None);
    }
    let mut src = Source::open(inode.path, content, inode.size)?;
    let c = compress::compress(&mut src, inode.size, algo)?;
    src.finish()?;
    // A packed tail must sit in one block, right after the map.
    let map_end = record::map_end(inode);
    let pack =
        tail_packing && !c.tail.is_empty() && map_end % BLOCK_SIZE + c.tail.len() <= BLOCK_SIZE;
    let blocks = c.block_count() - u64::from(pack);
    let bs = BLOCK_SIZE as u64;
    let meta = map_end - inode.header_len() - inode.xattrs.len();
    let compressed_bytes = blocks * bs + (meta + if pack { c.tail.len() } else { 0 }) as u64;
    let plain_bytes =
        record::plain_blocks(inode, index) * bs + record::inline_tail(inode, index) as u64;
    Ok((blocks < size_blocks && compressed_bytes < plain_bytes).then_some((c, pack)))
}

/// Copies a file's content into blocks, except the inline tail, which is
/// returned.
fn write_plain<W: Write + Seek>(
    inode: &Inode<'_>,
    index: usize,
    img: &mut Image<'_, W>,
) -> Result<(Stored, Vec<u8>), ErofsError> {
    let Content::File(content) = &inode.content else {
        return Ok((Stored::None, Vec::new()));
    };
    let tail = record::inline_tail(inode, index);
    let mut src = Source::open(inode.path, content, inode.size)?;
    let first = img.block()?;
    let mut left = inode.size - tail as u64;
    let blkaddr = if left > 0 { first } else { 0 };
    let mut buf = vec![0u8; left.min(COPY_CHUNK as u64) as usize];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        src.fill(&mut buf[..n])?;
        img.write(&buf[..n])?;
        left -= n as u64;
    }
    img.pad()?;
    let mut inline = vec![0u8; tail];
    src.fill(&mut inline)?;
    src.finish()?;
    Ok((Stored::Flat { blkaddr, tail }, inline))
}
