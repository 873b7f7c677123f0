//! Helpers shared by the integration tests: throwaway projects and stores,
//! and running the real `kiln` binary against them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (tests/ is one level below it).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("compose/ has a parent")
        .to_path_buf()
}

/// A project in a temporary directory with the real toolchain module and a
/// host (x86_64) board, plus whatever recipes a test writes.
pub struct TestProject {
    pub dir: tempfile::TempDir,
    pub store: tempfile::TempDir,
}

pub const BOARD: &str = r#"
import "toolchains" as tc;
#{
    name: "test-board",
    target: #{ arch: "x86_64", triple: "x86_64-linux-gnu", rust_triple: "x86_64-unknown-linux-gnu", cpu_flags: [] },
    toolchain: tc::gnu("x86_64-linux-gnu", "x86_64-unknown-linux-gnu"),
    packages: PACKAGES,
}
"#;

impl TestProject {
    pub fn new() -> TestProject {
        let dir = tempfile::Builder::new()
            .prefix("kiln-proj-")
            .tempdir()
            .expect("tempdir");
        let store = tempfile::Builder::new()
            .prefix("kiln-store-")
            .tempdir()
            .expect("tempdir");
        let p = TestProject { dir, store };
        p.write("kiln.toml", "default_board = \"test-board\"\n");
        let tc = std::fs::read_to_string(repo().join("recipes/lib/toolchains.rhai"))
            .expect("toolchains module");
        p.write("recipes/lib/toolchains.rhai", &tc);
        p
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// Writes `boards/test-board.rhai` building `packages`.
    pub fn board(&self, packages: &[&str]) {
        let list = format!(
            "[{}]",
            packages
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.write("boards/test-board.rhai", &BOARD.replace("PACKAGES", &list));
    }

    pub fn kiln(&self, args: &[&str]) -> Output {
        kiln_in(self.root(), self.store.path(), args)
    }
}

pub fn kiln_in(project: &Path, store: &Path, args: &[&str]) -> Output {
    kiln_in_env(project, store, args, &[])
}

/// `kiln_in` with extra environment variables.
pub fn kiln_in_env(project: &Path, store: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--project")
        .arg(project)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("KILN_BOARD")
        .env("CI", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run kiln")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The JSON events of a `kiln --json build`.
pub fn events(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// recipe → event kind ("cached", "built", "fetched", "failed", "skipped").
pub fn outcomes(o: &Output) -> std::collections::BTreeMap<String, String> {
    events(o)
        .into_iter()
        .filter_map(|e| {
            let kind = e["event"].as_str()?.to_string();
            let recipe = e["recipe"].as_str()?.to_string();
            matches!(
                kind.as_str(),
                "cached" | "built" | "fetched" | "failed" | "skipped"
            )
            .then_some((recipe, kind))
        })
        .collect()
}

/// A recipe with only local, shell-run steps (no downloads, no compiler).
pub fn shell_recipe(name: &str, deps: &[&str], steps: &[&str]) -> String {
    let deps = deps
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let steps = steps
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(",\n        ");
    format!(
        "#{{\n    name: \"{name}\",\n    version: \"1.0\",\n    build_deps: [{deps}],\n    steps: [\n        {steps}\n    ],\n}}\n"
    )
}

/// A shell recipe that a board can name as its bootloader: it provides
/// A/B booting and reads MBR disks.
pub fn bootloader_recipe(name: &str, step: &str) -> String {
    shell_recipe(name, &[], &[step]).replace(
        "    steps:",
        "    provides: [\"ab-boot\", \"table:mbr\"],\n    steps:",
    )
}

/// A copy of the repository's project (kiln.toml, recipes, boards) at
/// `dest`, so that a test never writes into the checkout's `out/`.
pub fn copy_project(dest: &Path) {
    copy_from_repo(dest, &["kiln.toml", "recipes", "boards"]);
}

/// Copies `items` (files or directories of the repository) into `dest`.
pub fn copy_from_repo(dest: &Path, items: &[&str]) {
    std::fs::create_dir_all(dest).expect("mkdir");
    for item in items {
        let st = Command::new("cp")
            .arg("-a")
            .arg(repo().join(item))
            .arg(dest)
            .status()
            .expect("cp");
        assert!(st.success(), "copying {item}");
    }
}

/// The sha256 of a file, as hex.
pub fn sha256(path: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex::encode(sha2::Sha256::digest(bytes))
}

/// name → derivation hash from `kiln graph --format json`.
pub fn derivations(
    project: &Path,
    store: &Path,
    board: &str,
    env: &[(&str, &str)],
) -> std::collections::BTreeMap<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--project"])
        .arg(project)
        .arg("--store")
        .arg(store)
        .args(["graph", "--format", "json", "--board", board])
        .envs(env.iter().copied())
        .current_dir(project)
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("graph json");
    v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_string(),
                n["derivation"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
