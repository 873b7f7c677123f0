//! Placement of inode records (inode, xattrs, and inline tail or compression
//! index) in metadata blocks, which decides every inode's nid.
//!
//! Records are placed in inode (path) order, each into the fullest block it
//! still fits in (best fit, ties to the lowest block), else a new block. An
//! inline tail must not cross a block boundary, and filling earlier blocks'
//! holes with later small records keeps the space lost to that low. The
//! first metadata block is the superblock's own block, after the
//! superblock, where the root goes: its nid must fit the superblock's 16-bit
//! `root_nid`.

use std::collections::BTreeSet;

use crate::format::{round_up, BLOCK_SIZE, SLOT_SIZE, SUPER_OFFSET, SUPER_SIZE};

/// Bytes of the superblock's block not usable for records.
pub const RESERVED: usize = SUPER_OFFSET + SUPER_SIZE;

/// Where a record went: a metadata block (0 is the image's first block,
/// block `n` ≥ 1 the n-th one of the metadata area) and an offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub block: u32,
    pub offset: u32,
}

#[derive(Debug)]
pub struct Allocator {
    /// (free bytes, block) of every block with room left.
    free: BTreeSet<(u32, u32)>,
    blocks: u32,
}

impl Allocator {
    pub fn new() -> Allocator {
        let mut free = BTreeSet::new();
        free.insert(((BLOCK_SIZE - RESERVED) as u32, 0));
        Allocator { free, blocks: 1 }
    }

    /// Metadata blocks in use, the superblock's included.
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    /// Places a record of `len` bytes. Records up to a block never cross a
    /// block boundary; longer ones (large compression indexes) start a block
    /// of their own and run on through the next ones.
    pub fn place(&mut self, len: usize) -> Place {
        let len = round_up(len.max(1), SLOT_SIZE) as u32;
        let block_size = BLOCK_SIZE as u32;
        if len <= block_size {
            let fit = self.free.range((len, 0)..).next().copied();
            if let Some((free, block)) = fit {
                self.free.remove(&(free, block));
                if free > len {
                    self.free.insert((free - len, block));
                }
                return Place {
                    block,
                    offset: block_size - free,
                };
            }
        }
        let block = self.blocks;
        self.blocks += len.div_ceil(block_size);
        let left = (block_size - len % block_size) % block_size;
        if left > 0 {
            self.free.insert((left, self.blocks - 1));
        }
        Place { block, offset: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_record_goes_after_the_superblock() {
        let mut a = Allocator::new();
        assert_eq!(
            a.place(32),
            Place {
                block: 0,
                offset: 1152
            }
        );
        assert_eq!(
            a.place(33),
            Place {
                block: 0,
                offset: 1184
            }
        );
    }

    #[test]
    fn small_records_fill_the_tightest_hole() {
        let mut a = Allocator::new();
        a.place(BLOCK_SIZE - RESERVED - 64); // block 0: 64 left
        assert_eq!(
            a.place(3000),
            Place {
                block: 1,
                offset: 0
            }
        ); // 1088 left
        assert_eq!(
            a.place(1000),
            Place {
                block: 1,
                offset: 3008
            }
        );
        assert_eq!(
            a.place(64),
            Place {
                block: 0,
                offset: 4032
            }
        );
        assert_eq!(
            a.place(10_000),
            Place {
                block: 2,
                offset: 0
            }
        );
        assert_eq!(a.blocks(), 5);
        // The big record's last block has 12288 - 10016 bytes left.
        assert_eq!(
            a.place(2000),
            Place {
                block: 4,
                offset: 10_016 - 8192
            }
        );
    }
}
