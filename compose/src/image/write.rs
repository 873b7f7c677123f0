//! The filesystem and disk writers as the image node and `kiln fs` both
//! call them: one place that knows Kiln's choices (root compression and
//! label, the epoch for ext4, how disk ids are derived), and one way to
//! write a file so it appears complete or not at all.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use kiln_disk::{
    Content, Contents, DiskSummary, ImageOptions, Layout, LayoutSpec, Role, TableKind, MIB,
};
use kiln_fstree::Tree;

use super::error::ImageError;
use crate::model::PartitionLayout;

pub use kiln_fstree::uuid_string;

/// lz4hc at liblz4's default level, what `mkfs.erofs -zlz4hc` uses.
pub const ROOT_COMPRESSION: kiln_erofs::Compression = kiln_erofs::Compression::Lz4hc { level: 9 };

pub fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

/// `<path>.tmp-<pid>`: next to `path`, so the final rename stays on one
/// filesystem, and unique per process.
pub fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Creates `out` through a temporary file (opened read-write: fatfs reads
/// back what it writes) that `write` fills; synced, then renamed into
/// place. On any error the temporary is removed and `out` is untouched.
pub fn file<T>(
    out: &Path,
    write: impl FnOnce(&mut File) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    create(out, true, write)
}

/// Like [`file`] but not synced: for filesystem images that are scratch
/// (the image node's partitions, whose durable copies are the store entry
/// and the published `out/` files) or that a user asked for like any mkfs
/// output (`kiln fs`). An fsync of a 200 MB image is a third of a second
/// of waiting for the disk that nothing needs.
pub fn scratch_file<T>(
    out: &Path,
    write: impl FnOnce(&mut File) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    create(out, false, write)
}

fn create<T>(
    out: &Path,
    sync: bool,
    write: impl FnOnce(&mut File) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    let tmp = tmp_name(out);
    let result = (|| {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        let value = write(&mut f)?;
        if sync {
            f.sync_all().map_err(io_err("syncing", &tmp))?;
        }
        fs::rename(&tmp, out).map_err(io_err("renaming into place", out))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The options of a root filesystem: lz4hc, labelled like root A.
pub fn root_options(epoch: u64) -> kiln_erofs::Options {
    kiln_erofs::Options {
        compression: ROOT_COMPRESSION,
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
    scratch_file(out, |f| Ok(kiln_erofs::write(tree, opts, f)?))
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
    scratch_file(out, |f| {
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
    scratch_file(out, |f| Ok(kiln_disk::fat::write(tree, &opts, f)?))
}

/// The partition images of a disk, as files (root B is always empty).
pub struct Partitions {
    pub boot: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub data: PathBuf,
}

/// Writes the disk (and its `.zst`) from partition images. Disk and
/// partition ids come from a hash of the layout and the images, so they
/// change exactly when the disk's content does.
pub fn disk(layout: &Layout, parts: &Partitions, out: &Path) -> Result<DiskSummary, ImageError> {
    let mut h = blake3::Hasher::new();
    h.update(format!("{layout:?}").as_bytes());
    for p in [&parts.boot, &parts.root, &parts.state, &parts.data] {
        let d = crate::hashing::path_blake3(p).map_err(io_err("hashing", p))?;
        h.update(d.as_bytes());
    }
    let contents = Contents {
        boot: Content::Image(parts.boot.clone()),
        root_a: Content::Image(parts.root.clone()),
        root_b: Content::Empty,
        state: Content::Image(parts.state.clone()),
        data: Content::Image(parts.data.clone()),
    };
    let opts = ImageOptions::new(*h.finalize().as_bytes());
    Ok(kiln_disk::assemble(layout, &contents, &opts, out)?)
}

/// A board's partition sizes (MiB) as the disk crate's layout spec.
pub fn layout_spec(p: &PartitionLayout) -> LayoutSpec {
    LayoutSpec {
        table: if p.table == "gpt" {
            TableKind::Gpt
        } else {
            TableKind::Mbr
        },
        gap_bytes: p.gap_mib.saturating_mul(MIB),
        alignment_bytes: p.align_mib.saturating_mul(MIB),
        boot_bytes: p.boot_mib.saturating_mul(MIB),
        root_bytes: p.root_mib.saturating_mul(MIB),
        state_bytes: p.state_mib.saturating_mul(MIB),
        data_bytes: p.data_mib.saturating_mul(MIB),
        disk_bytes: (p.disk_mib > 0).then(|| p.disk_mib.saturating_mul(MIB)),
        boot_fat: None,
    }
}
