//! The work of an image cache miss: package outputs in, partition images,
//! the disk and its manifest out (in a scratch directory the caller owns).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use kiln_store::Digest;
use kiln_disk::{PartitionType, Role, TableKind, MIB};
use kiln_fstree::{Data, Kind, Node, Tree};
use kiln_rootfs::{OsInfo, Package};
use sha2::{Digest as _, Sha256};

use super::error::ImageError;
use super::manifest::{
    FileInfo, ImageManifest, PackageInfo, PartitionInfo, RootfsInfo, MANIFEST_SCHEMA,
};
use super::write::{self, io_err};
use super::{ImageInput, ImageInputs, STORED_IMAGE, STORED_MANIFEST};
use crate::build::Context;

/// The A/B boot environment on the boot partition, read and written by
/// the bootloader (`env import -t` format). A fresh image boots root A
/// with no update pending.
pub const BOOT_ENV_FILE: &str = "resinOS_uEnv.txt";
pub const BOOT_ENV: &str = "resin_root_part=A\nupgrade_available=0\nbootcount=0\n";
/// balenaOS's factory-reset marker: if it is missing from a partition at
/// boot, that partition's contents are wiped and re-seeded.
const RESET_MARKER: &str = "/remove_me_to_reset";
/// [`kiln_rootfs::OVERLAY`] as seen from the state partition's root.
const STATE_OVERLAY: &str = "/root-overlay";

/// What a miss produced.
pub struct Made {
    /// The directory to store: `disk.img.zst` and `image.json`.
    pub out_dir: PathBuf,
    /// The sparse image, to move into `out/`.
    pub disk_image: PathBuf,
    pub manifest: ImageManifest,
}

/// The image build's log: the step headers the live progress shows, and
/// what each step made.
pub struct Log {
    file: BufWriter<File>,
    path: PathBuf,
    step: usize,
}

const STEPS: usize = 6;

impl Log {
    pub fn create(path: &Path) -> Result<Log, ImageError> {
        let file = File::create(path).map_err(|source| ImageError::Io {
            action: "creating",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Log {
            file: BufWriter::new(file),
            path: path.to_path_buf(),
            step: 0,
        })
    }

    fn step(&mut self, name: &str) {
        self.step += 1;
        self.line(&format!("==> [step {}/{STEPS}] {name}", self.step));
    }

    fn line(&mut self, text: &str) {
        // The log is for people; failing to write it must not fail the image.
        let _ = writeln!(self.file, "{text}");
        let _ = self.file.flush();
    }

    /// Copies the log to where `kiln log` finds it.
    pub fn finish(mut self, dest: &Path) -> std::io::Result<()> {
        self.file.flush()?;
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::copy(&self.path, dest).map(|_| ())
    }
}

pub fn assemble(
    ctx: &Context,
    inputs: &ImageInputs,
    key: &Digest,
    work: &Path,
    log: &mut Log,
) -> Result<Made, ImageError> {
    let store = ctx.store;
    let board_file = ctx.project.rel(&ctx.eval.board.span.file);
    let layout = write::layout_spec(&inputs.partitions).compute()?;
    let part_bytes = |role: Role| layout.get(role).map(|p| p.size_bytes()).unwrap_or_default();

    log.step("rootfs");
    let mut packages = Vec::with_capacity(inputs.packages.len());
    for p in &inputs.packages {
        let output = digest(&p.output)?;
        packages.push(Package {
            name: p.name.clone(),
            version: p.version.clone(),
            manifest: store.get_manifest(&output)?,
            files: store.materialize(&output)?,
            state: p.state.clone(),
            units: p.units.clone(),
        });
    }
    let os = OsInfo {
        id: inputs.os.id.clone(),
        name: inputs.os.name.clone(),
        version: inputs.os.version.clone(),
        board: inputs.board.clone(),
        arch: inputs.target.arch.clone(),
    };
    let rootfs_opts = kiln_rootfs::Options::default();
    let mut rootfs = kiln_rootfs::assemble(&packages, &os, &rootfs_opts)?;
    log.line(&format!(
        "{} packages: {} files, {} directories, {} symlinks, {} bytes; {} ELF files checked",
        packages.len(),
        rootfs.report.files,
        rootfs.report.dirs,
        rootfs.report.symlinks,
        rootfs.report.file_bytes,
        rootfs.report.elf_checked
    ));
    for unit in &rootfs.bind_units {
        log.line(&format!(
            "state bind: {} ({} -> {})",
            unit.unit, unit.what, unit.target
        ));
    }

    log.step("strip");
    let stripped = kiln_rootfs::strip(
        &mut rootfs.tree,
        &inputs.strip,
        &work.join("strip"),
        &rootfs_opts.elf_skip,
    )?;
    log.line(&format!(
        "{} files stripped with {}: {} -> {} bytes",
        stripped.stripped.len(),
        inputs.strip,
        stripped.bytes_before,
        stripped.bytes_after
    ));

    log.step("root filesystem (EROFS, lz4hc)");
    let root_img = work.join("root.erofs");
    let root_summary = write::erofs(&rootfs.tree, &write::root_options(inputs.epoch), &root_img)?;
    let root_available = part_bytes(Role::RootA);
    if root_summary.bytes > root_available {
        return Err(ImageError::RootTooLarge {
            needed: root_summary.bytes,
            needed_mib: root_summary.bytes.div_ceil(MIB),
            available: root_available,
            available_mib: root_available / MIB,
            compression: "lz4hc",
            board_file,
        });
    }
    log.line(&format!(
        "{} bytes in {} inodes (partition: {root_available} bytes)",
        root_summary.bytes, root_summary.inodes
    ));

    log.step("boot partition (FAT)");
    let boot_tree = boot_tree(ctx, inputs, &os)?;
    let boot_img = work.join("boot.vfat");
    let fat = write::fat(&boot_tree, part_bytes(Role::Boot), inputs.epoch, &boot_img)?;
    log.line(&format!(
        "{} {}: {} files, {} of {} clusters used",
        fat.kind.name(),
        fat.volume_id_string(),
        fat.files,
        fat.used_clusters,
        fat.total_clusters
    ));

    log.step("state and data partitions (ext4)");
    let marker_tree = |with_overlay: bool| -> Result<Tree, ImageError> {
        let mut t = Tree::new();
        let node = Node::file(Data::Bytes(Vec::new()), 0o644);
        t.insert(RESET_MARKER, node)?;
        if with_overlay {
            t.insert(STATE_OVERLAY, Node::dir(0o755))?;
        }
        Ok(t)
    };
    let mut ext4 = Vec::new();
    for (role, tree) in [
        (Role::State, marker_tree(true)?),
        (Role::Data, marker_tree(false)?),
    ] {
        let label = role.label();
        let path = work.join(format!("{label}.ext4"));
        let s = write::ext4(&tree, part_bytes(role), label, inputs.epoch, &path)?;
        log.line(&format!(
            "{label}: {} blocks, UUID {}",
            s.blocks,
            s.uuid_string()
        ));
        ext4.push((path, s));
    }
    let (state_img, state_fs) = ext4.remove(0);
    let (data_img, data_fs) = ext4.remove(0);

    log.step("disk image");
    let parts = write::Partitions {
        boot: boot_img,
        root: root_img,
        state: state_img,
        data: data_img,
    };
    let disk = write::disk(&layout, &parts, &work.join("disk.img"))?;
    log.line(&format!(
        "{} bytes ({} allocated), sha256 {}; {} bytes compressed",
        disk.size_bytes,
        disk.allocated_bytes,
        kiln_disk::hex(&disk.sha256),
        disk.compressed_bytes
    ));

    let fs_of = |role: Role| -> (&'static str, String) {
        match role {
            Role::Boot => ("vfat", fat.volume_id_string()),
            Role::RootA => ("erofs", write::uuid_string(&root_summary.uuid)),
            Role::RootB => ("none", String::new()),
            Role::State => ("ext4", state_fs.uuid_string()),
            Role::Data => ("ext4", data_fs.uuid_string()),
        }
    };
    let mut partitions = Vec::new();
    for (p, s) in layout.partitions.iter().zip(&disk.partitions) {
        let (filesystem, fs_uuid) = fs_of(p.role);
        partitions.push(PartitionInfo {
            number: s.number,
            label: s.label.to_string(),
            r#type: match p.ptype {
                PartitionType::Mbr(t) => format!("0x{t:02x}"),
                PartitionType::Gpt(g) => g.to_string(),
            },
            filesystem: filesystem.into(),
            fs_uuid,
            partuuid: s.partuuid.clone(),
            start: s.start_bytes,
            size: s.size_bytes,
            content_bytes: s.content_bytes,
            sha256: kiln_disk::hex(&s.sha256),
        });
    }

    let out_dir = work.join("out");
    fs::create_dir_all(&out_dir).map_err(io_err("creating", &out_dir))?;
    let stored_zst = out_dir.join(STORED_IMAGE);
    fs::rename(&disk.compressed, &stored_zst).map_err(io_err("moving", &disk.compressed))?;
    let board = &inputs.board;
    let info = |i: &ImageInput| PackageInfo {
        name: i.name.clone(),
        version: i.version.clone(),
        license: i.license.clone(),
        key: i.key.clone(),
        output: i.output.clone(),
    };
    let manifest = ImageManifest {
        schema: MANIFEST_SCHEMA.into(),
        board: board.clone(),
        arch: inputs.target.arch.clone(),
        os: inputs.os.clone(),
        key: key.to_hex(),
        image: FileInfo {
            file: format!("{board}.img"),
            size: disk.size_bytes,
            sha256: kiln_disk::hex(&disk.sha256),
        },
        compressed: FileInfo {
            file: format!("{board}.img.zst"),
            size: disk.compressed_bytes,
            sha256: sha256_file(&stored_zst)?,
        },
        table: match layout.table {
            TableKind::Mbr => "mbr".into(),
            TableKind::Gpt => "gpt".into(),
        },
        disk_id: match layout.table {
            TableKind::Mbr => format!("0x{:08x}", disk.ids.mbr_signature),
            TableKind::Gpt => disk.ids.disk_guid.to_string(),
        },
        partitions,
        rootfs: RootfsInfo {
            files: rootfs.report.files,
            dirs: rootfs.report.dirs,
            symlinks: rootfs.report.symlinks,
            hardlinks: rootfs.report.hardlinks,
            file_bytes: rootfs.report.file_bytes - stripped.bytes_before + stripped.bytes_after,
            elf_checked: rootfs.report.elf_checked,
            stripped: stripped.stripped.len(),
            compression: "lz4hc-9".into(),
            erofs_bytes: root_summary.bytes,
        },
        packages: inputs.packages.iter().map(info).collect(),
        kernel: inputs.kernel.as_ref().map(info),
        bootloader: inputs.bootloader.as_ref().map(info),
        state_binds: rootfs.bind_units.iter().map(|u| u.target.clone()).collect(),
    };
    let mut json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    json.push(b'\n');
    let json_path = out_dir.join(STORED_MANIFEST);
    fs::write(&json_path, json).map_err(io_err("writing", &json_path))?;
    Ok(Made {
        out_dir,
        disk_image: disk.image,
        manifest,
    })
}

fn digest(hex: &str) -> Result<Digest, ImageError> {
    Digest::from_hex(hex).map_err(|_| ImageError::BadDigest(hex.to_string()))
}

fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut f = File::open(path).map_err(io_err("reading", path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io_err("reading", path))?;
    Ok(kiln_disk::hex(&h.finalize()))
}

/// The boot partition: the kernel's and the bootloader's `/boot` files,
/// plus what balenaOS keeps there (config.json, the A/B env, os-release,
/// device-type.json, system-connections/).
fn boot_tree(ctx: &Context, inputs: &ImageInputs, os: &OsInfo) -> Result<Tree, ImageError> {
    let mut tree = Tree::new();
    let mut owners: std::collections::BTreeMap<String, String> = Default::default();
    let mut add =
        |tree: &mut Tree, path: &str, node: Node, owner: &str| -> Result<(), ImageError> {
            if let Some(first) = owners.get(path) {
                if !matches!(node.kind, Kind::Dir) {
                    return Err(ImageError::BootConflict {
                        path: path.into(),
                        first: first.clone(),
                        second: owner.into(),
                    });
                }
                return Ok(());
            }
            owners.insert(path.into(), owner.into());
            Ok(tree.insert(path, node)?)
        };

    for input in inputs.kernel.iter().chain(inputs.bootloader.iter()) {
        let output = digest(&input.output)?;
        let manifest = ctx.store.get_manifest(&output)?;
        let files = ctx.store.materialize(&output)?;
        for e in &manifest.entries {
            let Some(rel) = e.path.strip_prefix("boot/") else {
                continue;
            };
            let path = format!("/{rel}");
            let node = match e.kind {
                kiln_store::EntryKind::Dir => Node::dir(0o755),
                kiln_store::EntryKind::File { .. } | kiln_store::EntryKind::Hardlink { .. } => {
                    let host = files.join(&e.path);
                    Node::file(Data::Path(host), 0o644)
                }
                kiln_store::EntryKind::Symlink { .. } => {
                    // FAT has no symlinks: the file the link names is copied.
                    let host = files.join(&e.path);
                    let real = fs::canonicalize(&host).map_err(io_err("resolving", &host))?;
                    if !real.starts_with(&files) {
                        return Err(ImageError::Io {
                            action: "copying to the boot partition",
                            path: host,
                            source: std::io::Error::other("a symlink leading out of its package"),
                        });
                    }
                    Node::file(Data::Path(real), 0o644)
                }
            };
            add(&mut tree, &path, node, &input.name)?;
        }
    }

    let board = &ctx.eval.board;
    let mut config = serde_json::Map::new();
    config.insert("deviceType".into(), board.name.clone().into());
    config.insert("developmentMode".into(), false.into());
    config.insert("persistentLogging".into(), false.into());
    config.extend(inputs.config_json.clone());
    let device_type = serde_json::json!({
        "slug": board.name,
        "name": if board.description.is_empty() { &board.name } else { &board.description },
        "arch": board.target.arch,
        "kernel": inputs.kernel.as_ref().map(|k| &k.name),
        "bootloader": inputs.bootloader.as_ref().map(|b| &b.name),
        "partitionTable": board.partitions.table,
    });
    let text = |v: &serde_json::Value| {
        let mut s = serde_json::to_vec_pretty(v).unwrap_or_default();
        s.push(b'\n');
        s
    };
    let generated: [(&str, Vec<u8>); 4] = [
        ("/config.json", text(&serde_json::Value::Object(config))),
        ("/device-type.json", text(&device_type)),
        ("/os-release", kiln_rootfs::os_release(os).into_bytes()),
        (&format!("/{BOOT_ENV_FILE}"), BOOT_ENV.as_bytes().to_vec()),
    ];
    for (path, bytes) in generated {
        add(
            &mut tree,
            path,
            Node::file(Data::Bytes(bytes), 0o644),
            "kiln",
        )?;
    }
    add(&mut tree, "/system-connections", Node::dir(0o755), "kiln")?;
    Ok(tree)
}
