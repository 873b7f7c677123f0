//! Times a balenaOS-default image (MBR; boot 40 MiB, roots 320 MiB, state
//! 20 MiB, data 192 MiB): the FAT boot partition from a tree with a
//! 24 MiB kernel, then the assembly with a root A image.
//!
//! `cargo run --release --example balena_default -- [ROOT_IMAGE] [OUT_DIR]`
//!
//! Without ROOT_IMAGE a 256 MiB stand-in is generated: half pseudo-random
//! (incompressible) data, half text-like, so copying, hashing and zstd
//! see realistic work.

use std::error::Error;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use kiln_disk::{
    assemble, fat, hex, Content, Contents, FatOptions, ImageOptions, LayoutSpec, Role, TableKind,
    MIB,
};
use kiln_fstree::{Data, Node, Tree};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tmp = tempfile::tempdir()?;
    let out_dir = args.get(1).map_or(tmp.path().to_path_buf(), PathBuf::from);
    fs::create_dir_all(&out_dir)?;

    let root = match args.first() {
        Some(p) => PathBuf::from(p),
        None => {
            let p = out_dir.join("root.img");
            let mut data = noise(128 << 20, 7);
            let text =
                b"usr/lib/systemd/system/balena-supervisor.service\n".repeat((128 << 20) / 49 + 1);
            data.extend_from_slice(&text[..128 << 20]);
            fs::write(&p, data)?;
            p
        }
    };

    // The balenaOS sizes (the image's policy, kiln_image::policy).
    let layout = LayoutSpec {
        table: TableKind::Mbr,
        gap_bytes: 4 * MIB,
        alignment_bytes: 4 * MIB,
        boot_bytes: 40 * MIB,
        root_bytes: 320 * MIB,
        state_bytes: 20 * MIB,
        data_bytes: 192 * MIB,
        disk_bytes: None,
        boot_fat: None,
    }
    .compute()?;
    let mut tree = Tree::new();
    tree.mkdir_p("/overlays")?;
    tree.insert(
        "/kernel8.img",
        Node::file(Data::Bytes(noise(24 << 20, 3)), 0o644),
    )?;
    for i in 0..40 {
        tree.insert(
            &format!("/overlays/overlay-{i:02}.dtbo"),
            Node::file(Data::Bytes(noise(4000, i)), 0o644),
        )?;
    }
    tree.insert(
        "/config.json",
        Node::file(
            Data::Bytes(br#"{"deviceType":"raspberrypi4-64"}"#.to_vec()),
            0o644,
        ),
    )?;

    let boot = out_dir.join("boot.vfat");
    let t = Instant::now();
    let mut f = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&boot)?;
    let mut opts = FatOptions::new(layout.get(Role::Boot).map_or(0, |p| p.size_bytes()));
    opts.epoch = 1_700_000_000;
    let fat = fat::write(&tree, &opts, &mut f)?;
    f.sync_all()?;
    let fat_time = t.elapsed();

    let contents = Contents {
        boot: Content::Image(boot),
        root_a: Content::Image(root),
        ..Contents::empty()
    };
    let t = Instant::now();
    let s = assemble(
        &layout,
        &contents,
        &ImageOptions::new([1; 32]),
        &out_dir.join("kiln.img"),
    )?;
    let asm_time = t.elapsed();

    let t = Instant::now();
    let empty = assemble(
        &layout,
        &Contents::empty(),
        &ImageOptions::new([2; 32]),
        &out_dir.join("empty.img"),
    )?;
    let empty_time = t.elapsed();

    println!(
        "FAT boot ({}, {} files, {} MiB used): {:.2?}",
        fat.kind.name(),
        fat.files,
        fat.used_clusters * u64::from(fat.cluster_bytes) / MIB,
        fat_time
    );
    println!(
        "assemble {} MiB image ({} MiB allocated, .zst {} MiB): {:.2?}",
        s.size_bytes / MIB,
        s.allocated_bytes / MIB,
        s.compressed_bytes / MIB,
        asm_time
    );
    println!(
        "assemble empty layout ({} KiB allocated): {:.2?}",
        empty.allocated_bytes / 1024,
        empty_time
    );
    println!("sha256 {}", hex(&s.sha256));
    for p in &s.partitions {
        println!(
            "  p{} {:12} start {:>10} size {:>10} content {:>10} {}",
            p.number,
            p.label,
            p.start_bytes,
            p.size_bytes,
            p.content_bytes,
            &hex(&p.sha256)[..16]
        );
    }
    Ok(())
}
