//! The jbd2 journal superblock of an empty, clean internal journal.
//!
//! Only the first journal block is written; the rest of the journal is left
//! as a hole. jbd2 never reads past the superblock of a clean journal
//! (`s_start == 0`), and with the v3 checksums enabled here any stale data a
//! later crash recovery might scan fails the checksum seeded by this
//! filesystem's UUID, so the journal need not be zeroed.

use crate::crc32c;
use crate::geometry::BLOCK_SIZE;
use crate::le::{put_be32, put_u8};

const MAGIC: u32 = 0xC03B_3998;
const SUPERBLOCK_V2: u32 = 4;
const INCOMPAT_64BIT: u32 = 0x0002;
const INCOMPAT_CSUM_V3: u32 = 0x0010;
const CRC32C_CHKSUM: u8 = 4;

/// The journal's first block for a journal of `blocks` blocks.
pub(crate) fn superblock(blocks: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    put_be32(&mut b, 0x00, MAGIC);
    put_be32(&mut b, 0x04, SUPERBLOCK_V2);
    put_be32(&mut b, 0x0C, BLOCK_SIZE as u32);
    put_be32(&mut b, 0x10, blocks); // s_maxlen
    put_be32(&mut b, 0x14, 1); // s_first: log starts after this block
    put_be32(&mut b, 0x18, 1); // s_sequence
    put_be32(&mut b, 0x1C, 0); // s_start: 0 = clean, nothing to replay
                               // The kernel sets these itself on a 64bit, metadata_csum ext4; setting
                               // them here protects the very first transactions too.
    put_be32(&mut b, 0x28, INCOMPAT_64BIT | INCOMPAT_CSUM_V3);
    b[0x30..0x40].copy_from_slice(uuid);
    put_be32(&mut b, 0x40, 1); // s_nr_users
    put_u8(&mut b, 0x50, CRC32C_CHKSUM);
    let csum = crc32c::update(!0, &b[..1024]);
    put_be32(&mut b, 0xFC, csum);
    b
}
