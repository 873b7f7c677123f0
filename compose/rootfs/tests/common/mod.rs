//! Test packages built for real: directories on disk, ingested into a
//! temporary store and materialized, exactly as builds produce them.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_rootfs::{OsInfo, Package};
use kiln_store::{MetaOverride, Store};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Store,
    built: std::cell::Cell<usize>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        Env {
            dir,
            store,
            built: std::cell::Cell::new(0),
        }
    }

    /// A scratch directory under the test's temp dir.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Builds a package: `fill` populates a fresh directory, which is then
    /// ingested (with `meta`) and materialized from the store.
    pub fn package(&self, name: &str, meta: &[MetaOverride], fill: impl FnOnce(&Path)) -> Package {
        let n = self.built.get();
        self.built.set(n + 1);
        let src = self.dir.path().join(format!("src{n}-{name}"));
        fs::create_dir_all(&src).unwrap();
        fill(&src);
        let manifest = self.store.ingest_tree(&src, meta).unwrap();
        let digest = self.store.put_manifest(&manifest).unwrap();
        let files = self.store.materialize(&digest).unwrap();
        Package {
            name: name.into(),
            version: "1.0".into(),
            manifest,
            files,
            state: vec![],
            units: vec![],
        }
    }
}

/// Writes `path` (creating parents) with `content` and `mode`.
pub fn write(root: &Path, path: &str, content: &[u8], mode: u32) {
    let p = root.join(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn link(root: &Path, path: &str, target: &str) {
    let p = root.join(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

pub fn mkdir(root: &Path, path: &str, mode: u32) {
    let p = root.join(path);
    fs::create_dir_all(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Copies a host file (following symlinks) into a package directory.
pub fn copy(root: &Path, path: &str, from: &str) {
    let p = root.join(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::copy(from, &p).unwrap();
}

/// Compiles C source with `cc` (e.g. `aarch64-linux-gnu-gcc`) into `out`.
pub fn cc(cc: &str, source: &str, out: &Path, args: &[&str]) {
    let dir = out.parent().unwrap();
    fs::create_dir_all(dir).unwrap();
    let src = dir.join(format!("{}.c", out.file_name().unwrap().to_string_lossy()));
    fs::write(&src, source).unwrap();
    let status = Command::new(cc)
        .arg("-O1")
        .arg("-o")
        .arg(out)
        .arg(&src)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{cc} failed for {}", out.display());
    fs::remove_file(&src).unwrap();
}

pub fn os(arch: &str) -> OsInfo {
    OsInfo {
        id: "kiln".into(),
        name: "Kiln".into(),
        version: "0.1.0".into(),
        board: "raspberrypi4-64".into(),
        arch: arch.into(),
    }
}

/// Whether `tool` can be run.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}
