//! `kiln fs`: Kiln's filesystem and disk writers on plain directories.
//!
//! The image node feeds the writers from package outputs; this feeds them
//! from a directory (with its real owners and modes), which is what one
//! needs to inspect a writer on a tree of one's own, and what
//! `scripts/bench-image` times against mkfs.erofs, mke2fs and friends.
//! Every output appears complete under its name or not at all.

use std::fs::{self, File, OpenOptions};

use std::path::{Path, PathBuf};

use kiln_disk::{Content, Contents, FatOptions, ImageOptions, LayoutSpec, Role, TableKind, MIB};
use kiln_fstree::Tree;

/// Timestamps in every image: `$SOURCE_DATE_EPOCH`, else Kiln's fixed epoch.
pub fn epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| crate::toolchain::SOURCE_DATE_EPOCH.parse().unwrap_or(0))
}

fn tree(dir: &Path) -> Result<Tree, String> {
    Tree::from_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))
}

fn tmp_of(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    out.with_file_name(name)
}

/// Creates `out` through a temporary file that `write` fills; renamed into
/// place only when `write` succeeded and the data is on disk.
fn atomically<T>(
    out: &Path,
    write: impl FnOnce(&mut File) -> Result<T, String>,
) -> Result<T, String> {
    let tmp = tmp_of(out);
    let r = (|| {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        let v = write(&mut f)?;
        f.sync_all()
            .and_then(|_| fs::rename(&tmp, out))
            .map_err(|e| format!("writing {}: {e}", out.display()))?;
        Ok(v)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

pub fn erofs(
    dir: &Path,
    out: &Path,
    compression: kiln_erofs::Compression,
    label: Option<String>,
) -> Result<kiln_erofs::Summary, String> {
    let t = tree(dir)?;
    let opts = kiln_erofs::Options {
        compression,
        epoch: epoch(),
        uuid: None,
        label,
        tail_packing: true,
    };
    atomically(out, |f| {
        kiln_erofs::write(&t, &opts, f).map_err(|e| e.to_string())
    })
}

pub fn ext4(
    dir: Option<&Path>,
    out: &Path,
    size_bytes: u64,
    label: &str,
) -> Result<kiln_ext4::Summary, String> {
    let t = match dir {
        Some(d) => tree(d)?,
        None => Tree::new(),
    };
    let opts = kiln_ext4::Options {
        label: label.into(),
        epoch: epoch().min(u32::MAX as u64) as u32,
        ..kiln_ext4::Options::new(size_bytes)
    };
    atomically(out, |f| {
        kiln_ext4::write(&t, &opts, f).map_err(|e| e.to_string())
    })
}

pub fn fat(
    dir: Option<&Path>,
    out: &Path,
    size_bytes: u64,
) -> Result<kiln_disk::FatSummary, String> {
    let t = match dir {
        Some(d) => tree(d)?,
        None => Tree::new(),
    };
    let opts = FatOptions {
        epoch: epoch(),
        ..FatOptions::new(size_bytes)
    };
    atomically(out, |f| {
        kiln_disk::fat::write(&t, &opts, f).map_err(|e| e.to_string())
    })
}

/// Directories for each partition of a balenaOS disk (root B stays empty).
pub struct DiskDirs<'a> {
    pub boot: Option<&'a Path>,
    pub root: &'a Path,
    pub state: Option<&'a Path>,
    pub data: Option<&'a Path>,
}

/// A whole disk: FAT boot, lz4hc EROFS root, ext4 state and data, MBR or
/// GPT, sparse `out` plus `out.zst`. Partition images go to a scratch
/// directory next to `out`.
pub fn disk(
    dirs: &DiskDirs,
    spec: &LayoutSpec,
    out: &Path,
) -> Result<kiln_disk::DiskSummary, String> {
    let layout = spec.compute().map_err(|e| e.to_string())?;
    let size = |role: Role| layout.get(role).map(|p| p.size_bytes()).unwrap_or_default();
    let scratch = tmp_of(out).with_extension("parts");
    fs::create_dir_all(&scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let result = (|| {
        let (boot, root, state, data) = (
            scratch.join("boot.vfat"),
            scratch.join("root.erofs"),
            scratch.join("state.ext4"),
            scratch.join("data.ext4"),
        );
        // The four filesystems are independent: write them at once.
        let (r_root, (r_boot, (r_state, r_data))) = rayon::join(
            || {
                let c = kiln_erofs::Compression::Lz4hc { level: 9 };
                erofs(dirs.root, &root, c, Some(Role::RootA.label().into())).map(|_| ())
            },
            || {
                rayon::join(
                    || fat(dirs.boot, &boot, size(Role::Boot)).map(|_| ()),
                    || {
                        rayon::join(
                            || ext4(dirs.state, &state, size(Role::State), Role::State.label()),
                            || ext4(dirs.data, &data, size(Role::Data), Role::Data.label()),
                        )
                    },
                )
            },
        );
        r_root?;
        r_boot?;
        r_state?;
        r_data?;
        let root_len = fs::metadata(&root).map(|m| m.len()).unwrap_or(0);
        if root_len > size(Role::RootA) {
            return Err(format!(
                "the root filesystem is {root_len} bytes but resin-rootA is {} bytes",
                size(Role::RootA)
            ));
        }
        let mut h = blake3::Hasher::new();
        for p in [&boot, &root, &state, &data] {
            let d = crate::hashing::path_blake3(p).map_err(|e| format!("{}: {e}", p.display()))?;
            h.update(d.as_bytes());
        }
        let contents = Contents {
            boot: Content::Image(boot),
            root_a: Content::Image(root),
            root_b: Content::Empty,
            state: Content::Image(state),
            data: Content::Image(data),
        };
        kiln_disk::assemble(
            &layout,
            &contents,
            &ImageOptions::new(*h.finalize().as_bytes()),
            out,
        )
        .map_err(|e| e.to_string())
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// balenaOS's layout with the given sizes in MiB.
pub fn spec(table: TableKind, boot: u64, root: u64, state: u64, data: u64) -> LayoutSpec {
    LayoutSpec {
        boot_bytes: boot * MIB,
        root_bytes: root * MIB,
        state_bytes: state * MIB,
        data_bytes: data * MIB,
        ..LayoutSpec::balena_defaults(table)
    }
}
