//! `out/<board>.json`: what an image is made of, where its partitions are,
//! and their checksums. Plain data, written once per image key and kept in
//! the store with the image.

use serde::{Deserialize, Serialize};

use kiln_model::OsRelease;

pub const MANIFEST_SCHEMA: &str = "kiln-image-manifest-v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    pub schema: String,
    pub board: String,
    pub arch: String,
    pub os: OsRelease,
    /// The image node's key: the same key always names these bytes.
    pub key: String,
    pub image: FileInfo,
    pub compressed: FileInfo,
    /// `mbr` or `gpt`.
    pub table: String,
    /// MBR: the disk signature as `0x%08x`; GPT: the disk GUID.
    pub disk_id: String,
    pub partitions: Vec<PartitionInfo>,
    pub rootfs: RootfsInfo,
    /// Every package in the root filesystem, sorted by name.
    pub packages: Vec<PackageInfo>,
    pub kernel: Option<PackageInfo>,
    pub bootloader: Option<PackageInfo>,
    /// The state paths bind-mounted from `/mnt/state/root-overlay`.
    pub state_binds: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// File name, next to this manifest.
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub number: u32,
    pub label: String,
    /// `0x0c`, `0x83`, ... or the GPT type GUID.
    pub r#type: String,
    /// `vfat`, `erofs`, `ext4`, or `none` (root B before an update).
    pub filesystem: String,
    /// The filesystem's UUID (FAT: volume id), empty for `none`.
    pub fs_uuid: String,
    /// What the kernel calls `PARTUUID`.
    pub partuuid: String,
    pub start: u64,
    pub size: u64,
    /// Bytes of filesystem image at the partition's start.
    pub content_bytes: u64,
    /// SHA-256 of the whole partition range.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsInfo {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub hardlinks: usize,
    /// Regular file bytes after stripping.
    pub file_bytes: u64,
    pub elf_checked: usize,
    pub stripped: usize,
    pub compression: String,
    pub erofs_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub license: String,
    /// The recipe's build key and output digest.
    pub key: String,
    pub output: String,
}
