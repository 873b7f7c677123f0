//! `kiln fs`: Kiln's filesystem and disk writers on plain directories.
//!
//! The image node feeds the writers from package outputs; this feeds them
//! from a directory (with its real owners and modes), which is what one
//! needs to inspect a writer on a tree of one's own, and what
//! `scripts/bench-image` times against mkfs.erofs, mke2fs and friends.
//! Both go through `image::write`, so they make the same choices.

use std::path::Path;

use kiln_disk::{DiskSummary, Role};
use kiln_fstree::Tree;

use crate::image::write;
use crate::model::PartitionLayout;

/// Timestamps in every image: `$SOURCE_DATE_EPOCH`, else Kiln's fixed epoch.
pub fn epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| crate::toolchain::SOURCE_DATE_EPOCH.parse().unwrap_or(0))
}

/// The tree of `dir`, or an empty one.
fn tree(dir: Option<&Path>) -> Result<Tree, String> {
    match dir {
        Some(d) => Tree::from_dir(d).map_err(|e| format!("reading {}: {e}", d.display())),
        None => Ok(Tree::new()),
    }
}

pub fn erofs(
    dir: &Path,
    out: &Path,
    compression: kiln_erofs::Compression,
    label: Option<String>,
) -> Result<kiln_erofs::Summary, String> {
    let opts = kiln_erofs::Options {
        compression,
        label,
        ..write::root_options(epoch())
    };
    write::erofs(&tree(Some(dir))?, &opts, out).map_err(|e| e.to_string())
}

pub fn ext4(
    dir: &Path,
    out: &Path,
    size_bytes: u64,
    label: &str,
) -> Result<kiln_ext4::Summary, String> {
    write::ext4(&tree(Some(dir))?, size_bytes, label, epoch(), out).map_err(|e| e.to_string())
}

/// Directories for each partition of a balenaOS disk (root B stays empty).
pub struct DiskDirs<'a> {
    pub boot: Option<&'a Path>,
    pub root: &'a Path,
    pub state: Option<&'a Path>,
    pub data: Option<&'a Path>,
}

/// A whole disk like the image node's: FAT boot, lz4hc EROFS root, ext4
/// state and data, sparse `out` plus `out.zst`. The four filesystems are
/// written in parallel, into a scratch directory next to `out`.
pub fn disk(
    dirs: &DiskDirs,
    partitions: &PartitionLayout,
    out: &Path,
) -> Result<DiskSummary, String> {
    let layout = write::layout_spec(partitions)
        .compute()
        .map_err(|e| e.to_string())?;
    let size = |role: Role| layout.get(role).map(|p| p.size_bytes()).unwrap_or_default();
    let scratch = write::tmp_name(out).with_extension("parts");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let parts = write::Partitions {
        boot: scratch.join("boot.vfat"),
        root: scratch.join("root.erofs"),
        state: scratch.join("state.ext4"),
        data: scratch.join("data.ext4"),
    };
    let e = epoch();
    let ext4 = |dir, role: Role, path: &Path| {
        write::ext4(&tree(dir)?, size(role), role.label(), e, path).map_err(|e| e.to_string())
    };
    let (root, (boot, (state, data))) = rayon::join(
        || {
            write::erofs(
                &tree(Some(dirs.root))?,
                &write::root_options(e),
                &parts.root,
            )
            .map_err(|e| e.to_string())
        },
        || {
            rayon::join(
                || {
                    write::fat(&tree(dirs.boot)?, size(Role::Boot), e, &parts.boot)
                        .map_err(|e| e.to_string())
                },
                || {
                    rayon::join(
                        || ext4(dirs.state, Role::State, &parts.state),
                        || ext4(dirs.data, Role::Data, &parts.data),
                    )
                },
            )
        },
    );
    let result = root
        .map(|_| ())
        .and(boot.map(|_| ()))
        .and(state.map(|_| ()))
        .and(data.map(|_| ()))
        .and_then(|()| write::disk(&layout, &parts, out).map_err(|e| e.to_string()));
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
