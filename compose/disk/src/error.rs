//! The crate's error types, one per stage.
//!
//! Every variant carries what a caller needs to fix the input: partition
//! labels with their sector ranges, sizes needed against sizes available,
//! and tree or host paths. Layout and tree problems are found before the
//! first byte is written.

use std::io;
use std::path::PathBuf;

/// A layout that cannot be computed or would not be valid on disk.
///
/// Sector ranges are half-open `[start, end)` in 512-byte sectors.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("alignment of {alignment_bytes} bytes: it must be a non-zero multiple of 512")]
    BadAlignment { alignment_bytes: u64 },

    #[error("{label}: a partition cannot be empty (size 0)")]
    ZeroSize { label: String },

    #[error(
        "{label} [{start}, {end}) is not aligned: starts and ends must be multiples of \
         {alignment} sectors ({alignment_bytes} bytes)"
    )]
    Misaligned {
        label: String,
        start: u64,
        end: u64,
        alignment: u64,
        alignment_bytes: u64,
    },

    #[error("{a} [{a_start}, {a_end}) overlaps {b} [{b_start}, {b_end}) (512-byte sectors)")]
    Overlap {
        a: String,
        a_start: u64,
        a_end: u64,
        b: String,
        b_start: u64,
        b_end: u64,
    },

    #[error(
        "the partitions need a disk of at least {needed_bytes} bytes ({needed_mib} MiB) \
         but the disk has {disk_bytes} bytes"
    )]
    DiskTooSmall {
        needed_bytes: u64,
        needed_mib: u64,
        disk_bytes: u64,
    },

    #[error(
        "{label} [{start}, {end}) does not fit a disk of {disk_sectors} sectors \
         ({disk_bytes} bytes)"
    )]
    OutsideDisk {
        label: String,
        start: u64,
        end: u64,
        disk_sectors: u64,
        disk_bytes: u64,
    },

    #[error(
        "{label} [{start}, {end}) is beyond what an MBR can address: starts and sizes are \
         32-bit sector counts (at most {max} sectors, 2 TiB); use GPT"
    )]
    MbrLimit {
        label: String,
        start: u64,
        end: u64,
        max: u64,
    },

    #[error(
        "logical partition {label} [{start}, {end}) (EBR at sector {ebr}) is not inside the \
         extended partition [{ext_start}, {ext_end})"
    )]
    OutsideExtended {
        label: String,
        start: u64,
        end: u64,
        ebr: u64,
        ext_start: u64,
        ext_end: u64,
    },

    #[error("{label}: {reason}")]
    BadEntry { label: String, reason: String },

    #[error("the layout's sizes overflow 64 bits ({what})")]
    Overflow { what: &'static str },
}

/// A tree or option the FAT writer cannot turn into a filesystem.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("{path}: FAT cannot hold a {kind}; the boot partition takes directories and regular files only")]
    Unsupported { path: String, kind: &'static str },

    #[error("{path}: FAT cannot hold extended attributes ({count} set)")]
    Xattrs { path: String, count: usize },

    #[error("{path}: the name cannot be stored on FAT: {reason}")]
    BadName { path: String, reason: String },

    #[error(
        "{path} and {other} differ only in letter case; FAT names are case-insensitive, so \
         one would replace the other"
    )]
    NameClash { path: String, other: String },

    #[error(
        "{dir}: {expected} entries were written but the directory holds {found}: two names \
         map to the same FAT entry (a long name equal to another entry's short name?)"
    )]
    Merged {
        dir: String,
        expected: usize,
        found: usize,
    },

    #[error("{path}: {size} bytes; FAT files are at most {max} bytes")]
    FileTooLarge { path: String, size: u64, max: u64 },

    #[error("volume label {label:?}: {reason}")]
    BadLabel { label: String, reason: String },

    #[error(
        "a {size_bytes}-byte volume cannot be {kind}: it would have {clusters} clusters of \
         {cluster_bytes} bytes, {kind} needs {min}..={max}"
    )]
    BadSize {
        size_bytes: u64,
        kind: &'static str,
        clusters: u64,
        cluster_bytes: u32,
        min: u64,
        max: u64,
    },

    #[error(
        "a {size_bytes}-byte volume is too large: FAT with 512-byte sectors ends at \
         {max_bytes} bytes (2 TiB)"
    )]
    TooLarge { size_bytes: u64, max_bytes: u64 },

    #[error(
        "the FAT16 root directory holds {max} entries but the tree's top level needs {needed} \
         (long names take several); use FAT32 or move files into a directory"
    )]
    RootDirFull { needed: u64, max: u64 },

    #[error(
        "the tree does not fit: it needs {needed_clusters} clusters of {cluster_bytes} bytes \
         ({needed_bytes} bytes) but the {size_bytes}-byte {kind} volume has {available_clusters}"
    )]
    NoSpace {
        size_bytes: u64,
        kind: &'static str,
        cluster_bytes: u32,
        needed_clusters: u64,
        needed_bytes: u64,
        available_clusters: u64,
    },

    #[error("{path}: the host file was {expected} bytes when planning but {actual} when copied")]
    Changed {
        path: String,
        expected: u64,
        actual: u64,
    },

    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("writing {what} to the FAT volume: {source}")]
    Write { what: String, source: io::Error },

    #[error(
        "internal: fatfs made a {got_kind} volume with {got_clusters} clusters, planned \
         {want_kind} with {want_clusters}"
    )]
    Geometry {
        want_kind: &'static str,
        want_clusters: u64,
        got_kind: &'static str,
        got_clusters: u64,
    },
}

/// A disk image that cannot be assembled.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Layout(#[from] LayoutError),

    #[error(
        "{label}: the image {path} is {image_bytes} bytes but the partition holds \
         {partition_bytes} bytes ({over_bytes} too many)"
    )]
    DoesNotFit {
        label: String,
        path: PathBuf,
        image_bytes: u64,
        partition_bytes: u64,
        over_bytes: u64,
    },

    #[error("{label}: the image {path} changed while it was copied ({reason})")]
    Changed {
        label: String,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "{label}: the MBR type is {mbr_type:#04x} ({expected}) but the image {path} holds {found}"
    )]
    BootTypeMismatch {
        label: String,
        path: PathBuf,
        mbr_type: u8,
        expected: &'static str,
        found: String,
    },

    #[error(
        "the partition table is for a {disk_bytes}-byte disk but the output is {len_bytes} bytes"
    )]
    OutputSize { len_bytes: u64, disk_bytes: u64 },

    #[error("writing the partition table: {0}")]
    Table(io::Error),

    #[error("writing the MBR: {}", mbr_detail(.0))]
    Mbr(#[from] mbrman::Error),

    #[error("writing the GPT: {}", gpt_detail(.0))]
    Gpt(#[from] gptman::Error),

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },

    /// Creating or renaming a temporary output.
    #[error(transparent)]
    Atomic(#[from] kiln_atomic::Error),
}

impl DiskError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> DiskError {
        let path = path.into();
        move |source| DiskError::Io { path, source }
    }
}

/// mbrman's and gptman's `Io` variants print "generic I/O error" without
/// the underlying error; show it.
fn mbr_detail(e: &mbrman::Error) -> String {
    match e {
        mbrman::Error::Io(io) => format!("I/O error: {io}"),
        other => other.to_string(),
    }
}

fn gpt_detail(e: &gptman::Error) -> String {
    match e {
        gptman::Error::Io(io) => format!("I/O error: {io}"),
        other => other.to_string(),
    }
}
