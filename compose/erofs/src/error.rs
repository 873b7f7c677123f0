//! What can go wrong while writing an image, with the tree path or host file
//! it concerns, so a failed build says which input to fix.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ErofsError {
    #[error("reading the content of `{path}` from `{}`: {source}", host.display())]
    Read {
        path: String,
        host: PathBuf,
        source: io::Error,
    },
    #[error("`{path}`: {reason}")]
    BadTree { path: String, reason: String },
    #[error("`{path}` is {actual} bytes now but was {expected} when the image was planned")]
    SizeChanged {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("writing the image: {0}")]
    Write(#[source] io::Error),
    #[error("`{path}`: the name is {len} bytes; EROFS allows at most 255")]
    NameTooLong { path: String, len: usize },
    #[error("`{path}`: names cannot contain NUL bytes")]
    NulInName { path: String },
    #[error("`{path}`: a symlink target must be 1 to 4095 bytes without NUL, not {len} bytes")]
    BadSymlink { path: String, len: usize },
    #[error(
        "`{path}`: device {major}:{minor} is out of Linux's range (major < 4096, minor < 2^20)"
    )]
    BadDevice {
        path: String,
        major: u32,
        minor: u32,
    },
    #[error(
        "`{path}`: xattr `{name}` has no EROFS name index (supported: user.*, trusted.*, \
         security.*, lustre.*, system.posix_acl_access, system.posix_acl_default)"
    )]
    UnsupportedXattr { path: String, name: String },
    #[error("`{path}`: xattr `{name}` is too large ({len} bytes; names ≤ 255, values ≤ 65535)")]
    XattrTooLarge {
        path: String,
        name: String,
        len: usize,
    },
    #[error("`{path}`: its xattrs take {size} bytes, more than an inode can carry inline")]
    XattrsTooLarge { path: String, size: usize },
    #[error("the root directory's inode and xattrs take {size} bytes; at most {max} fit next to the superblock")]
    RootTooLarge { size: usize, max: usize },
    #[error("the volume label `{0}` is longer than 16 bytes")]
    LabelTooLong(String),
    #[error("lz4hc level {0} is outside 1..=12")]
    BadLevel(u8),
    #[error("the image would need {blocks} blocks; EROFS addresses at most 2^32")]
    ImageTooLarge { blocks: u64 },
    #[error("`{path}`: compressing failed ({detail})")]
    Compress { path: String, detail: String },
}
