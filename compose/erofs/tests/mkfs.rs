//! Against `mkfs.erofs` on a real tree (Python's standard library, ~50 MB
//! of text and bytecode): Kiln's LZ4HC image must not be larger than
//! `mkfs.erofs -zlz4hc`'s, and uncompressed images must be about the same
//! size. `examples/compare.rs` prints the full table, with timings.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use kiln_erofs::{Compression, Options};
use kiln_fstree::Tree;

const CANDIDATES: [&str; 3] = ["/usr/lib/python3.11", "/usr/lib/python3", "/usr/share/doc"];

fn mkfs(dir: &Path, name: &str, args: &[&str], src: &Path) -> u64 {
    let image = dir.join(name);
    let out = Command::new("mkfs.erofs")
        .args(["-T0", "--quiet"])
        .args(args)
        .arg(&image)
        .arg(src)
        .output()
        .expect("mkfs.erofs (erofs-utils) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::metadata(&image).unwrap().len()
}

#[test]
fn lz4hc_images_are_no_larger_than_mkfs_erofs() {
    let Some(src) = CANDIDATES.iter().map(Path::new).find(|p| p.is_dir()) else {
        return kiln_testkit::skip(
            "lz4hc_images_are_no_larger_than_mkfs_erofs",
            &format!("none of {CANDIDATES:?} exists to compare on"),
            kiln_testkit::Cannot::Setup,
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::from_dir(src).unwrap();
    let kiln = |name: &str, compression, tail_packing| {
        let opts = Options {
            compression,
            tail_packing,
            ..Options::default()
        };
        common::write_image(dir.path(), name, &tree, &opts)
    };

    let (packed, packed_summary) = kiln("hc.img", Compression::Lz4hc { level: 9 }, true);
    let (_, unpacked) = kiln("hc-nopack.img", Compression::Lz4hc { level: 9 }, false);
    let (_, plain) = kiln("plain.img", Compression::None, true);
    let mkfs_hc = mkfs(dir.path(), "m-hc.img", &["-zlz4hc"], src);
    let mkfs_plain = mkfs(dir.path(), "m-plain.img", &[], src);
    println!("{}: {} paths", src.display(), tree.len());
    println!(
        "lz4hc:        kiln {} (no tail packing {}) vs mkfs.erofs -zlz4hc {}",
        packed_summary.bytes, unpacked.bytes, mkfs_hc
    );
    println!(
        "uncompressed: kiln {} vs mkfs.erofs {}",
        plain.bytes, mkfs_plain
    );

    assert!(
        packed_summary.bytes <= mkfs_hc,
        "Kiln's LZ4HC image is larger than mkfs.erofs's"
    );
    // Without tail packing the layouts are the same as mkfs.erofs's; only
    // metadata placement differs.
    assert!(
        unpacked.bytes * 1000 <= mkfs_hc * 1005,
        "{} vs {mkfs_hc}",
        unpacked.bytes
    );
    assert!(
        plain.bytes.abs_diff(mkfs_plain) * 100 <= mkfs_plain,
        "uncompressed sizes diverge"
    );

    // And the image is right: fsck extracts the source tree.
    let out = dir.path().join("x");
    common::fsck_extract(&packed, &out);
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&out)
        .arg(src)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}
