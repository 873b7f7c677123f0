//! ingest_tree, manifests and materialize.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{hours_ago, is_root, noise, set_mtime_tree, store, write};
use kiln_store::{Digest, Entry, EntryKind, Manifest, MetaOverride, StoreError, CAPABILITY_XATTR};

/// A small rootfs-like tree with every supported kind of entry.
fn make_tree(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    write(&dir.join("usr/bin/busybox"), &noise(1, 30_000), 0o755);
    fs::hard_link(dir.join("usr/bin/busybox"), dir.join("usr/bin/ash")).unwrap();
    fs::hard_link(dir.join("usr/bin/busybox"), dir.join("usr/bin/zcat")).unwrap();
    symlink("busybox", dir.join("usr/bin/sh")).unwrap();
    symlink("/usr/bin/busybox", dir.join("usr/bin/abs")).unwrap();
    symlink("../missing/target", dir.join("usr/dangling")).unwrap();
    write(&dir.join("usr/bin/passwd"), b"setuid binary", 0o4755);
    write(&dir.join("etc/shadow"), b"root:x", 0o600);
    write(&dir.join("etc/motd"), b"", 0o644);
    write(&dir.join("usr/lib/big.so"), &noise(2, 5 << 20), 0o644);
    write(&dir.join("usr/lib/dup.so"), &noise(2, 5 << 20), 0o644);
    fs::create_dir_all(dir.join("var/empty")).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir_all(dir.join("ro/inner")).unwrap();
    write(&dir.join("ro/inner/file"), b"in a read-only dir", 0o444);
    fs::set_permissions(dir.join("ro/inner"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(dir.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
}

fn entry<'a>(m: &'a Manifest, path: &str) -> &'a Entry {
    m.get(path)
        .unwrap_or_else(|| panic!("{path} not in manifest"))
}

#[test]
fn ingest_records_kinds_modes_and_links() {
    let (t, store) = store();
    let src = t.path().join("out");
    make_tree(&src);
    let m = store.ingest_tree(&src, &[]).unwrap();
    m.validate().unwrap();

    let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert_eq!(m.entries.len(), 21, "{paths:#?}");

    // Sorted order makes "ash" the first name of busybox's inode.
    assert!(matches!(
        &entry(&m, "usr/bin/ash").kind,
        EntryKind::File { size: 30_000, .. }
    ));
    for link in ["usr/bin/busybox", "usr/bin/zcat"] {
        assert_eq!(
            entry(&m, link).kind,
            EntryKind::Hardlink {
                target: "usr/bin/ash".into()
            }
        );
        assert_eq!(entry(&m, link).mode, 0o755);
    }
    assert_eq!(
        entry(&m, "usr/bin/sh").kind,
        EntryKind::Symlink {
            target: "busybox".into()
        }
    );
    assert_eq!(
        entry(&m, "usr/bin/abs").kind,
        EntryKind::Symlink {
            target: "/usr/bin/busybox".into()
        }
    );
    assert_eq!(entry(&m, "usr/bin/passwd").mode, 0o4755);
    assert_eq!(entry(&m, "etc/shadow").mode, 0o600);
    assert_eq!(entry(&m, "tmp").mode, 0o1777);
    assert_eq!(entry(&m, "tmp").kind, EntryKind::Dir);
    assert_eq!(entry(&m, "ro").mode, 0o500);
    assert_eq!(entry(&m, "ro/inner").mode, 0o555);
    assert_eq!(
        entry(&m, "etc/motd").kind,
        EntryKind::File {
            blake3: Digest::of(b""),
            size: 0
        }
    );
    // Same content, two separate files: two File entries, one blob.
    assert_eq!(
        entry(&m, "usr/lib/big.so").kind,
        entry(&m, "usr/lib/dup.so").kind
    );
    for e in &m.entries {
        assert_eq!((e.uid, e.gid), (0, 0), "{}", e.path);
        assert!(e.xattrs.is_empty());
    }
    for d in m.blobs() {
        assert!(store.has(&d));
    }
}

#[test]
fn ingest_is_deterministic_across_location_times_and_owner() {
    let (t, store) = store();
    let a = t.path().join("first/out");
    let b = t.path().join("elsewhere/deeper/out2");
    make_tree(&a);
    std::thread::sleep(Duration::from_millis(20));
    make_tree(&b);
    set_mtime_tree(&a, hours_ago(24 * 400));
    set_mtime_tree(&b, SystemTime::now() + Duration::from_secs(3600));
    if is_root() {
        std::os::unix::fs::lchown(b.join("usr/bin/sh"), Some(1234), Some(4321)).unwrap();
        std::os::unix::fs::chown(b.join("etc/shadow"), Some(1000), Some(1000)).unwrap();
    }
    let ma = store.ingest_tree(&a, &[]).unwrap();
    let mb = store.ingest_tree(&b, &[]).unwrap();
    assert_eq!(ma, mb);
    let da = store.put_manifest(&ma).unwrap();
    let db = store.put_manifest(&mb).unwrap();
    assert_eq!(da, db);
    assert_eq!(da, ma.digest().unwrap());

    // And it changes when content, a mode or a link does.
    fs::set_permissions(b.join("etc/motd"), fs::Permissions::from_mode(0o640)).unwrap();
    let mb2 = store.ingest_tree(&b, &[]).unwrap();
    assert_ne!(store.put_manifest(&mb2).unwrap(), da);
    fs::set_permissions(b.join("etc/motd"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(b.join("etc/motd"), b"x").unwrap();
    assert_ne!(store.ingest_tree(&b, &[]).unwrap().digest().unwrap(), da);
}

#[test]
fn materialize_round_trips_the_tree() {
    let (t, store) = store();
    let src = t.path().join("out");
    make_tree(&src);
    let m = store.ingest_tree(&src, &[]).unwrap();
    let d = store.put_manifest(&m).unwrap();
    let out = store.materialize(&d).unwrap();
    assert_eq!(out, store.root().join("outputs").join(d.to_hex()));
    assert_eq!(out, store.output_path(&d));

    // Re-ingesting the materialized tree gives the very same manifest.
    assert_eq!(store.ingest_tree(&out, &[]).unwrap(), m);

    let meta = |p: &str| fs::symlink_metadata(out.join(p)).unwrap();
    assert_eq!(
        fs::read(out.join("usr/bin/passwd")).unwrap(),
        b"setuid binary"
    );
    assert_eq!(meta("usr/bin/passwd").mode() & 0o7777, 0o4755);
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("ro").mode() & 0o7777, 0o500);
    assert_eq!(meta("ro/inner/file").mode() & 0o7777, 0o444);
    assert_eq!(meta("usr/bin/ash").ino(), meta("usr/bin/busybox").ino());
    assert_eq!(meta("usr/bin/ash").ino(), meta("usr/bin/zcat").ino());
    assert_eq!(meta("usr/bin/ash").nlink(), 3);
    assert_ne!(meta("usr/lib/big.so").ino(), meta("usr/lib/dup.so").ino());
    assert_eq!(
        fs::read_link(out.join("usr/dangling")).unwrap(),
        Path::new("../missing/target")
    );
    assert!(meta("var/empty").is_dir());

    // Idempotent, and the temp area is clean.
    assert_eq!(store.materialize(&d).unwrap(), out);
    assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn empty_tree() {
    let (t, store) = store();
    let src = t.path().join("empty");
    fs::create_dir(&src).unwrap();
    let m = store.ingest_tree(&src, &[]).unwrap();
    assert!(m.entries.is_empty());
    let d = store.put_manifest(&m).unwrap();
    let out = store.materialize(&d).unwrap();
    assert_eq!(fs::read_dir(out).unwrap().count(), 0);
}

#[test]
fn concurrent_materializers_all_succeed() {
    let (t, store) = store();
    let src = t.path().join("out");
    make_tree(&src);
    let d = store
        .put_manifest(&store.ingest_tree(&src, &[]).unwrap())
        .unwrap();
    let store = Arc::new(store);
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.materialize(&d).unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), store.output_path(&d));
    }
    assert_eq!(
        fs::read(store.output_path(&d).join("etc/shadow")).unwrap(),
        b"root:x"
    );
    assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn materialize_with_a_corrupt_blob_fails_cleanly() {
    let (t, store) = store();
    let src = t.path().join("out");
    make_tree(&src);
    let m = store.ingest_tree(&src, &[]).unwrap();
    let d = store.put_manifest(&m).unwrap();
    let EntryKind::File { blake3, .. } = entry(&m, "etc/shadow").kind else {
        panic!()
    };
    fs::write(store.blob_path(&blake3), b"garbage").unwrap();
    let err = store.materialize(&d).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { digest, .. } if digest == blake3),
        "{err}"
    );
    assert!(!store.output_path(&d).exists());
    assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    // Re-ingesting repairs the store.
    store.ingest_tree(&src, &[]).unwrap();
    store.materialize(&d).unwrap();
}

#[test]
fn materialize_of_unknown_or_non_manifest_digest() {
    let (_t, store) = store();
    let err = store.materialize(&Digest::of(b"nothing")).unwrap_err();
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err}");
    let d = store.put_bytes(b"{\"not\":\"a manifest\"}").unwrap();
    let err = store.materialize(&d).unwrap_err();
    assert!(matches!(err, StoreError::NotAManifest { .. }), "{err}");
    // A blob holding a manifest that would escape the tree is refused too.
    let evil = br#"{"entries":[{"path":"../escape","mode":420,"uid":0,"gid":0,"xattrs":{},"kind":"dir"}]}"#;
    let d = store.put_bytes(evil).unwrap();
    assert!(matches!(
        store.materialize(&d),
        Err(StoreError::NotAManifest { .. })
    ));
    assert!(!store.root().join("outputs/escape").exists());
}

#[test]
fn put_manifest_checks_structure_and_blobs() {
    let (_t, store) = store();
    let file = |path: &str, blake3| Entry {
        path: path.into(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        xattrs: Default::default(),
        kind: EntryKind::File { blake3, size: 1 },
    };
    let missing = Digest::of(b"?");
    let err = store
        .put_manifest(&Manifest::new(vec![file("a", missing)]))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::MissingBlob { digest } if digest == missing),
        "{err}"
    );
    let present = store.put_bytes(b"!").unwrap();
    let err = store
        .put_manifest(&Manifest::new(vec![file("a/b", present)]))
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidManifest(_)), "{err}");
    let m = Manifest::new(vec![file("a", present)]);
    let d = store.put_manifest(&m).unwrap();
    assert_eq!(store.get_manifest(&d).unwrap(), m);
}

#[test]
fn overrides_apply_and_propagate_to_hardlinks() {
    let (t, store) = store();
    let src = t.path().join("out");
    make_tree(&src);
    let overrides = vec![
        MetaOverride {
            path: "/usr/bin/busybox".into(), // leading slash accepted; a hardlink name
            mode: Some(0o4711),
            uid: None,
            gid: Some(5),
            caps: None,
        },
        MetaOverride {
            path: "usr/lib/big.so".into(),
            mode: None,
            uid: Some(7),
            gid: None,
            caps: Some("cap_net_raw+ep".into()),
        },
        MetaOverride {
            path: "var/empty".into(),
            mode: Some(0o700),
            uid: Some(33),
            gid: Some(33),
            caps: None,
        },
    ];
    let m = store.ingest_tree(&src, &overrides).unwrap();
    for p in ["usr/bin/ash", "usr/bin/busybox", "usr/bin/zcat"] {
        let e = entry(&m, p);
        assert_eq!((e.mode, e.uid, e.gid), (0o4711, 0, 5), "{p}");
    }
    let big = entry(&m, "usr/lib/big.so");
    assert_eq!((big.mode, big.uid, big.gid), (0o644, 7, 0));
    assert_eq!(
        big.xattrs.get(CAPABILITY_XATTR).map(String::as_str),
        Some("cap_net_raw+ep")
    );
    // The identical-content file is a different inode: untouched.
    assert!(entry(&m, "usr/lib/dup.so").xattrs.is_empty());
    let v = entry(&m, "var/empty");
    assert_eq!((v.mode, v.uid, v.gid), (0o700, 33, 33));
    // Overrides are part of the output hash.
    assert_ne!(
        m.digest().unwrap(),
        store.ingest_tree(&src, &[]).unwrap().digest().unwrap()
    );
    // And materialize applies the overridden mode.
    let out = store.materialize(&store.put_manifest(&m).unwrap()).unwrap();
    assert_eq!(
        fs::metadata(out.join("usr/bin/zcat")).unwrap().mode() & 0o7777,
        0o4711
    );
}

#[test]
fn bad_overrides_are_errors_naming_the_path() {
    let (t, store) = store();
    let src = t.path().join("out");
    make_tree(&src);
    let ov = |path: &str| MetaOverride {
        path: path.into(),
        ..Default::default()
    };
    let cases = vec![
        (vec![ov("usr/bin/nope")], "usr/bin/nope"),
        (
            vec![MetaOverride {
                mode: Some(0o100755),
                ..ov("usr/bin/sh")
            }],
            "usr/bin/sh",
        ),
        (
            vec![MetaOverride {
                caps: Some("cap_chown+ep".into()),
                ..ov("usr/bin/sh")
            }],
            "usr/bin/sh",
        ),
        (
            vec![MetaOverride {
                caps: Some("cap_chown+ep".into()),
                ..ov("etc")
            }],
            "etc",
        ),
        (vec![ov("etc/motd"), ov("etc/motd")], "etc/motd"),
        (
            vec![
                MetaOverride {
                    uid: Some(1),
                    ..ov("usr/bin/ash")
                },
                MetaOverride {
                    uid: Some(2),
                    ..ov("usr/bin/zcat")
                },
            ],
            "usr/bin/zcat",
        ),
    ];
    for (overrides, path) in cases {
        let err = store.ingest_tree(&src, &overrides).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::UnknownOverride { .. } | StoreError::InvalidOverride { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(path), "{err} should name {path}");
    }
}

#[test]
fn special_files_are_errors_naming_the_path() {
    let (t, store) = store();
    let src = t.path().join("out");
    make_tree(&src);
    let fifo = src.join("etc/initctl");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = store.ingest_tree(&src, &[]).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedFileType { kind: "fifo", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("etc/initctl"), "{err}");
    fs::remove_file(&fifo).unwrap();

    let sock = src.join("run.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = store.ingest_tree(&src, &[]).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedFileType { kind: "socket", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("run.sock"), "{err}");
}

#[test]
fn ingest_of_a_non_directory() {
    let (t, store) = store();
    let f = t.path().join("file");
    fs::write(&f, b"x").unwrap();
    assert!(matches!(
        store.ingest_tree(&f, &[]),
        Err(StoreError::NotADirectory { .. })
    ));
    let err = store
        .ingest_tree(&t.path().join("missing"), &[])
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn non_utf8_names_are_errors() {
    use std::os::unix::ffi::OsStrExt;
    let (t, store) = store();
    let src = t.path().join("out");
    fs::create_dir(&src).unwrap();
    fs::write(src.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();
    assert!(matches!(
        store.ingest_tree(&src, &[]),
        Err(StoreError::NonUtf8Path { .. })
    ));
}
