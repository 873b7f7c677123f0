//! Writes EROFS images from Kiln's filesystem tree.
//!
//! EROFS is the read-only root filesystem Kiln images use: compact, fast to
//! read, and optionally LZ4-compressed in place. No Rust crate writes it, and
//! `mkfs.erofs` reads metadata from a host directory (owners, modes and
//! xattrs of whoever ran it), so Kiln writes images itself, from the tree it
//! assembled.
//!
//! Images are reproducible: the same tree and options give the same bytes.
//! Every timestamp is `Options::epoch`, inodes are numbered and blocks
//! allocated in path order, unused bytes are zero, and the UUID (unless
//! given) is derived from a hash of the image content.
//!
//! Layout, front to back: the superblock's block (also holding the root
//! directory's inode and other small inodes), regular files' data in path
//! order, then directory and long symlink blocks, then the remaining inodes.
//! Writing file data first lets files stream through the compressor without
//! being held in memory: the inode table only needs their resulting layout.
//!
//! What is written: 4 KiB blocks; compact inodes, or extended ones where ids,
//! size or link count need them; inline xattrs; the last partial block of
//! files, directories and symlinks inline after the inode where it fits;
//! multi-block directories; hard links as one inode. Compressed files use
//! LZ4 in one-block physical clusters with the compact (2-byte) map, as
//! `mkfs.erofs` does, and by default pack their last cluster inline
//! (`Options::tail_packing`). The superblock carries a CRC32C checksum.

mod compress;
mod crc;
mod dir;
mod error;
mod files;
mod format;
mod image;
mod meta;
mod plan;
mod record;
mod source;
mod writer;
mod xattr;
mod zmap;

use std::io::{Seek, Write};

use kiln_fstree::Tree;

pub use error::ErofsError;

/// How regular files' data is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    /// LZ4, fast compression.
    Lz4,
    /// LZ4 with the high-compression encoder (same format, same decompression
    /// speed), `level` 1..=12; 9 is liblz4's and mkfs.erofs's default, 12 is
    /// the slowest and smallest.
    Lz4hc { level: u8 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: the time of every inode and of the build.
    pub epoch: u64,
    /// The volume UUID; `None` derives it from the image content.
    pub uuid: Option<[u8; 16]>,
    /// The volume name, at most 16 bytes.
    pub label: Option<String>,
    /// Store the last, partial pcluster of a compressed file inline after
    /// its inode instead of in a block of its own ("ztailpacking"): about
    /// half a block less per compressed file. Such images need Linux 5.17
    /// or later; without it compressed images mount on 5.4 and later.
    pub tail_packing: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            compression: Compression::None,
            epoch: 0,
            uuid: None,
            label: None,
            tail_packing: true,
        }
    }
}

/// What was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub bytes: u64,
    pub blocks: u64,
    pub inodes: u64,
    pub uuid: [u8; 16],
}

/// Writes the image of `tree` to `out`, starting at its current position,
/// and leaves `out` positioned after the image.
///
/// Only metadata from the tree is used: a `Data::Path` file contributes its
/// content, never its host owner, mode or time. A hard link has its
/// target's inode, so its own metadata in the tree is ignored. Regular files
/// that compression would not shrink by at least one block are stored
/// uncompressed.
pub fn write<W: Write + Seek>(
    tree: &Tree,
    opts: &Options,
    out: &mut W,
) -> Result<Summary, ErofsError> {
    writer::write(tree, opts, out)
}
