//! `kiln fs`: Kiln's filesystem and disk writers on plain directories.
//!
//! The image node feeds the writers from package outputs; this feeds them
//! from a directory (with its real owners and modes), which is what one
//! needs to inspect a writer on a tree of one's own, and what
//! `scripts/bench-image` times against mkfs.erofs, mke2fs and friends.
//! Both go through [`crate::write`], so they make the same choices.

use std::path::Path;

use kiln_disk::{DiskSummary, LayoutSpec, Role};
use kiln_fstree::Tree;

use crate::error::ImageError;
use crate::write;

/// Timestamps in every image: `$SOURCE_DATE_EPOCH`, else Kiln's fixed epoch.
pub fn epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(kiln_model::SOURCE_DATE_EPOCH)
}
/// The tree of `dir`, or an empty one.
fn tree(dir: Option<&Path>) -> Result<Tree, ImageError> {
    match dir {
        Some(d) => Tree::from_dir(d).map_err(|source| ImageError::ReadDir {
            path: d.to_path_buf(),
            source,
        }),
        None => Ok(Tree::new()),
    }
}

pub fn erofs(
    dir: &Path,
    out: &Path,
    compression: kiln_erofs::Compression,
    label: Option<String>,
) -> Result<kiln_erofs::Summary, ImageError> {
    let opts = kiln_erofs::Options {
        compression,
        label,
        ..write::root_options(epoch())
    };
    write::erofs(&tree(Some(dir))?, &opts, out)
}

pub fn ext4(
    dir: &Path,
    out: &Path,
    size_bytes: u64,
    label: &str,
) -> Result<kiln_ext4::Summary, ImageError> {
    write::ext4(&tree(Some(dir))?, size_bytes, label, epoch(), out)
}

/// A whole disk like the image node's: FAT boot, lz4hc EROFS root, ext4
/// state and data, sparse `out` plus `out.zst`. The four filesystems are
/// written in parallel, into a scratch directory next to `out`.
///
/// `root` is required; the other partitions are empty without a directory.
pub fn disk(
    boot: Option<&Path>,
    root: &Path,
    state: Option<&Path>,
    data: Option<&Path>,
    spec: &LayoutSpec,
    out: &Path,
) -> Result<DiskSummary, ImageError> {
    let layout = spec.compute()?;
    let size = |role: Role| layout.get(role).map(|p| p.size_bytes()).unwrap_or_default();
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = kiln_atomic::TempDir::new_in(dir, ".kiln-fs-disk-")?;
    let part = |name: &str| scratch.path().join(name);
    let (boot_img, root_img, state_img, data_img) = (
        part("boot.vfat"),
        part("root.erofs"),
        part("state.ext4"),
        part("data.ext4"),
    );
    let e = epoch();
    let ext4 =
        |dir, role: Role, path: &Path| write::ext4(&tree(dir)?, size(role), role.label(), e, path);
    let (made_root, (made_boot, (made_state, made_data))) = rayon::join(
        || write::erofs(&tree(Some(root))?, &write::root_options(e), &root_img),
        || {
            rayon::join(
                || write::fat(&tree(boot)?, size(Role::Boot), e, &boot_img),
                || {
                    rayon::join(
                        || ext4(state, Role::State, &state_img),
                        || ext4(data, Role::Data, &data_img),
                    )
                },
            )
        },
    );
    made_root
        .map(|_| ())
        .and(made_boot.map(|_| ()))
        .and(made_state.map(|_| ()))
        .and(made_data.map(|_| ()))?;
    let contents = write::contents(boot_img, root_img, state_img, data_img);
    // The scratch directory goes when `scratch` is dropped.
    write::disk(&layout, &contents, out)
}
