//! Partition layout, FAT boot partition and disk image for Kiln's
//! balenaOS-style devices.
//!
//! The pieces, in the order a build uses them:
//!
//! 1. [`LayoutSpec::compute`]: sizes in, [`Layout`] (sector ranges, types,
//!    MBR with logical partitions or GPT) out.
//! 2. [`fat::write`]: the resin-boot FAT filesystem from a
//!    [`kiln_fstree::Tree`], reproducibly (fixed volume ID and timestamps).
//! 3. [`assemble`]: partition images copied into a sparse image, the
//!    partition table written last, a `.zst` next to it, and SHA-256 sums.
//!
//! Everything is deterministic: the same inputs give the same bytes. Disk
//! and partition ids (MBR signature, GPT GUIDs) come from a content hash
//! the caller passes ([`DiskIds`]), never from a random source.

mod assemble;
mod error;
pub mod fat;
mod finish;
mod gpt;
mod guid;
mod ids;
mod layout;
mod mbr;
mod sparse;
mod table;

pub use assemble::{assemble, hex, Content, Contents, DiskSummary, ImageOptions, PartitionSummary};
pub use error::{DiskError, FatError, LayoutError};
pub use fat::{FatKind, FatOptions, FatSummary};
pub use guid::Guid;
pub use ids::DiskIds;
pub use layout::{
    Extended, Layout, LayoutSpec, Partition, PartitionType, Role, TableKind, GPT_BOOT_TYPE,
    MBR_EXTENDED_LBA, MBR_FAT16_LBA, MBR_FAT32_LBA, MBR_LINUX, MIB, SECTOR,
};
pub use table::write_partition_table;
