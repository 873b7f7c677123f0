//! The superblock (primary and backups) and the group descriptor table.

use crate::crc32c;
use crate::geometry::{
    Geometry, BLOCKS_PER_GROUP, BLOCK_SIZE, DESC_SIZE, FIRST_INO, INODE_SIZE, LOG_GROUPS_PER_FLEX,
};
use crate::le::{put_u16, put_u32, put_u8};

pub(crate) const COMPAT_HAS_JOURNAL: u32 = 0x0004;
pub(crate) const COMPAT_EXT_ATTR: u32 = 0x0008;
pub(crate) const COMPAT_DIR_INDEX: u32 = 0x0020;
pub(crate) const INCOMPAT_FILETYPE: u32 = 0x0002;
pub(crate) const INCOMPAT_EXTENTS: u32 = 0x0040;
pub(crate) const INCOMPAT_64BIT: u32 = 0x0080;
pub(crate) const INCOMPAT_FLEX_BG: u32 = 0x0200;
pub(crate) const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
pub(crate) const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
pub(crate) const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
pub(crate) const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
pub(crate) const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;
pub(crate) const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;

const MAGIC: u16 = 0xEF53;
pub(crate) const JOURNAL_INO: u32 = 8;
/// `EXT2_FLAGS_UNSIGNED_HASH`: the htree hash treats name bytes as
/// unsigned whatever the CPU's `char`, so images are the same from any
/// build host.
const FLAGS_UNSIGNED_HASH: u32 = 0x0002;
/// `user_xattr` and `acl` by default, like mke2fs.conf.
const DEFAULT_MOUNT_OPTS: u32 = 0x0004 | 0x0008;
const HASH_HALF_MD4: u8 = 1;
const JNL_BACKUP_BLOCKS: u8 = 1;

/// The filesystem-wide values the superblock records.
pub(crate) struct Super<'a> {
    pub geo: &'a Geometry,
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    pub label: &'a str,
    pub epoch: u32,
    /// The journal inode's `i_block` and size, backed up in the superblock.
    pub journal: Option<([u8; 60], u64)>,
}

impl Super<'_> {
    pub fn features(&self) -> (u32, u32, u32) {
        let mut compat = COMPAT_EXT_ATTR | COMPAT_DIR_INDEX;
        if self.journal.is_some() {
            compat |= COMPAT_HAS_JOURNAL;
        }
        (
            compat,
            INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG,
            RO_COMPAT_SPARSE_SUPER
                | RO_COMPAT_LARGE_FILE
                | RO_COMPAT_HUGE_FILE
                | RO_COMPAT_DIR_NLINK
                | RO_COMPAT_EXTRA_ISIZE
                | RO_COMPAT_METADATA_CSUM,
        )
    }

    /// The 1024-byte superblock as stored in group `group`.
    pub fn encode(&self, group: u32) -> Vec<u8> {
        let g = self.geo;
        let mut b = vec![0u8; 1024];
        let (compat, incompat, ro_compat) = self.features();
        put_u32(&mut b, 0x00, g.inodes() as u32);
        put_u32(&mut b, 0x04, g.blocks as u32);
        put_u32(&mut b, 0x08, g.reserved_blocks as u32);
        put_u32(&mut b, 0x0C, self.free_blocks as u32);
        put_u32(&mut b, 0x10, self.free_inodes as u32);
        put_u32(&mut b, 0x14, 0); // first data block (4 KiB blocks)
        put_u32(&mut b, 0x18, 2); // log2(block size) - 10
        put_u32(&mut b, 0x1C, 2); // cluster size = block size
        put_u32(&mut b, 0x20, BLOCKS_PER_GROUP as u32);
        put_u32(&mut b, 0x24, BLOCKS_PER_GROUP as u32);
        put_u32(&mut b, 0x28, g.inodes_per_group);
        put_u32(&mut b, 0x2C, 0); // never mounted
        put_u32(&mut b, 0x30, self.epoch); // write time
        put_u16(&mut b, 0x34, 0); // mount count
        put_u16(&mut b, 0x36, 0xFFFF); // no mount-count-based fsck
        put_u16(&mut b, 0x38, MAGIC);
        put_u16(&mut b, 0x3A, 1); // cleanly unmounted
        put_u16(&mut b, 0x3C, 1); // errors=continue
        put_u32(&mut b, 0x40, self.epoch); // last check
        put_u32(&mut b, 0x4C, 1); // dynamic revision
        put_u32(&mut b, 0x54, FIRST_INO);
        put_u16(&mut b, 0x58, INODE_SIZE as u16);
        put_u16(&mut b, 0x5A, group as u16);
        put_u32(&mut b, 0x5C, compat);
        put_u32(&mut b, 0x60, incompat);
        put_u32(&mut b, 0x64, ro_compat);
        b[0x68..0x78].copy_from_slice(&self.uuid);
        b[0x78..0x78 + self.label.len()].copy_from_slice(self.label.as_bytes());
        b[0xEC..0xFC].copy_from_slice(&self.hash_seed);
        put_u8(&mut b, 0xFC, HASH_HALF_MD4);
        put_u16(&mut b, 0xFE, DESC_SIZE as u16);
        put_u32(&mut b, 0x100, DEFAULT_MOUNT_OPTS);
        put_u32(&mut b, 0x108, self.epoch); // mkfs time
        if let Some((i_block, size)) = &self.journal {
            put_u32(&mut b, 0xE0, JOURNAL_INO);
            put_u8(&mut b, 0xFD, JNL_BACKUP_BLOCKS);
            b[0x10C..0x10C + 60].copy_from_slice(i_block);
            put_u32(&mut b, 0x10C + 60, (size >> 32) as u32);
            put_u32(&mut b, 0x10C + 64, *size as u32);
        }
        put_u32(&mut b, 0x150, (g.blocks >> 32) as u32);
        put_u32(&mut b, 0x154, (g.reserved_blocks >> 32) as u32);
        put_u32(&mut b, 0x158, (self.free_blocks >> 32) as u32);
        put_u16(&mut b, 0x15C, 32); // min extra isize
        put_u16(&mut b, 0x15E, 32); // wanted extra isize
        put_u32(&mut b, 0x160, FLAGS_UNSIGNED_HASH);
        put_u8(&mut b, 0x174, LOG_GROUPS_PER_FLEX as u8);
        put_u8(&mut b, 0x175, 1); // crc32c
        let csum = crc32c::update(!0, &b[..0x3FC]);
        put_u32(&mut b, 0x3FC, csum);
        b
    }
}

/// `bg_flags`: the inode table and bitmap of this group hold no inode.
pub(crate) const BG_INODE_UNINIT: u16 = 0x0001;

/// One group's descriptor, in host form.
pub(crate) struct Desc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
    pub flags: u16,
    pub itable_unused: u32,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
}

impl Desc {
    pub fn encode(&self, group: u32, fs_seed: u32) -> [u8; DESC_SIZE as usize] {
        let mut b = [0u8; DESC_SIZE as usize];
        put_u32(&mut b, 0x00, self.block_bitmap as u32);
        put_u32(&mut b, 0x04, self.inode_bitmap as u32);
        put_u32(&mut b, 0x08, self.inode_table as u32);
        put_u16(&mut b, 0x0C, self.free_blocks as u16);
        put_u16(&mut b, 0x0E, self.free_inodes as u16);
        put_u16(&mut b, 0x10, self.used_dirs as u16);
        put_u16(&mut b, 0x12, self.flags);
        put_u16(&mut b, 0x18, self.block_bitmap_csum as u16);
        put_u16(&mut b, 0x1A, self.inode_bitmap_csum as u16);
        put_u16(&mut b, 0x1C, self.itable_unused as u16);
        put_u32(&mut b, 0x20, (self.block_bitmap >> 32) as u32);
        put_u32(&mut b, 0x24, (self.inode_bitmap >> 32) as u32);
        put_u32(&mut b, 0x28, (self.inode_table >> 32) as u32);
        put_u16(&mut b, 0x2C, (self.free_blocks >> 16) as u16);
        put_u16(&mut b, 0x2E, (self.free_inodes >> 16) as u16);
        put_u16(&mut b, 0x30, (self.used_dirs >> 16) as u16);
        put_u16(&mut b, 0x32, (self.itable_unused >> 16) as u16);
        put_u16(&mut b, 0x38, (self.block_bitmap_csum >> 16) as u16);
        put_u16(&mut b, 0x3A, (self.inode_bitmap_csum >> 16) as u16);
        let csum = crc32c::update(crc32c::update(fs_seed, &group.to_le_bytes()), &b);
        put_u16(&mut b, 0x1E, csum as u16);
        b
    }
}

/// The descriptor table, padded to whole blocks.
pub(crate) fn table(descs: &[[u8; DESC_SIZE as usize]], gdt_blocks: u64) -> Vec<u8> {
    let mut out = vec![0u8; (gdt_blocks * BLOCK_SIZE) as usize];
    for (i, d) in descs.iter().enumerate() {
        let at = i * DESC_SIZE as usize;
        out[at..at + DESC_SIZE as usize].copy_from_slice(d);
    }
    out
}
