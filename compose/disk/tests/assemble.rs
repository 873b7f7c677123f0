//! Whole images: a FAT boot partition checked with fsck.vfat and mtools, a
//! root filesystem image placed at its offset, checksums, sparseness,
//! reproducibility, the `.zst`, and inputs that do not fit.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{balena_spec, read_range, run, sfdisk, sha256};
use kiln_disk::{
    assemble, fat, hex, Content, Contents, DiskError, FatKind, FatOptions, ImageOptions, Layout,
    LayoutSpec, Role, TableKind, MIB,
};
use kiln_fstree::{Data, Node, Tree};

const EPOCH: u64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

fn small_spec(table: TableKind) -> LayoutSpec {
    LayoutSpec {
        boot_bytes: 40 * MIB,
        root_bytes: 16 * MIB,
        state_bytes: 8 * MIB,
        data_bytes: 8 * MIB,
        ..balena_spec(table)
    }
}

fn boot_tree(host_file: &Path) -> Tree {
    let mut t = Tree::new();
    t.mkdir_p("/overlays").unwrap();
    t.mkdir_p("/system-connections").unwrap();
    // Nested, so a `..` points at a directory other than the root.
    t.mkdir_p("/EFI/BOOT").unwrap();
    let file = |b: &[u8]| Node::file(Data::Bytes(b.to_vec()), 0o644);
    t.insert("/config.json", file(br#"{"deviceType":"raspberrypi4-64"}"#))
        .unwrap();
    t.insert("/os-release", file(b"ID=kiln\n")).unwrap();
    t.insert("/empty", file(b"")).unwrap();
    t.insert("/EFI/BOOT/BOOTAA64.EFI", file(b"MZ not really"))
        .unwrap();
    t.insert("/Ünïcode name.txt", file(b"utf-16 long name"))
        .unwrap();
    t.insert(
        "/overlays/vc4-kms-v3d-pi4.dtbo",
        file(&(0..5000u32).map(|i| i as u8).collect::<Vec<_>>()),
    )
    .unwrap();
    t.insert(
        "/kernel8.img",
        Node::file(Data::Path(host_file.to_path_buf()), 0o644),
    )
    .unwrap();
    t
}

/// A 1.5 MiB pseudo-random host file (a stand-in kernel).
fn kernel(dir: &Path) -> PathBuf {
    let path = dir.join("kernel8.img");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<u8> = (0..3 << 19)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&path, data).unwrap();
    path
}

fn write_fat(tree: &Tree, layout: &Layout, path: &Path) -> kiln_disk::FatSummary {
    let mut opts = FatOptions::new(layout.get(Role::Boot).unwrap().size_bytes());
    opts.epoch = EPOCH;
    // fatfs reads back what it writes: open read-write.
    let mut f = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    fat::write(tree, &opts, &mut f).unwrap()
}

/// An EROFS image of a small directory, made by mkfs.erofs.
fn erofs(dir: &Path) -> PathBuf {
    let src = dir.join("rootfs");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/hostname"), "kiln\n").unwrap();
    fs::write(src.join("etc/big"), vec![0x5a; 300_000]).unwrap();
    let img = dir.join("root.erofs");
    run(
        "mkfs.erofs",
        &[
            "-T0",
            "--all-root",
            img.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    img
}

/// An empty ext4 image of `bytes`, made by mke2fs.
fn ext4(dir: &Path, bytes: u64) -> PathBuf {
    let img = dir.join("state.ext4");
    fs::File::create(&img).unwrap().set_len(bytes).unwrap();
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "resin-state",
            img.to_str().unwrap(),
        ],
    );
    img
}

struct Built {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    layout: Layout,
    boot: PathBuf,
    root: PathBuf,
    state: PathBuf,
    fat: kiln_disk::FatSummary,
}

fn inputs(table: TableKind) -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let layout = small_spec(table).compute().unwrap();
    let boot = dir.join("boot.vfat");
    let fat = write_fat(&boot_tree(&kernel(&dir)), &layout, &boot);
    let root = erofs(&dir);
    let state = ext4(&dir, 8 * MIB);
    Built {
        _dir: tmp,
        dir,
        layout,
        boot,
        root,
        state,
        fat,
    }
}

fn contents(b: &Built) -> Contents {
    Contents {
        boot: Content::Image(b.boot.clone()),
        root_a: Content::Image(b.root.clone()),
        root_b: Content::Empty,
        state: Content::Image(b.state.clone()),
        data: Content::Empty,
    }
}

#[test]
fn boot_root_and_state_land_at_their_offsets() {
    let b = inputs(TableKind::Mbr);
    assert_eq!(b.fat.kind, FatKind::Fat32);
    let out = b.dir.join("kiln.img");
    let s = assemble(&b.layout, &contents(&b), &ImageOptions::new([7; 32]), &out).unwrap();

    let (_, parts) = sfdisk(&out);
    assert_eq!(parts[&1].ptype, "c");
    assert!(parts[&1].bootable);

    // Every partition's range: its image, then zeros; and the summary's
    // checksums match what is in the file.
    let img = fs::read(&out).unwrap();
    assert_eq!(s.sha256, sha256(&img));
    assert_eq!(s.size_bytes, img.len() as u64);
    for (p, ps) in b.layout.partitions.iter().zip(&s.partitions) {
        let range = &img[p.start_bytes() as usize..(p.start_bytes() + p.size_bytes()) as usize];
        assert_eq!(ps.sha256, sha256(range), "{}", p.label());
        assert_eq!((ps.label, ps.number), (p.label(), p.number));
        let src = match contents(&b).get(p.role) {
            Content::Image(path) => fs::read(path).unwrap(),
            Content::Empty => Vec::new(),
        };
        assert_eq!(ps.content_bytes, src.len() as u64);
        assert!(range[..src.len()] == src[..], "{} differs", p.label());
        assert!(range[src.len()..].iter().all(|&x| x == 0), "{}", p.label());
    }
    assert_eq!(
        s.partitions[4].partuuid,
        format!("{:08x}-06", s.ids.mbr_signature)
    );

    // The boot partition, cut out of the image, is a clean FAT32 volume
    // with our label, volume ID and files.
    let boot = b.dir.join("boot.cut");
    let p1 = b.layout.get(Role::Boot).unwrap();
    fs::write(&boot, read_range(&out, p1.start_bytes(), p1.size_bytes())).unwrap();
    let boot_s = boot.to_str().unwrap();
    let fsck = run("fsck.vfat", &["-n", boot_s]);
    assert!(!fsck.contains("differ") && !fsck.contains("?"), "{fsck}");
    let blkid = run("blkid", &["-p", "-o", "export", boot_s]);
    assert!(blkid.contains("LABEL=resin-boot\n"), "{blkid}");
    assert!(
        blkid.contains("TYPE=vfat\n") && blkid.contains("VERSION=FAT32\n"),
        "{blkid}"
    );
    assert!(
        blkid.contains(&format!("UUID={}\n", b.fat.volume_id_string())),
        "{blkid}"
    );

    // mtools lists every file with the epoch as its time (FAT has 2 s
    // resolution; 22:13:20 is even) and copies the tree back out.
    let listing = run("mdir", &["-i", boot_s, "-/", "-a", "::"]);
    for name in [
        "config.json",
        "os-release",
        "empty",
        "Ünïcode name.txt",
        "kernel8.img",
        "vc4-kms-v3d-pi4.dtbo",
        "BOOTAA64.EFI",
    ] {
        assert!(listing.contains(name), "{name} missing:\n{listing}");
    }
    assert!(listing.contains("2023-11-14  22:13"), "{listing}");
    let back = b.dir.join("back");
    fs::create_dir(&back).unwrap();
    run(
        "mcopy",
        &[
            "-s",
            "-n",
            "-m",
            "-i",
            boot_s,
            "::/*",
            back.to_str().unwrap(),
        ],
    );
    let mtime = fs::metadata(back.join("config.json")).unwrap().mtime();
    assert_eq!(mtime as u64, EPOCH, "times are UTC");
    let tree = boot_tree(&b.dir.join("kernel8.img"));
    let mut count = 0;
    for (path, node) in tree.iter() {
        let host = back.join(&path[1..]);
        match &node.kind {
            kiln_fstree::Kind::File(data) => {
                assert_eq!(fs::read(&host).unwrap(), data.read().unwrap(), "{path}");
                count += 1;
            }
            _ => assert!(host.is_dir(), "{path}"),
        }
    }
    assert_eq!(count, 7);
}

#[test]
fn gpt_image_with_contents() {
    let b = inputs(TableKind::Gpt);
    let out = b.dir.join("kiln.img");
    let s = assemble(&b.layout, &contents(&b), &ImageOptions::new([8; 32]), &out).unwrap();
    let (header, parts) = sfdisk(&out);
    assert_eq!(header["label"], "gpt");
    assert_eq!(parts.len(), 5);
    assert_eq!(parts[&2].name.as_deref(), Some("resin-rootA"));
    let p2 = b.layout.get(Role::RootA).unwrap();
    let root = fs::read(&b.root).unwrap();
    assert!(read_range(&out, p2.start_bytes(), root.len() as u64) == root);
    assert_eq!(
        s.partitions[1].partuuid,
        s.ids.partition_guid(2).to_string().to_lowercase()
    );
    // The erofs image is intact where it was put.
    let cut = b.dir.join("root.cut");
    fs::write(&cut, read_range(&out, p2.start_bytes(), p2.size_bytes())).unwrap();
    run("fsck.erofs", &[cut.to_str().unwrap()]);
}

#[test]
fn two_assemblies_are_identical() {
    let b = inputs(TableKind::Mbr);
    let c = inputs(TableKind::Mbr);
    // Independently built boot partitions are byte-identical.
    assert!(fs::read(&b.boot).unwrap() == fs::read(&c.boot).unwrap());
    let opts = ImageOptions::new([9; 32]);
    let one = assemble(&b.layout, &contents(&b), &opts, &b.dir.join("one.img")).unwrap();
    let two = assemble(&b.layout, &contents(&b), &opts, &b.dir.join("two.img")).unwrap();
    assert_eq!(one.sha256, two.sha256);
    assert_eq!(one.partitions, two.partitions);
    assert!(fs::read(&one.compressed).unwrap() == fs::read(&two.compressed).unwrap());
    // Other content hash: other ids, so another image.
    let three = assemble(
        &b.layout,
        &contents(&b),
        &ImageOptions::new([10; 32]),
        &b.dir.join("three.img"),
    )
    .unwrap();
    assert_ne!(one.sha256, three.sha256);
    assert_ne!(one.ids.mbr_signature, three.ids.mbr_signature);
    assert_eq!(one.partitions[1].sha256, three.partitions[1].sha256);
}

#[test]
fn zst_decompresses_to_the_image() {
    let b = inputs(TableKind::Gpt);
    let out = b.dir.join("kiln.img");
    let s = assemble(&b.layout, &contents(&b), &ImageOptions::new([11; 32]), &out).unwrap();
    assert_eq!(s.compressed, b.dir.join("kiln.img.zst"));
    assert_eq!(
        s.compressed_bytes,
        fs::metadata(&s.compressed).unwrap().len()
    );
    let back = b.dir.join("back.img");
    run(
        "zstd",
        &[
            "-q",
            "-d",
            s.compressed.to_str().unwrap(),
            "-o",
            back.to_str().unwrap(),
        ],
    );
    run("cmp", &[out.to_str().unwrap(), back.to_str().unwrap()]);
    assert!(s.compressed_bytes < s.size_bytes / 10, "{s:?}");
}

#[test]
fn an_empty_balena_image_is_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let layout = balena_spec(TableKind::Mbr).compute().unwrap();
    let out = dir.path().join("empty.img");
    let s = assemble(
        &layout,
        &Contents::empty(),
        &ImageOptions::new([0; 32]),
        &out,
    )
    .unwrap();
    let meta = fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), 904 * MIB);
    // The MBR and two EBRs: three 4 KiB blocks at most, plus slack for
    // filesystems that allocate larger extents.
    assert!(
        meta.blocks() * 512 <= 1 << 20,
        "{} bytes allocated",
        meta.blocks() * 512
    );
    assert_eq!(s.allocated_bytes, meta.blocks() * 512);
    // An empty partition's checksum is that of zeros.
    let state = &s.partitions[3];
    assert_eq!(state.label, "resin-state");
    assert_eq!(
        hex(&state.sha256),
        hex(&sha256(&vec![0u8; state.size_bytes as usize]))
    );
}

#[test]
fn an_image_too_big_for_its_partition() {
    let b = inputs(TableKind::Mbr);
    let big = b.dir.join("big.img");
    fs::File::create(&big)
        .unwrap()
        .set_len(16 * MIB + 4096)
        .unwrap();
    let mut c = contents(&b);
    c.root_b = Content::Image(big.clone());
    let out = b.dir.join("kiln.img");
    let e = assemble(&b.layout, &c, &ImageOptions::new([1; 32]), &out).unwrap_err();
    assert!(
        matches!(&e, DiskError::DoesNotFit { label, image_bytes, partition_bytes, over_bytes: 4096, .. }
            if label == "resin-rootB" && *image_bytes == 16 * MIB + 4096 && *partition_bytes == 16 * MIB),
        "{e}"
    );
    assert!(e.to_string().contains("16781312 bytes"), "{e}");
    // Nothing under the final names, no temporaries left behind.
    let left: Vec<_> = fs::read_dir(&b.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("kiln.img"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_mbr_type_must_match_the_fat_width() {
    let b = inputs(TableKind::Mbr);
    // Claim FAT16 for a FAT32 boot image.
    let mut layout = b.layout.clone();
    layout.partitions[0].ptype = kiln_disk::PartitionType::Mbr(kiln_disk::MBR_FAT16_LBA);
    let e = assemble(
        &layout,
        &contents(&b),
        &ImageOptions::new([1; 32]),
        &b.dir.join("x.img"),
    )
    .unwrap_err();
    assert!(
        matches!(&e, DiskError::BootTypeMismatch { mbr_type: 0x0e, found, .. } if found == "FAT32"),
        "{e}"
    );
    // And a boot image that is not FAT at all.
    let mut c = contents(&b);
    c.boot = Content::Image(b.root.clone());
    let e = assemble(
        &b.layout,
        &c,
        &ImageOptions::new([1; 32]),
        &b.dir.join("x.img"),
    )
    .unwrap_err();
    assert!(
        matches!(&e, DiskError::BootTypeMismatch { found, .. } if found == "no FAT filesystem"),
        "{e}"
    );
}

#[test]
fn fat16_boot_partition() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = small_spec(TableKind::Mbr);
    spec.boot_bytes = 16 * MIB;
    let layout = spec.compute().unwrap();
    let boot = dir.path().join("boot.vfat");
    let s = write_fat(&boot_tree(&kernel(dir.path())), &layout, &boot);
    assert_eq!(s.kind, FatKind::Fat16);
    run("fsck.vfat", &["-n", boot.to_str().unwrap()]);
    let mut c = Contents::empty();
    c.boot = Content::Image(boot);
    let out = dir.path().join("kiln.img");
    assemble(&layout, &c, &ImageOptions::new([2; 32]), &out).unwrap();
    let (_, parts) = sfdisk(&out);
    assert_eq!(parts[&1].ptype, "e");
}

/// Regression: with these file sizes (a 4.9 MB bzImage, its config and the
/// balenaOS boot files on a 40 MiB FAT32 volume written into a new, empty
/// file) the dot-entry fix used to read past the end of the not yet padded
/// volume and fail with "failed to fill whole buffer".
#[test]
fn boot_volume_with_a_kernel_is_written_and_checks_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tree = Tree::new();
    let sizes: [(&str, usize); 6] = [
        ("/bzImage", 4_936_704),
        ("/config", 79_919),
        ("/config.json", 92),
        ("/device-type.json", 156),
        ("/os-release", 107),
        ("/resinOS_uEnv.txt", 50),
    ];
    for (i, (path, len)) in sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..*len).map(|n| (n * 31 + i) as u8).collect();
        tree.insert(path, Node::file(Data::Bytes(bytes), 0o644))
            .expect("insert");
    }
    tree.insert("/system-connections", Node::dir(0o755))
        .expect("insert");
    let path = dir.path().join("boot.vfat");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create");
    let opts = kiln_disk::FatOptions::new(40 * kiln_disk::MIB);
    kiln_disk::fat::write(&tree, &opts, &mut f).expect("the FAT volume is written");
    drop(f);
    assert_eq!(
        fs::metadata(&path).expect("meta").len(),
        40 * kiln_disk::MIB
    );
    run("fsck.vfat", &["-n", path.to_str().expect("utf-8 path")]);
}
