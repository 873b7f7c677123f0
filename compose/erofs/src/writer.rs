//! Putting an image together: file data, directory and symlink blocks,
//! inode records, and finally the superblock.

use std::io::{Seek, SeekFrom, Write};

use kiln_fstree::Tree;

use crate::compress::Algorithm;
use crate::error::ErofsError;
use crate::format::{self, SuperBlock, BLOCK_SIZE, SLOT_SIZE, SUPER_OFFSET, SUPER_SIZE};
use crate::image::Image;
use crate::meta::{self, Allocator};
use crate::plan::{self, Content};
use crate::record::{self, Stored};
use crate::{Compression, Options, Summary};

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
    let root_size = inodes[0].header_len() + inodes[0].xattrs.len();
    if root_size > root_room {
        return Err(ErofsError::RootTooLarge {
            size: root_size,
            max: root_room,
        });
    }

    let base = out.stream_position().map_err(ErofsError::Write)?;
    let mut img = Image::new(out, opts.uuid.is_none())?;
    let mut stored: Vec<Stored> = inodes.iter().map(|_| Stored::None).collect();
    let mut tails: Vec<Vec<u8>> = inodes.iter().map(|_| Vec::new()).collect();
    crate::files::write(
        &inodes,
        algo,
        opts.tail_packing,
        &mut img,
        &mut stored,
        &mut tails,
    )?;

    // Directory and symlink blocks go after the files. Their count is known
    // now; directory content needs the nids, which need the records placed.
    let mut next = img.block()?;
    for (index, inode) in inodes.iter().enumerate() {
        if matches!(inode.content, Content::Dir(_) | Content::Symlink(_)) {
            let tail = record::inline_tail(inode, index);
            let bytes = inode.size - tail as u64;
            let blocks = bytes.div_ceil(BLOCK_SIZE as u64);
            stored[index] = Stored::Flat {
                blkaddr: if blocks > 0 { next } else { 0 },
                tail,
            };
            next =
                u32::try_from(u64::from(next) + blocks).map_err(|_| ErofsError::ImageTooLarge {
                    blocks: u64::from(next) + blocks,
                })?;
        }
    }
    let meta_start = u64::from(next);

    // Records, in inode order; the root's lands next to the superblock.
    let mut alloc = Allocator::new();
    let places: Vec<meta::Place> = inodes
        .iter()
        .zip(&stored)
        .map(|(inode, s)| alloc.place(record::len(inode, s)))
        .collect();
    let total_blocks = meta_start + u64::from(alloc.blocks()) - 1;
    if total_blocks > u64::from(u32::MAX) {
        return Err(ErofsError::ImageTooLarge {
            blocks: total_blocks,
        });
    }
    // Metadata block 0 is the image's first; the others follow the
    // directory blocks. nids count 32-byte slots from the image start.
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
        let tail = match stored[index] {
            Stored::Flat { tail, .. } => tail,
            _ => 0,
        };
        let (blocks, inline) = content.split_at(content.len() - tail);
        img.write(blocks)?;
        img.pad()?;
        tails[index] = inline.to_vec();
    }
    debug_assert_eq!(u64::from(img.block()?), meta_start);

    // The records into the metadata blocks.
    let mut metadata = vec![0u8; alloc.blocks() as usize * BLOCK_SIZE];
    let mut buf = Vec::new();
    for (index, inode) in inodes.iter().enumerate() {
        buf.clear();
        record::encode(
            inode,
            index,
            &stored[index],
            &tails[index],
            opts.epoch,
            &mut buf,
        );
        let p = places[index];
        let at = p.block as usize * BLOCK_SIZE + p.offset as usize;
        metadata[at..at + buf.len()].copy_from_slice(&buf);
    }
    img.write(&metadata[BLOCK_SIZE..])?;

    // Finally the superblock's block.
    let compressed = |s: &Stored| matches!(s, Stored::Compressed { .. });
    let packed = |s: &Stored| matches!(s, Stored::Compressed { inline, .. } if *inline > 0);
    let mut feature_incompat = 0;
    if stored.iter().any(compressed) {
        feature_incompat |= format::INCOMPAT_ZERO_PADDING;
    }
    if stored.iter().any(packed) {
        feature_incompat |= format::INCOMPAT_ZTAILPACKING;
    }
    let sb = SuperBlock {
        feature_compat: format::COMPAT_SB_CHKSUM,
        feature_incompat,
        root_nid: u16::try_from(nids[0]).map_err(|_| ErofsError::RootTooLarge {
            size: root_size,
            max: root_room,
        })?,
        inos: inodes.len() as u64,
        build_time: opts.epoch,
        blocks: total_blocks as u32,
        uuid: [0; 16],
        volume_name,
    };
    let mut first = metadata;
    first.truncate(BLOCK_SIZE);
    let uuid = seal(&mut first, sb, opts.uuid, img.hasher.take());

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
        uuid,
    })
}

/// Puts the superblock into the image's first block, with its UUID (given,
/// or derived from the hash of the rest of the image and this block) and
/// its checksum. Returns the UUID.
fn seal(
    first: &mut [u8],
    mut sb: SuperBlock,
    given: Option<[u8; 16]>,
    hasher: Option<blake3::Hasher>,
) -> [u8; 16] {
    let at = SUPER_OFFSET..SUPER_OFFSET + SUPER_SIZE;
    first[at.clone()].copy_from_slice(&sb.encode());
    sb.uuid = match given {
        Some(uuid) => uuid,
        None => {
            let mut hasher = hasher.unwrap_or_default();
            hasher.update(first);
            derive_uuid(&hasher)
        }
    };
    let mut encoded = sb.encode();
    first[at.clone()].copy_from_slice(&encoded);
    let checksum = crate::crc::superblock(&first[SUPER_OFFSET..]);
    encoded[format::SUPER_CHECKSUM].copy_from_slice(&checksum.to_le_bytes());
    first[at].copy_from_slice(&encoded);
    sb.uuid
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
