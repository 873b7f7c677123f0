//! The EROFS on-disk structures this writer emits, encoded field by field
//! (little-endian, every reserved byte zero) so no padding or uninitialized
//! memory can reach the image.
//!
//! Field offsets follow the kernel's `fs/erofs/erofs_fs.h`; only the subset
//! Kiln writes is here: 4 KiB blocks, compact and extended inodes, inline
//! xattrs, directory entries, and the map header of LZ4 compressed files.

/// Kiln writes 4 KiB blocks only: the page size of every target it builds
/// for, and the only block size older kernels mount.
pub const BLOCK_SIZE: usize = 4096;
pub const BLOCK_BITS: u8 = 12;
/// Room at the start of the image for x86 boot sectors and the like.
pub const SUPER_OFFSET: usize = 1024;
pub const SUPER_SIZE: usize = 128;
pub const SUPER_MAGIC: u32 = 0xE0F5_E1E2;
/// Inodes are addressed in 32-byte slots: nid = byte offset / 32.
pub const SLOT_SIZE: usize = 32;

pub const COMPAT_SB_CHKSUM: u32 = 0x1;
/// Compressed data sits at the end of its physical cluster after zero
/// padding, which lets the kernel find its exact length and decompress in
/// place; required for LZ4 pclusters.
pub const INCOMPAT_ZERO_PADDING: u32 = 0x1;
/// A compressed file's last extent may be stored inline after its map.
pub const INCOMPAT_ZTAILPACKING: u32 = 0x10;

pub const COMPACT_INODE_SIZE: usize = 32;
pub const EXTENDED_INODE_SIZE: usize = 64;
pub const XATTR_IBODY_HEADER_SIZE: usize = 12;
pub const DIRENT_SIZE: usize = 12;
pub const MAX_NAME_LEN: usize = 255;

pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFIFO: u16 = 0o010000;

/// Directory entry file types.
pub const FT_REG_FILE: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHRDEV: u8 = 3;
pub const FT_BLKDEV: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

/// Inline xattr name indexes: the prefix is implied, only the rest stored.
pub const XATTR_INDEX_USER: u8 = 1;
pub const XATTR_INDEX_POSIX_ACL_ACCESS: u8 = 2;
pub const XATTR_INDEX_POSIX_ACL_DEFAULT: u8 = 3;
pub const XATTR_INDEX_TRUSTED: u8 = 4;
pub const XATTR_INDEX_LUSTRE: u8 = 5;
pub const XATTR_INDEX_SECURITY: u8 = 6;

/// How an inode's data is stored (`i_format` bits 1..=3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Contiguous blocks from `raw_blkaddr`.
    FlatPlain = 0,
    /// Contiguous blocks, and the last partial block right after the inode.
    FlatInline = 2,
    /// LZ4 pclusters described by a packed map of the file's lclusters.
    CompressedCompact = 3,
}

/// The fields of an on-disk inode; `encode` picks the compact (32-byte) or
/// extended (64-byte) form.
#[derive(Clone, Debug)]
pub struct InodeHeader {
    pub layout: Layout,
    pub extended: bool,
    pub xattr_icount: u16,
    /// File type and permission bits.
    pub mode: u16,
    pub nlink: u32,
    pub size: u64,
    /// `raw_blkaddr`, `compressed_blocks` or `rdev`, by file type and layout.
    pub union: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    /// Extended inodes only; compact ones take the superblock's build time.
    pub mtime: u64,
}

impl InodeHeader {
    pub fn size_on_disk(extended: bool) -> usize {
        if extended {
            EXTENDED_INODE_SIZE
        } else {
            COMPACT_INODE_SIZE
        }
    }

    /// Appends the encoded inode. A compact inode is only chosen by the
    /// caller when every value fits its narrower fields.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let format = (self.layout as u16) << 1 | u16::from(self.extended);
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&self.xattr_icount.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
        if self.extended {
            out.extend_from_slice(&0u16.to_le_bytes()); // i_reserved
            out.extend_from_slice(&self.size.to_le_bytes());
            out.extend_from_slice(&self.union.to_le_bytes());
            out.extend_from_slice(&self.ino.to_le_bytes());
            out.extend_from_slice(&self.uid.to_le_bytes());
            out.extend_from_slice(&self.gid.to_le_bytes());
            out.extend_from_slice(&self.mtime.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes()); // i_mtime_nsec
            out.extend_from_slice(&self.nlink.to_le_bytes());
            out.extend_from_slice(&[0u8; 16]);
        } else {
            out.extend_from_slice(&(self.nlink as u16).to_le_bytes());
            out.extend_from_slice(&(self.size as u32).to_le_bytes());
            // i_mtime relative to the build time (0: the build time itself).
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&self.union.to_le_bytes());
            out.extend_from_slice(&self.ino.to_le_bytes());
            out.extend_from_slice(&(self.uid as u16).to_le_bytes());
            out.extend_from_slice(&(self.gid as u16).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
    }
}

/// Linux's `new_encode_dev`: 12-bit major, 20-bit minor in one u32.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The superblock fields Kiln sets; everything else is zero.
#[derive(Clone, Debug)]
pub struct SuperBlock {
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub root_nid: u16,
    pub inos: u64,
    pub build_time: u64,
    pub blocks: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
}

impl SuperBlock {
    /// The 128 encoded bytes, with a zero checksum (see `crc::superblock`).
    pub fn encode(&self) -> [u8; SUPER_SIZE] {
        let mut b = [0u8; SUPER_SIZE];
        b[0..4].copy_from_slice(&SUPER_MAGIC.to_le_bytes());
        // 4..8: checksum, filled in last.
        b[8..12].copy_from_slice(&self.feature_compat.to_le_bytes());
        b[12] = BLOCK_BITS;
        b[13] = 0; // sb_extslots
        b[14..16].copy_from_slice(&self.root_nid.to_le_bytes());
        b[16..24].copy_from_slice(&self.inos.to_le_bytes());
        b[24..32].copy_from_slice(&self.build_time.to_le_bytes());
        // 32..36: build_time_nsec = 0
        b[36..40].copy_from_slice(&self.blocks.to_le_bytes());
        // 40..44: meta_blkaddr = 0 (nids count from the image start)
        // 44..48: xattr_blkaddr = 0 (no shared xattrs)
        b[48..64].copy_from_slice(&self.uuid);
        b[64..80].copy_from_slice(&self.volume_name);
        b[80..84].copy_from_slice(&self.feature_incompat.to_le_bytes());
        // 84..86: lz4_max_distance = 0, the default 64 KiB window.
        b
    }
}

/// Byte range of the checksum inside the encoded superblock.
pub const SUPER_CHECKSUM: std::ops::Range<usize> = 4..8;

/// Appends one directory entry.
pub fn encode_dirent(out: &mut Vec<u8>, nid: u64, nameoff: u16, file_type: u8) {
    out.extend_from_slice(&nid.to_le_bytes());
    out.extend_from_slice(&nameoff.to_le_bytes());
    out.push(file_type);
    out.push(0);
}

/// The map header before a compressed inode's compact index: 8 bytes.
pub const MAP_HEADER_SIZE: usize = 8;

/// The map header: LZ4 for both head types, 4 KiB lclusters, the given
/// `h_advise` flags, and the size of an inline (tail-packed) pcluster.
pub fn encode_map_header(out: &mut Vec<u8>, advise: u16, idata_size: u16) {
    out.extend_from_slice(&0u16.to_le_bytes()); // h_reserved1
    out.extend_from_slice(&idata_size.to_le_bytes());
    out.extend_from_slice(&advise.to_le_bytes());
    out.push(0); // h_algorithmtype: LZ4 for HEAD1 and HEAD2
    out.push(0); // h_clusterbits: lclusters of 2^(12 + 0) bytes
}

pub fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_have_their_fixed_sizes() {
        let mut h = InodeHeader {
            layout: Layout::FlatInline,
            extended: false,
            xattr_icount: 0,
            mode: S_IFREG | 0o644,
            nlink: 1,
            size: 5,
            union: 0,
            ino: 1,
            uid: 1,
            gid: 2,
            mtime: 0,
        };
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out.len(), COMPACT_INODE_SIZE);
        assert_eq!(&out[0..2], &[4, 0]); // FLAT_INLINE << 1, compact
        h.extended = true;
        out.clear();
        h.encode(&mut out);
        assert_eq!(out.len(), EXTENDED_INODE_SIZE);
        assert_eq!(&out[0..2], &[5, 0]);
    }

    #[test]
    fn device_numbers_use_the_new_linux_encoding() {
        assert_eq!(encode_dev(8, 1), 0x801);
        assert_eq!(encode_dev(259, 0x12345), 0x1231_0345);
    }
}
