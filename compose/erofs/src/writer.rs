//! Putting an image together: file data, directory and symlink blocks,
//! inode records, and finally the superblock.

use std::io::{BufWriter, Seek, SeekFrom, Write};

use kiln_fstree::Tree;
use rayon::prelude::*;

use crate::compress::{self, Algorithm, Compressed, Extent};
use crate::error::ErofsError;
use crate::format::{
    self, round_up, InodeHeader, Layout, SuperBlock, BLOCK_SIZE, MAP_HEADER_SIZE, SLOT_SIZE,
    SUPER_OFFSET, SUPER_SIZE,
};
use crate::meta::{self, Allocator};
use crate::plan::{self, Content, Inode};
use crate::source::Source;
use crate::xattr;
use crate::zmap;
use crate::{Compression, Options, Summary};

/// Files compressed together in parallel are bounded by this much input,
/// which bounds the compressed output held before it is written in order.
const BATCH_BYTES: u64 = 64 << 20;
const BATCH_FILES: usize = 1024;
/// Read size when copying uncompressed content.
const COPY_CHUNK: usize = 256 << 10;

/// Where an inode's data went.
#[derive(Debug)]
enum Data {
    /// No data: empty files and special files.
    None,
    /// Blocks from `blkaddr` and, when `tail > 0`, the last `tail` bytes
    /// inline after the inode.
    Flat { blkaddr: u32, tail: usize },
    /// Pclusters from `blkaddr`, one block per extent, except that with
    /// `inline > 0` the last extent's `inline` bytes follow the inode's map
    /// instead (tail packing).
    Compressed {
        blkaddr: u32,
        extents: Vec<Extent>,
        blocks: u32,
        inline: usize,
    },
}

/// The output, with the count of bytes written and the content hash the
/// UUID is derived from.
struct Image<'w, W: Write + Seek> {
    out: BufWriter<&'w mut W>,
    hasher: Option<blake3::Hasher>,
    written: u64,
}

impl<W: Write + Seek> Image<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), ErofsError> {
        self.out.write_all(bytes).map_err(ErofsError::Write)?;
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Zero-fills up to the next block boundary.
    fn pad(&mut self) -> Result<(), ErofsError> {
        let partial = (self.written % BLOCK_SIZE as u64) as usize;
        if partial > 0 {
            self.write(&[0u8; BLOCK_SIZE][partial..])?;
        }
        Ok(())
    }

    /// The next block to be written.
    fn block(&self) -> Result<u32, ErofsError> {
        let blocks = self.written.div_ceil(BLOCK_SIZE as u64);
        u32::try_from(blocks).map_err(|_| ErofsError::ImageTooLarge { blocks })
    }
}

pub fn write<W: Write + Seek>(
    tree: &Tree,
    opts: &Options,
    out: &mut W,
) -> Result<Summary, ErofsError> {
    let algo = match opts.compression {
        Compression::None => None,
        Compression::Lz4 => Some(Algorithm::Lz4),
        Compression::Lz4hc { level } if (1..=12).contains(&level) => {
            Some(Algorithm::Lz4hc(i32::from(level)))
        }
        Compression::Lz4hc { level } => return Err(ErofsError::BadLevel(level)),
    };
    let mut volume_name = [0u8; 16];
    if let Some(label) = &opts.label {
        if label.len() > volume_name.len() {
            return Err(ErofsError::LabelTooLong(label.clone()));
        }
        volume_name[..label.len()].copy_from_slice(label.as_bytes());
    }

    let inodes = plan::inodes(tree)?;
    // The root's record must fit next to the superblock (see `meta`).
    let root_room = BLOCK_SIZE - meta::RESERVED;
    if inodes[0].header_len() + inodes[0].xattrs.len() > root_room {
        return Err(ErofsError::RootTooLarge {
            size: inodes[0].header_len() + inodes[0].xattrs.len(),
            max: root_room,
        });
    }

    let base = out.stream_position().map_err(ErofsError::Write)?;
    let mut img = Image {
        out: BufWriter::with_capacity(1 << 20, out),
        hasher: opts.uuid.is_none().then(blake3::Hasher::new),
        written: 0,
    };
    // The superblock's block is written last; reserve it unhashed.
    img.out
        .write_all(&[0u8; BLOCK_SIZE])
        .map_err(ErofsError::Write)?;
    img.written = BLOCK_SIZE as u64;

    let mut data: Vec<Data> = inodes.iter().map(|_| Data::None).collect();
    let mut tails: Vec<Vec<u8>> = inodes.iter().map(|_| Vec::new()).collect();
    let tail_packing = opts.tail_packing;
    write_files(&inodes, algo, tail_packing, &mut img, &mut data, &mut tails)?;

    // Directory and symlink blocks go after the files. Their count is known
    // now; directory content needs the nids, which need the records placed.
    let mut next = img.block()?;
    for (index, inode) in inodes.iter().enumerate() {
        if matches!(inode.content, Content::Dir(_) | Content::Symlink(_)) {
            let tail = inline_tail(inode, index);
            let blocks = block_count(inode.size - tail as u64)?;
            data[index] = Data::Flat {
                blkaddr: if blocks > 0 { next } else { 0 },
                tail,
            };
            next = next
                .checked_add(blocks)
                .ok_or(ErofsError::ImageTooLarge { blocks: u64::MAX })?;
        }
    }
    let meta_start = u64::from(next);

    let mut alloc = Allocator::new();
    let places: Vec<meta::Place> = inodes
        .iter()
        .zip(&data)
        .map(|(inode, d)| alloc.place(record_len(inode, d)))
        .collect();
    let total_blocks = meta_start + u64::from(alloc.blocks()) - 1;
    if total_blocks > u64::from(u32::MAX) {
        return Err(ErofsError::ImageTooLarge {
            blocks: total_blocks,
        });
    }
    let position = |p: meta::Place| -> u64 {
        let block = if p.block == 0 {
            0
        } else {
            meta_start + u64::from(p.block) - 1
        };
        block * BLOCK_SIZE as u64 + u64::from(p.offset)
    };
    let nids: Vec<u64> = places
        .iter()
        .map(|&p| position(p) / SLOT_SIZE as u64)
        .collect();
    let file_types: Vec<u8> = inodes.iter().map(|i| i.file_type).collect();

    // Directory and symlink content, in the order their blocks were given.
    for (index, inode) in inodes.iter().enumerate() {
        let content = match &inode.content {
            Content::Dir(entries) => crate::dir::encode(entries, &nids, &file_types),
            Content::Symlink(target) => target.as_bytes().to_vec(),
            _ => continue,
        };
        let tail = match data[index] {
            Data::Flat { tail, .. } => tail,
            _ => 0,
        };
        let (blocks, inline) = content.split_at(content.len() - tail);
        img.write(blocks)?;
        img.pad()?;
        tails[index] = inline.to_vec();
    }
    debug_assert_eq!(u64::from(img.block()?), meta_start);

    // Inode records into the metadata blocks.
    let mut metadata = vec![0u8; alloc.blocks() as usize * BLOCK_SIZE];
    let mut record = Vec::new();
    let mut compressed_any = false;
    let mut packed_any = false;
    for (index, inode) in inodes.iter().enumerate() {
        record.clear();
        encode_record(
            inode,
            index,
            &data[index],
            &tails[index],
            opts.epoch,
            &mut record,
        );
        compressed_any |= matches!(data[index], Data::Compressed { .. });
        packed_any |= matches!(data[index], Data::Compressed { inline, .. } if inline > 0);
        let p = places[index];
        let at = p.block as usize * BLOCK_SIZE + p.offset as usize;
        metadata[at..at + record.len()].copy_from_slice(&record);
    }
    img.write(&metadata[BLOCK_SIZE..])?;

    // Finally the superblock's block, hashed last for the derived UUID.
    let mut first = metadata[..BLOCK_SIZE].to_vec();
    let mut sb = SuperBlock {
        feature_compat: format::COMPAT_SB_CHKSUM,
        feature_incompat: if compressed_any {
            format::INCOMPAT_ZERO_PADDING
        } else {
            0
        } | if packed_any {
            format::INCOMPAT_ZTAILPACKING
        } else {
            0
        },
        // The root is placed first, right after the superblock.
        root_nid: nids[0] as u16,
        inos: inodes.len() as u64,
        build_time: opts.epoch,
        blocks: total_blocks as u32,
        uuid: [0; 16],
        volume_name,
    };
    first[SUPER_OFFSET..SUPER_OFFSET + SUPER_SIZE].copy_from_slice(&sb.encode());
    sb.uuid = match (opts.uuid, img.hasher.take()) {
        (Some(uuid), _) => uuid,
        (None, Some(mut hasher)) => derive_uuid(hasher.update(&first)),
        (None, None) => [0; 16],
    };
    let mut encoded = sb.encode();
    first[SUPER_OFFSET..SUPER_OFFSET + SUPER_SIZE].copy_from_slice(&encoded);
    let checksum = crate::crc::superblock(&first[SUPER_OFFSET..]);
    encoded[format::SUPER_CHECKSUM].copy_from_slice(&checksum.to_le_bytes());
    first[SUPER_OFFSET..SUPER_OFFSET + SUPER_SIZE].copy_from_slice(&encoded);

    let end = base + total_blocks * BLOCK_SIZE as u64;
    let out = &mut img.out;
    out.seek(SeekFrom::Start(base)).map_err(ErofsError::Write)?;
    out.write_all(&first).map_err(ErofsError::Write)?;
    out.seek(SeekFrom::Start(end)).map_err(ErofsError::Write)?;
    out.flush().map_err(ErofsError::Write)?;
    Ok(Summary {
        bytes: total_blocks * BLOCK_SIZE as u64,
        blocks: total_blocks,
        inodes: inodes.len() as u64,
        uuid: sb.uuid,
    })
}

/// An RFC 9562 version 8 (custom) UUID from the content hash.
fn derive_uuid(hasher: &blake3::Hasher) -> [u8; 16] {
    let hash = hasher.finalize();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&hash.as_bytes()[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x80;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

fn block_count(bytes: u64) -> Result<u32, ErofsError> {
    let blocks = bytes.div_ceil(BLOCK_SIZE as u64);
    u32::try_from(blocks).map_err(|_| ErofsError::ImageTooLarge { blocks })
}

/// How many trailing bytes of an uncompressed inode go inline after it: the
/// last partial block, when it fits in one block with the inode and its
/// xattrs (the kernel reads an inline tail from a single block).
fn inline_tail(inode: &Inode<'_>, index: usize) -> usize {
    let tail = (inode.size % BLOCK_SIZE as u64) as usize;
    let room = if index == 0 {
        BLOCK_SIZE - meta::RESERVED
    } else {
        BLOCK_SIZE
    };
    if tail > 0 && inode.header_len() + inode.xattrs.len() + tail <= room {
        tail
    } else {
        0
    }
}

/// Where a compressed inode's map starts in its record: after the inode,
/// its xattrs, alignment to 8 and the map header.
fn map_offset(inode: &Inode<'_>) -> usize {
    round_up(inode.header_len() + inode.xattrs.len(), 8) + MAP_HEADER_SIZE
}

/// Where a compressed inode's map ends in its record: where a packed tail
/// goes.
fn map_end(inode: &Inode<'_>) -> usize {
    let lclusters = inode.size.div_ceil(BLOCK_SIZE as u64) as usize;
    let ebase = map_offset(inode);
    ebase + zmap::encoded_len(lclusters, ebase)
}

fn record_len(inode: &Inode<'_>, data: &Data) -> usize {
    let fixed = inode.header_len() + inode.xattrs.len();
    match data {
        Data::None => fixed,
        Data::Flat { tail, .. } => fixed + tail,
        Data::Compressed { inline, .. } => map_end(inode) + inline,
    }
}

fn encode_record(
    inode: &Inode<'_>,
    index: usize,
    data: &Data,
    tail: &[u8],
    epoch: u64,
    out: &mut Vec<u8>,
) {
    let (layout, union) = match (data, &inode.content) {
        (Data::None, Content::Special { rdev }) => (Layout::FlatPlain, *rdev),
        (Data::None, _) => (Layout::FlatPlain, 0),
        (Data::Flat { blkaddr, tail }, _) if *tail > 0 => (Layout::FlatInline, *blkaddr),
        (Data::Flat { blkaddr, .. }, _) => (Layout::FlatPlain, *blkaddr),
        (Data::Compressed { blocks, .. }, _) => (Layout::CompressedCompact, *blocks),
    };
    InodeHeader {
        layout,
        extended: inode.extended(),
        xattr_icount: xattr::icount(inode.xattrs.len()) as u16,
        mode: inode.mode,
        nlink: inode.nlink,
        size: inode.size,
        union,
        // i_ino only serves 32-bit stat(); the kernel uses nids otherwise.
        ino: (index as u32).wrapping_add(1),
        uid: inode.node.uid,
        gid: inode.node.gid,
        mtime: epoch,
    }
    .encode(out);
    out.extend_from_slice(&inode.xattrs);
    match data {
        Data::None => {}
        Data::Flat { .. } => out.extend_from_slice(tail),
        Data::Compressed {
            blkaddr,
            extents,
            inline,
            ..
        } => {
            let ebase = map_offset(inode);
            out.resize(ebase - MAP_HEADER_SIZE, 0);
            let mut advise = zmap::ADVISE_COMPACTED_2B;
            if *inline > 0 {
                advise |= zmap::ADVISE_INLINE_PCLUSTER;
            }
            // A tail fits a block, so its length fits 16 bits.
            format::encode_map_header(out, advise, *inline as u16);
            out.extend_from_slice(&zmap::encode(extents, inode.size, *blkaddr, ebase));
            out.extend_from_slice(tail);
        }
    }
}

/// Blocks an uncompressed file takes, given what of it goes inline.
fn plain_blocks(inode: &Inode<'_>, index: usize) -> u64 {
    (inode.size - inline_tail(inode, index) as u64).div_ceil(BLOCK_SIZE as u64)
}

/// Writes every regular file's data, in inode order; with compression,
/// batches of files are compressed in parallel first.
fn write_files<W: Write + Seek>(
    inodes: &[Inode<'_>],
    algo: Option<Algorithm>,
    tail_packing: bool,
    img: &mut Image<'_, W>,
    data: &mut [Data],
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
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        let compressed: Vec<Option<(Compressed, bool)>> = match algo {
            Some(algo) => batch
                .par_iter()
                .map(|&index| try_compress(&inodes[index], index, algo, tail_packing))
                .collect::<Result<_, _>>()?,
            None => batch.iter().map(|_| None).collect(),
        };
        for (&index, c) in batch.iter().zip(compressed) {
            data[index] = match c {
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
                    Data::Compressed {
                        blkaddr,
                        extents: c.extents,
                        blocks: blocks as u32,
                        inline,
                    }
                }
                None => {
                    let (d, tail) = write_plain(&inodes[index], index, img)?;
                    tails[index] = tail;
                    d
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
    let map_end = map_end(inode);
    let pack = tail_packing
        && !c.tail.is_empty()
        && map_end % BLOCK_SIZE + c.tail.len() <= BLOCK_SIZE;
    let blocks = c.block_count() - u64::from(pack);
    let bs = BLOCK_SIZE as u64;
    let meta = map_end - inode.header_len() - inode.xattrs.len();
    let compressed_bytes = blocks * bs + (meta + if pack { c.tail.len() } else { 0 }) as u64;
    let plain_bytes = plain_blocks(inode, index) * bs + inline_tail(inode, index) as u64;
    Ok((blocks < size_blocks && compressed_bytes < plain_bytes).then_some((c, pack)))
}

/// Copies a file's content into blocks, except the inline tail, which is
/// returned.
fn write_plain<W: Write + Seek>(
    inode: &Inode<'_>,
    index: usize,
    img: &mut Image<'_, W>,
) -> Result<(Data, Vec<u8>), ErofsError> {
    let Content::File(content) = &inode.content else {
        return Ok((Data::None, Vec::new()));
    };
    let tail = inline_tail(inode, index);
    let mut src = Source::open(inode.path, content, inode.size)?;
    let blkaddr = img.block()?;
    let mut left = inode.size - tail as u64;
    let has_blocks = left > 0;
    let mut buf = vec![0u8; COPY_CHUNK.min(left as usize)];
    while left > 0 {
        let n = buf.len().min(left as usize);
        src.fill(&mut buf[..n])?;
        img.write(&buf[..n])?;
        left -= n as u64;
    }
    img.pad()?;
    let mut inline = vec![0u8; tail];
    src.fill(&mut inline)?;
    src.finish()?;
    let blkaddr = if has_blocks { blkaddr } else { 0 };
    Ok((Data::Flat { blkaddr, tail }, inline))
}
