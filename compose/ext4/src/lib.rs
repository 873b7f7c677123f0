//! Writes ext4 filesystem images from a [`kiln_fstree::Tree`].
//!
//! `mke2fs -d` copies the build host's ctimes into the image, so its output
//! is not reproducible, and no Rust crate creates ext4; Kiln writes ext4 for
//! its state and data partitions (read-write, journaled) and optionally the
//! root filesystem. The same tree and [`Options`] always give the same
//! bytes: every time is [`Options::epoch`], the UUID is derived from a hash
//! of the tree (content included) and options, the htree hash seed from a
//! hash of its metadata, and nothing depends on the host or on hash-map
//! order.
//!
//! # Format
//!
//! 4 KiB blocks, 256-byte inodes, 32768 blocks per group and the feature
//! set of Debian 12's `mke2fs -t ext4` minus `resize_inode`:
//!
//! - compat: `has_journal` (unless [`Options::journal_blocks`] is
//!   `Some(0)`), `ext_attr`, `dir_index`
//! - incompat: `filetype`, `extent`, `64bit`, `flex_bg`
//! - ro_compat: `sparse_super`, `large_file`, `huge_file`, `dir_nlink`,
//!   `extra_isize`, `metadata_csum`
//!
//! `resize_inode` is left out because it only reserves descriptor blocks
//! for growing the filesystem online; without it `resize2fs` still grows
//! the filesystem (offline, or online via meta_bg on current kernels).
//! Directories larger than one block get htree (hashed) indexes, as the
//! kernel would never add one to an existing multi-block directory.
//! All-zero 4 KiB blocks of files become holes, as with `mke2fs -d`.
//!
//! # Output and crash safety
//!
//! The image is written with positioned writes and never reads back. Free
//! space, the journal body and the unused part of each inode table are not
//! written (they stay sparse in a new file). That is safe even on a used
//! device: the journal is clean with v3 checksums, so stale blocks in it
//! are never replayed, and inode tables are not flagged as zeroed, so the
//! kernel zeroes their unused part in the background on first mount while
//! `bg_itable_unused` keeps everyone from reading it before then.
//!
//! Invalid trees and trees that do not fit are rejected while planning,
//! before anything is written. I/O errors or a host file changing size can
//! still fail a write half-way, so write to a temporary file and rename it
//! into place once [`write`] returned `Ok`.

mod alloc;
mod crc32c;
mod data;
mod dir;
mod error;
mod extent;
mod geometry;
mod htree;
mod inode;
mod journal;
mod layout;
mod le;
mod mkfs;
mod options;
mod plan;
mod sink;
mod superblock;
mod xattr;

use std::io::{Seek, Write};

pub use error::Ext4Error;
use kiln_fstree::Tree;
pub use options::Options;

/// The filesystem block size (fixed).
pub const BLOCK_SIZE: u64 = geometry::BLOCK_SIZE;

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The filesystem UUID (derived or as given).
    pub uuid: [u8; 16],
    /// Filesystem size in 4 KiB blocks (may be less than the partition).
    pub blocks: u64,
    pub free_blocks: u64,
    pub inodes: u64,
    pub free_inodes: u64,
    pub groups: u32,
    /// Journal size in blocks (0: no journal).
    pub journal_blocks: u32,
    /// Bytes actually written; the rest of the image is holes.
    pub bytes_written: u64,
}

impl Summary {
    /// The UUID in its usual text form (as `blkid` prints it).
    pub fn uuid_string(&self) -> String {
        kiln_fstree::uuid_string(&self.uuid)
    }
}

/// Writes an ext4 filesystem holding `tree` to `out`, from offset 0, and
/// extends `out` to [`Options::size_bytes`].
///
/// `out` is typically a new [`std::fs::File`]; the image is sparse where it
/// seeks over unwritten ranges. See the crate docs for which ranges those
/// are and why skipping them is safe on a used device too.
pub fn write<W: Write + Seek>(
    tree: &Tree,
    opts: &Options,
    out: &mut W,
) -> Result<Summary, Ext4Error> {
    mkfs::write(tree, opts, out)
}
