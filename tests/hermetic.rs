//! A build environment from locked Debian packages is all a sandbox sees:
//! nothing of the build host's /usr. The environment is real: a small
//! package list resolved by apt (`scripts/lock-debs`) and fetched from the
//! Debian archive, as a user's would be.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const BOARD: &str = r#"
import "toolchains" as tc;
#{
    name: "env-board",
    target: #{ arch: "x86_64", triple: "x86_64-linux-gnu", rust_triple: "x86_64-unknown-linux-gnu", cpu_flags: [] },
    toolchain: tc::locked("x86_64-linux-gnu", "x86_64-unknown-linux-gnu", "mini-env"),
    packages: ["probe", "other"],
}
"#;

/// Locks `packages` for the project's `mini-env` with scripts/lock-debs.
fn lock(p: &TestProject, packages: &[&str]) {
    p.write(
        "recipes/mini-env/packages",
        &format!("{}\n", packages.join("\n")),
    );
    let o = Command::new(repo().join("scripts/lock-debs"))
        .arg(p.root().join("recipes/mini-env/packages"))
        .output()
        .expect("run scripts/lock-debs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_sandbox_sees_the_locked_environment_and_nothing_of_the_host() {
    // What the host has and the environment must not show.
    for host_only in ["/usr/sbin/nginx", "/usr/bin/qemu-img"] {
        assert!(
            Path::new(host_only).exists(),
            "{host_only} must exist on the build host for this test (scripts/setup installs it)"
        );
    }
    let p = TestProject::new();
    p.write("kiln.toml", "default_board = \"env-board\"\n");
    p.write("boards/env-board.rhai", BOARD);
    p.write(
        "recipes/mini-env.rhai",
        "#{ name: \"mini-env\", version: \"1\", debs: \"debian.lock\" }",
    );
    // binutils: the image strips its ELF files with the environment's strip.
    lock(&p, &["dash", "coreutils", "grep", "binutils"]);
    p.write(
        "recipes/probe.rhai",
        &shell_recipe(
            "probe",
            &[],
            &[
                "ls /usr/bin > /out/bins",
                "for p in /usr/sbin/nginx /usr/bin/qemu-img; do if [ -e $p ]; then echo $p > /out/leak; fi; done",
                "if nginx -v 2>/dev/null || qemu-img --version 2>/dev/null; then echo ran > /out/ran; fi",
                "grep -c . /out/bins > /out/count",
            ],
        ),
    );
    p.write(
        "recipes/other.rhai",
        &shell_recipe("other", &[], &["echo other > /out/other"]),
    );
    let o = p.kiln(&["--json", "build", "env-board"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let probe = p.root().join("out/env-board/probe");
    let bins = std::fs::read_to_string(probe.join("bins")).expect("bins");
    for tool in ["dash", "ls", "grep"] {
        assert!(
            bins.lines().any(|l| l == tool),
            "{tool} not in the environment: {bins}"
        );
    }
    assert!(!probe.join("leak").exists(), "the host's /usr is visible");
    assert!(!probe.join("ran").exists(), "a host program ran");

    // One package more in the lock: a new environment, so new keys for
    // every recipe that builds with it (and the image), and nothing else.
    let before = derivations(p.root(), p.store.path(), "env-board", &[]);
    lock(&p, &["dash", "coreutils", "grep", "binutils", "sed"]);
    let after = derivations(p.root(), p.store.path(), "env-board", &[]);
    let changed: Vec<&String> = before.keys().filter(|k| before[*k] != after[*k]).collect();
    assert_eq!(changed, ["image", "mini-env", "other", "probe"]);
}
