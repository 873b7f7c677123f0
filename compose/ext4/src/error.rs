//! The writer's error type.
//!
//! Every variant names what to change: the tree path whose name, link or
//! xattr cannot be stored, or the numbers (needed vs. available) when the
//! tree does not fit. Capacity and validity problems are all found while
//! planning, before the first byte is written, so an `Err` from planning
//! leaves the output untouched.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// An option is out of the range this writer (or ext4) supports.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },

    /// The filesystem cannot even hold its own metadata.
    #[error(
        "a {size_bytes}-byte filesystem is too small: its metadata alone needs \
         {needed_blocks} blocks of 4 KiB but it has {available_blocks}"
    )]
    TooSmall {
        size_bytes: u64,
        needed_blocks: u64,
        available_blocks: u64,
    },

    /// The tree's data, directories and metadata need more blocks than the
    /// filesystem has free after its own metadata.
    #[error(
        "the tree does not fit: it needs {needed_blocks} blocks of 4 KiB ({needed_mib} MiB) \
         but a {size_bytes}-byte filesystem has {available_blocks} free ({available_mib} MiB) \
         after {overhead_blocks} blocks of filesystem metadata and journal"
    )]
    NoSpace {
        size_bytes: u64,
        needed_blocks: u64,
        needed_mib: u64,
        available_blocks: u64,
        available_mib: u64,
        overhead_blocks: u64,
    },

    /// More tree entries than inodes.
    #[error(
        "the tree needs {needed} inodes (including the 11 reserved ones) but the \
         filesystem has {available} (one per {inode_ratio} bytes); lower inode_ratio \
         or grow the filesystem"
    )]
    NoInodes {
        needed: u64,
        available: u64,
        inode_ratio: u32,
    },

    /// A directory entry name ext4 cannot store.
    #[error("{path}: {reason}")]
    BadName { path: String, reason: String },

    /// A symlink target ext4 cannot store.
    #[error("{path}: symlink target of {len} bytes: {reason}")]
    BadSymlink {
        path: String,
        len: usize,
        reason: &'static str,
    },

    /// A device number outside Linux's 12-bit major / 20-bit minor range.
    #[error("{path}: device {major}:{minor} is out of range (major < 4096, minor < 1048576)")]
    BadDevice {
        path: String,
        major: u32,
        minor: u32,
    },

    /// A directory too large for a two-level htree (no `large_dir`).
    #[error(
        "{path}: {entries} entries need {leaves} directory blocks; an htree without \
         large_dir addresses at most {max_leaves}"
    )]
    DirTooLarge {
        path: String,
        entries: usize,
        leaves: usize,
        max_leaves: usize,
    },

    /// A hard link whose target is missing or not a regular file.
    #[error("{path}: hard link target `{target}` is not a regular file in the tree")]
    BadHardlink { path: String, target: String },

    /// `/lost+found` exists in the tree but is not a directory; e2fsck
    /// requires one.
    #[error("/lost+found must be a directory (e2fsck needs it); the tree has another kind of node there")]
    LostFoundNotDir,

    /// An xattr this writer cannot store.
    #[error("{path}: xattr `{name}`: {reason}")]
    BadXattr {
        path: String,
        name: String,
        reason: String,
    },

    /// The xattrs of one node do not fit in the inode plus one block.
    #[error(
        "{path}: xattrs need {needed} bytes but at most {available} fit in the inode and \
         one 4 KiB block (large xattr values in their own inodes are not supported)"
    )]
    XattrsTooLarge {
        path: String,
        needed: usize,
        available: usize,
    },

    /// A regular file too large for ext4 with 4 KiB blocks.
    #[error("{path}: {size} bytes is larger than ext4's 16 TiB file size limit")]
    FileTooLarge { path: String, size: u64 },

    /// Reading a file's content from the build host failed.
    #[error("reading {} (for {path}): {source}", host.display())]
    ReadData {
        path: String,
        host: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A host file's size differs from what it was when the image was
    /// planned: the image would not match the tree.
    #[error(
        "{} (for {path}) changed while the image was written: planned {planned} bytes, read {actual}",
        host.display()
    )]
    FileChanged {
        path: String,
        host: PathBuf,
        planned: u64,
        actual: u64,
    },

    /// Writing the image failed.
    #[error("writing the image at byte {offset}: {source}")]
    Write {
        offset: u64,
        #[source]
        source: io::Error,
    },
}
