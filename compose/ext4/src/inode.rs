//! The 256-byte on-disk inode and its checksum.

use crate::crc32c;
use crate::geometry::INODE_SIZE;
use crate::le::{put_u16, put_u32};
use crate::xattr::{IBODY_LEN, IBODY_OFFSET};

pub(crate) const S_IFIFO: u16 = 0o010000;
pub(crate) const S_IFCHR: u16 = 0o020000;
pub(crate) const S_IFDIR: u16 = 0o040000;
pub(crate) const S_IFBLK: u16 = 0o060000;
pub(crate) const S_IFREG: u16 = 0o100000;
pub(crate) const S_IFLNK: u16 = 0o120000;
pub(crate) const S_IFSOCK: u16 = 0o140000;

/// `EXT4_EXTENTS_FL`: `i_block` holds an extent tree root.
pub(crate) const EXTENTS_FL: u32 = 0x0008_0000;
/// Bytes of `i_extra_isize`: up to and including `i_projid`.
const EXTRA_ISIZE: u16 = 32;
const CSUM_LO: usize = 0x7C;
const CSUM_HI: usize = 0x82;

/// Everything an inode records, in host form.
#[derive(Clone, Debug)]
pub(crate) struct Inode {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    /// Data, tree and xattr blocks, in 4 KiB blocks.
    pub blocks: u64,
    pub flags: u32,
    pub i_block: [u8; 60],
    pub xattr_block: u64,
    /// In-inode xattr area (see `xattr::Placed::ibody`), or empty.
    pub ibody: Vec<u8>,
}

impl Default for Inode {
    fn default() -> Self {
        Inode {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            links: 0,
            blocks: 0,
            flags: 0,
            i_block: [0; 60],
            xattr_block: 0,
            ibody: Vec::new(),
        }
    }
}

/// ext4 stores seconds as signed 32 bits plus two epoch bits in `*_extra`;
/// times from 2038 (≥ 2^31) set epoch bit 0.
fn time_fields(t: u32) -> (u32, u32) {
    (t, u32::from(t >= 1 << 31))
}

/// The per-inode checksum seed (UUID seed, inode number, generation 0),
/// which also seeds directory and extent block checksums.
pub(crate) fn seed(fs_seed: u32, ino: u32) -> u32 {
    crc32c::update(
        crc32c::update(fs_seed, &ino.to_le_bytes()),
        &0u32.to_le_bytes(),
    )
}

fn checksum(buf: &mut [u8], ino: u32, fs_seed: u32, has_hi: bool) {
    let csum = crc32c::update(seed(fs_seed, ino), buf);
    put_u16(buf, CSUM_LO, csum as u16);
    if has_hi {
        put_u16(buf, CSUM_HI, (csum >> 16) as u16);
    }
}

/// Encodes inode `ino` with all timestamps at `epoch`.
pub(crate) fn encode(ino: u32, i: &Inode, epoch: u32, fs_seed: u32) -> Vec<u8> {
    let mut b = vec![0u8; INODE_SIZE as usize];
    let (secs, extra) = time_fields(epoch);
    let sectors = i.blocks * 8;
    put_u16(&mut b, 0x00, i.mode);
    put_u16(&mut b, 0x02, i.uid as u16);
    put_u32(&mut b, 0x04, i.size as u32);
    put_u32(&mut b, 0x08, secs); // atime
    put_u32(&mut b, 0x0C, secs); // ctime
    put_u32(&mut b, 0x10, secs); // mtime
    put_u16(&mut b, 0x18, i.gid as u16);
    put_u16(&mut b, 0x1A, i.links);
    put_u32(&mut b, 0x1C, sectors as u32);
    put_u32(&mut b, 0x20, i.flags);
    b[0x28..0x28 + 60].copy_from_slice(&i.i_block);
    put_u32(&mut b, 0x68, i.xattr_block as u32);
    put_u32(&mut b, 0x6C, (i.size >> 32) as u32);
    put_u16(&mut b, 0x74, (sectors >> 32) as u16);
    put_u16(&mut b, 0x76, (i.xattr_block >> 32) as u16);
    put_u16(&mut b, 0x78, (i.uid >> 16) as u16);
    put_u16(&mut b, 0x7A, (i.gid >> 16) as u16);
    put_u16(&mut b, 0x80, EXTRA_ISIZE);
    put_u32(&mut b, 0x84, extra); // ctime_extra
    put_u32(&mut b, 0x88, extra); // mtime_extra
    put_u32(&mut b, 0x8C, extra); // atime_extra
    put_u32(&mut b, 0x90, secs); // crtime
    put_u32(&mut b, 0x94, extra); // crtime_extra
    if !i.ibody.is_empty() {
        b[IBODY_OFFSET..IBODY_OFFSET + IBODY_LEN].copy_from_slice(&i.ibody);
    }
    checksum(&mut b, ino, fs_seed, true);
    b
}

/// A reserved inode (1, 3–7, 9, 10) as mke2fs writes it: zeroed, no extra
/// fields, but with a valid checksum.
pub(crate) fn encode_reserved(ino: u32, fs_seed: u32) -> Vec<u8> {
    let mut b = vec![0u8; INODE_SIZE as usize];
    checksum(&mut b, ino, fs_seed, false);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::le::get_u32;

    #[test]
    fn splits_32_bit_ids_and_times() {
        let i = Inode {
            mode: S_IFREG | 0o4755,
            uid: 100_000,
            gid: 70_000,
            size: 5 << 32,
            links: 1,
            ..Default::default()
        };
        let b = encode(12, &i, 3_000_000_000, 1);
        assert_eq!(
            u16::from_le_bytes([b[2], b[3]]) as u32
                | (u16::from_le_bytes([b[0x78], b[0x79]]) as u32) << 16,
            100_000
        );
        assert_eq!(get_u32(&b, 0x6C), 5);
        assert_eq!(get_u32(&b, 0x10), 3_000_000_000);
        assert_eq!(get_u32(&b, 0x88) & 3, 1, "epoch bit for a post-2038 time");
        // The checksum verifies: recompute with the fields zeroed.
        let mut z = b.clone();
        z[CSUM_LO..CSUM_LO + 2].fill(0);
        z[CSUM_HI..CSUM_HI + 2].fill(0);
        let c = crc32c::update(seed(1, 12), &z);
        assert_eq!(u16::from_le_bytes([b[CSUM_LO], b[CSUM_LO + 1]]), c as u16);
        assert_eq!(
            u16::from_le_bytes([b[CSUM_HI], b[CSUM_HI + 1]]),
            (c >> 16) as u16
        );
    }
}
