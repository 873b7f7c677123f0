//! Edges of the format: files over 4 GiB (extended inodes), and the inputs
//! EROFS cannot represent, which must fail with an error naming the path.

mod common;

use std::collections::BTreeMap;
use std::io::Cursor;

use erofs_rs::backend::SliceImage;
use erofs_rs::EroFS;
use kiln_erofs::{Compression, ErofsError, Options};
use kiln_fstree::{Data, Kind, Node, Tree};

fn write(tree: &Tree, opts: &Options) -> Result<Vec<u8>, ErofsError> {
    let mut out = Cursor::new(Vec::new());
    kiln_erofs::write(tree, opts, &mut out)?;
    Ok(out.into_inner())
}

#[test]
fn files_over_4_gib_get_extended_inodes() {
    // A sparse host file: 4 GiB + 5 bytes of zeros, then a marker.
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("huge");
    let size = (4u64 << 30) + 5;
    let f = std::fs::File::create(&host).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"end!", size - 4).unwrap();
    drop(f);

    let mut tree = Tree::new();
    tree.insert("/huge", Node::file(Data::Path(host), 0o644))
        .unwrap();
    let bytes = write(
        &tree,
        &Options {
            compression: Compression::Lz4,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(
        bytes.len() < 64 << 20,
        "zeros compress: {} bytes",
        bytes.len()
    );

    let fs = EroFS::new(SliceImage::new(&bytes)).unwrap();
    let file = fs.open("/huge").unwrap();
    assert_eq!(file.size(), size);
    let mut tail = [0u8; 4096];
    let n = file.read_at(&mut tail, size - 4096).unwrap();
    assert_eq!(n, 4096);
    assert_eq!(&tail[4092..], b"end!");
    assert!(tail[..4092].iter().all(|&b| b == 0));
    let mut middle = [1u8; 1000];
    file.read_at(&mut middle, 3 << 30).unwrap();
    assert!(middle.iter().all(|&b| b == 0));
}

#[test]
fn unrepresentable_inputs_are_errors_naming_the_path() {
    let bad = |path: &str, node: Node| {
        let mut tree = Tree::new();
        tree.insert(path, node).unwrap();
        write(&tree, &Options::default()).unwrap_err()
    };
    let long = format!("/{}", "n".repeat(256));
    assert!(matches!(
        bad(&long, Node::dir(0o755)),
        ErofsError::NameTooLong { len: 256, .. }
    ));
    assert!(matches!(
        bad("/nul\0name", Node::dir(0o755)),
        ErofsError::NulInName { .. }
    ));
    assert!(matches!(
        bad("/l", Node::symlink("x".repeat(4096))),
        ErofsError::BadSymlink { len: 4096, .. }
    ));
    assert!(matches!(
        bad("/l", Node::symlink("")),
        ErofsError::BadSymlink { len: 0, .. }
    ));

    let dev = Node {
        kind: Kind::CharDev {
            major: 4096,
            minor: 0,
        },
        ..Node::dir(0o600)
    };
    assert!(matches!(
        bad("/dev", dev),
        ErofsError::BadDevice { major: 4096, .. }
    ));

    let mut node = Node::dir(0o755);
    node.xattrs
        .insert("system.sockprotoname".into(), b"x".to_vec());
    let err = bad("/x", node);
    assert!(matches!(&err, ErofsError::UnsupportedXattr { path, .. } if path == "/x"));
    assert!(err.to_string().contains("system.sockprotoname"), "{err}");

    let mut node = Node::dir(0o755);
    node.xattrs.insert("user.big".into(), vec![0; 70_000]);
    assert!(matches!(
        bad("/x", node),
        ErofsError::XattrTooLarge { len: 70_000, .. }
    ));

    let missing = std::path::PathBuf::from("/nonexistent/kiln-erofs-test");
    let node = Node::file(Data::Path(missing), 0o644);
    let err = bad("/f", node);
    assert!(
        matches!(&err, ErofsError::Read { path, .. } if path == "/f"),
        "{err}"
    );
    assert!(
        err.to_string().contains("/nonexistent/kiln-erofs-test"),
        "{err}"
    );
}

#[test]
fn trees_broken_through_get_mut_are_errors() {
    let mut tree = Tree::new();
    tree.insert("/d", Node::dir(0o755)).unwrap();
    tree.insert("/d/f", Node::file(Data::Bytes(vec![1]), 0o644))
        .unwrap();
    tree.insert(
        "/l",
        Node {
            kind: Kind::Hardlink("/d/f".into()),
            ..Node::dir(0)
        },
    )
    .unwrap();
    let mut no_file = tree.clone();
    no_file.get_mut("/d/f").unwrap().kind = Kind::Fifo;
    let err = write(&no_file, &Options::default()).unwrap_err();
    assert!(
        matches!(&err, ErofsError::BadTree { path, .. } if path == "/l"),
        "{err}"
    );
    let mut no_dir = tree;
    no_dir.get_mut("/d").unwrap().kind = Kind::Socket;
    let err = write(&no_dir, &Options::default()).unwrap_err();
    assert!(
        matches!(&err, ErofsError::BadTree { path, .. } if path == "/d/f"),
        "{err}"
    );
}

#[test]
fn bad_options_are_errors() {
    for level in [0, 13] {
        let opts = Options {
            compression: Compression::Lz4hc { level },
            ..Options::default()
        };
        assert!(matches!(write(&Tree::new(), &opts), Err(ErofsError::BadLevel(l)) if l == level));
    }
}

#[test]
fn hard_links_take_their_targets_metadata() {
    let mut tree = Tree::new();
    let mut target = Node::file(Data::Bytes(b"data".to_vec()), 0o4711);
    target.uid = 7;
    target.xattrs.insert("user.a".into(), b"1".to_vec());
    tree.insert("/z", target).unwrap();
    tree.insert(
        "/a",
        Node {
            kind: Kind::Hardlink("/z".into()),
            mode: 0o777,
            uid: 1,
            gid: 1,
            xattrs: BTreeMap::new(),
        },
    )
    .unwrap();
    let bytes = write(&tree, &Options::default()).unwrap();
    let fs = EroFS::new(SliceImage::new(&bytes)).unwrap();
    let a = fs.open("/a").unwrap();
    drop(a);
    let entries: Vec<_> = fs.read_dir("/").unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].inode.id(), entries[1].inode.id());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(entries[0].inode.permissions().mode() & 0o7777, 0o4711);
    assert_eq!(entries[0].inode.uid(), 7);
    assert_eq!(entries[0].inode.nlink(), 2);
}
