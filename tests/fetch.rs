//! Fetching into the store, mirrors, unpacking and patching, end to end on
//! real files, archives and a local HTTP server.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kiln_fetch::{self as fetch, FetchError, Fetcher, Mirror};
use kiln_model::SourceHash;
use kiln_store::Store;
use sha2::Digest as _;

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn sha(bytes: &[u8]) -> SourceHash {
    SourceHash::Sha256(sha256(bytes))
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: Store,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let store = Store::open(root.join("store")).unwrap();
    Env {
        _tmp: tmp,
        root,
        store,
    }
}

impl Env {
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.root.join(name);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn mirror(&self) -> (PathBuf, Mirror) {
        let d = self.dir("mirror");
        let m = Mirror::parse(d.to_str().unwrap()).unwrap();
        (d, m)
    }
}

/// A tar with a top directory, a regular and an executable file, a symlink
/// and a hard link.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "pkg-1.0/", &[][..]).unwrap();
    file(&mut b, "pkg-1.0/README", b"hello\n", 0o644);
    file(&mut b, "pkg-1.0/bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "pkg-1.0/link", "README").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "pkg-1.0/hard", "pkg-1.0/README")
        .unwrap();
    b.into_inner().unwrap()
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    b.append_data(&mut h, path, data).unwrap();
}

/// An entry whose name is written raw, bypassing the tar crate's checks.
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zst(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn check_sample(out: &Path) {
    assert_eq!(fs::read(out.join("README")).unwrap(), b"hello\n");
    let run = fs::metadata(out.join("bin/run.sh")).unwrap();
    assert_eq!(run.permissions().mode() & 0o777, 0o755);
    let readme = fs::metadata(out.join("README")).unwrap();
    assert_eq!(readme.permissions().mode() & 0o777, 0o644);
    assert_eq!(
        fs::read_link(out.join("link")).unwrap(),
        Path::new("README")
    );
    let hard = fs::metadata(out.join("hard")).unwrap();
    assert_eq!(hard.ino(), readme.ino(), "hard link shares the inode");
}

#[test]
fn every_format_fetches_from_mirror_by_basename_and_unpacks() {
    let e = env();
    let (dir, mirror) = e.mirror();
    let tar = sample_tar();
    let cases: [(&str, Vec<u8>); 5] = [
        ("pkg-1.0.tar.gz", gz(&tar)),
        ("pkg-1.0.tar.bz2", bz2(&tar)),
        ("pkg-1.0.tar.xz", xz(&tar)),
        ("pkg-1.0.tar.zst", zst(&tar)),
        ("pkg-1.0.tar", tar.clone()),
    ];
    let fetcher = Fetcher::new(&e.store, vec![mirror], true);
    for (name, bytes) in cases {
        fs::write(dir.join(name), &bytes).unwrap();
        let url = format!("https://example.invalid/releases/{name}?download=1");
        let digest = fetcher.fetch(&url, &sha(&bytes)).unwrap();
        assert_eq!(digest, kiln_store::Digest::of(&bytes), "{name}");
        let out = e.root.join("out").join(name);
        fetch::unpack(&e.store, &digest, &out, 1).unwrap();
        check_sample(&out);
    }
}

#[test]
fn mirror_by_hash_comes_first_and_blake3_works() {
    let e = env();
    let (dir, mirror) = e.mirror();
    let good = gz(&sample_tar());
    let hex = blake3::hash(&good).to_hex().to_string();
    fs::create_dir_all(dir.join("by-hash/blake3")).unwrap();
    fs::write(dir.join("by-hash/blake3").join(&hex), &good).unwrap();
    // A stale file under the basename must not even be looked at.
    fs::write(dir.join("pkg.tar.gz"), b"stale").unwrap();
    let fetcher = Fetcher::new(&e.store, vec![mirror], true);
    let digest = fetcher
        .fetch(
            "https://example.invalid/pkg.tar.gz",
            &SourceHash::Blake3(hex),
        )
        .unwrap();
    assert_eq!(e.store.get_bytes(&digest).unwrap(), good);
}

#[test]
fn hash_mismatch_names_place_and_both_hashes() {
    let e = env();
    let (dir, mirror) = e.mirror();
    fs::write(dir.join("pkg.tar.gz"), b"not what was declared").unwrap();
    let expected = sha256(b"the real thing");
    let actual = sha256(b"not what was declared");
    let fetcher = Fetcher::new(&e.store, vec![mirror], true);
    let err = fetcher
        .fetch(
            "https://example.invalid/pkg.tar.gz",
            &SourceHash::Sha256(expected.clone()),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("expected sha256:{expected}")),
        "{msg}"
    );
    assert!(msg.contains(&format!("got sha256:{actual}")), "{msg}");
    assert!(
        msg.contains(&dir.join("pkg.tar.gz").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("not found"), "by-hash miss is listed: {msg}");
    // Nothing unverified reached the store.
    assert!(!e.store.root().join("sources").exists());
}

#[test]
fn offline_without_source_says_why_and_suggests_seeding() {
    let e = env();
    let fetcher = Fetcher::new(&e.store, vec![], true);
    let url = "https://example.invalid/pkg-2.0.tar.xz";
    let err = fetcher.fetch(url, &sha(b"x")).unwrap_err();
    assert!(matches!(err, FetchError::Unavailable { offline: true, .. }));
    let msg = err.to_string();
    assert!(msg.contains(url), "{msg}");
    assert!(msg.contains("no mirrors configured"), "{msg}");
    assert!(msg.contains("--offline"), "{msg}");
    assert!(msg.contains("scripts/seed-sources"), "{msg}");
}

#[test]
fn file_url_upstream_and_local_index() {
    let e = env();
    let up = e.dir("upstream");
    let bytes = gz(&sample_tar());
    fs::write(up.join("pkg.tar.gz"), &bytes).unwrap();
    let url = format!("file://{}/pkg.tar.gz", up.display());
    let hash = sha(&bytes);
    let digest = Fetcher::new(&e.store, vec![], false)
        .fetch(&url, &hash)
        .unwrap();
    let index = e
        .store
        .root()
        .join("sources")
        .join(format!("sha256-{}", sha256(&bytes)));
    assert_eq!(fs::read_to_string(&index).unwrap(), digest.to_hex());

    // Upstream gone and offline: the index still answers.
    fs::remove_file(up.join("pkg.tar.gz")).unwrap();
    let again = Fetcher::new(&e.store, vec![], true)
        .fetch(&url, &hash)
        .unwrap();
    assert_eq!(again, digest);
}

#[test]
fn strip_skips_entries_that_become_empty() {
    let e = env();
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "top.txt", b"top", 0o644);
    file(&mut b, "a/mid.txt", b"mid", 0o644);
    file(&mut b, "a/b/deep.txt", b"deep", 0o600);
    file(&mut b, "./a/b/c/deeper.txt", b"deeper", 0o644);
    let bytes = b.into_inner().unwrap();
    let digest = e.store.put_bytes(&bytes).unwrap();
    let out = e.root.join("out");
    fetch::unpack(&e.store, &digest, &out, 2).unwrap();
    let mut names: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["c", "deep.txt"]);
    assert_eq!(fs::read(out.join("c/deeper.txt")).unwrap(), b"deeper");
    let mode = fs::metadata(out.join("deep.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn traversal_and_absolute_paths_are_refused() {
    for name in [&b"pkg/../../evil"[..], b"/tmp/kiln-evil-absolute"] {
        let e = env();
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(&mut b, name, b"pwned");
        let digest = e.store.put_bytes(&b.into_inner().unwrap()).unwrap();
        let out = e.root.join("a/b/out");
        let err = fetch::unpack(&e.store, &digest, &out, 1).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FetchError::UnsafeEntry { .. }), "{msg}");
        assert!(msg.contains(std::str::from_utf8(name).unwrap()), "{msg}");
        assert!(!e.root.join("a/b/evil").exists());
    }
    assert!(!Path::new("/tmp/kiln-evil-absolute").exists());
}

#[test]
fn writing_through_an_archive_symlink_is_refused() {
    let e = env();
    let outside = e.dir("outside");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_link_name_literal(outside.as_os_str().as_encoded_bytes())
        .unwrap();
    b.append_data(&mut h, "pkg/esc", &[][..]).unwrap();
    file(&mut b, "pkg/esc/planted", b"pwned", 0o644);
    let digest = e.store.put_bytes(&b.into_inner().unwrap()).unwrap();
    let err = fetch::unpack(&e.store, &digest, &e.root.join("out"), 1).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("pkg/esc/planted") && msg.contains("symlink"),
        "{msg}"
    );
    assert!(!outside.join("planted").exists());
}

#[test]
fn non_archives_are_named_and_can_be_copied() {
    let e = env();
    let digest = e.store.put_bytes(b"just a file\n").unwrap();
    let err = fetch::unpack(&e.store, &digest, &e.root.join("out"), 1).unwrap_err();
    assert!(matches!(err, FetchError::UnknownFormat { .. }), "{err}");
    assert!(err.to_string().contains("unpack: false"), "{err}");
    let dest = e.root.join("out/sub/file.txt");
    fetch::copy_file(&e.store, &digest, &dest).unwrap();
    assert_eq!(fs::read(dest).unwrap(), b"just a file\n");
}

/// Serves `routes` (path → status, body) on 127.0.0.1 and records request
/// paths; anything else is a 404.
fn serve(routes: Vec<(String, u16, Vec<u8>)>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&head);
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
            log.lock().unwrap().push(path.clone());
            let (status, body) = routes
                .iter()
                .find(|r| r.0 == path)
                .map(|r| (r.1, r.2.clone()))
                .unwrap_or((404, b"no such file".to_vec()));
            let _ = write!(
                stream,
                "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    (port, seen)
}

#[test]
fn http_mirror_is_tried_by_hash_then_by_name() {
    let e = env();
    let bytes = gz(&sample_tar());
    let (port, seen) = serve(vec![("/m/pkg-1.0.tar.gz".into(), 200, bytes.clone())]);
    let mirror = Mirror::parse(&format!("http://127.0.0.1:{port}/m/")).unwrap();
    let fetcher = Fetcher::new(&e.store, vec![mirror], true);
    let digest = fetcher
        .fetch("https://example.invalid/x/pkg-1.0.tar.gz", &sha(&bytes))
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            format!("/m/by-hash/sha256/{}", sha256(&bytes)),
            "/m/pkg-1.0.tar.gz".to_owned()
        ]
    );
    let out = e.root.join("out");
    fetch::unpack(&e.store, &digest, &out, 1).unwrap();
    check_sample(&out);
}

#[test]
fn http_errors_and_dead_servers_are_reported_quickly() {
    let e = env();
    let (port, _) = serve(vec![("/pkg.tar.gz".into(), 500, b"oops".to_vec())]);
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mirrors = vec![
        Mirror::parse(&format!("http://127.0.0.1:{dead}")).unwrap(),
        Mirror::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
    ];
    let fetcher = Fetcher::new(&e.store, mirrors, false);
    let start = Instant::now();
    let url = format!("http://127.0.0.1:{dead}/upstream/pkg.tar.gz");
    let err = fetcher.fetch(&url, &sha(b"pkg")).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let msg = err.to_string();
    let FetchError::Unavailable { attempts, .. } = &err else {
        panic!("{msg}")
    };
    // dead mirror ×2, live mirror ×2, upstream
    assert_eq!(attempts.len(), 5, "{msg}");
    assert!(
        msg.contains(&format!(
            "http://127.0.0.1:{dead}/pkg.tar.gz: connection refused"
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("http://127.0.0.1:{port}/pkg.tar.gz: HTTP 500")),
        "{msg}"
    );
    assert!(msg.contains(&format!("{url}: connection refused")), "{msg}");
    assert!(!msg.contains("--offline"), "{msg}");
}

#[test]
fn bad_mirrors_and_hashes_are_refused() {
    for spec in [
        "relative/dir",
        "",
        "file://relative",
        "http://",
        "ftp://host/x",
    ] {
        let err = Mirror::parse(spec).unwrap_err();
        assert!(err.to_string().contains(&format!("`{spec}`")), "{err}");
    }
    assert_eq!(
        Mirror::parse("file:///srv/mirror").unwrap(),
        Mirror::parse("/srv/mirror").unwrap()
    );
    let e = env();
    let fetcher = Fetcher::new(&e.store, vec![], true);
    let err = fetcher
        .fetch(
            "https://x.invalid/a.tar",
            &SourceHash::Sha256("../../etc".into()),
        )
        .unwrap_err();
    assert!(matches!(err, FetchError::BadHash { .. }), "{err}");
}
