//! The image key covers exactly the code that can change an image's bytes.
//!
//! The key includes the writers' fingerprint, which `compose/image/build.rs`
//! computes with `compose/image/fingerprint.rs` and bakes into the binary.
//! These tests run that same code on copies of the checkout with one file
//! changed, and check that the binary under test embeds what it computes
//! for this checkout: so a change to a writer makes a new image key, and a
//! change anywhere else does not.

#[path = "../compose/image/fingerprint.rs"]
#[allow(dead_code)]
mod fingerprint;

mod common;

use std::path::Path;

use common::{copy_from_repo, kiln_in, repo, stderr, stdout};

fn writers(root: &Path) -> String {
    fingerprint::fingerprint(root, "kiln-image")
        .unwrap_or_else(|e| panic!("fingerprint of {}: {e}", root.display()))
        .hex
}

#[test]
fn the_binary_embeds_the_writers_fingerprint_of_this_checkout() {
    let store = tempfile::tempdir().expect("tmp");
    let o = kiln_in(
        &repo(),
        store.path(),
        &["show", "image", "--board", "qemu-x86_64-tiny"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("show json");
    assert_eq!(
        shown["inputs"]["writers"].as_str(),
        Some(writers(&repo()).as_str()),
        "the image key's writers fingerprint is not this checkout's"
    );
    // The image node is keyed like any other: a derivation hash now, a key
    // once its packages are built.
    assert_eq!(shown["derivation"].as_str().map(str::len), Some(64));
}

#[test]
fn a_writer_change_changes_the_image_key_and_nothing_else_does() {
    let copy = tempfile::Builder::new()
        .prefix("kiln-image-key-")
        .tempdir()
        .expect("tmp");
    // The workspace's sources, not its build output.
    copy_from_repo(
        copy.path(),
        &["Cargo.toml", "Cargo.lock", "compose", "cache"],
    );
    let root = copy.path();
    let base = writers(root);
    assert_eq!(base, writers(&repo()), "the checkout's location matters");

    let cases = [
        // The writers and everything they build with.
        ("compose/erofs/src/lib.rs", true),
        ("compose/ext4/src/mkfs.rs", true),
        ("compose/disk/src/fat.rs", true),
        ("compose/rootfs/src/strip.rs", true),
        ("compose/fstree/src/lib.rs", true),
        ("compose/image/src/policy.rs", true),
        ("compose/image/fingerprint.rs", true),
        ("compose/image/Cargo.toml", true),
        ("cache/store/src/materialize.rs", true),
        // Nothing that writes an image.
        ("compose/dsl/src/lib.rs", false),
        ("compose/engine/src/schedule.rs", false),
        ("compose/rules/src/recipe/mod.rs", false),
        ("compose/sandbox/src/mounts.rs", false),
        ("compose/fetch/src/fetcher.rs", false),
        ("cache/remote/src/http.rs", false),
        ("compose/src/cli/mod.rs", false),
        ("compose/erofs/tests/fsck.rs", false),
        ("compose/disk/examples/balena_default.rs", false),
    ];
    for (file, changes) in cases {
        let path = root.join(file);
        let before = std::fs::read(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut edited = before.clone();
        edited.extend_from_slice(b"\n# changed\n");
        std::fs::write(&path, &edited).expect("edit");
        let now = writers(root);
        std::fs::write(&path, &before).expect("restore");
        if changes {
            assert_ne!(now, base, "a change to {file} must change the image key");
        } else {
            assert_eq!(
                now, base,
                "a change to {file} must not change the image key"
            );
        }
    }

    // Locked external crates count when a writer builds with them (liblz4,
    // for EROFS), not when only a writer's tests do (erofs-rs reads EROFS
    // back in kiln-erofs's tests).
    let lock_path = root.join("Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path).expect("lock");
    for (package, changes) in [("lzzzz", true), ("erofs-rs", false)] {
        let edited = bump_checksum(&lock, package);
        assert_ne!(edited, lock, "Cargo.lock has no checksum for {package}");
        std::fs::write(&lock_path, &edited).expect("edit lock");
        let now = writers(root);
        std::fs::write(&lock_path, &lock).expect("restore lock");
        if changes {
            assert_ne!(now, base, "a new {package} must change the image key");
        } else {
            assert_eq!(now, base, "a new {package} must not change the image key");
        }
    }
}

/// `lock` with the checksum of `package` changed.
fn bump_checksum(lock: &str, package: &str) -> String {
    let start = format!("[[package]]\nname = \"{package}\"\n");
    let Some(at) = lock.find(&start) else {
        return lock.to_string();
    };
    let Some(rel) = lock[at..].find("checksum = \"") else {
        return lock.to_string();
    };
    let digit = at + rel + "checksum = \"".len();
    let mut out = lock.to_string();
    let old = &lock[digit..digit + 1];
    let new = if old == "0" { "1" } else { "0" };
    out.replace_range(digit..digit + 1, new);
    out
}
