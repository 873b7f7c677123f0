//! An independent reader (`erofs-rs`) must read back exactly the input
//! tree: contents, modes, owners, times, symlink targets, device numbers,
//! xattrs, and hard links as one inode (one nid).
//!
//! erofs-rs 0.3 reads everything Kiln writes (compact compression maps, LZ4
//! and inline tails included), so nothing here falls back to other tools.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use common::{resolve, rich_tree, write_image, ALL_COMPRESSIONS};
use erofs_rs::backend::SliceImage;
use erofs_rs::types::Inode;
use erofs_rs::EroFS;
use kiln_erofs::{Compression, Options};
use kiln_fstree::{Kind, Tree};

fn check(tree: &Tree, opts: &Options) {
    let dir = tempfile::tempdir().unwrap();
    let (path, summary) = write_image(dir.path(), "r.img", tree, opts);
    let bytes = std::fs::read(path).unwrap();
    let fs = EroFS::new(SliceImage::new(&bytes)).unwrap();

    let sb = fs.super_block();
    assert_eq!(sb.uuid, summary.uuid);
    assert_eq!(sb.inos, summary.inodes);
    assert_eq!(sb.block_count(), summary.blocks);
    assert_eq!(sb.epoch, opts.epoch as i64);

    let mut found: BTreeMap<String, Inode> = BTreeMap::new();
    found.insert("/".into(), fs.get_inode(sb.root_inode_id()).unwrap());
    for entry in fs.walk_dir("/").unwrap() {
        let entry = entry.unwrap();
        let path = String::from_utf8(entry.dir_entry.path().as_bytes().to_vec()).unwrap();
        assert_eq!(entry.dir_entry.nid(), entry.inode.id());
        assert!(
            found.insert(path.clone(), entry.inode).is_none(),
            "{path} twice"
        );
    }
    let want: Vec<&str> = tree.iter().map(|(p, _)| p).collect();
    let got: Vec<&str> = found.keys().map(String::as_str).collect();
    assert_eq!(got, want, "the image has exactly the tree's paths");

    // Expected link counts: paths per file inode, 2 + subdirectories per
    // directory.
    let mut links: BTreeMap<&str, usize> = BTreeMap::new();
    for (path, node) in tree.iter() {
        match &node.kind {
            Kind::Dir => {
                *links.entry(path).or_default() += 2;
                if path != "/" {
                    *links.entry(kiln_fstree::parent(path)).or_default() += 1;
                }
            }
            _ => *links.entry(resolve(tree, path).0).or_default() += 1,
        }
    }

    // One nid per inode: hard links share it, nothing else does.
    let mut nid_of: BTreeMap<&str, u64> = BTreeMap::new();
    let mut owner_of: BTreeMap<u64, &str> = BTreeMap::new();
    for (path, _) in tree.iter() {
        let (target, node) = resolve(tree, path);
        let inode = found[path];
        let nid = *nid_of.entry(target).or_insert(inode.id());
        assert_eq!(inode.id(), nid, "{path}: hard link identity");
        assert_eq!(
            *owner_of.entry(nid).or_insert(target),
            target,
            "{path}: nid reused"
        );

        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            inode.permissions().mode() & 0o7777,
            u32::from(node.mode),
            "{path}: mode"
        );
        assert_eq!(
            (inode.uid(), inode.gid()),
            (node.uid, node.gid),
            "{path}: owner"
        );
        assert_eq!(
            inode.modified_unix(),
            (opts.epoch as i64, 0),
            "{path}: mtime"
        );
        let xattrs: BTreeMap<Vec<u8>, Vec<u8>> = node
            .xattrs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect();
        assert_eq!(fs.xattrs_inode(inode).unwrap(), xattrs, "{path}: xattrs");

        let want_links = links.get(target).copied().unwrap_or(1);
        assert_eq!(inode.nlink() as usize, want_links, "{path}: nlink");
        let file_type = format!("{:?}", inode.file_type());
        match &node.kind {
            Kind::Dir => assert!(inode.is_dir(), "{path}"),
            Kind::File(data) => {
                assert!(inode.is_file(), "{path}");
                let want = data.read().unwrap();
                assert_eq!(inode.data_size(), want.len() as u64, "{path}: size");
                let mut content = Vec::new();
                fs.open_inode_file(inode)
                    .unwrap()
                    .read_to_end(&mut content)
                    .unwrap();
                assert!(content == want, "{path}: content differs");
            }
            Kind::Symlink(target) => {
                let got = fs.read_link_inode(inode).unwrap();
                assert_eq!(got.as_bytes(), target.as_bytes(), "{path}: target");
            }
            Kind::CharDev { major, minor } => {
                assert_eq!(file_type, "CharacterDevice", "{path}");
                assert_eq!(inode.device(), Some((*major, *minor)), "{path}");
            }
            Kind::BlockDev { major, minor } => {
                assert_eq!(file_type, "BlockDevice", "{path}");
                assert_eq!(inode.device(), Some((*major, *minor)), "{path}");
            }
            Kind::Fifo => assert_eq!(file_type, "Fifo", "{path}"),
            Kind::Socket => assert_eq!(file_type, "Socket", "{path}"),
            Kind::Hardlink(_) => unreachable!("resolved above"),
        }
    }
}

#[test]
fn reads_back_the_rich_tree_in_every_mode() {
    let tree = rich_tree();
    for compression in ALL_COMPRESSIONS {
        for tail_packing in [true, false] {
            let opts = Options {
                compression,
                epoch: 1_600_000_000,
                tail_packing,
                ..Options::default()
            };
            check(&tree, &opts);
        }
    }
}

#[test]
fn reads_back_an_empty_tree() {
    check(&Tree::new(), &Options::default());
}

#[test]
fn reads_back_the_lowest_and_highest_lz4hc_levels() {
    let tree = rich_tree();
    for compression in [
        Compression::Lz4hc { level: 12 },
        Compression::Lz4hc { level: 1 },
    ] {
        check(
            &tree,
            &Options {
                compression,
                ..Options::default()
            },
        );
    }
}
