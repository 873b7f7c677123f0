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

/// What a C build for the target can find: the target's headers and
/// libraries only in /sysroot (the board's C library and the build
/// dependencies), never the build environment's, for the cross compiler
/// and for the native one alike (a native gcc in /usr would also search
/// /usr/lib: the boards' is relocated, recipes/target-gcc.rhai). The build
/// environment has libelf's and zlib's headers and libraries (for the
/// kernel's host tools); a target build must not find them.
#[test]
fn c_builds_find_the_target_only_in_the_sysroot() {
    let tmp = tempfile::Builder::new()
        .prefix("kiln-sysroot-")
        .tempdir()
        .expect("tempdir");
    let project = tmp.path();
    copy_project(project);
    std::fs::write(
        project.join("recipes/sysroot-probe.rhai"),
        shell_recipe(
            "sysroot-probe",
            &[],
            &[
                "$CC -print-sysroot > /out/sysroot",
                "echo '#include <stdio.h>' | $CC $CPPFLAGS -E -v -x c - -o /dev/null 2> /out/search",
                "printf '#include <stdio.h>\\nint main(void) { puts(\"hi\"); return 0; }\\n' > hi.c",
                "$CC $CFLAGS $LDFLAGS hi.c -o /out/hi",
                "$CC -print-file-name=libc.so > /out/libc",
                "test -e /usr/include/gelf.h && echo yes > /out/env-has-gelf",
                "if echo '#include <gelf.h>' | $CC $CPPFLAGS -E -x c - -o /dev/null 2> /out/gelf; then echo found > /out/gelf-found; fi",
                "if $CC $CFLAGS $LDFLAGS hi.c -lz -o /tmp/hi-z 2> /out/libz; then echo linked > /out/libz-found; fi",
            ],
        ),
    )
    .expect("write probe");
    let store = repo().join("target/kiln-test-store");
    for (board, triple) in [
        ("qemu-x86_64", "x86_64-linux-gnu"),
        ("qemu-aarch64", "aarch64-linux-gnu"),
    ] {
        let o = kiln_in(
            project,
            &store,
            &["--offline", "build", "--board", board, "sysroot-probe"],
        );
        assert!(o.status.success(), "{board}: {}", stderr(&o));
        let out = project.join(format!("out/{board}/sysroot-probe"));
        let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
        assert_eq!(read("sysroot").trim(), "/sysroot", "{board}");

        let search = read("search");
        let dirs: Vec<&str> = search
            .lines()
            .skip_while(|l| !l.starts_with("#include <...> search starts here:"))
            .skip(1)
            .take_while(|l| !l.starts_with("End of search list."))
            .map(str::trim)
            .collect();
        assert!(dirs.contains(&"/sysroot/usr/include"), "{board}: {search}");
        for d in &dirs {
            // gcc's own headers (stddef.h, ...) live with the compiler, in
            // its lib/gcc*/<triple>/<version>/include.
            let own = normalize(d);
            let own = [
                "/usr/lib/gcc",
                "/deps/target-gcc/usr/lib/target-gcc/lib/gcc",
            ]
            .iter()
            .any(|p| own.starts_with(p))
                && own.ends_with("/include")
                && own.contains(&format!("/{triple}/"));
            assert!(
                d.starts_with("/sysroot/") || own,
                "{board}: the compiler searches {d} for headers:\n{search}"
            );
        }
        let libc = read("libc");
        assert!(
            libc.starts_with("/sysroot/") && libc.trim().ends_with(&format!("/{triple}/libc.so")),
            "{board}: gcc would link {libc}"
        );
        assert!(out.join("hi").exists(), "{board}: hello world did not link");

        assert_eq!(
            read("env-has-gelf").trim(),
            "yes",
            "{board}: the probe is moot"
        );
        assert!(
            !out.join("gelf-found").exists(),
            "{board}: the environment's gelf.h was found"
        );
        assert!(
            read("gelf").contains("gelf.h: No such file"),
            "{board}: {}",
            read("gelf")
        );
        assert!(
            !out.join("libz-found").exists(),
            "{board}: the environment's libz was linked"
        );
        assert!(
            read("libz").contains("cannot find -lz"),
            "{board}: {}",
            read("libz")
        );
    }
}

/// `path` with `.` and `..` resolved by name, as a reader would.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}
