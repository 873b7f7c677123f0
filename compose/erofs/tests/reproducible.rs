//! Same tree and options, same bytes: across runs, across build hosts
//! (different mtimes and creation order on disk), and wherever the output
//! stream starts.

mod common;

use std::fs;
use std::io::{Cursor, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{rich_tree, ALL_COMPRESSIONS};
use kiln_erofs::{Options, Summary};
use kiln_fstree::Tree;

fn image(tree: &Tree, opts: &Options) -> (Vec<u8>, Summary) {
    let mut out = Cursor::new(Vec::new());
    let summary = kiln_erofs::write(tree, opts, &mut out).unwrap();
    let bytes = out.into_inner();
    assert_eq!(bytes.len() as u64, summary.bytes);
    (bytes, summary)
}

#[test]
fn same_tree_same_bytes_and_epoch_changes_them() {
    let tree = rich_tree();
    for compression in ALL_COMPRESSIONS {
        let opts = Options {
            compression,
            epoch: 1_700_000_000,
            ..Options::default()
        };
        let (a, sa) = image(&tree, &opts);
        let (b, sb) = image(&tree, &opts);
        assert!(a == b, "{compression:?}: two writes differ");
        assert_eq!(sa, sb);
        // The UUID is derived from the content; it lands in the superblock.
        assert_eq!(&a[1024 + 48..1024 + 64], &sa.uuid);
        assert_eq!(sa.uuid[6] >> 4, 8, "a version 8 UUID");

        let later = Options {
            epoch: 1_700_000_001,
            ..opts.clone()
        };
        let (c, sc) = image(&tree, &later);
        assert!(a != c, "{compression:?}: the epoch must reach the image");
        assert_ne!(sa.uuid, sc.uuid);
    }
}

#[test]
fn given_uuid_and_label_are_used() {
    let tree = rich_tree();
    let uuid = *b"0123456789abcdef";
    let opts = Options {
        uuid: Some(uuid),
        label: Some("sixteen-bytes-ok".into()),
        ..Options::default()
    };
    let (a, s) = image(&tree, &opts);
    assert_eq!(s.uuid, uuid);
    assert_eq!(&a[1024 + 48..1024 + 64], &uuid);
    assert_eq!(&a[1024 + 64..1024 + 80], b"sixteen-bytes-ok");
    let too_long = Options {
        label: Some("seventeen-bytes!!".into()),
        ..Options::default()
    };
    assert!(matches!(
        kiln_erofs::write(&tree, &too_long, &mut Cursor::new(Vec::new())),
        Err(kiln_erofs::ErofsError::LabelTooLong(_))
    ));
}

#[test]
fn output_may_start_mid_stream() {
    let tree = rich_tree();
    let opts = Options::default();
    let (whole, _) = image(&tree, &opts);
    let mut out = Cursor::new(vec![0xAA; 512]);
    out.seek(SeekFrom::End(0)).unwrap();
    let s = kiln_erofs::write(&tree, &opts, &mut out).unwrap();
    assert_eq!(
        out.position(),
        512 + s.bytes,
        "left positioned after the image"
    );
    let bytes = out.into_inner();
    assert!(
        bytes[..512].iter().all(|&b| b == 0xAA),
        "bytes before untouched"
    );
    assert!(bytes[512..] == whole[..]);
}

/// Lays the same content out on disk, creating entries in the given order
/// and stamping everything with `mtime`.
fn populate(root: &Path, reverse: bool, mtime: SystemTime) {
    let mut files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("d{}/f{i}", i % 4), common::text(i * 700, i as u64)))
        .collect();
    files.push(("big".into(), common::text(300_000, 7)));
    if reverse {
        files.reverse();
    }
    for (name, content) in &files {
        let path = root.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
    }
    std::os::unix::fs::symlink("d1/f1", root.join("link")).unwrap();
    fs::hard_link(root.join("big"), root.join("d2/big-again")).unwrap();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            }
            if !ft.is_symlink() {
                fs::File::open(e.path())
                    .unwrap()
                    .set_modified(mtime)
                    .unwrap();
            }
        }
        fs::File::open(&dir).unwrap().set_modified(mtime).unwrap();
    }
}

#[test]
fn host_mtimes_and_creation_order_do_not_matter() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    populate(a.path(), false, t0);
    populate(b.path(), true, t0 + Duration::from_secs(86_400 * 365));
    let ta = Tree::from_dir(a.path()).unwrap();
    let tb = Tree::from_dir(b.path()).unwrap();
    for compression in ALL_COMPRESSIONS {
        let opts = Options {
            compression,
            epoch: 42,
            ..Options::default()
        };
        let (ia, _) = image(&ta, &opts);
        let (ib, _) = image(&tb, &opts);
        assert!(ia == ib, "{compression:?}: images of equal trees differ");
    }
}
