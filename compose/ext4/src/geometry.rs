//! Sizes derived from the options: block and group counts, inodes per
//! group, descriptor table size and journal size.
//!
//! The rules follow mke2fs so that the images look like what admins and
//! tools expect (same group size, same journal size table, same handling of
//! a too-small last group).

use crate::error::Ext4Error;
use crate::options::Options;

pub(crate) const BLOCK_SIZE: u64 = 4096;
pub(crate) const BLOCKS_PER_GROUP: u64 = 8 * BLOCK_SIZE;
pub(crate) const INODE_SIZE: u64 = 256;
pub(crate) const INODES_PER_BLOCK: u32 = (BLOCK_SIZE / INODE_SIZE) as u32;
/// 64-byte descriptors (the `64bit` feature): full 32-bit bitmap checksums.
pub(crate) const DESC_SIZE: u64 = 64;
/// Groups per flex group, as a power of two (mke2fs's default 16).
pub(crate) const LOG_GROUPS_PER_FLEX: u32 = 4;
/// The first inode not reserved by ext4; also lost+found's number.
pub(crate) const FIRST_INO: u32 = 11;
/// jbd2's minimum journal (JBD2_MIN_JOURNAL_BLOCKS).
const MIN_JOURNAL_BLOCKS: u32 = 1024;
/// mke2fs's upper limit on the journal size.
const MAX_JOURNAL_BLOCKS: u32 = 10_240_000;

#[derive(Clone, Debug)]
pub(crate) struct Geometry {
    pub blocks: u64,
    pub groups: u32,
    pub inodes_per_group: u32,
    pub itable_blocks: u64,
    pub gdt_blocks: u64,
    pub journal_blocks: u32,
    pub reserved_blocks: u64,
}

/// Whether group `g` holds a superblock backup under `sparse_super`:
/// groups 0, 1 and powers of 3, 5 and 7.
pub(crate) fn has_super(g: u32) -> bool {
    fn power_of(mut g: u32, base: u32) -> bool {
        while g > 1 && g % base == 0 {
            g /= base;
        }
        g == 1
    }
    g <= 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
}

/// mke2fs's journal size for a filesystem of `blocks` 4 KiB blocks.
fn default_journal_blocks(blocks: u64) -> u32 {
    match blocks {
        b if b < 2048 => 0,
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

fn invalid(option: &'static str, reason: String) -> Ext4Error {
    Ext4Error::InvalidOption { option, reason }
}

impl Geometry {
    pub fn new(opts: &Options) -> Result<Geometry, Ext4Error> {
        if opts.label.len() > 16 {
            return Err(invalid(
                "label",
                format!(
                    "`{}` is {} bytes; ext4 labels hold at most 16",
                    opts.label,
                    opts.label.len()
                ),
            ));
        }
        if !(1024..=1 << 30).contains(&opts.inode_ratio) {
            return Err(invalid(
                "inode_ratio",
                format!(
                    "{} is outside 1024..=1073741824 bytes per inode",
                    opts.inode_ratio
                ),
            ));
        }
        if opts.reserved_percent > 50 {
            return Err(invalid(
                "reserved_percent",
                format!(
                    "{}% is more than mke2fs's limit of 50%",
                    opts.reserved_percent
                ),
            ));
        }
        if let Some(j) = opts.journal_blocks {
            if j != 0 && !(MIN_JOURNAL_BLOCKS..=MAX_JOURNAL_BLOCKS).contains(&j) {
                return Err(invalid(
                    "journal_blocks",
                    format!("{j} is outside {MIN_JOURNAL_BLOCKS}..={MAX_JOURNAL_BLOCKS} (or 0 for no journal)"),
                ));
            }
        }
        let too_small = |needed: u64| Ext4Error::TooSmall {
            size_bytes: opts.size_bytes,
            needed_blocks: needed,
            available_blocks: opts.size_bytes / BLOCK_SIZE,
        };
        let mut blocks = opts.size_bytes / BLOCK_SIZE;
        // 64 blocks is far below anything useful but keeps the arithmetic
        // below away from degenerate cases; the capacity check gives the
        // precise verdict.
        if blocks < 64 {
            return Err(too_small(64));
        }
        loop {
            let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
            let groups32 = u32::try_from(groups).map_err(|_| {
                invalid(
                    "size_bytes",
                    format!("{} bytes is too large", opts.size_bytes),
                )
            })?;
            let wanted = (blocks * BLOCK_SIZE).div_ceil(u64::from(opts.inode_ratio));
            let per_group = wanted
                .div_ceil(groups)
                .next_multiple_of(u64::from(INODES_PER_BLOCK))
                .clamp(u64::from(INODES_PER_BLOCK), BLOCKS_PER_GROUP);
            let total_inodes = per_group * groups;
            if total_inodes > u64::from(u32::MAX) {
                return Err(invalid(
                    "inode_ratio",
                    format!(
                        "{} bytes per inode gives more than 2^32 inodes",
                        opts.inode_ratio
                    ),
                ));
            }
            let itable_blocks = per_group / u64::from(INODES_PER_BLOCK);
            let gdt_blocks = (groups * DESC_SIZE).div_ceil(BLOCK_SIZE);
            // The descriptor table sits after each backup superblock.
            if 1 + gdt_blocks + 2 + itable_blocks > BLOCKS_PER_GROUP {
                return Err(invalid(
                    "size_bytes",
                    format!(
                        "{} bytes needs more group descriptors than fit a block group",
                        opts.size_bytes
                    ),
                ));
            }
            let last = groups32 - 1;
            let mut overhead = 2 + itable_blocks;
            if has_super(last) {
                overhead += 1 + gdt_blocks;
            }
            let rem = blocks % BLOCKS_PER_GROUP;
            if groups == 1 && rem != 0 && rem < overhead {
                return Err(too_small(overhead));
            }
            if groups > 1 && rem != 0 && rem < overhead + 50 {
                // Like mke2fs: a sliver of a group is not worth its metadata.
                blocks -= rem;
                continue;
            }
            let journal_blocks = opts
                .journal_blocks
                .unwrap_or_else(|| default_journal_blocks(blocks));
            return Ok(Geometry {
                blocks,
                groups: groups32,
                inodes_per_group: per_group as u32,
                itable_blocks,
                gdt_blocks,
                journal_blocks,
                reserved_blocks: blocks * u64::from(opts.reserved_percent) / 100,
            });
        }
    }

    pub fn inodes(&self) -> u64 {
        u64::from(self.inodes_per_group) * u64::from(self.groups)
    }

    pub fn group_start(&self, g: u32) -> u64 {
        u64::from(g) * BLOCKS_PER_GROUP
    }

    /// Blocks in group `g` (the last one may be short).
    pub fn group_len(&self, g: u32) -> u64 {
        (self.blocks - self.group_start(g)).min(BLOCKS_PER_GROUP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let with: Vec<u32> = (0..100).filter(|&g| has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn mke2fs_like_sizes() {
        let g = Geometry::new(&Options::new(20 << 20)).unwrap();
        assert_eq!((g.blocks, g.groups, g.inodes_per_group), (5120, 1, 1280));
        assert_eq!(g.journal_blocks, 1024);
        // 200 MiB: two groups, the second one short.
        let g = Geometry::new(&Options::new(200 << 20)).unwrap();
        assert_eq!((g.blocks, g.groups), (51200, 2));
        assert_eq!(g.journal_blocks, 4096);
        // A 20-block sliver of a third group is dropped.
        let g = Geometry::new(&Options::new((2 * 32768 + 20) * 4096)).unwrap();
        assert_eq!((g.blocks, g.groups), (65536, 2));
        // Not a whole number of blocks: the tail is unused.
        let g = Geometry::new(&Options::new((8 << 20) + 100)).unwrap();
        assert_eq!(g.blocks, 2048);
    }

    #[test]
    fn rejects_bad_options() {
        let mut o = Options::new(64 << 20);
        o.label = "x".repeat(17);
        assert!(matches!(
            Geometry::new(&o),
            Err(Ext4Error::InvalidOption {
                option: "label",
                ..
            })
        ));
        let mut o = Options::new(64 << 20);
        o.journal_blocks = Some(100);
        assert!(matches!(
            Geometry::new(&o),
            Err(Ext4Error::InvalidOption { .. })
        ));
        assert!(matches!(
            Geometry::new(&Options::new(100 << 10)),
            Err(Ext4Error::TooSmall { .. })
        ));
    }
}
