//! The shared cache against real servers on loopback: nginx (WebDAV) and
//! BuildGrid (REAPI), both started by `scripts/cache-server`.
//!
//! - two teams: A builds and pushes, B (empty store) builds nothing and
//!   gets a bit-identical image, over WebDAV and over REAPI;
//! - 20 kinds of tampering, each refused by name and rebuilt locally;
//! - two builders pushing the same keys at once;
//! - a server killed mid-build, and one that accepts but never answers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use kiln_remote::SecretKey;

/// A cache server for one test, stopped when dropped.
struct Server {
    dir: tempfile::TempDir,
    url: String,
    kind: &'static str,
}

impl Server {
    fn start(kind: &'static str) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("kiln-cache-server-")
            .tempdir()
            .expect("tempdir");
        let url = start_server(kind, dir.path(), None);
        Server { dir, url, kind }
    }

    fn stop(&self) {
        let stop = match self.kind {
            "start" => "stop",
            "reapi-start" => "reapi-stop",
            _ => "s3-stop",
        };
        let _ = Command::new(repo().join("scripts/cache-server"))
            .args([stop, &self.dir.path().display().to_string()])
            .status();
    }

    /// Restarts on the same port and data.
    fn restart(&self) {
        let port = self.url.rsplit(':').next().expect("port").to_string();
        start_server(self.kind, self.dir.path(), Some(&port));
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_server(kind: &str, dir: &Path, port: Option<&str>) -> String {
    let mut cmd = Command::new(repo().join("scripts/cache-server"));
    cmd.args([kind, &dir.display().to_string()]);
    if let Some(p) = port {
        cmd.arg(p);
    }
    let out = cmd.output().expect("scripts/cache-server");
    assert!(
        out.status.success(),
        "scripts/cache-server {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A signing key made with `kiln cache keygen`, and its public half.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["cache", "keygen", "--out"])
        .arg(&path)
        .output()
        .expect("kiln cache keygen");
    assert!(out.status.success(), "{}", stderr(&out));
    (path, stdout(&out).trim().to_string())
}

/// The toy project's lib: a small file and a 300 kB one, then `more` steps.
fn lib_recipe(more: &[&str]) -> String {
    let mut steps = vec![
        "mkdir -p /out/usr/lib",
        "echo lib > /out/usr/lib/data",
        "head -c 300000 /dev/zero | tr '\\\\0' 'x' > /out/usr/lib/big",
    ];
    steps.extend_from_slice(more);
    shell_recipe("lib", &[], &steps)
}

/// A project with two small recipes (app depends on lib) whose outputs are
/// reproducible, and a `[cache]` section.
fn toy_project(cache: &str) -> TestProject {
    let p = TestProject::new();
    p.board(&["app"]);
    p.write("recipes/lib.rhai", &lib_recipe(&[]));
    p.write(
        "recipes/app.rhai",
        &shell_recipe(
            "app",
            &["lib"],
            &[
                "mkdir -p /out/usr/bin /out/usr/share/app",
                "cat /deps/lib/usr/lib/data > /out/usr/bin/app",
                "echo one > /out/usr/share/app/one",
                "echo two > /out/usr/share/app/two",
            ],
        ),
    );
    p.write(
        "kiln.toml",
        &format!("default_board = \"test-board\"\n\n[cache]\n{cache}\n"),
    );
    p
}

/// A fresh server of `kind` and a toy project that writes back to it,
/// signing with a new key: the server, the project, the key's public half,
/// and the directory holding the key (keep it alive).
fn team_on(kind: &'static str) -> (Server, TestProject, String, tempfile::TempDir) {
    let server = Server::start(kind);
    let keys_dir = tempdir("kiln-keys-");
    let (key, public) = keygen(keys_dir.path(), "team.key");
    let p = toy_project(&cache_section(&server.url, Some(&key), &[]));
    (server, p, public, keys_dir)
}

fn cache_section(url: &str, key: Option<&Path>, trusted: &[&str]) -> String {
    let mut s = format!("url = \"{url}\"\ntimeout_secs = 5\n");
    if let Some(k) = key {
        s.push_str(&format!("signing_key = \"{}\"\n", k.display()));
    }
    s.push_str(&format!(
        "trusted_keys = [{}]\n",
        trusted
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s
}

fn build_in(project: &Path, store: &Path) -> Output {
    kiln_in(project, store, &["--json", "build", "test-board"])
}

fn warnings(o: &Output) -> Vec<String> {
    events(o)
        .into_iter()
        .filter(|e| e["event"] == "warning")
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

fn keys(o: &Output) -> std::collections::BTreeMap<String, (String, String)> {
    events(o)
        .into_iter()
        .filter(|e| matches!(e["event"].as_str(), Some("built" | "cached" | "fetched")))
        .filter_map(|e| {
            Some((
                e["recipe"].as_str()?.to_string(),
                (
                    e["key"].as_str()?.to_string(),
                    e["output"].as_str()?.to_string(),
                ),
            ))
        })
        .collect()
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

#[test]
fn tampered_entries_and_blobs_are_refused_by_name_and_rebuilt() {
    let server = Server::start("start");
    let keys_dir = tempdir("kiln-keys-");
    let (a_key, a_pub) = keygen(keys_dir.path(), "a.key");
    let (_, mallory_pub) = keygen(keys_dir.path(), "mallory.key");
    let mallory = SecretKey::load(&keys_dir.path().join("mallory.key")).expect("key");
    let trusted_a = SecretKey::load(&a_key).expect("key");

    let a = toy_project(&cache_section(&server.url, Some(&a_key), &[]));
    let first = build_in(a.root(), a.store.path());
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(outcomes(&first)["app"], "built");
    assert!(warnings(&first).is_empty(), "{:?}", warnings(&first));
    let k = keys(&first);
    let (app_key, app_out) = k["app"].clone();
    let (lib_key, _) = k["lib"].clone();
    let pristine = tempdir("kiln-pristine-");
    copy_tree(&server.data(), pristine.path());

    // B trusts A only, has no signing key (it never pushes), and reads.
    let b = toy_project(&cache_section(&server.url, None, &[&a_pub]));
    let ac = |key: &str| server.data().join("ac").join(key);
    let cas = |d: &str| server.data().join("cas").join(d);
    let entry = |key: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(ac(key)).expect("entry")).expect("json")
    };
    let app_entry = entry(&app_key);
    let blobs: Vec<String> = app_entry["entry"]["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .map(|b| b["blake3"].as_str().expect("hex").to_string())
        .collect();
    let log = app_entry["entry"]["log"].as_str().map(String::from);
    // A file only app has (lib's output shares app's `data` content).
    let lib_entry = entry(&lib_key).to_string();
    let file_blob = blobs
        .iter()
        .find(|d| **d != app_out && Some(*d) != log.as_ref() && !lib_entry.contains(d.as_str()))
        .expect("a file blob")
        .clone();
    let resign = |doc: serde_json::Value, key: &SecretKey| -> Vec<u8> {
        let e: kiln_remote::Entry = serde_json::from_value(doc["entry"].clone()).expect("entry");
        key.sign(e).expect("sign").to_json().expect("encode")
    };
    let flip = |path: &Path, at: usize| {
        let mut b = std::fs::read(path).expect("blob");
        let i = at.min(b.len() - 1);
        b[i] ^= 0x40;
        std::fs::write(path, b).expect("write");
    };

    type Tamper<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, &str, Tamper)> = vec![
        (
            "flipped byte in a file blob",
            "blob",
            Box::new(|| flip(&cas(&file_blob), 20)),
        ),
        (
            "flipped byte in the manifest blob",
            "blob",
            Box::new(|| flip(&cas(&app_out), 30)),
        ),
        (
            "flipped last byte (zstd checksum area)",
            "blob",
            Box::new(|| {
                let p = cas(&file_blob);
                let len = std::fs::metadata(&p).expect("meta").len() as usize;
                flip(&p, len - 1)
            }),
        ),
        (
            "truncated blob",
            "blob",
            Box::new(|| {
                let p = cas(&file_blob);
                let b = std::fs::read(&p).expect("blob");
                std::fs::write(&p, &b[..b.len() / 2]).expect("write")
            }),
        ),
        (
            "empty blob",
            "blob",
            Box::new(|| std::fs::write(cas(&app_out), b"").expect("write")),
        ),
        (
            "blob with junk appended",
            "blob",
            Box::new(|| {
                let p = cas(&file_blob);
                let mut b = std::fs::read(&p).expect("blob");
                b.extend_from_slice(b"junk after the frame");
                std::fs::write(&p, b).expect("write")
            }),
        ),
        (
            "blob replaced by another valid blob",
            "blob",
            Box::new(|| {
                std::fs::copy(cas(&app_out), cas(&file_blob)).expect("copy");
            }),
        ),
        (
            "blob stored raw instead of zstd",
            "blob",
            Box::new(|| std::fs::write(cas(&file_blob), b"one\n").expect("write")),
        ),
        (
            "blob removed from the server",
            "does not have it",
            Box::new(|| std::fs::remove_file(cas(&file_blob)).expect("rm")),
        ),
        (
            "entries swapped between keys",
            "is for key",
            Box::new(|| {
                std::fs::copy(ac(&lib_key), ac(&app_key)).expect("copy");
            }),
        ),
        (
            "signature removed",
            "unsigned",
            Box::new(|| {
                let mut doc = entry(&app_key);
                doc["signature"] = "".into();
                std::fs::write(ac(&app_key), doc.to_string()).expect("write")
            }),
        ),
        (
            "signer removed",
            "unsigned",
            Box::new(|| {
                let mut doc = entry(&app_key);
                doc.as_object_mut().expect("object").remove("signer");
                std::fs::write(ac(&app_key), doc.to_string()).expect("write")
            }),
        ),
        (
            "re-signed by an untrusted key",
            "not a trusted key",
            Box::new(|| {
                std::fs::write(ac(&app_key), resign(entry(&app_key), &mallory)).expect("write")
            }),
        ),
        (
            "untrusted signature claiming the trusted signer",
            "does not match",
            Box::new(|| {
                let mut doc: serde_json::Value =
                    serde_json::from_slice(&resign(entry(&app_key), &mallory)).expect("json");
                doc["signer"] = a_pub.clone().into();
                std::fs::write(ac(&app_key), doc.to_string()).expect("write")
            }),
        ),
        (
            "output digest changed under the signature",
            "does not match",
            Box::new(|| {
                let mut doc = entry(&app_key);
                doc["entry"]["output"] = file_blob.clone().into();
                std::fs::write(ac(&app_key), doc.to_string()).expect("write")
            }),
        ),
        (
            "a blob size changed under the signature",
            "does not match",
            Box::new(|| {
                let mut doc = entry(&app_key);
                let n = doc["entry"]["blobs"][0]["size"].as_u64().expect("size");
                doc["entry"]["blobs"][0]["size"] = (n + 1).into();
                std::fs::write(ac(&app_key), doc.to_string()).expect("write")
            }),
        ),
        (
            "signature corrupted",
            "does not match",
            Box::new(|| {
                let mut doc = entry(&app_key);
                let sig = doc["signature"].as_str().expect("sig").to_string();
                let first = if sig.starts_with('0') { "1" } else { "0" };
                let flipped = format!("{first}{}", sig.get(1..).unwrap_or_default());
                doc["signature"] = flipped.into();
                std::fs::write(ac(&app_key), doc.to_string()).expect("write")
            }),
        ),
        (
            "entry is not JSON",
            "not a Kiln cache entry",
            Box::new(|| {
                std::fs::write(ac(&app_key), b"<html>502 Bad Gateway</html>").expect("write")
            }),
        ),
        (
            "entry truncated",
            "not a Kiln cache entry",
            Box::new(|| {
                let b = std::fs::read(ac(&app_key)).expect("entry");
                std::fs::write(ac(&app_key), &b[..b.len() / 2]).expect("write")
            }),
        ),
        (
            "trusted signer, closure leaves out a file",
            "not in the signed closure",
            Box::new(|| {
                let mut doc = entry(&app_key);
                let list = doc["entry"]["blobs"].as_array_mut().expect("blobs");
                list.retain(|b| b["blake3"] != file_blob.as_str());
                std::fs::write(ac(&app_key), resign(doc, &trusted_a)).expect("write")
            }),
        ),
        (
            "trusted signer, wrong size for a file blob",
            "bytes, not",
            Box::new(|| {
                let mut doc = entry(&app_key);
                for b in doc["entry"]["blobs"].as_array_mut().expect("blobs") {
                    if b["blake3"] == file_blob.as_str() {
                        let n = b["size"].as_u64().expect("size");
                        b["size"] = (n + 5).into();
                    }
                }
                std::fs::write(ac(&app_key), resign(doc, &trusted_a)).expect("write")
            }),
        ),
    ];
    assert!(cases.len() >= 20, "{} cases", cases.len());

    for (name, expect, tamper) in &cases {
        restore_tree(pristine.path(), &server.data());
        tamper();
        let store = tempdir("kiln-store-b-");
        let o = build_in(b.root(), store.path());
        assert!(
            o.status.success(),
            "{name}: the build failed:\n{}",
            stderr(&o)
        );
        let k = outcomes(&o);
        assert_eq!(
            k["app"], "built",
            "{name}: app must be rebuilt locally: {k:?}"
        );
        assert_eq!(k["lib"], "fetched", "{name}: lib was intact: {k:?}");
        let w = warnings(&o).join("\n");
        assert!(
            w.contains("app: refused the remote cache entry") && w.contains(expect),
            "{name}: expected a refusal naming {expect:?}, got:\n{w}"
        );
        // What was rebuilt is what A built: nothing tampered got in.
        assert_eq!(keys(&o)["app"].1, app_out, "{name}");
        let again = build_in(b.root(), store.path());
        assert!(
            outcomes(&again).values().all(|v| v == "cached"),
            "{name}: {:?}",
            outcomes(&again)
        );
    }
    drop(mallory_pub);
}

/// `cp -a` of a directory's content, for restoring the server's data.
fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("cp");
    assert!(st.success());
}

fn restore_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).expect("mkdir");
    copy_tree(from, to);
}

#[test]
fn concurrent_pushes_of_the_same_keys_are_consistent() {
    let (server, p, public, _keys) = team_on("start");
    // Two builders with their own stores build the same thing, offline from
    // the cache, then push at the same moment, several times.
    let stores = [tempdir("kiln-store-1-"), tempdir("kiln-store-2-")];
    for s in &stores {
        let o = kiln_in(p.root(), s.path(), &["--no-remote", "build", "test-board"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for round in 0..3 {
        if round > 0 {
            let _ = std::fs::remove_dir_all(server.data());
        }
        let children: Vec<_> = stores
            .iter()
            .map(|s| {
                Command::new(env!("CARGO_BIN_EXE_kiln"))
                    .arg("--project")
                    .arg(p.root())
                    .arg("--store")
                    .arg(s.path())
                    .args(["cache", "push", "test-board"])
                    .output()
            })
            .collect();
        for c in children {
            let o = c.expect("push");
            assert!(o.status.success(), "round {round}: {}", stderr(&o));
        }
    }
    // Nothing half-written is visible, and a third store gets everything.
    let leftovers: Vec<_> = walk(&server.data())
        .into_iter()
        .filter(|p| {
            !p.starts_with(server.data().join("ac")) && !p.starts_with(server.data().join("cas"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let c = toy_project(&cache_section(&server.url, None, &[&public]));
    let store = tempdir("kiln-store-3-");
    let o = kiln_in(c.root(), store.path(), &["cache", "pull", "test-board"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = build_in(c.root(), store.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        outcomes(&o).values().all(|v| v == "cached"),
        "{:?}",
        outcomes(&o)
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_dead_or_silent_server_never_fails_or_hangs_a_build() {
    let (server, p, public, _keys) = team_on("start");
    // lib builds and is pushed; the server dies while app builds.
    p.write(
        "recipes/app.rhai",
        &shell_recipe(
            "app",
            &["lib"],
            &[
                "sleep 4",
                "mkdir -p /out/usr/bin",
                "cat /deps/lib/usr/lib/data > /out/usr/bin/app",
            ],
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--project")
        .arg(p.root())
        .arg("--store")
        .arg(p.store.path())
        .args(["--json", "build", "test-board"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kiln build");
    std::thread::sleep(Duration::from_secs(2));
    server.stop();
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(outcomes(&o)["app"], "built");
    let w = warnings(&o).join("\n");
    assert!(
        w.contains("is unavailable") && w.contains("kiln cache push"),
        "{w}"
    );

    // Back up: the next push completes the upload, and another store gets it all.
    server.restart();
    let o = p.kiln(&["cache", "push", "test-board"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("uploaded"), "{}", stdout(&o));
    let b = toy_project(&cache_section(&server.url, None, &[&public]));
    b.write(
        "recipes/app.rhai",
        &std::fs::read_to_string(p.root().join("recipes/app.rhai")).expect("app"),
    );
    let store = tempdir("kiln-store-b-");
    let o = build_in(b.root(), store.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        outcomes(&o).values().all(|v| v == "fetched"),
        "{:?}",
        outcomes(&o)
    );

    // A server that accepts connections and never answers: the build goes on
    // after the timeout (5 s in kiln.toml), with one warning.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().take(4) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let c = toy_project(&cache_section(
        &format!("http://127.0.0.1:{port}"),
        None,
        &[&public],
    ));
    let store = tempdir("kiln-store-c-");
    let t = Instant::now();
    let o = build_in(c.root(), store.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        warnings(&o).join("\n").contains("is unavailable"),
        "{:?}",
        warnings(&o)
    );
    assert_eq!(
        warnings(&o).len(),
        1,
        "one warning, not one per node: {:?}",
        warnings(&o)
    );
    drop(hold);
}

/// An S3 cache that is down, or that can't be signed for, costs one warning
/// that says which, and the build goes on locally.
#[test]
fn an_s3_cache_down_or_without_credentials_costs_one_warning() {
    let (server, p, _, _keys) = team_on("s3-start");
    for (why, credentials, expect) in [
        ("no credentials", false, "no AWS credentials"),
        ("server down", true, "is unavailable"),
    ] {
        if why == "server down" {
            server.stop();
        }
        let store = tempdir("kiln-store-");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("--project")
            .arg(p.root())
            .arg("--store")
            .arg(store.path())
            .args(["--json", "build", "test-board"])
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_CONFIG_FILE", "/nonexistent");
        if credentials {
            cmd.env("AWS_ACCESS_KEY_ID", "kiln-test")
                .env("AWS_SECRET_ACCESS_KEY", "kiln-test-secret");
        } else {
            cmd.env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env_remove("AWS_SESSION_TOKEN");
        }
        let o = cmd.output().expect("run kiln");
        assert!(o.status.success(), "{why}: {}", stderr(&o));
        assert!(
            outcomes(&o).values().all(|v| v == "built"),
            "{why}: {:?}",
            outcomes(&o)
        );
        let w = warnings(&o);
        assert_eq!(w.len(), 1, "{why}: one warning: {w:?}");
        assert!(w[0].contains(expect), "{why}: {w:?}");
    }
}

/// A local blob damaged after it was built never reaches the server, small
/// (sent from memory) or big (streamed): the push names the entry and says
/// to rebuild, and the server gets neither blob nor an entry that needs
/// them. A build then rebuilds it, and the next push is whole.
#[test]
fn a_damaged_local_blob_is_never_uploaded() {
    let (server, p, _, _keys) = team_on("start");
    // A file that stays over 4 MiB compressed, so its upload streams.
    p.write(
        "recipes/lib.rhai",
        &lib_recipe(&["head -c 5000000 /dev/urandom > /out/usr/lib/noise"]),
    );
    let o = kiln_in(
        p.root(),
        p.store.path(),
        &["--no-remote", "--json", "build", "test-board"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (lib_key, lib_output) = keys(&o)["lib"].clone();
    let store = kiln_store::Store::open(p.store.path()).expect("store");
    let manifest = store
        .get_manifest(&lib_output.parse().expect("digest"))
        .expect("lib's manifest");
    let blob_of = |path: &str| {
        manifest
            .entries
            .iter()
            .find_map(|e| match &e.kind {
                kiln_store::EntryKind::File { blake3, .. } if e.path == path => Some(*blake3),
                _ => None,
            })
            .expect(path)
    };
    let damaged = [blob_of("usr/lib/big"), blob_of("usr/lib/noise")];
    // One byte flipped in place in each.
    for d in &damaged {
        let path = store.blob_path(d);
        let mut bytes = std::fs::read(&path).expect("lib's blob");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        std::fs::write(&path, &bytes).expect("damage");
    }
    assert!(
        std::fs::metadata(store.blob_path(&damaged[1]))
            .expect("noise")
            .len()
            > 4 << 20
    );

    let o = p.kiln(&["cache", "push", "test-board"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("lib: not pushed") && err.contains("corrupt"),
        "{err}"
    );
    assert!(err.contains("the next build rebuilds it"), "{err}");
    assert!(err.contains("kiln build test-board"), "{err}");
    let on_server = || -> Vec<String> {
        walk(&server.data())
            .iter()
            .filter_map(|f| f.file_name()?.to_str().map(String::from))
            .collect()
    };
    for d in &damaged {
        assert!(
            !on_server().contains(&d.to_hex()),
            "a damaged blob was uploaded"
        );
        assert!(!store.has(d), "a damaged blob was kept");
    }
    assert!(!on_server().contains(&lib_key), "lib's entry was uploaded");

    let o = build_in(p.root(), p.store.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(outcomes(&o)["lib"], "built", "{:?}", outcomes(&o));
    let o = p.kiln(&["cache", "push", "test-board"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (lib_key, _) = keys(&build_in(p.root(), p.store.path()))["lib"].clone();
    assert!(
        on_server().contains(&lib_key),
        "lib's entry is on the server"
    );
}

const BOARD: &str = "qemu-x86_64-tiny";

/// Team A (the shared test store, as warm as earlier tests left it) builds
/// the small board and pushes it; team B, with an empty store, in another
/// checkout, builds it with every node a remote hit and gets the same
/// image, byte for byte. Over WebDAV (nginx), REAPI (BuildGrid) and S3
/// (moto, with credentials from the environment as AWS tools take them).
#[test]
fn two_teams_share_the_small_board_over_webdav_reapi_and_s3() {
    let keys_dir = tempdir("kiln-keys-");
    let (a_key, a_pub) = keygen(keys_dir.path(), "team-a.key");
    let a_dir = tempdir("kiln-team-a-");
    copy_project(a_dir.path());
    let a_store = repo().join("target/kiln-test-store");
    let key = a_key.display().to_string();

    let o = kiln_in(
        a_dir.path(),
        &a_store,
        &["--offline", "--no-remote", "build", BOARD],
    );
    assert!(o.status.success(), "team A's build: {}", stderr(&o));
    let a_img = a_dir.path().join(format!("out/{BOARD}.img"));
    let a_sha = sha256(&a_img);
    let a_zst = sha256(&a_dir.path().join(format!("out/{BOARD}.img.zst")));

    // Any credentials do for moto; they must be there to be used.
    let aws = [
        ("AWS_ACCESS_KEY_ID", "kiln-test"),
        ("AWS_SECRET_ACCESS_KEY", "kiln-test-secret"),
    ];
    for kind in ["start", "reapi-start", "s3-start"] {
        let server = Server::start(kind);
        let url = server.url.clone();
        let kiln_in =
            |project: &Path, store: &Path, args: &[&str]| kiln_in_env(project, store, args, &aws);
        let push = kiln_in(
            a_dir.path(),
            &a_store,
            &[
                "--cache",
                &url,
                "--signing-key",
                &key,
                "cache",
                "push",
                BOARD,
            ],
        );
        assert!(push.status.success(), "{kind}: push: {}", stderr(&push));

        let b_dir = tempdir("kiln-team-b-");
        copy_project(b_dir.path());
        let b_store = tempdir("kiln-store-b-");
        let t = Instant::now();
        let o = kiln_in(
            b_dir.path(),
            b_store.path(),
            &[
                "--offline",
                "--json",
                "--cache",
                &url,
                "--trust",
                &a_pub,
                "--cache-read-only",
                "build",
                BOARD,
            ],
        );
        assert!(o.status.success(), "{kind}: team B's build: {}", stderr(&o));
        let k = outcomes(&o);
        assert!(
            k.values().all(|v| v == "fetched"),
            "{kind}: every node must be a remote hit, nothing built: {k:?}\n{}",
            stderr(&o)
        );
        assert!(k.contains_key("image") && k.contains_key("linux"), "{k:?}");
        let done = events(&o)
            .into_iter()
            .find(|e| e["event"] == "done")
            .expect("done event");
        assert_eq!(done["built"], 0, "{kind}: {done}");
        let b_img = b_dir.path().join(format!("out/{BOARD}.img"));
        assert_eq!(sha256(&b_img), a_sha, "{kind}: B's image differs from A's");
        assert_eq!(
            sha256(&b_dir.path().join(format!("out/{BOARD}.img.zst"))),
            a_zst,
            "{kind}"
        );
        eprintln!("{kind}: team B's warm remote build took {:?}", t.elapsed());

        // The statistics saw it.
        let stat = kiln_in(b_dir.path(), b_store.path(), &["cache", "stat"]);
        assert!(stat.status.success(), "{}", stderr(&stat));
        assert!(
            stdout(&stat).contains("hit rate 100.0%"),
            "{}",
            stdout(&stat)
        );
    }
}

/// A shared directory as the cache: same layout and trust rules, written
/// atomically (nothing left in its tmp/).
#[test]
fn a_shared_directory_works_as_a_cache() {
    let shared = tempdir("kiln-shared-cache-");
    let url = format!("file://{}", shared.path().display());
    let keys_dir = tempdir("kiln-keys-");
    let (key, public) = keygen(keys_dir.path(), "team.key");
    let a = toy_project(&cache_section(&url, Some(&key), &[]));
    let o = build_in(a.root(), a.store.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        outcomes(&o).values().all(|v| v == "built"),
        "{:?}",
        outcomes(&o)
    );
    let pushed = events(&o).iter().filter(|e| e["event"] == "pushed").count();
    assert_eq!(pushed, 3, "lib, app and the image are written back");
    assert!(walk(&shared.path().join("tmp")).is_empty());

    let b = toy_project(&cache_section(&url, None, &[&public]));
    let store = tempdir("kiln-store-b-");
    let o = build_in(b.root(), store.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        outcomes(&o).values().all(|v| v == "fetched"),
        "{:?}",
        outcomes(&o)
    );

    // A reader that trusts nobody uses nothing, and says why.
    let c = toy_project(&cache_section(&url, None, &[]));
    let store = tempdir("kiln-store-c-");
    let o = build_in(c.root(), store.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        outcomes(&o).values().all(|v| v == "built"),
        "{:?}",
        outcomes(&o)
    );
    let w = warnings(&o).join("\n");
    assert!(w.contains("no key is trusted"), "{w}");
}

/// Bad cache settings are errors that say where and what to do; none of
/// them is a silent local build.
#[test]
fn bad_cache_settings_say_where_and_what_to_do() {
    let keys_dir = tempdir("kiln-keys-");
    let (key, _) = keygen(keys_dir.path(), "team.key");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            "url = \"ftp://cache.example/kiln\"\n".into(),
            vec!["kiln.toml [cache] url", "expected http(s)://"],
        ),
        (
            "url = \"http://127.0.0.1:9\"\ntrusted_keys = [\"ed25519:abcd\"]\n".into(),
            vec!["kiln.toml [cache] trusted_keys", "64 hex digits"],
        ),
        (
            "url = \"http://127.0.0.1:9\"\nsigning_key = \"/nonexistent/key\"\n".into(),
            vec![
                "kiln.toml [cache] signing_key",
                "/nonexistent/key",
                "kiln cache keygen",
            ],
        ),
        (
            "url = \"http://127.0.0.1:9\"\nsigning-key = \"x\"\n".into(),
            vec!["kiln.toml", "unknown field `signing-key`"],
        ),
    ];
    for (cache, expect) in cases {
        let p = toy_project(&cache);
        let o = p.kiln(&["build", "test-board"]);
        assert_eq!(o.status.code(), Some(2), "{cache}: {}", stderr(&o));
        for e in expect {
            assert!(
                stderr(&o).contains(e),
                "{cache}: expected {e:?} in:\n{}",
                stderr(&o)
            );
        }
    }

    // A signing key others can read is refused, with the fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let p = toy_project(&format!(
        "url = \"http://127.0.0.1:9\"\nsigning_key = \"{}\"\n",
        key.display()
    ));
    let o = p.kiln(&["build", "test-board"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));

    // Pushing without a remote, or without a key, says how to fix it.
    let p = toy_project("");
    let o = p.kiln(&["cache", "push", "test-board"]);
    assert!(
        stderr(&o).contains("no remote cache is configured"),
        "{}",
        stderr(&o)
    );
    let p = toy_project("url = \"http://127.0.0.1:9\"\n");
    let o = p.kiln(&["cache", "push", "test-board"]);
    assert!(stderr(&o).contains("no signing key"), "{}", stderr(&o));
}
