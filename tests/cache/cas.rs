mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use common::{files_under, noise, store};
use kiln_store::{Digest, StoreError};

#[test]
fn put_get_round_trip() {
    let (_t, store) = store();
    for data in [
        Vec::new(),
        b"hello".to_vec(),
        noise(1, 100_000),
        vec![0u8; 1 << 20],
    ] {
        let d = store.put_bytes(&data).unwrap();
        assert_eq!(d, Digest::of(&data));
        assert!(store.has(&d));
        assert_eq!(store.get_bytes(&d).unwrap(), data);
    }
    // Nothing left in tmp.
    assert!(files_under(&store.root().join("tmp")).is_empty());
}

#[test]
fn blob_layout_is_sharded_zstd_of_content() {
    let (_t, store) = store();
    let data = b"kiln kiln kiln kiln kiln kiln kiln kiln".repeat(100);
    let d = store.put_bytes(&data).unwrap();
    let hex = d.to_hex();
    let path = store.blob_path(&d);
    assert_eq!(path, store.root().join("cas").join(&hex[..2]).join(&hex));
    let compressed = fs::read(&path).unwrap();
    assert!(compressed.len() < data.len() / 10, "not compressed");
    assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), data);
}

#[test]
fn put_is_idempotent_and_does_not_rewrite() {
    use std::os::unix::fs::MetadataExt;
    let (_t, store) = store();
    let d = store.put_bytes(b"same").unwrap();
    let ino = fs::metadata(store.blob_path(&d)).unwrap().ino();
    assert_eq!(store.put_bytes(b"same").unwrap(), d);
    assert_eq!(fs::metadata(store.blob_path(&d)).unwrap().ino(), ino);
}

#[test]
fn missing_blob() {
    let (_t, store) = store();
    let d = Digest::of(b"never stored");
    assert!(!store.has(&d));
    match store.get_bytes(&d) {
        Err(StoreError::MissingBlob { digest }) => assert_eq!(digest, d),
        other => panic!("expected MissingBlob, got {other:?}"),
    }
    let dest = store.root().join("out.bin");
    assert!(matches!(
        store.copy_to(&d, &dest),
        Err(StoreError::MissingBlob { .. })
    ));
    assert!(!dest.exists());
}

#[test]
fn flipped_byte_is_corrupt_and_removed() {
    let (_t, store) = store();
    let data = noise(7, 50_000);
    let d = store.put_bytes(&data).unwrap();
    let path = store.blob_path(&d);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    match store.get_bytes(&d) {
        Err(StoreError::Corrupt { digest, .. }) => assert_eq!(digest, d),
        other => panic!("expected Corrupt, got {:?}", other.map(|v| v.len())),
    }
    assert!(!path.exists(), "corrupt blob must be removed");
    assert!(!store.has(&d));
    // The next put repairs it.
    store.put_bytes(&data).unwrap();
    assert_eq!(store.get_bytes(&d).unwrap(), data);
}

/// What leaves the store for a remote (`with_compressed`) is checked: a
/// byte flipped in place (the blob keeps its stamp, which no longer
/// matches), valid zstd of other content, a content of the wrong size (a
/// rewritten file, without a stamp). Each is refused and removed.
#[test]
fn blobs_leave_the_store_only_checked() {
    let (_t, store) = store();
    let data = noise(11, 80_000);
    let size = data.len() as u64;
    let d = store.put_bytes(&data).unwrap();
    let path = store.blob_path(&d);
    let stored = fs::read(&path).unwrap();
    for _ in 0..2 {
        let sent = store.with_compressed(&d, size, |b| b.to_vec()).unwrap();
        assert_eq!(sent, stored);
    }
    let refused = |size: u64, what: &str| {
        match store.with_compressed(&d, size, |b| b.len()) {
            Err(StoreError::Corrupt { digest, .. }) => assert_eq!(digest, d, "{what}"),
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
        assert!(!path.exists(), "{what}: the corrupt blob must be removed");
        store.put_bytes(&data).unwrap();
    };
    let mut flipped = stored.clone();
    flipped[stored.len() / 2] ^= 0x01;
    fs::write(&path, &flipped).unwrap();
    refused(size, "a flipped byte");
    fs::remove_file(&path).unwrap();
    fs::write(&path, zstd::encode_all(&noise(12, 80_000)[..], 3).unwrap()).unwrap();
    refused(size, "other content");
    fs::remove_file(&path).unwrap();
    fs::write(&path, &stored).unwrap();
    refused(size + 1, "a wrong size");
    assert_eq!(
        store.with_compressed(&d, size, |b| b.to_vec()).unwrap(),
        stored
    );
    assert!(matches!(
        store.with_compressed(&Digest::of(b"absent"), 6, |b| b.len()),
        Err(StoreError::MissingBlob { .. })
    ));
}

#[test]
fn valid_zstd_of_wrong_content_is_corrupt() {
    let (_t, store) = store();
    let d = store.put_bytes(b"right").unwrap();
    fs::write(
        store.blob_path(&d),
        zstd::encode_all(&b"wrong"[..], 3).unwrap(),
    )
    .unwrap();
    let err = store.get_bytes(&d).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains(&Digest::of(b"wrong").to_hex()),
        "{err}"
    );
    assert!(!store.has(&d));
}

#[test]
fn truncated_blob_is_corrupt_and_removed() {
    let (_t, store) = store();
    let d = store.put_bytes(&noise(3, 200_000)).unwrap();
    let path = store.blob_path(&d);
    let len = fs::metadata(&path).unwrap().len();
    for keep in [len - 1, len / 2, 3, 0] {
        store.put_bytes(&noise(3, 200_000)).unwrap();
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(keep).unwrap();
        drop(f);
        let err = store.get_bytes(&d).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "truncated to {keep}: {err}"
        );
        assert!(!path.exists());
    }
}

#[test]
fn put_file_small_and_streamed() {
    let (t, store) = store();
    // Just below, at and well above the in-memory limit (4 MiB).
    for (i, len) in [0usize, 10, (4 << 20) - 1, 4 << 20, (4 << 20) + 1, 9 << 20]
        .into_iter()
        .enumerate()
    {
        let path = t.path().join(format!("f{i}"));
        let data = noise(i as u64, len);
        fs::write(&path, &data).unwrap();
        let (d, size) = store.put_file(&path).unwrap();
        assert_eq!(d, Digest::of(&data), "len {len}");
        assert_eq!(size, len as u64);
        assert_eq!(store.get_bytes(&d).unwrap(), data);
        // Second put of an existing large file takes the hash-only path.
        assert_eq!(store.put_file(&path).unwrap(), (d, size));
    }
    let err = store.put_file(&t.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn copy_to_round_trip_and_overwrite() {
    let (t, store) = store();
    let big = noise(11, 6 << 20);
    let d = store.put_bytes(&big).unwrap();
    let dest = t.path().join("copy.bin");
    fs::write(&dest, b"old content").unwrap();
    store.copy_to(&d, &dest).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), big);
    // No temp files left next to the destination.
    let names: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".kiln-tmp")),
        "{names:?}"
    );
}

#[test]
fn copy_to_of_corrupt_blob_leaves_destination_alone() {
    let (t, store) = store();
    let d = store.put_bytes(&noise(5, 300_000)).unwrap();
    let path = store.blob_path(&d);
    let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(100)).unwrap();
    f.write_all(&[0xff; 64]).unwrap();
    drop(f);
    let dest = t.path().join("dest");
    fs::write(&dest, b"previous").unwrap();
    let err = store.copy_to(&d, &dest).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(fs::read(&dest).unwrap(), b"previous");
    assert!(!path.exists());
    assert_eq!(
        fs::read_dir(t.path()).unwrap().count(),
        2,
        "only store/ and dest"
    );
}

#[test]
fn concurrent_put_of_the_same_blob() {
    let (_t, store) = store();
    let store = Arc::new(store);
    let data = Arc::new(noise(99, 2 << 20));
    let expected = Digest::of(&data);
    // Many rounds so the threads really overlap in the write/rename window.
    for round in 0..5 {
        let _ = fs::remove_file(store.blob_path(&expected));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (store, data, barrier) = (store.clone(), data.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let d = store.put_bytes(&data).unwrap();
                    // Readers during concurrent writes always see a whole blob.
                    assert_eq!(store.get_bytes(&d).unwrap().len(), data.len());
                    d
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), expected, "round {round}");
        }
        assert_eq!(store.get_bytes(&expected).unwrap(), *data);
    }
    assert!(files_under(&store.root().join("tmp")).is_empty());
}
