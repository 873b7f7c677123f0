mod common;

use std::fs;

use common::store;
use kiln_store::{ActionResult, Digest, Manifest, StoreError};

fn key(n: u32) -> Digest {
    Digest::of(&n.to_le_bytes())
}

fn ac_path(store: &kiln_store::Store, k: &Digest) -> std::path::PathBuf {
    let hex = k.to_hex();
    store.root().join("ac").join(&hex[..2]).join(hex)
}

#[test]
fn hit_round_trip() {
    let (_t, store) = store();
    let output = store.put_manifest(&Manifest::default()).unwrap();
    let log = store.put_bytes(b"build log").unwrap();
    let r = ActionResult {
        output,
        log: Some(log),
    };
    assert_eq!(store.ac_get(&key(1)).unwrap(), None);
    store.ac_put(&key(1), &r).unwrap();
    assert_eq!(store.ac_get(&key(1)).unwrap(), Some(r));
    assert!(ac_path(&store, &key(1)).is_file());
    // Overwrite.
    let r2 = ActionResult { output, log: None };
    store.ac_put(&key(1), &r2).unwrap();
    assert_eq!(store.ac_get(&key(1)).unwrap(), Some(r2));
    // JSON shape the engine can rely on.
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(ac_path(&store, &key(1))).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"output": output.to_hex(), "log": null})
    );
}

#[test]
fn put_refuses_missing_blobs() {
    let (_t, store) = store();
    let missing = Digest::of(b"no such manifest");
    let err = store
        .ac_put(
            &key(2),
            &ActionResult {
                output: missing,
                log: None,
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::MissingBlob { digest } if digest == missing),
        "{err}"
    );
    let output = store.put_bytes(b"m").unwrap();
    let err = store
        .ac_put(
            &key(2),
            &ActionResult {
                output,
                log: Some(missing),
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err}");
    assert_eq!(store.ac_get(&key(2)).unwrap(), None);
}

#[test]
fn entry_whose_manifest_is_gone_is_a_miss_and_removed() {
    let (_t, store) = store();
    let output = store.put_manifest(&Manifest::default()).unwrap();
    store
        .ac_put(&key(3), &ActionResult { output, log: None })
        .unwrap();
    fs::remove_file(store.blob_path(&output)).unwrap();
    assert_eq!(store.ac_get(&key(3)).unwrap(), None);
    assert!(!ac_path(&store, &key(3)).exists());
}

#[test]
fn entry_whose_log_is_gone_is_a_miss() {
    let (_t, store) = store();
    let output = store.put_manifest(&Manifest::default()).unwrap();
    let log = store.put_bytes(b"log").unwrap();
    store
        .ac_put(
            &key(4),
            &ActionResult {
                output,
                log: Some(log),
            },
        )
        .unwrap();
    fs::remove_file(store.blob_path(&log)).unwrap();
    assert_eq!(store.ac_get(&key(4)).unwrap(), None);
    assert!(!ac_path(&store, &key(4)).exists());
}

#[test]
fn garbage_entries_are_misses_and_removed() {
    let (_t, store) = store();
    let output = store.put_manifest(&Manifest::default()).unwrap();
    let good = serde_json::to_vec(&ActionResult { output, log: None }).unwrap();
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"not json".to_vec(),
        br#"{"output":"zz","log":null}"#.to_vec(),
        good[..good.len() - 3].to_vec(),
    ];
    for (i, bytes) in cases.into_iter().enumerate() {
        let k = key(100 + i as u32);
        let path = ac_path(&store, &k);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &bytes).unwrap();
        assert_eq!(store.ac_get(&k).unwrap(), None, "case {i}");
        assert!(!path.exists(), "case {i} not removed");
    }
}

#[test]
fn ac_remove() {
    let (_t, store) = store();
    let output = store.put_manifest(&Manifest::default()).unwrap();
    store
        .ac_put(&key(5), &ActionResult { output, log: None })
        .unwrap();
    store.ac_remove(&key(5)).unwrap();
    assert_eq!(store.ac_get(&key(5)).unwrap(), None);
    store.ac_remove(&key(5)).unwrap();
}
