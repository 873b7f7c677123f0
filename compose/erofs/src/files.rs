//! Regular files' data: compressed (in parallel, in bounded batches) when
//! that pays, copied as is otherwise, written in inode order.

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
        let compressed: Vec<Option<(Compressed, bool)>> = match algo {
            Some(algo) => batch
                .par_iter()
                .map(|&index| try_compress(&inodes[index], index, algo, tail_packing))
                .collect::<Result<_, _>>()?,
            None => batch.iter().map(|_| None).collect(),
        };
        for (&index, c) in batch.iter().zip(compressed) {
            stored[index] = match c {
                Some((mut c, pack)) => {
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
                None => {
                    let (s, tail) = write_plain(&inodes[index], index, img)?;
                    tails[index] = tail;
                    s
                }
            };
        }
    }
    Ok(())
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
