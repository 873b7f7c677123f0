//! Keys depend on content, never on where or when or by whom.

mod common;

use std::path::Path;

use common::*;

/// Copies the project's own recipes and boards into a fresh directory.
fn checkout(dest: &Path) {
    let repo = repo();
    copy_dir(&repo.join("recipes"), &dest.join("recipes"));
    copy_dir(&repo.join("boards"), &dest.join("boards"));
    std::fs::copy(repo.join("kiln.toml"), dest.join("kiln.toml")).expect("copy kiln.toml");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let name = e.file_name();
        if name == "target" {
            continue;
        }
        let ty = e.file_type().expect("file type");
        if ty.is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else if ty.is_symlink() {
            let t = std::fs::read_link(e.path()).expect("readlink");
            std::os::unix::fs::symlink(t, to.join(&name)).expect("symlink");
        } else {
            std::fs::copy(e.path(), to.join(&name)).expect("copy");
        }
    }
}

#[test]
fn keys_are_stable_across_checkouts_stores_users_and_runs() {
    let a = tempfile::Builder::new()
        .prefix("kiln-checkout-a-")
        .tempdir()
        .expect("tmp");
    let b = tempfile::Builder::new()
        .prefix("other-place-b-")
        .tempdir()
        .expect("tmp");
    checkout(a.path());
    checkout(&b.path().join("deeper/dir"));
    let s1 = tempfile::tempdir().expect("tmp");
    let s2 = tempfile::tempdir().expect("tmp");
    for board in ["qemu-aarch64", "qemu-x86_64"] {
        let one = derivations(
            a.path(),
            s1.path(),
            board,
            &[("USER", "alice"), ("HOSTNAME", "one"), ("TZ", "UTC")],
        );
        let two = derivations(
            &b.path().join("deeper/dir"),
            s2.path(),
            board,
            &[
                ("USER", "bob"),
                ("HOSTNAME", "two"),
                ("TZ", "Asia/Tokyo"),
                ("LC_ALL", "de_DE.UTF-8"),
            ],
        );
        let again = derivations(a.path(), s1.path(), board, &[]);
        assert!(!one.is_empty());
        assert!(one.values().all(|h| h.len() == 64), "{one:?}");
        assert_eq!(one, two, "{board}: keys differ between checkouts");
        assert_eq!(one, again, "{board}: keys differ between runs");
    }
    // Touching a file's time changes nothing either.
    let f = a.path().join("recipes/busybox/busybox.config");
    if f.exists() {
        let before = derivations(a.path(), s1.path(), "qemu-x86_64", &[]);
        let text = std::fs::read(&f).expect("read");
        std::fs::write(&f, text).expect("rewrite");
        assert_eq!(before, derivations(a.path(), s1.path(), "qemu-x86_64", &[]));
    }
}

#[test]
fn a_changed_step_changes_exactly_its_dependents() {
    let p = TestProject::new();
    p.board(&["app", "tool"]);
    p.write(
        "recipes/base.rhai",
        &shell_recipe("base", &[], &["echo base > /out/base"]),
    );
    p.write(
        "recipes/lib.rhai",
        &shell_recipe("lib", &["base"], &["echo lib > /out/lib"]),
    );
    p.write(
        "recipes/app.rhai",
        &shell_recipe("app", &["lib"], &["echo app > /out/app"]),
    );
    p.write(
        "recipes/tool.rhai",
        &shell_recipe("tool", &["base"], &["echo tool > /out/tool"]),
    );
    let before = derivations(p.root(), p.store.path(), "test-board", &[]);
    // Four recipes and the board's image node.
    assert_eq!(before.len(), 5);

    p.write(
        "recipes/lib.rhai",
        &shell_recipe("lib", &["base"], &["echo lib2 > /out/lib"]),
    );
    let after = derivations(p.root(), p.store.path(), "test-board", &[]);
    let changed: Vec<&String> = before.keys().filter(|k| before[*k] != after[*k]).collect();
    // The image depends on every package, so it is among the dependents.
    assert_eq!(changed, vec!["app", "image", "lib"]);

    // A change that can't affect the output (licence, state paths, a step's
    // name, the source URL) changes no key.
    p.write(
        "recipes/lib.rhai",
        "#{ name: \"lib\", version: \"1.0\", license: \"MIT\", state: [\"/var/lib/x\"], build_deps: [\"base\"], steps: [#{ name: \"renamed\", run: \"echo lib2 > /out/lib\" }] }",
    );
    let same = derivations(p.root(), p.store.path(), "test-board", &[]);
    assert_eq!(after, same);

    // The target changes every key.
    let aarch = BOARD
        .replace("PACKAGES", "[\"app\", \"tool\"]")
        .replace("arch: \"x86_64\", triple: \"x86_64-linux-gnu\", rust_triple: \"x86_64-unknown-linux-gnu\"", "arch: \"aarch64\", triple: \"aarch64-linux-gnu\", rust_triple: \"aarch64-unknown-linux-gnu\"")
        .replace("tc::gnu(\"x86_64-linux-gnu\", \"x86_64-unknown-linux-gnu\")", "tc::gnu(\"aarch64-linux-gnu\", \"aarch64-unknown-linux-gnu\")");
    p.write("boards/test-board.rhai", &aarch);
    let other = derivations(p.root(), p.store.path(), "test-board", &[]);
    assert!(
        other.keys().all(|k| other[k] != same[k]),
        "{other:?} vs {same:?}"
    );
}
