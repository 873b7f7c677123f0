//! `fsck.erofs` (erofs-utils) must find Kiln's images clean, and what it
//! extracts must be exactly the input tree.

mod common;

use common::{compare_host_dir, dump, fsck_extract, rich_tree, write_image, ALL_COMPRESSIONS};
use kiln_erofs::{Compression, Options};
use kiln_fstree::Tree;

#[test]
fn empty_tree_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    for (i, compression) in ALL_COMPRESSIONS.into_iter().enumerate() {
        let opts = Options {
            compression,
            ..Options::default()
        };
        let (image, summary) = write_image(dir.path(), &format!("e{i}.img"), &Tree::new(), &opts);
        assert_eq!(summary.inodes, 1);
        assert_eq!(summary.blocks, 1, "only the superblock's block");
        let out = dir.path().join(format!("e{i}"));
        fsck_extract(&image, &out);
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    }
}

/// Superblock `feature_incompat`.
fn incompat(image: &std::path::Path) -> u32 {
    let bytes = std::fs::read(image).unwrap();
    u32::from_le_bytes(bytes[1024 + 80..1024 + 84].try_into().unwrap())
}

fn rich_tree_round_trips(compression: Compression, tail_packing: bool) {
    let dir = tempfile::tempdir().unwrap();
    let tree = rich_tree();
    let opts = Options {
        compression,
        epoch: 1_700_000_000,
        label: Some("kiln-rootfs".into()),
        tail_packing,
        ..Options::default()
    };
    let (image, _) = write_image(dir.path(), "rich.img", &tree, &opts);
    let out = dir.path().join("x");
    fsck_extract(&image, &out);
    compare_host_dir(&tree, &out, true);

    // The layouts chosen: text compresses, noise and small files do not.
    let layout = |path: &str| {
        let info = dump(&image, &[&format!("--path={path}")]);
        let at = info.find("Layout: ").expect("dump.erofs prints the layout") + 8;
        info[at..at + 1].parse::<u8>().unwrap()
    };
    let compressed = compression != Compression::None;
    assert_eq!(layout("/big5m"), if compressed { 3 } else { 2 });
    assert_eq!(layout("/usr/bin/su"), if compressed { 3 } else { 2 });
    assert_eq!(layout("/noise64k"), 2, "incompressible: stored as is");
    assert_eq!(layout("/exact4096"), 0, "one full block, no tail");
    assert_eq!(layout("/small.txt"), 2, "inline");
    assert_eq!(layout("/links/long"), 0, "a 4095-byte target takes a block");
    assert_eq!(layout("/links/one"), 2);
    assert_eq!(
        layout("/many"),
        2,
        "3000 entries: blocks plus an inline tail"
    );
    let want = match (compressed, tail_packing) {
        (false, _) => 0,
        (true, false) => 0x1, // zero padding
        (true, true) => 0x11, // and ztailpacking
    };
    assert_eq!(incompat(&image), want);
}

#[test]
fn rich_tree_uncompressed() {
    rich_tree_round_trips(Compression::None, true);
}

#[test]
fn rich_tree_lz4() {
    rich_tree_round_trips(Compression::Lz4, true);
}

#[test]
fn rich_tree_lz4hc() {
    rich_tree_round_trips(Compression::Lz4hc { level: 12 }, true);
}

#[test]
fn rich_tree_lz4hc_without_tail_packing() {
    rich_tree_round_trips(Compression::Lz4hc { level: 9 }, false);
}

/// The clean runs above mean something only if the checksum is checked:
/// one flipped bit in the superblock's block must be reported.
#[test]
fn superblock_checksum_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = write_image(dir.path(), "c.img", &rich_tree(), &Options::default());
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[1024 + 64] ^= 1; // the volume name
    let bad = dir.path().join("bad.img");
    std::fs::write(&bad, bytes).unwrap();
    let out = std::process::Command::new("fsck.erofs")
        .arg(&bad)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("chksum"), "fsck.erofs did not notice:\n{log}");
}
