//! An inode's record in the metadata area: the inode, its xattrs, then
//! either its inline tail or (compressed files) the map header, the
//! compression map and possibly the packed last pcluster.

use crate::compress::Extent;
use crate::format::{self, round_up, InodeHeader, Layout, BLOCK_SIZE, MAP_HEADER_SIZE};
use crate::meta;
use crate::plan::{Content, Inode};
use crate::xattr;
use crate::zmap;

/// Where an inode's data went.
#[derive(Debug)]
pub enum Stored {
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

/// How many trailing bytes of an uncompressed inode go inline after it: the
/// last partial block, when it fits in one block with the inode and its
/// xattrs (the kernel reads an inline tail from a single block). The root
/// (`index` 0) must fit next to the superblock.
pub fn inline_tail(inode: &Inode<'_>, index: usize) -> usize {
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

/// Blocks an uncompressed file takes, given what of it goes inline.
pub fn plain_blocks(inode: &Inode<'_>, index: usize) -> u64 {
    (inode.size - inline_tail(inode, index) as u64).div_ceil(BLOCK_SIZE as u64)
}

/// Where a compressed inode's map starts in its record: after the inode,
/// its xattrs, alignment to 8 and the map header.
fn map_offset(inode: &Inode<'_>) -> usize {
    round_up(inode.header_len() + inode.xattrs.len(), 8) + MAP_HEADER_SIZE
}

/// Where a compressed inode's map ends in its record: where a packed tail
/// goes.
pub fn map_end(inode: &Inode<'_>) -> usize {
    let lclusters = inode.size.div_ceil(BLOCK_SIZE as u64) as usize;
    let ebase = map_offset(inode);
    ebase + zmap::encoded_len(lclusters, ebase)
}

pub fn len(inode: &Inode<'_>, stored: &Stored) -> usize {
    let fixed = inode.header_len() + inode.xattrs.len();
    match stored {
        Stored::None => fixed,
        Stored::Flat { tail, .. } => fixed + tail,
        Stored::Compressed { inline, .. } => map_end(inode) + inline,
    }
}

/// Appends the record of inode number `index`; `tail` is its inline data.
pub fn encode(
    inode: &Inode<'_>,
    index: usize,
    stored: &Stored,
    tail: &[u8],
    epoch: u64,
    out: &mut Vec<u8>,
) {
    let (layout, union) = match (stored, &inode.content) {
        (Stored::None, Content::Special { rdev }) => (Layout::FlatPlain, *rdev),
        (Stored::None, _) => (Layout::FlatPlain, 0),
        (Stored::Flat { blkaddr, tail }, _) if *tail > 0 => (Layout::FlatInline, *blkaddr),
        (Stored::Flat { blkaddr, .. }, _) => (Layout::FlatPlain, *blkaddr),
        (Stored::Compressed { blocks, .. }, _) => (Layout::CompressedCompact, *blocks),
    };
    InodeHeader {
        layout,
        extended: inode.extended(),
        // Bounded by `xattr::encode_body`.
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
    match stored {
        Stored::None => {}
        Stored::Flat { .. } => out.extend_from_slice(tail),
        Stored::Compressed {
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
            // A packed tail fits a block, so its length fits 16 bits.
            format::encode_map_header(out, advise, *inline as u16);
            out.extend_from_slice(&zmap::encode(extents, inode.size, *blkaddr, ebase));
            out.extend_from_slice(tail);
        }
    }
}
