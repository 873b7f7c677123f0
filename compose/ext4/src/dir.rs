//! Directory entries and blocks with `metadata_csum` tails.
//!
//! A directory that fits one block is written linearly: `.` and `..`
//! first, then the entries in byte order of their names. Larger ones get an
//! htree index (see `htree`), whose leaves are blocks encoded here.

use crate::crc32c;
use crate::geometry::BLOCK_SIZE;
use crate::le::{put_u16, put_u32, put_u8};

pub(crate) const FT_REG: u8 = 1;
pub(crate) const FT_DIR: u8 = 2;
pub(crate) const FT_CHR: u8 = 3;
pub(crate) const FT_BLK: u8 = 4;
pub(crate) const FT_FIFO: u8 = 5;
pub(crate) const FT_SOCK: u8 = 6;
pub(crate) const FT_SYMLINK: u8 = 7;

const BS: usize = BLOCK_SIZE as usize;
/// The fake entry at the end of each block that holds the checksum.
const TAIL: usize = 12;
/// Bytes of a block available to entries.
pub(crate) const SPACE: usize = BS - TAIL;

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub name: Vec<u8>,
    pub ino: u32,
    pub file_type: u8,
}

pub(crate) fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// Splits `entries` into per-block slices (greedy packing).
fn pack(entries: &[Entry]) -> Vec<&[Entry]> {
    let mut blocks = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, e) in entries.iter().enumerate() {
        let n = rec_len(e.name.len());
        if used + n > SPACE {
            blocks.push(&entries[start..i]);
            start = i;
            used = 0;
        }
        used += n;
    }
    blocks.push(&entries[start..]);
    blocks
}

/// Blocks needed for `entries` (which include `.` and `..`).
pub(crate) fn blocks_needed(entries: &[Entry]) -> u64 {
    pack(entries).len() as u64
}

/// Encodes the directory into `nblocks` blocks (at least what
/// [`blocks_needed`] says; extra blocks are empty, as lost+found wants).
pub(crate) fn encode(entries: &[Entry], nblocks: u64, inode_seed: u32) -> Vec<u8> {
    let packed = pack(entries);
    let total = (nblocks as usize).max(packed.len());
    let mut out = vec![0u8; total * BS];
    for (b, block) in out.chunks_exact_mut(BS).enumerate() {
        let list: Vec<&Entry> = packed
            .get(b)
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        encode_block(block, &list, inode_seed);
    }
    out
}

/// Encodes one block holding `list` (which must fit), with its checksum
/// tail; an empty list gives an empty block.
pub(crate) fn encode_block(block: &mut [u8], list: &[&Entry], inode_seed: u32) {
    let mut at = 0;
    for (i, e) in list.iter().enumerate() {
        let len = if i + 1 == list.len() {
            SPACE - at
        } else {
            rec_len(e.name.len())
        };
        put_u32(block, at, e.ino);
        put_u16(block, at + 4, len as u16);
        put_u8(block, at + 6, e.name.len() as u8);
        put_u8(block, at + 7, e.file_type);
        block[at + 8..at + 8 + e.name.len()].copy_from_slice(&e.name);
        at += len;
    }
    if list.is_empty() {
        // An empty block is one unused entry spanning it.
        put_u16(block, 4, SPACE as u16);
    }
    put_u16(block, SPACE + 4, TAIL as u16);
    put_u8(block, SPACE + 7, 0xDE);
    let csum = crc32c::update(inode_seed, &block[..SPACE]);
    put_u32(block, SPACE + 8, csum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::le::get_u32;

    fn e(name: &str, ino: u32) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            ino,
            file_type: FT_REG,
        }
    }

    #[test]
    fn packs_and_pads_blocks() {
        let mut v = vec![e(".", 2), e("..", 2)];
        // 250-byte names take 260 bytes each: 15 per 4084-byte block after
        // the 24 bytes of `.` and `..` (24 + 15 * 260 = 3924).
        for i in 0..40 {
            v.push(e(&format!("{:0>250}", i), 100 + i));
        }
        assert_eq!(blocks_needed(&v), 3);
        let enc = encode(&v, 4, 99);
        assert_eq!(enc.len(), 4 * BS);
        for block in enc.chunks_exact(BS) {
            // Walking rec_len from 0 lands exactly on the tail.
            let mut at = 0;
            while at < SPACE {
                at += u16::from_le_bytes([block[at + 4], block[at + 5]]) as usize;
            }
            assert_eq!(at, SPACE);
            assert_eq!(block[SPACE + 7], 0xDE);
            assert_eq!(
                get_u32(block, SPACE + 8),
                crc32c::update(99, &block[..SPACE])
            );
        }
        // The last block is empty: inode 0 spanning the block.
        let last = &enc[3 * BS..];
        assert_eq!(get_u32(last, 0), 0);
        assert_eq!(u16::from_le_bytes([last[4], last[5]]) as usize, SPACE);
    }
}
