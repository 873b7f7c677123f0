//! The disk image: package outputs in, a balenaOS-layout disk out.
//!
//! [`ImageInputs`] is everything that can change the image's bytes: the
//! outputs (and keys) of the board's packages, kernel and bootloader, the
//! board's image fields, the `strip` tool, the epoch, and [`WRITERS`], a
//! fingerprint of the source of this crate and of every crate it builds
//! with (`build.rs`). The engine hashes them into the image node's key;
//! [`build`] makes the image in a work directory:
//!
//! ```text
//! package outputs → kiln_rootfs::assemble → strip → EROFS root A,
//! ext4 state and data, FAT boot → kiln_disk::assemble → disk.img.zst +
//! image.json (stored) and the sparse disk.img (published to out/)
//! ```
//!
//! The balenaOS choices (default sizes, the A/B environment, the reset
//! marker, config.json defaults) are [`policy`], written once.

mod assemble;
mod boot;
mod error;
pub mod manifest;
pub mod mkfs;
pub mod policy;
pub mod publish;
pub mod write;

use std::path::{Path, PathBuf};

use kiln_model::{Fingerprint, OsRelease, Target};
use kiln_store::Digest;
use serde::Serialize;

pub use assemble::build;
pub use error::ImageError;
pub use manifest::ImageManifest;
pub use publish::Published;

/// Bumped when the meaning of the image inputs changes (v2: the layout with
/// its defaults resolved, writers fingerprinted over the image crate's
/// whole dependency closure, disk ids from a stable encoding).
pub const IMAGE_SCHEMA: &str = "kiln-image-v2";

/// blake3 over the source of this crate and of every crate it builds with,
/// and the locked versions of their external dependencies (see `build.rs`).
pub const WRITERS: &str = env!("KILN_IMAGE_WRITERS");

/// File names inside the image node's store output.
pub const STORED_IMAGE: &str = "disk.img.zst";
pub const STORED_MANIFEST: &str = "image.json";
/// The sparse image a build leaves in its work directory for publishing.
pub const FRESH_IMAGE: &str = "disk.img";

/// One built package as the image sees it.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInput {
    pub name: String,
    pub version: String,
    pub license: String,
    /// The package's key and output digest (hex), or `drv:<derivation>`
    /// for both before anything is built.
    pub key: String,
    pub output: String,
    /// Rootfs packages only: what the image generates from them.
    pub state: Vec<String>,
    pub units: Vec<String>,
}

/// Everything that can change the image's bytes. Plain data; fields
/// serialize in declaration order and maps are sorted, so its JSON is the
/// canonical encoding the key hashes.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInputs {
    pub writers: &'static str,
    pub board: String,
    pub description: String,
    pub target: Target,
    pub os: OsRelease,
    pub layout: kiln_disk::LayoutSpec,
    pub config_json: serde_json::Map<String, serde_json::Value>,
    /// The stripping is done with the toolchain's `strip`: the host's,
    /// fingerprinted in `toolchain`, or the build environment's.
    pub strip: String,
    pub toolchain: Fingerprint,
    /// The build environment's output (hex, or `drv:`) when the toolchain
    /// has one: `strip` runs from it.
    pub usr: Option<String>,
    pub epoch: u64,
    pub packages: Vec<ImageInput>,
    pub kernel: Option<ImageInput>,
    pub bootloader: Option<ImageInput>,
}

/// Where a build leaves its sparse image in `work`.
pub fn fresh_image(work: &Path) -> PathBuf {
    work.join(FRESH_IMAGE)
}

/// The manifest of a stored image (the store output's `image.json`).
pub fn read_manifest(stored: &Path) -> Result<ImageManifest, ImageError> {
    let path = stored.join(STORED_MANIFEST);
    let bytes = std::fs::read(&path).map_err(|source| ImageError::Io {
        action: "reading",
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::Io {
        action: "parsing",
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

fn digest(hex: &str) -> Result<Digest, ImageError> {
    Digest::from_hex(hex).map_err(|_| ImageError::BadDigest(hex.to_string()))
}
