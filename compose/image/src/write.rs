//! The filesystem and disk writers as the image and `kiln fs` both call
//! them: one place that knows Kiln's choices (root compression and label,
//! the epoch for ext4, how disk ids are derived).
//!
//! Filesystem images are written as scratch files (renamed into place, not
//! fsynced): their durable copies are the store entry and the published
//! `out/` files, and `kiln fs` output is like any mkfs's. An fsync of a
//! 200 MB image is a third of a second of waiting for the disk that nothing
//! needs.

use std::fs::File;
use std::path::{Path, PathBuf};

use kiln_atomic::Durability;
use kiln_disk::{Content, Contents, DiskSummary, ImageOptions, Layout, PartitionType, Role};
use kiln_fstree::Tree;

use crate::error::ImageError;
use crate::policy;

pub use kiln_fstree::uuid_string;

pub fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

fn scratch<T>(
    out: &Path,
    write: impl FnOnce(&mut File) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    kiln_atomic::write_with(out, Durability::Scratch, write)
}

/// The options of a root filesystem: the policy's compression, labelled
/// like root A.
pub fn root_options(epoch: u64) -> kiln_erofs::Options {
    kiln_erofs::Options {
        compression: policy::ROOT_COMPRESSION,
        epoch,
        uuid: None,
        label: Some(Role::RootA.label().into()),
        tail_packing: true,
    }
}

pub fn erofs(
    tree: &Tree,
    opts: &kiln_erofs::Options,
    out: &Path,
) -> Result<kiln_erofs::Summary, ImageError> {
    scratch(out, |f| Ok(kiln_erofs::write(tree, opts, f)?))
}

pub fn ext4(
    tree: &Tree,
    size_bytes: u64,
    label: &str,
    epoch: u64,
    out: &Path,
) -> Result<kiln_ext4::Summary, ImageError> {
    let opts = kiln_ext4::Options {
        label: label.into(),
        // ext4 stores times in 32 bits (plus epoch bits the writer handles)
        epoch: epoch.min(u64::from(u32::MAX)) as u32,
        ..kiln_ext4::Options::new(size_bytes)
    };
    scratch(out, |f| {
        kiln_ext4::write(tree, &opts, f).map_err(|source| ImageError::Ext4 {
            label: label.into(),
            source,
        })
    })
}

pub fn fat(
    tree: &Tree,
    size_bytes: u64,
    epoch: u64,
    out: &Path,
) -> Result<kiln_disk::FatSummary, ImageError> {
    let opts = kiln_disk::FatOptions {
        epoch,
        ..kiln_disk::FatOptions::new(size_bytes)
    };
    scratch(out, |f| Ok(kiln_disk::fat::write(tree, &opts, f)?))
}

/// The partition images of a balenaOS disk; root B is always empty.
pub fn contents(boot: PathBuf, root: PathBuf, state: PathBuf, data: PathBuf) -> Contents {
    Contents {
        boot: Content::Image(boot),
        root_a: Content::Image(root),
        root_b: Content::Empty,
        state: Content::Image(state),
        data: Content::Image(data),
    }
}

/// Writes the disk (and its `.zst`) from partition images. Disk and
/// partition ids come from a hash of the layout and the images, so they
/// change exactly when the disk's content does.
pub fn disk(layout: &Layout, contents: &Contents, out: &Path) -> Result<DiskSummary, ImageError> {
    let mut h = blake3::Hasher::new();
    h.update(&layout_bytes(layout));
    for role in [
        Role::Boot,
        Role::RootA,
        Role::RootB,
        Role::State,
        Role::Data,
    ] {
        match contents.get(role) {
            Content::Empty => {
                h.update(b"empty\0");
            }
            Content::Image(p) => {
                let file = File::open(p).map_err(io_err("hashing", p))?;
                let d = blake3::Hasher::new()
                    .update_reader(file)
                    .map_err(io_err("hashing", p))?
                    .finalize();
                h.update(d.as_bytes());
            }
        }
    }
    let opts = ImageOptions::new(*h.finalize().as_bytes());
    Ok(kiln_disk::assemble(layout, contents, &opts, out)?)
}

/// A stable encoding of a computed layout for the disk ids: every field
/// that places a partition, by name, in a fixed order (never `Debug`, whose
/// form may change with the compiler).
fn layout_bytes(layout: &Layout) -> Vec<u8> {
    let mut out = b"kiln-disk-layout-v1\0".to_vec();
    let num = |out: &mut Vec<u8>, n: u64| out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(layout.table.name().as_bytes());
    out.push(0);
    num(&mut out, layout.alignment);
    num(&mut out, layout.disk_sectors);
    for p in &layout.partitions {
        out.extend_from_slice(p.label().as_bytes());
        out.push(0);
        num(&mut out, u64::from(p.number));
        num(&mut out, p.start);
        num(&mut out, p.sectors);
        match p.ptype {
            PartitionType::Mbr(t) => num(&mut out, u64::from(t)),
            PartitionType::Gpt(g) => out.extend_from_slice(g.to_string().as_bytes()),
        }
        num(&mut out, u64::from(p.bootable));
        num(&mut out, p.ebr.map_or(u64::MAX, |e| e));
    }
    match &layout.extended {
        Some(e) => {
            num(&mut out, e.start);
            num(&mut out, e.sectors);
        }
        None => out.push(0),
    }
    out
}
