//! Extent maps: the `i_block` root in the inode and, for more than four
//! extents, a tree of leaf and index blocks.
//!
//! Nodes are packed full (340 entries per 4 KiB block) so the tree has the
//! fewest blocks and levels, which is also what e2fsck's "could be
//! narrower/shallower" check wants.

use crate::crc32c;
use crate::geometry::BLOCK_SIZE;
use crate::le::{put_u16, put_u32};

/// One mapping of `len` logical blocks to physical blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub logical: u32,
    pub physical: u64,
    pub len: u32,
}

/// The longest initialized extent ext4 allows.
pub(crate) const MAX_LEN: u32 = 32768;
const MAGIC: u16 = 0xF30A;
const HEADER: usize = 12;
const ENTRY: usize = 12;
const IN_INODE: usize = 4;
const PER_BLOCK: usize = (BLOCK_SIZE as usize - HEADER - 4) / ENTRY;
/// Deepest tree ext4 accepts.
const MAX_DEPTH: u16 = 5;

/// Appends `len` blocks at `logical` → `physical`, extending the last
/// extent when both sides are contiguous.
pub(crate) fn push(extents: &mut Vec<Extent>, mut logical: u32, mut physical: u64, mut len: u32) {
    if let Some(last) = extents.last_mut() {
        if last.logical + last.len == logical && last.physical + u64::from(last.len) == physical {
            let add = len.min(MAX_LEN - last.len);
            last.len += add;
            logical += add;
            physical += u64::from(add);
            len -= add;
        }
    }
    while len > 0 {
        let n = len.min(MAX_LEN);
        extents.push(Extent {
            logical,
            physical,
            len: n,
        });
        logical += n;
        physical += u64::from(n);
        len -= n;
    }
}

/// Tree blocks needed for `n` extents (0 when they fit the inode).
pub(crate) fn tree_blocks(n: u64) -> u64 {
    let mut total = 0;
    let mut level = n;
    while level > IN_INODE as u64 {
        level = level.div_ceil(PER_BLOCK as u64);
        total += level;
    }
    total
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put_u16(buf, 0, MAGIC);
    put_u16(buf, 2, entries as u16);
    put_u16(buf, 4, max as u16);
    put_u16(buf, 6, depth);
    put_u32(buf, 8, 0);
}

fn put_extent(buf: &mut [u8], at: usize, e: &Extent) {
    put_u32(buf, at, e.logical);
    put_u16(buf, at + 4, e.len as u16);
    put_u16(buf, at + 6, (e.physical >> 32) as u16);
    put_u32(buf, at + 8, e.physical as u32);
}

fn put_index(buf: &mut [u8], at: usize, logical: u32, child: u64) {
    put_u32(buf, at, logical);
    put_u32(buf, at + 4, child as u32);
    put_u16(buf, at + 8, (child >> 32) as u16);
    put_u16(buf, at + 10, 0);
}

/// The encoded map: the inode's 60-byte `i_block` and the tree blocks to
/// write, each with its block number.
pub(crate) struct Encoded {
    pub i_block: [u8; 60],
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Encodes `extents` (sorted, non-overlapping) using `tree` (exactly
/// [`tree_blocks`] block numbers) for the nodes below the inode.
/// `inode_seed` is the inode's checksum seed (UUID + number + generation).
pub(crate) fn encode(extents: &[Extent], tree: &[u64], inode_seed: u32) -> Encoded {
    debug_assert_eq!(tree.len() as u64, tree_blocks(extents.len() as u64));
    let mut i_block = [0u8; 60];
    if extents.len() <= IN_INODE {
        header(&mut i_block, extents.len(), IN_INODE, 0);
        for (i, e) in extents.iter().enumerate() {
            put_extent(&mut i_block, HEADER + i * ENTRY, e);
        }
        return Encoded {
            i_block,
            blocks: Vec::new(),
        };
    }
    let mut out = Vec::with_capacity(tree.len());
    let mut next = tree.iter().copied();
    // (first logical block, node block) of the level being built.
    let mut level: Vec<(u32, u64)> = Vec::new();
    for chunk in extents.chunks(PER_BLOCK) {
        let at = next.next().unwrap_or_default();
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        header(&mut buf, chunk.len(), PER_BLOCK, 0);
        for (i, e) in chunk.iter().enumerate() {
            put_extent(&mut buf, HEADER + i * ENTRY, e);
        }
        level.push((chunk[0].logical, at));
        out.push((at, buf));
    }
    let mut depth = 1u16;
    while level.len() > IN_INODE {
        let mut upper = Vec::new();
        for chunk in level.chunks(PER_BLOCK) {
            let at = next.next().unwrap_or_default();
            let mut buf = vec![0u8; BLOCK_SIZE as usize];
            header(&mut buf, chunk.len(), PER_BLOCK, depth);
            for (i, &(logical, child)) in chunk.iter().enumerate() {
                put_index(&mut buf, HEADER + i * ENTRY, logical, child);
            }
            upper.push((chunk[0].0, at));
            out.push((at, buf));
        }
        level = upper;
        depth += 1;
    }
    debug_assert!(depth <= MAX_DEPTH);
    header(&mut i_block, level.len(), IN_INODE, depth);
    for (i, &(logical, child)) in level.iter().enumerate() {
        put_index(&mut i_block, HEADER + i * ENTRY, logical, child);
    }
    let tail = HEADER + PER_BLOCK * ENTRY;
    for (_, buf) in &mut out {
        let csum = crc32c::update(inode_seed, &buf[..tail]);
        put_u32(buf, tail, csum);
    }
    Encoded {
        i_block,
        blocks: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::le::get_u32;

    #[test]
    fn push_merges_and_splits() {
        let mut v = Vec::new();
        push(&mut v, 0, 100, 10);
        push(&mut v, 10, 110, 5);
        assert_eq!(
            v,
            vec![Extent {
                logical: 0,
                physical: 100,
                len: 15
            }]
        );
        push(&mut v, 20, 115, 1); // logical gap: new extent
        assert_eq!(v.len(), 2);
        let mut v = Vec::new();
        push(&mut v, 0, 0, 2 * MAX_LEN + 3);
        assert_eq!(
            v.iter().map(|e| e.len).collect::<Vec<_>>(),
            vec![MAX_LEN, MAX_LEN, 3]
        );
    }

    #[test]
    fn tree_sizes() {
        assert_eq!(tree_blocks(4), 0);
        assert_eq!(tree_blocks(5), 1);
        assert_eq!(tree_blocks(340 * 4), 4);
        assert_eq!(tree_blocks(340 * 4 + 1), 5 + 1);
    }

    #[test]
    fn encodes_a_two_level_tree() {
        let extents: Vec<Extent> = (0..2000u32)
            .map(|i| Extent {
                logical: i * 2,
                physical: 1000 + u64::from(i) * 2,
                len: 1,
            })
            .collect();
        let tree: Vec<u64> = (50..50 + tree_blocks(2000)).collect();
        let enc = encode(&extents, &tree, 7);
        assert_eq!(enc.blocks.len(), 7); // 6 leaves + 1 index block
                                         // Root: one index entry, depth 2.
        assert_eq!(u16::from_le_bytes([enc.i_block[2], enc.i_block[3]]), 1);
        assert_eq!(u16::from_le_bytes([enc.i_block[6], enc.i_block[7]]), 2);
        let (idx_at, idx) = &enc.blocks[6];
        assert_eq!(
            u32::from_le_bytes([
                enc.i_block[16],
                enc.i_block[17],
                enc.i_block[18],
                enc.i_block[19]
            ]),
            *idx_at as u32
        );
        // The index block points at the leaves with their first logical block.
        assert_eq!(get_u32(idx, HEADER + ENTRY), 680);
        assert_eq!(get_u32(idx, HEADER + ENTRY + 4), 51);
        // Checksums cover everything before the tail.
        let tail = HEADER + PER_BLOCK * ENTRY;
        assert_eq!(get_u32(idx, tail), crc32c::update(7, &idx[..tail]));
    }
}
