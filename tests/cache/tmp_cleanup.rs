mod common;

use std::fs;

use common::{hours_ago, set_mtime, store, write};
use kiln_store::Store;

#[test]
fn open_removes_only_stale_unlocked_temp_files() {
    let (_t, store) = store();
    let tmp = store.root().join("tmp");
    write(&tmp.join("stale"), b"x", 0o644);
    set_mtime(&tmp.join("stale"), hours_ago(2));
    fs::create_dir_all(tmp.join("stale-tree/a")).unwrap();
    write(&tmp.join("stale-tree/a/b"), b"y", 0o400);
    set_mtime(&tmp.join("stale-tree"), hours_ago(3));
    write(&tmp.join("recent"), b"z", 0o644);
    set_mtime(&tmp.join("recent"), hours_ago(0));
    // Old but still locked: a live, slow writer.
    write(&tmp.join("old-but-live"), b"w", 0o644);
    set_mtime(&tmp.join("old-but-live"), hours_ago(5));
    let held = fs::File::open(tmp.join("old-but-live")).unwrap();
    // SAFETY: valid descriptor owned by `held`.
    assert_eq!(
        unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );

    Store::open(store.root()).unwrap();
    let mut left: Vec<String> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["old-but-live", "recent"]);

    drop(held);
    Store::open(store.root()).unwrap();
    assert!(!tmp.join("old-but-live").exists());
    assert!(tmp.join("recent").exists());
}
