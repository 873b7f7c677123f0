//! Crash safety: a writer process is SIGKILLed at random moments, then the
//! store must be fully usable: every blob verifies, every action-cache entry
//! is either a complete hit or a miss, every materialized output is whole.
//!
//! The writer is this same test binary, re-executed with an environment
//! variable that turns the `child_writer` test into the writer loop.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{hours_ago, noise, set_mtime, set_mtime_tree, write};
use kiln_store::{ActionResult, Digest, EntryKind, Root, Store, StoreError};

const CHILD_ENV: &str = "KILN_CACHE_TEST_CHILD";
const MODE_ENV: &str = "KILN_CACHE_TEST_CHILD_MODE";
/// Each round starts a writer and kills it after a random delay.
const ROUNDS: usize = 12;
const READY: &str = "KILN-CHILD-READY";

fn seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
}

/// One build's worth of writes: a tree with small, empty, large (streamed)
/// and hardlinked files; manifest; log; AC entry; sometimes a root and a
/// materialization. Content depends on `tag` so blobs are mostly new.
fn one_build(store: &Store, scratch: &Path, tag: u64, big: bool) -> Digest {
    let src = scratch.join(format!("src-{tag}"));
    let _ = fs::remove_dir_all(&src);
    write(
        &src.join("bin/app"),
        &noise(tag, 20_000 + (tag % 7) as usize * 3_000),
        0o755,
    );
    write(
        &src.join("etc/conf"),
        format!("tag={tag}\n").as_bytes(),
        0o644,
    );
    write(&src.join("etc/empty"), b"", 0o600);
    write(&src.join("shared"), b"the same in every build", 0o644);
    fs::hard_link(src.join("bin/app"), src.join("bin/app-link")).unwrap();
    std::os::unix::fs::symlink("app", src.join("bin/alias")).unwrap();
    if big {
        write(
            &src.join("lib/big"),
            &noise(tag ^ 0xdead, (4 << 20) + 12_345),
            0o644,
        );
    }
    let m = store.ingest_tree(&src, &[]).unwrap();
    let output = store.put_manifest(&m).unwrap();
    let log = store.put_bytes(&noise(tag ^ 0x1111, 3_000)).unwrap();
    let key = Digest::of(format!("key-{tag}").as_bytes());
    store
        .ac_put(
            &key,
            &ActionResult {
                output,
                log: Some(log),
            },
        )
        .unwrap();
    fs::remove_dir_all(&src).unwrap();
    key
}

/// The child side. A no-op in a normal test run.
#[test]
fn child_writer() {
    let Some(root) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(&root).unwrap();
    let _lock = store.lock_shared().unwrap();
    let scratch = Path::new(&root).join(format!("../scratch-{}", std::process::id()));
    fs::create_dir_all(&scratch).unwrap();
    let mode = std::env::var(MODE_ENV).unwrap_or_default();
    println!("{READY}");
    if mode == "same" {
        // Several processes writing identical blobs and entries at once.
        for _ in 0..5 {
            for tag in 0..6 {
                let key = one_build(&store, &scratch, tag, tag == 0);
                let r = store.ac_get(&key).unwrap().unwrap();
                store.materialize(&r.output).unwrap();
            }
        }
        return;
    }
    let base = seed();
    let mut keys = Vec::new();
    for i in 0u64.. {
        let tag = base.wrapping_add(i);
        let key = one_build(&store, &scratch, tag, i % 4 == 1);
        keys.push(key);
        if i % 3 == 0 {
            let r = store.ac_get(&key).unwrap().unwrap();
            store.materialize(&r.output).unwrap();
        }
        if i % 5 == 0 {
            let name = format!("child-{}", std::process::id());
            let root = Root {
                created_unix: 0,
                keys: keys.clone(),
                outputs: vec![],
            };
            store.write_root(&name, &root).unwrap();
        }
    }
}

fn spawn_child(root: &Path, mode: &str) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, root)
        .env(MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Wait until the writer is past start-up, so the kill lands mid-write.
    // libtest prints "test child_writer ... " before the marker on the same
    // line, hence `contains`.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) if l.contains(READY) => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(120)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("child writer did not start");
    }
    child
}

/// Checks every invariant a crash must not break; returns (ac hits, blobs).
fn check_store(store: &Store) -> (usize, usize) {
    let mut blobs = 0;
    for shard in fs::read_dir(store.root().join("cas")).unwrap() {
        for blob in fs::read_dir(shard.unwrap().path()).unwrap() {
            let name = blob.unwrap().file_name().into_string().unwrap();
            let d: Digest = name
                .parse()
                .unwrap_or_else(|e| panic!("stray file in cas: {e}"));
            match store.get_bytes(&d) {
                Ok(_) => blobs += 1,
                Err(e) => panic!("blob {d} does not verify after kill -9: {e}"),
            }
        }
    }
    let mut hits = 0;
    for shard in fs::read_dir(store.root().join("ac")).unwrap() {
        for entry in fs::read_dir(shard.unwrap().path()).unwrap() {
            let key: Digest = entry
                .unwrap()
                .file_name()
                .into_string()
                .unwrap()
                .parse()
                .unwrap();
            let Some(r) = store.ac_get(&key).unwrap() else {
                continue;
            };
            hits += 1;
            let m = store.get_manifest(&r.output).unwrap();
            for e in &m.entries {
                if let EntryKind::File { blake3, size } = e.kind {
                    assert_eq!(store.get_bytes(&blake3).unwrap().len() as u64, size);
                }
            }
            if let Some(log) = r.log {
                store.get_bytes(&log).unwrap();
            }
        }
    }
    // Materialized outputs are complete: re-ingesting gives their manifest.
    for out in fs::read_dir(store.root().join("outputs")).unwrap() {
        let out = out.unwrap().path();
        let d: Digest = out.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let m = store.ingest_tree(&out, &[]).unwrap();
        assert_eq!(
            m.digest().unwrap(),
            d,
            "partial output tree {}",
            out.display()
        );
    }
    (hits, blobs)
}

#[test]
fn kill9_at_random_moments_leaves_a_usable_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut rng = seed();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let mut child = spawn_child(&root, "loop");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(10 + rng % 300));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "child finished instead of being killed");
    }
    let leftovers = fs::read_dir(root.join("tmp")).unwrap().count();
    let store = Store::open(&root).unwrap();
    let (hits, blobs) = check_store(&store);
    eprintln!(
        "after {ROUNDS} kills: {hits} action-cache hits, {blobs} blobs, {leftovers} temp leftovers"
    );
    assert!(
        hits > 0 && blobs > 0,
        "the writer made no progress ({hits} hits, {blobs} blobs) in {:?}",
        started.elapsed()
    );
    // A writer has one temporary at a time (a file, or a directory being
    // filled), so a kill leaves at most one.
    assert!(
        leftovers <= ROUNDS,
        "{leftovers} temp leftovers after {ROUNDS} kills"
    );

    // The store keeps working: new writes, materialization, GC.
    let scratch = dir.path().join("scratch-parent");
    let key = one_build(&store, &scratch, 7, true);
    let r = store.ac_get(&key).unwrap().unwrap();
    store.materialize(&r.output).unwrap();
    store.gc(Duration::from_secs(3600)).unwrap();
    check_store(&store);
    // Once they are old, GC removes every leftover: nothing in tmp/ is kept
    // for a writer that is gone.
    for e in fs::read_dir(root.join("tmp")).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            set_mtime_tree(&path, hours_ago(2));
        } else {
            set_mtime(&path, hours_ago(2));
        }
    }
    let report = store.gc(Duration::from_secs(3600)).unwrap();
    assert!(
        fs::read_dir(root.join("tmp")).unwrap().next().is_none(),
        "stale temp files survived GC ({} removed)",
        report.tmp_removed
    );
    // Roots written by the children survived and protect their entries.
    assert!(!store.read_roots().unwrap().is_empty());
}

#[test]
fn concurrent_processes_writing_the_same_content() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    Store::open(&root).unwrap();
    let children: Vec<_> = (0..3).map(|_| spawn_child(&root, "same")).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    for mut c in children {
        let status = loop {
            if let Some(status) = c.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("a concurrent writer hung");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "a concurrent writer failed");
    }
    let store = Store::open(&root).unwrap();
    let (hits, _) = check_store(&store);
    assert_eq!(hits, 6);
    assert!(
        fs::read_dir(root.join("tmp")).unwrap().next().is_none(),
        "temp files left behind"
    );
    // Nothing in the CAS is unaccounted for.
    let err = store.get_bytes(&Digest::of(b"absent")).unwrap_err();
    assert!(matches!(err, StoreError::MissingBlob { .. }));
}
