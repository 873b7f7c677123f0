//! Shared helpers: input trees, writing images, and the external checkers
//! (`fsck.erofs`, `dump.erofs`, the `erofs-rs` reader).

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_erofs::{Compression, Options, Summary};
use kiln_fstree::{Data, Kind, Node, Tree};

pub const ALL_COMPRESSIONS: [Compression; 3] = [
    Compression::None,
    Compression::Lz4,
    Compression::Lz4hc { level: 9 },
];

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Text-like bytes that compress about as well as real documentation.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "the ",
        "image ",
        "kernel ",
        "block ",
        "of ",
        "and ",
        "erofs ",
        "to ",
        "file ",
        "compressed ",
        "cluster\n",
        "is ",
        "a ",
        "reproducible ",
        "build ",
        "directory ",
    ];
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % 16) as usize].as_bytes());
        if x % 97 == 0 {
            out.extend_from_slice(format!("{x:x} ").as_bytes());
        }
    }
    out.truncate(len);
    out
}

fn file(bytes: Vec<u8>, mode: u16) -> Node {
    Node::file(Data::Bytes(bytes), mode)
}

fn with_owner(mut node: Node, uid: u32, gid: u32) -> Node {
    node.uid = uid;
    node.gid = gid;
    node
}

fn with_xattr(mut node: Node, name: &str, value: &[u8]) -> Node {
    node.xattrs.insert(name.to_string(), value.to_vec());
    node
}

/// A VFS_CAP_REVISION_2 `security.capability` value granting cap_net_raw.
pub const CAP_NET_RAW: [u8; 20] = [
    0, 0, 0, 2, // magic_etc: revision 2, not effective
    0, 0x20, 0, 0, 0, 0, 0, 0, // permitted[0], inheritable[0]
    0, 0, 0, 0, 0, 0, 0, 0, // permitted[1], inheritable[1]
];

/// A tree with every node kind and the edge cases the writer must get
/// right: block-boundary sizes, big files, a directory spanning many
/// blocks, long names and targets, big ids, special modes, xattrs, hard
/// links.
pub fn rich_tree() -> Tree {
    let mut t = Tree::new();
    let ins = |t: &mut Tree, path: &str, node: Node| {
        t.insert(path, node)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    };
    for dir in [
        "/usr/bin",
        "/etc",
        "/dev",
        "/run",
        "/links",
        "/many",
        "/home/big",
    ] {
        t.mkdir_p(dir).unwrap();
    }
    ins(&mut t, "/tmp", Node::dir(0o1777));
    ins(&mut t, "/srv", with_owner(Node::dir(0o2775), 0, 50));

    ins(&mut t, "/empty", file(Vec::new(), 0o644));
    ins(&mut t, "/tiny", file(b"x".to_vec(), 0o600));
    ins(&mut t, "/small.txt", file(text(100, 1), 0o644));
    ins(&mut t, "/exact4096", file(text(4096, 2), 0o644));
    ins(&mut t, "/exact4097", file(text(4097, 3), 0o644));
    ins(&mut t, "/noise4097", file(noise(4097, 3), 0o644));
    ins(&mut t, "/tail3000", file(text(3 * 4096 + 3000, 4), 0o644));
    ins(&mut t, "/noise64k", file(noise(65_536 + 77, 5), 0o644));
    ins(&mut t, "/zeros", file(vec![0; 3 << 20], 0o644));
    // Larger than what the writer reads whole (16 MiB), so uncompressed it
    // is streamed; its inline tail is text.
    let mut streamed = vec![0; (16 << 20) + 4096];
    streamed.extend(text(123, 9));
    ins(&mut t, "/home/big/streamed", file(streamed, 0o644));
    // 5 MB mixing text and noise, so compressed files mix LZ4 and raw
    // pclusters.
    let mut five = Vec::new();
    for i in 0..10 {
        five.extend(if i % 3 == 2 {
            noise(500_000, i)
        } else {
            text(500_000, i)
        });
    }
    ins(&mut t, "/big5m", file(five, 0o644));

    ins(&mut t, "/usr/bin/su", file(text(30_000, 6), 0o4755));
    ins(
        &mut t,
        "/usr/bin/wall",
        with_owner(file(text(9000, 7), 0o2755), 0, 5),
    );
    ins(
        &mut t,
        "/usr/bin/ping",
        with_xattr(
            file(text(20_000, 8), 0o755),
            "security.capability",
            &CAP_NET_RAW,
        ),
    );
    let mut labelled = file(b"#!/bin/sh\n".to_vec(), 0o755);
    labelled = with_xattr(
        labelled,
        "security.selinux",
        b"system_u:object_r:bin_t:s0\0",
    );
    labelled = with_xattr(labelled, "user.comment", b"hello");
    labelled = with_xattr(labelled, "trusted.overlay.opaque", b"y");
    labelled = with_xattr(labelled, "security.capability", &CAP_NET_RAW);
    ins(&mut t, "/usr/bin/labelled", labelled);
    // An ACL value as the kernel serializes it (header + one entry).
    let acl = [2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff];
    ins(
        &mut t,
        "/etc/acl",
        with_xattr(
            file(b"acl".to_vec(), 0o644),
            "system.posix_acl_access",
            &acl,
        ),
    );
    ins(
        &mut t,
        "/etc/xdir",
        with_xattr(Node::dir(0o750), "user.big", &noise(3000, 9)),
    );

    ins(
        &mut t,
        "/home/big/file",
        with_owner(file(text(5000, 10), 0o640), 100_000, 200_000),
    );
    ins(
        &mut t,
        "/home/big/dir",
        with_owner(Node::dir(0o700), 70_000, 65_536),
    );

    let dev = |kind| Node {
        kind,
        mode: 0o660,
        uid: 0,
        gid: 6,
        xattrs: BTreeMap::new(),
    };
    ins(
        &mut t,
        "/dev/null",
        dev(Kind::CharDev { major: 1, minor: 3 }),
    );
    ins(
        &mut t,
        "/dev/sda1",
        dev(Kind::BlockDev { major: 8, minor: 1 }),
    );
    ins(
        &mut t,
        "/dev/nvme",
        dev(Kind::BlockDev {
            major: 259,
            minor: 70_000,
        }),
    );
    ins(&mut t, "/run/fifo", dev(Kind::Fifo));
    ins(&mut t, "/run/sock", dev(Kind::Socket));

    ins(&mut t, "/links/one", Node::symlink("x"));
    let long_target: String = (0..4095).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    ins(&mut t, "/links/long", Node::symlink(long_target));
    ins(&mut t, "/links/abs", Node::symlink("/usr/bin/su"));
    let mut labelled_link = Node::symlink("../tiny");
    labelled_link
        .xattrs
        .insert("security.selinux".into(), b"lnk\0".to_vec());
    ins(&mut t, "/links/labelled", labelled_link);
    let hard = |target: &str| Node {
        kind: Kind::Hardlink(target.to_string()),
        mode: 0o777, // ignored: a hard link is its target's inode
        uid: 1,
        gid: 1,
        xattrs: BTreeMap::new(),
    };
    ins(&mut t, "/links/hard-su", hard("/usr/bin/su"));
    ins(&mut t, "/links/hard-big", hard("/big5m"));
    ins(&mut t, "/links/hard-big2", hard("/big5m"));
    // A link sorting before its target.
    ins(&mut t, "/aaa-hard-tiny", hard("/tiny"));

    for i in 0..3000 {
        let name = format!("/many/entry-{i:05}-{}", "n".repeat(i % 40));
        let node = if i % 500 == 0 {
            Node::dir(0o755)
        } else {
            file(text(i % 200, i as u64), 0o644)
        };
        ins(&mut t, &name, node);
    }

    let mut deep = String::new();
    for i in 0..40 {
        deep.push_str(&format!("/level{i}"));
        ins(&mut t, &deep, Node::dir(0o755));
    }
    ins(
        &mut t,
        &format!("{deep}/bottom"),
        file(b"deep".to_vec(), 0o644),
    );

    let long_name = "L".repeat(255);
    ins(&mut t, &format!("/{long_name}"), Node::dir(0o755));
    ins(
        &mut t,
        &format!("/{long_name}/{}", "f".repeat(255)),
        file(b"long".to_vec(), 0o644),
    );
    ins(
        &mut t,
        &format!("/links/{}", "s".repeat(255)),
        Node::symlink("x".repeat(255)),
    );
    t
}

/// Writes `tree` to `dir/name` and returns the image path and summary.
pub fn write_image(dir: &Path, name: &str, tree: &Tree, opts: &Options) -> (PathBuf, Summary) {
    let path = dir.join(name);
    let mut f = fs::File::create(&path).unwrap();
    let summary = kiln_erofs::write(tree, opts, &mut f).unwrap();
    assert_eq!(f.metadata().unwrap().len(), summary.bytes);
    (path, summary)
}

/// Runs `fsck.erofs --extract=<dir>` and fails the test unless it is clean.
pub fn fsck_extract(image: &Path, into: &Path) {
    let out = Command::new("fsck.erofs")
        .arg(format!("--extract={}", into.display()))
        .arg(image)
        .output()
        .expect("fsck.erofs (erofs-utils) must be installed");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "fsck.erofs failed on {}:\n{log}",
        image.display()
    );
    assert!(!log.contains("<E>"), "fsck.erofs reported errors:\n{log}");
}

/// Runs a `dump.erofs` query and returns its output.
pub fn dump(image: &Path, args: &[&str]) -> String {
    let out = Command::new("dump.erofs")
        .args(args)
        .arg(image)
        .output()
        .expect("dump.erofs (erofs-utils) must be installed");
    assert!(out.status.success(), "dump.erofs {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The inode a tree path resolves to (hard links to their target).
pub fn resolve<'t>(tree: &'t Tree, path: &'t str) -> (&'t str, &'t Node) {
    match &tree.get(path).map(|n| &n.kind) {
        Some(Kind::Hardlink(target)) => (target.as_str(), tree.get(target).unwrap()),
        _ => (path, tree.get(path).unwrap()),
    }
}

/// Compares a directory on the host (extracted or mounted) with the tree:
/// kinds, contents, modes, owners, symlink targets, device numbers, and hard
/// link identity. Xattrs are left to the callers that can read them.
///
/// `extracted`: the directory comes from erofs-utils 1.5's `fsck.erofs
/// --extract`, which writes every path as a file of its own (no hard links)
/// and sets permissions before owners, so setuid/setgid bits are dropped by
/// the kernel; those are then checked through `erofs-rs` and a mount.
pub fn compare_host_dir(tree: &Tree, root: &Path, extracted: bool) {
    let mode_mask = if extracted { 0o1777 } else { 0o7777 };
    let mut links: BTreeMap<&str, u64> = BTreeMap::new();
    for (path, node) in tree.iter() {
        if !matches!(node.kind, Kind::Dir) {
            *links.entry(resolve(tree, path).0).or_default() += 1;
        }
    }
    let mut by_inode: BTreeMap<&str, u64> = BTreeMap::new();
    for (path, _) in tree.iter() {
        let host = if path == "/" {
            root.to_path_buf()
        } else {
            root.join(&path[1..])
        };
        let (target, node) = resolve(tree, path);
        let meta = fs::symlink_metadata(&host).unwrap_or_else(|e| panic!("{path}: {e}"));
        let ft = meta.file_type();
        if path != "/" {
            assert_eq!(
                meta.mode() & mode_mask,
                u32::from(node.mode) & mode_mask,
                "{path}: mode"
            );
            assert_eq!(
                (meta.uid(), meta.gid()),
                (node.uid, node.gid),
                "{path}: owner"
            );
        }
        match &node.kind {
            Kind::Dir => assert!(ft.is_dir(), "{path}"),
            Kind::File(data) => {
                assert!(ft.is_file(), "{path}");
                let got = fs::read(&host).unwrap();
                assert!(got == data.read().unwrap(), "{path}: content differs");
                if extracted {
                    continue;
                }
                // Every path of one inode must be the same host inode.
                let ino = *by_inode.entry(target).or_insert(meta.ino());
                assert_eq!(ino, meta.ino(), "{path}: hard link identity");
                assert_eq!(meta.nlink(), links[target], "{path}: nlink");
            }
            Kind::Symlink(want) => {
                assert!(ft.is_symlink(), "{path}");
                assert_eq!(fs::read_link(&host).unwrap(), Path::new(want), "{path}");
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                let want_char = matches!(node.kind, Kind::CharDev { .. });
                assert_eq!(ft.is_char_device(), want_char, "{path}");
                assert_eq!(ft.is_block_device(), !want_char, "{path}");
                let rdev = meta.rdev();
                let (maj, min) = (
                    ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff),
                    ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff),
                );
                assert_eq!((maj as u32, min as u32), (*major, *minor), "{path}: rdev");
            }
            Kind::Fifo => assert!(ft.is_fifo(), "{path}"),
            Kind::Socket => assert!(ft.is_socket(), "{path}"),
            Kind::Hardlink(_) => unreachable!("resolved above"),
        }
    }
    // Nothing more than the tree.
    let mut count = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            count += 1;
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert_eq!(count + 1, tree.len(), "entry count");
}
