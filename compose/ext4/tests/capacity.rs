//! Trees that do not fit are refused before anything is written, with the
//! numbers; trees that fit exactly are accepted.

mod common;

use std::collections::BTreeMap;
use std::io::Cursor;

use common::*;
use kiln_ext4::{Ext4Error, Options};
use kiln_fstree::{Data, Node, Tree};

fn try_write(t: &Tree, o: &Options) -> (Result<kiln_ext4::Summary, Ext4Error>, Vec<u8>) {
    let mut out = Cursor::new(Vec::new());
    let r = kiln_ext4::write(t, o, &mut out);
    (r, out.into_inner())
}

#[test]
fn too_much_data_is_refused_with_numbers() {
    let mut t = Tree::new();
    file(&mut t, "/big", noise(1, 30 << 20), 0o644);
    let (r, out) = try_write(&t, &Options::new(16 * MIB));
    let err = r.unwrap_err();
    let Ext4Error::NoSpace {
        needed_blocks,
        available_blocks,
        ..
    } = &err
    else {
        panic!("expected NoSpace, got {err}");
    };
    assert!(*needed_blocks >= (30 << 20) / 4096 && available_blocks < needed_blocks);
    let msg = err.to_string();
    assert!(
        msg.contains(&needed_blocks.to_string()) && msg.contains(&available_blocks.to_string()),
        "{msg}"
    );
    assert!(
        out.is_empty(),
        "nothing may be written before the capacity check"
    );
}

#[test]
fn exactly_full_fits_and_one_more_block_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options::new(16 * MIB);
    let (_, empty) = write_image(dir.path(), "e.img", &Tree::new(), &o);
    let free = empty.free_blocks as usize;
    let mut t = Tree::new();
    file(&mut t, "/fill", noise(2, free * 4096), 0o644);
    let (p, s) = write_image(dir.path(), "full.img", &t, &o);
    assert_eq!(s.free_blocks, 0);
    fsck(&p);
    let mut t = Tree::new();
    file(&mut t, "/fill", noise(2, free * 4096 + 1), 0o644);
    let (r, out) = try_write(&t, &o);
    assert!(
        matches!(r, Err(Ext4Error::NoSpace { needed_blocks, available_blocks, .. })
        if needed_blocks == available_blocks + 1),
        "{r:?}"
    );
    assert!(out.is_empty());
}

#[test]
fn too_many_inodes_is_refused_with_numbers() {
    let mut t = Tree::new();
    for i in 0..600 {
        file(&mut t, &format!("/f{i}"), Vec::new(), 0o644);
    }
    // 8 MiB at 16 KiB per inode: 512 inodes.
    let (r, out) = try_write(&t, &Options::new(8 * MIB));
    let err = r.unwrap_err();
    assert!(
        matches!(
            err,
            Ext4Error::NoInodes {
                needed: 611,
                available: 512,
                inode_ratio: 16384
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("611") && err.to_string().contains("512"));
    assert!(out.is_empty());
    // The same tree fits with a smaller ratio.
    let mut o = Options::new(8 * MIB);
    o.inode_ratio = 4096;
    assert!(try_write(&t, &o).0.is_ok());
}

#[test]
fn unstorable_entries_are_refused_before_writing() {
    let cases: Vec<(Tree, &str)> = vec![
        {
            let mut t = Tree::new();
            let mut n = Node::file(Data::Bytes(Vec::new()), 0o644);
            n.xattrs = BTreeMap::from([("user.huge".to_string(), vec![1u8; 5000])]);
            t.insert("/x", n).unwrap();
            (t, "xattrs need")
        },
        {
            let mut t = Tree::new();
            t.insert("/l", Node::symlink("s".repeat(5000))).unwrap();
            (t, "symlink target")
        },
        {
            let mut t = Tree::new();
            t.insert(
                "/missing",
                Node::file(Data::Path("/nonexistent/kiln-ext4-test".into()), 0o644),
            )
            .unwrap();
            (t, "/nonexistent/kiln-ext4-test")
        },
        {
            let mut t = Tree::new();
            t.insert("/dir-as-file", Node::file(Data::Path("/".into()), 0o644))
                .unwrap();
            (t, "not a regular file")
        },
    ];
    for (t, want) in cases {
        let (r, out) = try_write(&t, &Options::new(16 * MIB));
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains(want), "`{msg}` should mention `{want}`");
        assert!(out.is_empty());
    }
}
