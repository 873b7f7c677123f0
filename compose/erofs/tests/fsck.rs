//! `fsck.erofs` (erofs-utils) must find Kiln's images clean, and what it
//! extracts must be exactly the input tree.

mod common;

use common::{compare_host_dir, fsck_extract, rich_tree, write_image, ALL_COMPRESSIONS};
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

fn rich_tree_round_trips(compression: Compression) {
    let dir = tempfile::tempdir().unwrap();
    let tree = rich_tree();
    let opts = Options {
        compression,
        epoch: 1_700_000_000,
        label: Some("kiln-rootfs".into()),
        ..Options::default()
    };
    let (image, _) = write_image(dir.path(), "rich.img", &tree, &opts);
    let out = dir.path().join("x");
    fsck_extract(&image, &out);
    compare_host_dir(&tree, &out, true);
}

#[test]
fn rich_tree_uncompressed() {
    rich_tree_round_trips(Compression::None);
}

#[test]
fn rich_tree_lz4() {
    rich_tree_round_trips(Compression::Lz4);
}

#[test]
fn rich_tree_lz4hc() {
    rich_tree_round_trips(Compression::Lz4hc { level: 12 });
}
