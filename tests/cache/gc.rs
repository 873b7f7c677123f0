mod common;

use std::fs;
use std::time::Duration;

use common::{files_under, hours_ago, noise, set_mtime, store, write};
use kiln_store::{ActionResult, Digest, Root, Store, StoreError};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Builds an output tree, ingests it, records an AC entry; returns
/// (key, manifest digest, file blob digests).
fn build(store: &Store, tag: u64) -> (Digest, Digest, Vec<Digest>) {
    let src = store.root().join(format!("../src-{tag}"));
    write(&src.join("bin/tool"), &noise(tag, 10_000), 0o755);
    write(
        &src.join("share/doc"),
        format!("doc {tag}").as_bytes(),
        0o644,
    );
    let m = store.ingest_tree(&src, &[]).unwrap();
    let output = store.put_manifest(&m).unwrap();
    let log = store.put_bytes(format!("log {tag}").as_bytes()).unwrap();
    let key = Digest::of(&tag.to_le_bytes());
    store
        .ac_put(
            &key,
            &ActionResult {
                output,
                log: Some(log),
            },
        )
        .unwrap();
    store.materialize(&output).unwrap();
    let mut blobs: Vec<Digest> = m.blobs().collect();
    blobs.push(log);
    (key, output, blobs)
}

#[test]
fn keeps_reachable_and_removes_unreachable() {
    let (_t, store) = store();
    let (k1, o1, b1) = build(&store, 1); // kept through its AC key
    let (k2, o2, b2) = build(&store, 2); // kept through its output only
    let (k3, o3, b3) = build(&store, 3); // unreferenced
    let (k4, o4, b4) = build(&store, 4); // in an expired root
    let loose = store.put_bytes(b"loose blob").unwrap();

    store
        .write_root(
            "keep-key",
            &Root {
                created_unix: 1,
                keys: vec![k1],
                outputs: vec![],
            },
        )
        .unwrap();
    store
        .write_root(
            "keep-output",
            &Root {
                created_unix: 2,
                keys: vec![],
                outputs: vec![o2],
            },
        )
        .unwrap();
    store
        .write_root(
            "old",
            &Root {
                created_unix: 3,
                keys: vec![k4],
                outputs: vec![o4],
            },
        )
        .unwrap();
    set_mtime(&store.root().join("roots/old.json"), hours_ago(24 * 30));

    let report = store.gc(7 * DAY).unwrap();

    // Reachable from k1: entry, manifest, files, log, materialized tree.
    assert!(store.ac_get(&k1).unwrap().is_some());
    assert!(store.has(&o1));
    assert!(b1.iter().all(|d| store.has(d)));
    assert!(store.output_path(&o1).is_dir());
    store.materialize(&o1).unwrap();
    // Reachable from o2: manifest, files, tree; its AC entry and log are not roots.
    assert!(store.has(&o2));
    assert!(store.output_path(&o2).is_dir());
    assert_eq!(
        store
            .get_manifest(&o2)
            .unwrap()
            .blobs()
            .filter(|d| !store.has(d))
            .count(),
        0
    );
    assert_eq!(store.ac_get(&k2).unwrap(), None);
    assert!(
        !store.has(b2.last().unwrap()),
        "o2's log is only reachable through k2"
    );
    // Unreachable.
    for (k, o, b) in [(k3, o3, &b3), (k4, o4, &b4)] {
        assert_eq!(store.ac_get(&k).unwrap(), None);
        assert!(!store.has(&o));
        assert!(!store.output_path(&o).exists());
        // Blobs shared with kept outputs (none here: content is per tag) are gone.
        assert!(b.iter().all(|d| !store.has(d)));
    }
    assert!(!store.has(&loose));
    let roots: Vec<String> = store
        .read_roots()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(roots, ["keep-key", "keep-output"]);

    assert_eq!(report.roots_removed, 1);
    assert_eq!(report.ac_removed, 3); // k2, k3, k4
    assert_eq!(report.outputs_removed, 2); // o3, o4
                                           // Removed: o3, o4 manifests, their 2 files each, logs 2,3,4, the loose blob.
    assert_eq!(report.blobs_removed, 2 + 4 + 3 + 1);
    // Kept: o1 + 2 files + log1, o2 + 2 files.
    assert_eq!(report.blobs_kept, 4 + 3);
    assert!(report.bytes_freed > 20_000, "{report:?}");

    // A second run has nothing to do.
    let again = store.gc(7 * DAY).unwrap();
    assert_eq!(
        (
            again.blobs_removed,
            again.ac_removed,
            again.outputs_removed,
            again.roots_removed
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(again.blobs_kept, 7);
}

#[test]
fn shared_blobs_survive_when_one_user_is_collected() {
    let (_t, store) = store();
    let (k1, o1, b1) = build(&store, 10);
    // Same tree content under another key: same manifest.
    let k2 = Digest::of(b"other key");
    store
        .ac_put(
            &k2,
            &ActionResult {
                output: o1,
                log: None,
            },
        )
        .unwrap();
    store
        .write_root(
            "r",
            &Root {
                created_unix: 0,
                keys: vec![k2],
                outputs: vec![],
            },
        )
        .unwrap();
    store.gc(DAY).unwrap();
    assert_eq!(store.ac_get(&k1).unwrap(), None);
    assert!(store.ac_get(&k2).unwrap().is_some());
    // Files kept, k1's log not.
    let (log, files) = b1.split_last().unwrap();
    assert!(files.iter().all(|d| store.has(d)));
    assert!(!store.has(log));
}

#[test]
fn unparseable_root_stops_gc_before_deleting_anything() {
    let (_t, store) = store();
    let (k, o, _) = build(&store, 20);
    fs::write(store.root().join("roots/broken.json"), b"{not json").unwrap();
    let err = store.gc(DAY).unwrap_err();
    assert!(matches!(err, StoreError::BadRoot { .. }), "{err}");
    assert!(err.to_string().contains("broken.json"), "{err}");
    assert!(store.ac_get(&k).unwrap().is_some());
    assert!(store.output_path(&o).is_dir());
    assert!(matches!(
        store.read_roots(),
        Err(StoreError::BadRoot { .. })
    ));
    // Once expired, a broken root is just removed.
    set_mtime(&store.root().join("roots/broken.json"), hours_ago(48));
    let report = store.gc(DAY).unwrap();
    assert_eq!(report.roots_removed, 1);
    assert_eq!(store.ac_get(&k).unwrap(), None);
}

#[test]
fn gc_removes_stale_tmp_but_not_fresh() {
    let (_t, store) = store();
    let tmp = store.root().join("tmp");
    write(&tmp.join("stale-file"), b"left by kill -9", 0o644);
    fs::create_dir_all(tmp.join("stale-dir/sub")).unwrap();
    write(&tmp.join("stale-dir/sub/f"), b"x", 0o444);
    fs::set_permissions(
        tmp.join("stale-dir/sub"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    set_mtime(&tmp.join("stale-file"), hours_ago(2));
    set_mtime(&tmp.join("stale-dir"), hours_ago(2));
    write(&tmp.join("fresh"), b"being written", 0o644);
    let report = store.gc(DAY).unwrap();
    assert_eq!(report.tmp_removed, 2);
    assert!(tmp.join("fresh").exists());
    assert_eq!(files_under(&tmp).len(), 1);
}

#[test]
fn gc_removes_the_scratch_directories_of_killed_builds() {
    let (_t, store) = store();
    let left = store.work_dir().join("busybox-0123456789ab-4242");
    fs::create_dir_all(left.join("out/usr")).unwrap();
    write(&left.join("build.log"), b"==> [step 1/3] configure", 0o644);
    fs::set_permissions(
        left.join("out/usr"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    let report = store.gc(DAY).unwrap();
    assert_eq!(report.tmp_removed, 1);
    assert!(!left.exists());
    assert!(store.work_dir().is_dir(), "the work directory itself stays");
}

#[test]
fn roots_round_trip_and_names_are_checked() {
    let (_t, store) = store();
    let r = Root {
        created_unix: 42,
        keys: vec![Digest::of(b"k")],
        outputs: vec![Digest::of(b"o")],
    };
    store.write_root("board:qemu-x86_64", &r).unwrap();
    store.write_root("a", &Root::default()).unwrap();
    assert_eq!(
        store.read_roots().unwrap(),
        vec![
            ("a".to_string(), Root::default()),
            ("board:qemu-x86_64".to_string(), r)
        ]
    );
    for bad in ["", ".hidden", "a/b", "x\0y"] {
        assert!(
            matches!(
                store.write_root(bad, &Root::default()),
                Err(StoreError::InvalidRootName { .. })
            ),
            "{bad:?}"
        );
    }
    store.remove_root("a").unwrap();
    store.remove_root("a").unwrap();
    assert_eq!(store.read_roots().unwrap().len(), 1);
}

#[test]
fn gc_waits_for_shared_lock() {
    let (_t, store) = store();
    let shared = store.lock_shared().unwrap();
    assert!(store.try_lock_exclusive().unwrap().is_none());
    let s2 = store.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let h = std::thread::spawn(move || {
        s2.gc(DAY).unwrap();
        d2.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !done.load(std::sync::atomic::Ordering::SeqCst),
        "gc ran while a build held the lock"
    );
    drop(shared);
    h.join().unwrap();
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    // Several shared holders coexist.
    let a = store.lock_shared().unwrap();
    let b = store.lock_shared().unwrap();
    assert!(store.try_lock_exclusive().unwrap().is_none());
    drop((a, b));
    assert!(store.try_lock_exclusive().unwrap().is_some());
}
