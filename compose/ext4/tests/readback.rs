//! A large tree with every node kind: e2fsck finds nothing, and what
//! debugfs reads back (rdump, stat, ea_get) is exactly the tree.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::*;
use kiln_ext4::Options;
use kiln_fstree::{name, parent, Data, Kind, Node, Tree};

fn expected_type(kind: &Kind) -> &'static str {
    match kind {
        Kind::Dir => "directory",
        Kind::File(_) | Kind::Hardlink(_) => "regular",
        Kind::Symlink(_) => "symlink",
        Kind::CharDev { .. } => "character special",
        Kind::BlockDev { .. } => "block special",
        Kind::Fifo => "FIFO",
        Kind::Socket => "socket",
    }
}

/// The node whose inode a path uses (a hard link's target).
fn inode_node<'t>(tree: &'t Tree, node: &'t Node) -> &'t Node {
    match &node.kind {
        Kind::Hardlink(t) => tree.get(t).unwrap(),
        _ => node,
    }
}

fn content(d: &Data) -> Vec<u8> {
    d.read().unwrap()
}

#[test]
fn big_tree_is_clean_and_reads_back() {
    let host = tempfile::tempdir().unwrap();
    let tree = big_tree(host.path());
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(300 * MIB);
    opts.label = "data".into();
    opts.epoch = 1_700_000_000;
    let (image, summary) = write_image(dir.path(), "big.img", &tree, &opts);
    assert!(tree.len() > 10_000, "the tree has {} entries", tree.len());
    assert_eq!(summary.groups, 3);
    assert_eq!(
        summary.inodes - summary.free_inodes,
        11 + tree.len() as u64 - 1 - 2,
        "2 hard links share inodes"
    );

    // 1. e2fsck.
    fsck(&image);

    // 2. Contents, symlinks and directory structure via rdump.
    let out = dir.path().join("rdump");
    std::fs::create_dir(&out).unwrap();
    let log = debugfs(&image, &[format!("rdump / {}", out.display())]);
    assert!(!log.contains("rdump:"), "rdump reported errors:\n{log}");
    let host_path = |p: &str| out.join(&p[1..]);
    for (path, node) in tree.iter() {
        if path == "/" {
            continue;
        }
        let hp = host_path(path);
        match &inode_node(&tree, node).kind {
            Kind::File(d) => assert!(
                std::fs::read(&hp).unwrap() == content(d),
                "content of {path}"
            ),
            Kind::Symlink(target) => {
                assert_eq!(
                    std::fs::read_link(&hp).unwrap().to_str().unwrap(),
                    target,
                    "{path}"
                )
            }
            Kind::Dir => {
                let mut want: BTreeSet<String> = tree
                    .children(path)
                    .iter()
                    .filter(|(_, n)| {
                        !matches!(
                            n.kind,
                            Kind::CharDev { .. }
                                | Kind::BlockDev { .. }
                                | Kind::Fifo
                                | Kind::Socket
                        )
                    })
                    .map(|(p, _)| name(p).to_string())
                    .collect();
                if parent(path) == "/" && path == "/lost+found" {
                    want.clear();
                }
                let got: BTreeSet<String> = std::fs::read_dir(&hp)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                assert_eq!(got, want, "entries of {path}");
            }
            _ => {}
        }
    }
    let top: BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut want_top: BTreeSet<String> = tree
        .children("/")
        .iter()
        .map(|(p, _)| name(p).to_string())
        .collect();
    want_top.insert("lost+found".into());
    assert_eq!(top, want_top);

    // 3. Inode metadata via stat: type, mode (incl. setuid), owners,
    // sizes, link counts, device numbers, fast symlinks.
    let mut links: HashMap<&str, u32> = HashMap::new();
    for (path, node) in tree.iter() {
        match &node.kind {
            Kind::Hardlink(t) => *links.entry(t.as_str()).or_insert(1) += 1,
            Kind::Dir => {
                let subdirs = tree
                    .children(path)
                    .iter()
                    .filter(|(_, n)| n.kind == Kind::Dir)
                    .count() as u32;
                links.insert(path, 2 + subdirs + u32::from(path == "/"));
            }
            _ => {
                links.entry(path).or_insert(1);
            }
        }
    }
    let paths: Vec<&str> = tree.iter().map(|(p, _)| p).collect();
    let stats = stat_all(&image, &paths);
    let mut inode_of: HashMap<&str, u32> = HashMap::new();
    for (path, node) in tree.iter() {
        let s = &stats[path];
        let inode = inode_node(&tree, node);
        let target = match &node.kind {
            Kind::Hardlink(t) => t.as_str(),
            _ => path,
        };
        assert_eq!(s.kind, expected_type(&node.kind), "{path}");
        assert_eq!(s.mode, inode.mode & 0o7777, "mode of {path}");
        assert_eq!((s.uid, s.gid), (inode.uid, inode.gid), "owner of {path}");
        assert_eq!(s.links, links[target], "links of {path}");
        match &inode.kind {
            Kind::File(d) => assert_eq!(s.size, d.len().unwrap(), "{path}"),
            Kind::Symlink(t) => {
                assert_eq!(s.size, t.len() as u64);
                assert_eq!(
                    s.fast_link.as_deref(),
                    (t.len() < 60).then_some(t.as_str()),
                    "{path}"
                );
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                assert_eq!(s.device, Some((*major, *minor)), "{path}")
            }
            _ => {}
        }
        if let Some(&other) = inode_of.get(target) {
            assert_eq!(other, s.ino, "{path} is a hard link to {target}");
        }
        inode_of.insert(target, s.ino);
    }
    assert_eq!(stats["/"].ino, 2);
    assert_eq!(stat_all(&image, &["/lost+found"])["/lost+found"].ino, 11);
    // 3000 extents of one block each need a two-level tree: 9 leaves and
    // one index block.
    let holes = &stats["/big/holes"];
    assert_eq!(holes.blockcount, (3000 + 10) * 8, "{holes:?}");
    assert!(
        holes.extents.contains("(ETB1)"),
        "depth-2 tree: {}",
        &holes.extents[..200]
    );
    // All-zero blocks are holes, a file of zeros has no blocks.
    assert_eq!(stats["/sizes/zeros"].blockcount, 0);
    assert_eq!(stats["/sizes/leading-hole"].blockcount, 8);
    // Identical xattr blocks are shared.
    let acl_blocks: BTreeSet<u64> = (0..3)
        .map(|i| stats[format!("/home/shared/f{i}").as_str()].file_acl)
        .collect();
    assert_eq!(acl_blocks.len(), 1);
    assert_ne!(acl_blocks.first(), Some(&0));

    // 4. Xattrs, including the capability, ACLs (read back in VFS form)
    // and values in the xattr block.
    let with_xattrs: Vec<&str> = tree
        .iter()
        .filter(|(_, n)| !n.xattrs.is_empty())
        .map(|(p, _)| p)
        .collect();
    assert!(with_xattrs.len() >= 6);
    let got = xattrs_all(&image, &with_xattrs);
    for p in &with_xattrs {
        let want: &BTreeMap<String, Vec<u8>> = &tree.get(p).unwrap().xattrs;
        assert_eq!(
            normalize_acls(&got[*p]),
            normalize_acls(want),
            "xattrs of {p}"
        );
    }
    assert_eq!(got["/usr/bin/ping"]["security.capability"], capability(13));
}

#[test]
fn tree_supplied_lost_found_and_root_metadata_are_kept() {
    let mut t = Tree::new();
    {
        let root = t.get_mut("/").unwrap();
        root.mode = 0o1777;
        root.uid = 7;
        root.gid = 8;
        root.xattrs.insert("user.root".into(), b"r".to_vec());
    }
    t.insert("/lost+found", node(Kind::Dir, 0o750, 0, 0))
        .unwrap();
    file(&mut t, "/lost+found/kept", b"x".to_vec(), 0o600);
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = write_image(dir.path(), "lf.img", &t, &Options::new(16 * MIB));
    fsck(&image);
    let s = stat_all(&image, &["/", "/lost+found", "/lost+found/kept"]);
    assert_eq!((s["/"].mode, s["/"].uid, s["/"].gid), (0o1777, 7, 8));
    assert_eq!((s["/lost+found"].ino, s["/lost+found"].mode), (11, 0o750));
    assert_eq!(s["/lost+found"].size, 4 * 4096, "lost+found keeps 4 blocks");
    assert_eq!(s["/lost+found/kept"].size, 1);
    let x = xattrs_all(&image, &["/"]);
    assert_eq!(x["/"]["user.root"], b"r");
}

#[test]
fn rejects_a_non_directory_lost_found() {
    let mut t = Tree::new();
    file(&mut t, "/lost+found", b"x".to_vec(), 0o600);
    let mut out = std::io::Cursor::new(Vec::new());
    let err = kiln_ext4::write(&t, &Options::new(16 * MIB), &mut out).unwrap_err();
    assert!(err.to_string().contains("lost+found"), "{err}");
    assert!(out.get_ref().is_empty());
}

/// ext4 stores no id for the owner/group/mask/other ACL entries; the
/// kernel reports them as ACL_UNDEFINED_ID, debugfs as 0. Compare with the
/// kernel's form.
fn normalize_acls(x: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let mut x = x.clone();
    for (k, v) in x.iter_mut() {
        if k.starts_with("system.posix_acl_") {
            for e in v[4..].chunks_exact_mut(8) {
                if matches!(u16::from_le_bytes([e[0], e[1]]), 0x01 | 0x04 | 0x10 | 0x20) {
                    e[4..].copy_from_slice(&u32::MAX.to_le_bytes());
                }
            }
        }
    }
    x
}
