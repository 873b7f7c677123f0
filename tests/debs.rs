//! A locked set of Debian binary packages is a node like the others: the
//! third kind of node, added as one rule (`kiln-rules/src/debs.rs`) with no
//! change to the engine or the CLI. Real `.deb` files, made by dpkg-deb,
//! served from a local mirror.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Builds `<dir>/<name>_<version>_amd64.deb` holding `/usr/bin/<name>`, a
/// script that prints `text`; returns its path and sha256.
fn make_deb(dir: &Path, name: &str, version: &str, text: &str) -> (std::path::PathBuf, String) {
    let root = dir.join(format!("{name}-{version}-root"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir");
    std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    std::fs::write(
        root.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: Kiln <kiln@example.org>\nDescription: test package\n"),
    )
    .expect("control");
    let bin = root.join("usr/bin").join(name);
    std::fs::write(&bin, format!("#!/bin/sh\necho {text}\n")).expect("bin");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let deb = dir.join(format!("{name}_{version}_amd64.deb"));
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run dpkg-deb (scripts/setup installs dpkg-dev)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sha = sha256(&deb);
    (deb, sha)
}

/// Puts `deb` in the mirror under its hash, as `scripts/seed-sources` does.
fn mirror(mirror: &Path, deb: &Path, sha: &str) {
    let dir = mirror.join("by-hash/sha256");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(deb, dir.join(sha)).expect("copy");
}

fn lock(p: &TestProject, entries: &[(&str, &str, &str)]) {
    let packages: Vec<serde_json::Value> = entries
        .iter()
        .map(|(name, version, sha)| {
            serde_json::json!({
                "package": name, "version": version, "arch": "amd64",
                "url": format!("http://deb.invalid/debian/pool/main/t/{name}/{name}_{version}_amd64.deb"),
                "sha256": sha,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "generated_by": "scripts/lock-debs recipes/env/packages",
        "packages": packages,
    });
    p.write(
        "recipes/env/debian.lock",
        &serde_json::to_string_pretty(&doc).expect("json"),
    );
}

#[test]
fn a_locked_package_set_is_unpacked_cached_and_keyed_by_its_hashes() {
    let p = TestProject::new();
    let debs = tempfile::tempdir().expect("tmp");
    let mirror_dir = tempfile::tempdir().expect("tmp");
    let (a, a_sha) = make_deb(debs.path(), "env-a", "1.0", "hello-a");
    let (b, b_sha) = make_deb(debs.path(), "env-b", "1.0", "hello-b");
    mirror(mirror_dir.path(), &a, &a_sha);
    mirror(mirror_dir.path(), &b, &b_sha);
    lock(&p, &[("env-a", "1.0", &a_sha), ("env-b", "1.0", &b_sha)]);
    p.write(
        "recipes/env.rhai",
        "#{ name: \"env\", version: \"bookworm\", debs: \"debian.lock\" }",
    );
    p.write(
        "recipes/tool.rhai",
        &shell_recipe(
            "tool",
            &["env"],
            &[
                "/deps/env/usr/bin/env-a > /out/a",
                "/deps/env/usr/bin/env-b > /out/b",
            ],
        ),
    );
    p.write(
        "recipes/other.rhai",
        &shell_recipe("other", &[], &["echo other > /out/other"]),
    );
    p.board(&["tool", "other"]);
    let mirror_arg = mirror_dir.path().display().to_string();
    let build = |p: &TestProject| {
        p.kiln(&[
            "--offline",
            "--mirror",
            &mirror_arg,
            "--json",
            "build",
            "test-board",
        ])
    };

    let first = build(&p);
    assert!(first.status.success(), "{}", stderr(&first));
    let o = outcomes(&first);
    assert_eq!(o.get("env").map(String::as_str), Some("built"), "{o:?}");
    assert_eq!(o.get("tool").map(String::as_str), Some("built"), "{o:?}");
    // Asked for by name, it is published like a recipe: linked, and its
    // output's path printed.
    let named = p.kiln(&["--offline", "--mirror", &mirror_arg, "build", "env"]);
    assert!(named.status.success(), "{}", stderr(&named));
    let env = p.root().join("out/test-board/env");
    assert_eq!(
        std::fs::canonicalize(&env).expect("link"),
        std::path::PathBuf::from(stdout(&named).trim())
    );
    let a_bin = env.join("usr/bin/env-a");
    assert!(a_bin.is_file(), "{} missing", a_bin.display());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&a_bin)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the package's executable bit is kept");
    assert!(
        !env.join("DEBIAN").exists(),
        "only the data member is unpacked"
    );
    let tool = p.root().join("out/test-board/tool");
    assert_eq!(
        std::fs::read_to_string(tool.join("b")).expect("b"),
        "hello-b\n"
    );
    // The engine keeps its log and its inputs like any node's.
    let log = p.kiln(&["log", "env"]);
    assert!(log.status.success(), "{}", stderr(&log));
    assert!(
        stdout(&log).contains("==> [step 2/2] env-b 1.0 (amd64)"),
        "{}",
        stdout(&log)
    );
    let show = p.kiln(&["show", "env"]);
    assert!(show.status.success(), "{}", stderr(&show));
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("show");
    assert_eq!(shown["package_set"]["debs"][1]["sha256"], b_sha.as_str());

    let again = build(&p);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        outcomes(&again).values().all(|v| v == "cached"),
        "{:?}",
        outcomes(&again)
    );

    // A new version of one locked package: a new key for the set, for the
    // recipe that builds with it and for the image; nothing else.
    let before = derivations(p.root(), p.store.path(), "test-board", &[]);
    let (b2, b2_sha) = make_deb(debs.path(), "env-b", "1.1", "hello-b2");
    mirror(mirror_dir.path(), &b2, &b2_sha);
    lock(&p, &[("env-a", "1.0", &a_sha), ("env-b", "1.1", &b2_sha)]);
    let after = derivations(p.root(), p.store.path(), "test-board", &[]);
    let changed: Vec<&String> = before.keys().filter(|k| before[*k] != after[*k]).collect();
    assert_eq!(changed, ["env", "image", "tool"]);
    let why = p.kiln(&["why", "env"]);
    assert!(
        stdout(&why).contains("packages[1].sha256"),
        "{}",
        stdout(&why)
    );
    let third = build(&p);
    assert!(third.status.success(), "{}", stderr(&third));
    let o = outcomes(&third);
    assert_eq!(o.get("env").map(String::as_str), Some("built"), "{o:?}");
    assert_eq!(o.get("other").map(String::as_str), Some("cached"), "{o:?}");
    assert_eq!(
        std::fs::read_to_string(p.root().join("out/test-board/tool/b")).expect("b"),
        "hello-b2\n"
    );
}

#[test]
fn a_bad_lock_or_a_missing_package_says_which_and_what_to_do() {
    let p = TestProject::new();
    p.write(
        "recipes/env.rhai",
        "#{ name: \"env\", version: \"1\", debs: \"debian.lock\", steps: [\"true\"] }",
    );
    p.write(
        "recipes/env/debian.lock",
        r#"{ "packages": [
             { "package": "make", "version": "4.3", "arch": "amd64",
               "url": "http://deb.invalid/make.deb", "sha256": "abc" } ] }"#,
    );
    p.board(&["env"]);
    let o = p.kiln(&["check"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("recipes/env.rhai:1:"), "{err}");
    assert!(
        err.contains("unpacks its locked packages; it has no `steps`"),
        "{err}"
    );
    assert!(
        err.contains("package 0 (`make`): sha256 `abc` is not 64 hex digits"),
        "{err}"
    );

    // A lock whose package the mirror does not have: the build fails for
    // that node, naming the package and where it was looked for.
    p.write(
        "recipes/env.rhai",
        "#{ name: \"env\", version: \"1\", debs: \"debian.lock\" }",
    );
    let sha = "0".repeat(64);
    lock(&p, &[("make", "4.3", &sha)]);
    let empty = tempfile::tempdir().expect("tmp");
    let mirror_arg = empty.path().display().to_string();
    let o = p.kiln(&["--offline", "--mirror", &mirror_arg, "build", "env"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("package set `env`: make 4.3 (http://deb.invalid/debian/pool/main/t/make/make_4.3_amd64.deb)"),
        "{err}"
    );
    assert!(
        err.contains("`scripts/lock-debs recipes/env/packages` refreshes the lock"),
        "{err}"
    );
    assert!(err.contains("error: 1 package set failed: env"), "{err}");
}

/// `exclude` leaves paths out of a package set (a file, or what a glob in
/// the last component names, directories with everything below them), is
/// part of the set's key, and a path that names nothing fails the build
/// with the path, so a lock refresh that moved it is noticed.
#[test]
fn exclude_leaves_paths_out_and_is_keyed() {
    let p = TestProject::new();
    let debs = tempfile::tempdir().expect("tmp");
    let mirror_dir = tempfile::tempdir().expect("tmp");
    let (a, a_sha) = make_deb(debs.path(), "env-a", "1.0", "hello-a");
    let (b, b_sha) = make_deb(debs.path(), "env-b", "1.0", "hello-b");
    mirror(mirror_dir.path(), &a, &a_sha);
    mirror(mirror_dir.path(), &b, &b_sha);
    lock(&p, &[("env-a", "1.0", &a_sha), ("env-b", "1.0", &b_sha)]);
    let set = |exclude: &str| {
        format!("#{{ name: \"env\", version: \"1\", debs: \"debian.lock\", exclude: [{exclude}] }}")
    };
    p.write("recipes/env.rhai", &set(""));
    p.board(&["env"]);
    let mirror_arg = mirror_dir.path().display().to_string();
    let build = |p: &TestProject| p.kiln(&["--offline", "--mirror", &mirror_arg, "build", "env"]);
    let env = p.root().join("out/test-board/env");

    let before = derivations(p.root(), p.store.path(), "test-board", &[]);
    p.write("recipes/env.rhai", &set("\"/usr/bin/env-b\""));
    let after = derivations(p.root(), p.store.path(), "test-board", &[]);
    assert_ne!(before["env"], after["env"], "exclude is in the key");
    let o = build(&p);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(env.join("usr/bin/env-a").is_file());
    assert!(!env.join("usr/bin/env-b").exists(), "env-b was excluded");

    p.write("recipes/env.rhai", &set("\"/usr/b*\""));
    let o = build(&p);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(env.join("usr").is_dir());
    assert!(!env.join("usr/bin").exists(), "the glob took the directory");

    p.write("recipes/env.rhai", &set("\"/usr/bin/nothing-*\""));
    let o = build(&p);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "package set `env`: `exclude` names /usr/bin/nothing-*, which none of its packages has"
        ),
        "{err}"
    );

    // Only a package set has anything to exclude.
    p.write(
        "recipes/env.rhai",
        "#{ name: \"env\", version: \"1\", exclude: [\"/usr/share/doc\"], steps: [\"true\"] }",
    );
    let o = p.kiln(&["check"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("`exclude` leaves paths out of a package set; this recipe has no `debs`"),
        "{}",
        stderr(&o)
    );
}
