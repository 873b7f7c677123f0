//! The work of an image cache miss: package outputs in, partition images,
//! the disk and its manifest out, in a work directory the caller owns.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use kiln_disk::{PartitionType, Role, TableKind, MIB};
use kiln_fstree::{Data, Node, Tree};
use kiln_rootfs::{OsInfo, Package};
use kiln_store::{Digest, Store};
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;
use crate::manifest::{
    FileInfo, ImageManifest, PackageInfo, PartitionInfo, RootfsInfo, MANIFEST_SCHEMA,
};
use crate::policy::{self, RESET_MARKER, STATE_OVERLAY};
use crate::write::{self, io_err};
use crate::{digest, ImageInput, ImageInputs, STORED_IMAGE, STORED_MANIFEST};

/// The image build's log: the step headers the live progress shows, and
/// what each step made.
struct Log {
    file: BufWriter<File>,
    step: usize,
}

const STEPS: usize = 6;

impl Log {
    fn open(path: &Path) -> Result<Log, ImageError> {
        let file = File::options()
            .append(true)
            .open(path)
            .map_err(io_err("opening", path))?;
        Ok(Log {
            file: BufWriter::new(file),
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
}

/// Makes the image of `inputs` (whose key is `key`) in `work`: the stored
/// form (`disk.img.zst`, `image.json`) in `out`, the sparse disk at
/// [`crate::fresh_image`]; progress and what each step made go to `log`.
pub fn build(
    inputs: &ImageInputs,
    key: &Digest,
    store: &Store,
    work: &Path,
    out: &Path,
    log: &Path,
) -> Result<ImageManifest, ImageError> {
    let mut log = Log::open(log)?;
    assemble(inputs, key, store, work, out, &mut log)
}

fn assemble(
    inputs: &ImageInputs,
    key: &Digest,
    store: &Store,
    work: &Path,
    out_dir: &Path,
    log: &mut Log,
) -> Result<ImageManifest, ImageError> {
    let layout = inputs.layout.compute()?;
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
    let strip_tool = match &inputs.usr {
        Some(env) => kiln_rootfs::Tool::in_tree(&store.materialize(&digest(env)?)?, &inputs.strip)?,
        None => kiln_rootfs::Tool::from(inputs.strip.as_str()),
    };
    let stripped = kiln_rootfs::strip(
        &mut rootfs.tree,
        strip_tool,
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
        });
    }
    log.line(&format!(
        "{} bytes in {} inodes (partition: {root_available} bytes)",
        root_summary.bytes, root_summary.inodes
    ));

    log.step("boot partition (FAT)");
    let boot_tree = crate::boot::tree(store, inputs, &os)?;
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
    let contents = write::contents(boot_img, root_img, state_img, data_img);
    let disk = write::disk(&layout, &contents, &crate::fresh_image(work))?;
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
            compression: policy::ROOT_COMPRESSION_NAME.into(),
            erofs_bytes: root_summary.bytes,
        },
        packages: inputs.packages.iter().map(info).collect(),
        kernel: inputs.kernel.as_ref().map(info),
        bootloader: inputs.bootloader.as_ref().map(info),
        state_binds: rootfs.bind_units.iter().map(|u| u.target.clone()).collect(),
    };
    let mut json = serde_json::to_vec_pretty(&manifest).map_err(|e| ImageError::Encode {
        what: STORED_MANIFEST,
        source: e,
    })?;
    json.push(b'\n');
    let json_path = out_dir.join(STORED_MANIFEST);
    fs::write(&json_path, json).map_err(io_err("writing", &json_path))?;
    Ok(manifest)
}

fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut f = File::open(path).map_err(io_err("reading", path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io_err("reading", path))?;
    Ok(kiln_disk::hex(&h.finalize()))
}
