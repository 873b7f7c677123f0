//! Same inputs, same bytes; different content, different UUID.

mod common;

use std::fs::{self, File, FileTimes};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use common::*;
use kiln_ext4::Options;
use kiln_fstree::{Kind, Node, Tree};

fn medium_tree() -> Tree {
    let mut t = Tree::new();
    t.mkdir_p("/usr/lib/x").unwrap();
    for i in 0..500 {
        file(
            &mut t,
            &format!("/usr/lib/x/lib{i}.so"),
            noise(i, (i as usize * 37) % 20000),
            0o644,
        );
    }
    let mut n = Node::file(kiln_fstree::Data::Bytes(b"cap".to_vec()), 0o755);
    n.xattrs
        .insert("security.capability".into(), capability(12));
    n.xattrs.insert("user.big".into(), noise(3, 900));
    t.insert("/usr/lib/x/capped", n).unwrap();
    t.insert(
        "/usr/lib/x/link",
        node(Kind::Hardlink("/usr/lib/x/lib7.so".into()), 0, 0, 0),
    )
    .unwrap();
    t.insert("/usr/lib/x/sym", Node::symlink("lib1.so"))
        .unwrap();
    t.insert(
        "/usr/lib/x/null",
        node(Kind::CharDev { major: 1, minor: 3 }, 0o666, 0, 0),
    )
    .unwrap();
    t
}

fn image_bytes(tree: &Tree, opts: &Options) -> (Vec<u8>, kiln_ext4::Summary) {
    let dir = tempfile::tempdir().unwrap();
    let (p, s) = write_image(dir.path(), "r.img", tree, opts);
    (fs::read(p).unwrap(), s)
}

#[test]
fn same_tree_same_bytes() {
    let t = medium_tree();
    let mut o = Options::new(48 * MIB);
    o.epoch = 1_600_000_000;
    let (a, sa) = image_bytes(&t, &o);
    let (b, sb) = image_bytes(&t, &o);
    assert!(a == b, "two writes of the same tree differ");
    assert_eq!(sa, sb);

    // Any change to content, metadata or options changes the UUID.
    let mut t2 = t.clone();
    file(&mut t2, "/extra", b"x".to_vec(), 0o644);
    let mut t3 = t.clone();
    if let Some(n) = t3.get_mut("/usr/lib/x/lib3.so") {
        // Same size (3 * 37 bytes), one bit flipped in every byte.
        n.kind = Kind::File(kiln_fstree::Data::Bytes(
            noise(3, 111).iter().map(|b| b ^ 1).collect(),
        ));
    }
    let mut o2 = o.clone();
    o2.label = "other".into();
    let uuids = [
        sa.uuid,
        image_bytes(&t2, &o).1.uuid,
        image_bytes(&t3, &o).1.uuid,
        image_bytes(&t, &o2).1.uuid,
    ];
    for i in 0..uuids.len() {
        for j in i + 1..uuids.len() {
            assert_ne!(uuids[i], uuids[j], "cases {i} and {j}");
        }
    }
}

#[test]
fn host_dirs_with_different_times_and_order_give_the_same_image() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let names = ["zeta", "alpha", "mid", "sub/inner", "sub/deeper/x"];
    for (dir, order, age) in [
        (&a, names.to_vec(), 10u64),
        (&b, names.iter().rev().copied().collect(), 99_999),
    ] {
        fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        for n in order {
            fs::write(dir.join(n), format!("content of {n}\n")).unwrap();
            let f = File::options().write(true).open(dir.join(n)).unwrap();
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + age);
            f.set_times(FileTimes::new().set_modified(t).set_accessed(t))
                .unwrap();
        }
        fs::hard_link(dir.join("mid"), dir.join("mid-link")).unwrap();
        std::os::unix::fs::symlink("alpha", dir.join("sym")).unwrap();
    }
    assert_ne!(
        fs::metadata(a.join("mid")).unwrap().mtime(),
        fs::metadata(b.join("mid")).unwrap().mtime()
    );
    let ta = Tree::from_dir(&a).unwrap();
    let tb = Tree::from_dir(&b).unwrap();
    let mut o = Options::new(16 * MIB);
    o.epoch = 1_700_000_000;
    let (ia, _) = image_bytes(&ta, &o);
    let (ib, _) = image_bytes(&tb, &o);
    assert!(
        ia == ib,
        "images of equal trees from different host dirs differ"
    );
}

#[test]
fn output_is_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let (p, s) = write_image(
        dir.path(),
        "sparse.img",
        &Tree::new(),
        &Options::new(512 * MIB),
    );
    fsck(&p);
    // Superblocks, descriptors, bitmaps, the used inode-table block and a
    // handful of directory and journal blocks: well under 1 MiB of 512.
    assert!(s.bytes_written < MIB, "{} bytes written", s.bytes_written);
    let allocated = fs::metadata(&p).unwrap().blocks() * 512;
    assert!(
        allocated < 2 * MIB,
        "{allocated} bytes allocated on the host"
    );
}
