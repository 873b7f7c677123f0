//! e2fsck -fn finds nothing to fix across sizes and options, and the
//! superblock says what the options asked for.

mod common;

use std::process::Command;

use common::*;
use kiln_ext4::Options;
use kiln_fstree::{Kind, Node, Tree};

fn dumpe2fs(image: &std::path::Path) -> String {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(image)
        .output()
        .expect("dumpe2fs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn header<'a>(dump: &'a str, key: &str) -> &'a str {
    dump.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim_start_matches(':').trim())
        })
        .unwrap_or_else(|| panic!("no `{key}` in dumpe2fs output:\n{dump}"))
}

#[test]
fn empty_filesystems_of_many_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [
        8 * MIB,
        20 * MIB,
        200 * MIB,
        300 * MIB,               // not a multiple of 128 MiB: a short last group
        1000 * MIB + 12_345,     // not a multiple of the block size
        (4 * 32768 + 40) * 4096, // a 40-block sliver of a 5th group is dropped
        2100 * MIB,              // 17 groups: two flex groups, backups in 0,1,3,5,7,9
    ];
    for size in sizes {
        let (image, s) = write_image(dir.path(), "e.img", &Tree::new(), &Options::new(size));
        fsck(&image);
        assert!(s.blocks <= size / 4096);
        assert_eq!(
            s.inodes - s.free_inodes,
            11,
            "{size}: reserved inodes + lost+found"
        );
        let dump = dumpe2fs(&image);
        assert_eq!(
            header(&dump, "Block count").parse::<u64>().unwrap(),
            s.blocks
        );
        assert_eq!(
            header(&dump, "Free blocks").parse::<u64>().unwrap(),
            s.free_blocks
        );
        std::fs::remove_file(&image).unwrap();
    }
}

#[test]
fn superblock_records_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Options::new(64 * MIB);
    o.label = "kiln-state".into();
    o.uuid = Some(*b"\x12\x34\x56\x78\x9a\xbc\x4d\xef\x81\x23\x45\x67\x89\xab\xcd\xef");
    o.epoch = 1_234_567_890;
    o.reserved_percent = 5;
    o.inode_ratio = 4096;
    o.journal_blocks = Some(2048);
    let (image, s) = write_image(dir.path(), "o.img", &Tree::new(), &o);
    fsck(&image);
    let d = dumpe2fs(&image);
    assert_eq!(
        header(&d, "Filesystem features"),
        "has_journal ext_attr dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum"
    );
    assert_eq!(header(&d, "Filesystem volume name"), "kiln-state");
    assert_eq!(
        header(&d, "Filesystem UUID"),
        "12345678-9abc-4def-8123-456789abcdef"
    );
    assert_eq!(s.uuid_string(), "12345678-9abc-4def-8123-456789abcdef");
    assert_eq!(header(&d, "Inode count"), "16384");
    assert_eq!(
        header(&d, "Reserved block count"),
        (16384 * 5 / 100).to_string()
    );
    assert_eq!(header(&d, "Total journal blocks"), "2048");
    assert_eq!(header(&d, "Journal start"), "0", "clean journal");
    assert_eq!(header(&d, "Checksum type"), "crc32c");
    assert_eq!(
        header(&d, "Journal features"),
        "journal_64bit journal_checksum_v3"
    );
    assert_eq!(header(&d, "Journal checksum type"), "crc32c");
    for key in ["Filesystem created", "Last write time", "Last checked"] {
        assert_eq!(header(&d, key), "Fri Feb 13 23:31:30 2009", "{key}");
    }
    assert_eq!(header(&d, "Last mount time"), "n/a");
}

#[test]
fn no_journal_and_post_2038_times() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tree::new();
    file(&mut t, "/f", b"x".to_vec(), 0o644);
    let mut o = Options::new(32 * MIB);
    o.journal_blocks = Some(0);
    o.epoch = 3_000_000_000; // 2065
    let (image, s) = write_image(dir.path(), "nj.img", &t, &o);
    // Checked as of a clock past the epoch, else e2fsck rightly reports
    // the superblock times as being in the future.
    fsck_at(&image, Some(3_000_000_100));
    assert_eq!(s.journal_blocks, 0);
    let d = dumpe2fs(&image);
    assert!(!header(&d, "Filesystem features").contains("has_journal"));
    let out = debugfs(&image, &["stat /f".into()]);
    assert!(
        out.contains("mtime: 0xb2d05e00:00000001"),
        "epoch bit set for 2065:\n{out}"
    );
}

#[test]
fn small_tree_default_options() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tree::new();
    t.mkdir_p("/etc/systemd/system").unwrap();
    file(&mut t, "/etc/hostname", b"kiln\n".to_vec(), 0o644);
    file(&mut t, "/etc/shadow", b"root:*:1::::::\n".to_vec(), 0o640);
    t.insert(
        "/etc/systemd/system/default.target",
        Node::symlink("/lib/systemd/system/multi-user.target"),
    )
    .unwrap();
    t.insert("/run", node(Kind::Dir, 0o755, 0, 0)).unwrap();
    t.insert("/tmp", node(Kind::Dir, 0o1777, 0, 0)).unwrap();
    let (image, _) = write_image(dir.path(), "small.img", &t, &Options::new(16 * MIB));
    fsck(&image);
    let s = stat_all(
        &image,
        &["/tmp", "/etc/shadow", "/etc/systemd/system/default.target"],
    );
    assert_eq!(s["/tmp"].mode, 0o1777);
    assert_eq!(s["/etc/shadow"].mode, 0o640);
    assert_eq!(
        s["/etc/systemd/system/default.target"].fast_link.as_deref(),
        Some("/lib/systemd/system/multi-user.target")
    );
}

#[test]
fn many_subdirectories_and_tiny_inode_ratio() {
    // 2000 subdirectories (links > 2000) and enough inodes to span groups.
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tree::new();
    t.insert("/d", Node::dir(0o755)).unwrap();
    for i in 0..2000 {
        t.insert(&format!("/d/{i}"), Node::dir(0o755)).unwrap();
        file(&mut t, &format!("/d/{i}/f"), vec![b'x'; i % 10], 0o644);
    }
    let mut o = Options::new(520 * MIB); // 5 groups, the last one short
    o.inode_ratio = 65536; // 1664 inodes per group: 3 groups hold inodes
    let (image, s) = write_image(dir.path(), "dirs.img", &t, &o);
    fsck(&image);
    assert_eq!(s.groups, 5);
    assert_eq!(stat_all(&image, &["/d"])["/d"].links, 2002);
}

#[test]
fn large_directories_are_hash_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tree::new();
    t.insert("/one", Node::dir(0o755)).unwrap();
    for i in 0..3000 {
        file(&mut t, &format!("/one/entry-{i}"), Vec::new(), 0o644);
    }
    // 255-byte names: 15 per leaf, so 8000 need > 507 leaves and a level
    // of index nodes.
    t.insert("/two", Node::dir(0o755)).unwrap();
    for i in 0..8000 {
        file(&mut t, &format!("/two/{i:0>255}"), Vec::new(), 0o644);
    }
    t.insert("/small", Node::dir(0o755)).unwrap();
    file(&mut t, "/small/only", Vec::new(), 0o644);
    let mut o = Options::new(64 * MIB);
    o.inode_ratio = 4096;
    let (image, _) = write_image(dir.path(), "dirs.img", &t, &o);
    fsck(&image);
    let s = stat_all(&image, &["/one", "/two", "/small"]);
    assert_eq!(s["/one"].flags & 0x1000, 0x1000, "INDEX_FL");
    assert_eq!(s["/two"].flags & 0x1000, 0x1000, "INDEX_FL");
    assert_eq!(
        s["/small"].flags & 0x1000,
        0,
        "one-block directories stay linear"
    );
    let one = debugfs(&image, &["htree_dump /one".into()]);
    assert!(
        one.contains("Indirect levels: 0"),
        "{}",
        &one[..one.len().min(2000)]
    );
    let two = debugfs(&image, &["htree_dump /two".into()]);
    assert!(
        two.contains("Indirect levels: 1"),
        "{}",
        &two[..two.len().min(2000)]
    );
    // Every name is in the dump exactly once.
    let listed = one.matches(" entry-").count();
    assert_eq!(listed, 3000);
}
