//! The ELF closure and architecture checks, and stripping, on programs
//! compiled for real with the host and aarch64 cross compilers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cc, copy, have, link, os, Env};
use kiln_fstree::{Data, Kind};
use kiln_rootfs::{assemble, strip, Options, Package, RootfsError};

const CROSS: &str = "aarch64-linux-gnu-gcc";
const SYSROOT: &str = "/usr/aarch64-linux-gnu/lib";

const HELLO: &str = r#"
#include <stdio.h>
int main(void) { puts("hello from kiln"); return 0; }
"#;
const ZPROG: &str = r#"
const char *zlibVersion(void);
#include <stdio.h>
int main(void) { puts(zlibVersion()); return 0; }
"#;
const LIBZ: &str = r#"const char *zlibVersion(void) { return "1.2.13-kiln"; }"#;

/// Compiled programs, shared by a test's packages.
struct Built {
    hello: PathBuf,
    zprog: PathBuf,
    libz: PathBuf,
}

/// A stand-in libz (only its soname matters) and two programs, one of
/// which needs it.
fn build(env: &Env) -> Built {
    let dir = env.scratch("build");
    let libz = dir.join("libz.so.1");
    cc(
        CROSS,
        LIBZ,
        &libz,
        &["-shared", "-fPIC", "-Wl,-soname,libz.so.1"],
    );
    let hello = dir.join("hello");
    cc(CROSS, HELLO, &hello, &[]);
    let zprog = dir.join("zprog");
    let l = format!("-L{}", dir.display());
    cc(CROSS, ZPROG, &zprog, &[&l, "-l:libz.so.1"]);
    Built { hello, zprog, libz }
}

fn app(env: &Env, b: &Built) -> Package {
    env.package("app", &[], |d| {
        copy(d, "usr/bin/hello", b.hello.to_str().unwrap());
        copy(d, "usr/bin/zprog", b.zprog.to_str().unwrap());
    })
}

/// The cross toolchain's glibc as a package: the dynamic linker where the
/// binaries look for it, libc in the multiarch directory.
fn sysroot(env: &Env) -> Package {
    env.package("glibc", &[], |d| {
        copy(
            d,
            "usr/lib/ld-linux-aarch64.so.1",
            &format!("{SYSROOT}/ld-linux-aarch64.so.1"),
        );
        copy(
            d,
            "usr/lib/aarch64-linux-gnu/libc.so.6",
            &format!("{SYSROOT}/libc.so.6"),
        );
        link(d, "lib", "usr/lib");
    })
}

fn zlib(env: &Env, b: &Built) -> Package {
    env.package("zlib", &[], |d| {
        copy(
            d,
            "usr/lib/aarch64-linux-gnu/libz.so.1.2.13",
            b.libz.to_str().unwrap(),
        );
        link(d, "usr/lib/aarch64-linux-gnu/libz.so.1", "libz.so.1.2.13");
    })
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn missing_library_lists_it_with_the_binaries_needing_it() {
    let env = Env::new();
    let b = build(&env);
    let err = assemble(
        &[app(&env, &b), sysroot(&env)],
        &os("aarch64"),
        &Options::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    let RootfsError::Unresolved(u) = err else {
        panic!("{msg}");
    };
    assert!(u.interpreters.is_empty(), "{msg}");
    assert_eq!(
        u.libraries,
        BTreeMap::from([("libz.so.1".to_string(), set(&["/usr/bin/zprog"]))])
    );
    assert!(
        msg.contains("library libz.so.1, needed by:\n    /usr/bin/zprog"),
        "{msg}"
    );
}

#[test]
fn without_a_libc_everything_is_listed_grouped_and_sorted() {
    let env = Env::new();
    let b = build(&env);
    let err = assemble(&[app(&env, &b)], &os("aarch64"), &Options::default()).unwrap_err();
    let RootfsError::Unresolved(u) = err else {
        panic!("{err}");
    };
    let both = set(&["/usr/bin/hello", "/usr/bin/zprog"]);
    assert_eq!(
        u.interpreters,
        BTreeMap::from([("/lib/ld-linux-aarch64.so.1".to_string(), both.clone())])
    );
    assert_eq!(
        u.libraries,
        BTreeMap::from([
            ("libc.so.6".to_string(), both),
            ("libz.so.1".to_string(), set(&["/usr/bin/zprog"])),
        ])
    );
    assert_eq!(
        u.to_string(),
        "the root filesystem cannot run some of its programs: 1 missing interpreter(s), \
         2 missing shared librar(ies)\n  \
         interpreter /lib/ld-linux-aarch64.so.1, needed by:\n    /usr/bin/hello\n    /usr/bin/zprog\n  \
         library libc.so.6, needed by:\n    /usr/bin/hello\n    /usr/bin/zprog\n  \
         library libz.so.1, needed by:\n    /usr/bin/zprog"
    );
}

#[test]
fn complete_closure_passes() {
    let env = Env::new();
    let b = build(&env);
    let pkgs = [app(&env, &b), sysroot(&env), zlib(&env, &b)];
    let out = assemble(&pkgs, &os("aarch64"), &Options::default()).unwrap();
    // hello, zprog, ld.so, libc, libz.
    assert_eq!(out.report.elf_checked, 5);
}

#[test]
fn origin_runpath_is_followed() {
    let env = Env::new();
    let b = build(&env);
    let dir = env.scratch("rpath");
    let zprog = dir.join("zprog");
    let l = format!("-L{}", b.libz.parent().unwrap().display());
    cc(
        CROSS,
        ZPROG,
        &zprog,
        &[
            &l,
            "-l:libz.so.1",
            "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib/app",
        ],
    );
    let with_lib = |libdir: &'static str| {
        let zprog = zprog.clone();
        let libz = b.libz.clone();
        env.package(
            &format!("app-{}", libdir.replace('/', "-")),
            &[],
            move |d| {
                copy(d, "opt/app/bin/zprog", zprog.to_str().unwrap());
                copy(d, &format!("{libdir}/libz.so.1"), libz.to_str().unwrap());
            },
        )
    };
    let good = with_lib("opt/app/lib/app");
    assemble(&[good, sysroot(&env)], &os("aarch64"), &Options::default()).unwrap();
    let bad = with_lib("opt/lib/app");
    let err = assemble(&[bad, sysroot(&env)], &os("aarch64"), &Options::default()).unwrap_err();
    assert!(
        matches!(&err, RootfsError::Unresolved(u)
            if u.libraries.keys().collect::<Vec<_>>() == ["libz.so.1"]),
        "{err}"
    );
}

#[test]
fn a_host_binary_in_an_aarch64_image_is_named() {
    let env = Env::new();
    let b = build(&env);
    let host = env.scratch("host").join("tool");
    cc("gcc", HELLO, &host, &[]);
    let stray = env.package("stray", &[], |d| {
        copy(d, "usr/bin/tool", host.to_str().unwrap());
        // Firmware for another processor is not checked.
        copy(d, "usr/lib/firmware/dsp.elf", host.to_str().unwrap());
    });
    let pkgs = [app(&env, &b), sysroot(&env), zlib(&env, &b), stray];
    let err = assemble(&pkgs, &os("aarch64"), &Options::default()).unwrap_err();
    match &err {
        RootfsError::WrongArch { expected, files } => {
            assert_eq!(expected, "aarch64");
            assert_eq!(
                files,
                &BTreeMap::from([(
                    "/usr/bin/tool".to_string(),
                    "x86_64, 64-bit little-endian".to_string()
                )])
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("/usr/bin/tool: x86_64"), "{err}");
    // The check can be turned off.
    let opts = Options {
        check_elf: false,
        ..Options::default()
    };
    assert_eq!(
        assemble(&pkgs, &os("aarch64"), &opts)
            .unwrap()
            .report
            .elf_checked,
        0
    );
}

#[test]
fn x86_64_image_with_the_host_glibc() {
    let env = Env::new();
    let host = env.scratch("host").join("hello");
    cc("gcc", HELLO, &host, &[]);
    let pkg = env.package("hello", &[], |d| {
        copy(d, "usr/bin/hello", host.to_str().unwrap());
        copy(
            d,
            "lib64/ld-linux-x86-64.so.2",
            "/lib64/ld-linux-x86-64.so.2",
        );
        copy(
            d,
            "lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libc.so.6",
        );
    });
    let out = assemble(&[pkg], &os("x86_64"), &Options::default()).unwrap();
    assert_eq!(out.report.elf_checked, 3);
}

fn digest(p: &Path) -> blake3::Hash {
    blake3::hash(&fs::read(p).unwrap())
}

fn file_path(tree: &kiln_fstree::Tree, path: &str) -> PathBuf {
    match &tree.get(path).unwrap().kind {
        Kind::File(Data::Path(p)) => p.clone(),
        other => panic!("{path}: {other:?}"),
    }
}

#[test]
fn strip_is_deterministic_and_the_result_runs() {
    let env = Env::new();
    let b = build(&env);
    let pkgs = [app(&env, &b), sysroot(&env), zlib(&env, &b)];
    let originals: Vec<(PathBuf, blake3::Hash)> = pkgs
        .iter()
        .flat_map(|p| {
            p.manifest
                .entries
                .iter()
                .filter(|e| matches!(e.kind, kiln_store::EntryKind::File { .. }))
                .map(|e| p.files.join(&e.path))
                .collect::<Vec<_>>()
        })
        .map(|p| {
            let d = digest(&p);
            (p, d)
        })
        .collect();
    let opts = Options::default();
    let first = assemble(&pkgs, &os("aarch64"), &opts).unwrap();
    let mut runs = vec![];
    for n in 0..2 {
        let mut tree = first.tree.clone();
        let work = env.scratch(&format!("strip{n}"));
        let report = strip(&mut tree, "aarch64-linux-gnu-strip", &work, &opts.elf_skip).unwrap();
        runs.push((tree, report));
    }
    let (tree, report) = &runs[0];
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert!(
        report.stripped.contains(&"/usr/bin/hello".to_string()),
        "{report:?}"
    );
    assert!(report
        .stripped
        .contains(&"/usr/lib/aarch64-linux-gnu/libz.so.1.2.13".to_string()));
    assert_eq!(report, &runs[1].1);
    for path in &report.stripped {
        let a = file_path(tree, path);
        let b = file_path(&runs[1].0, path);
        assert_ne!(a, b);
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{path}");
        assert_ne!(a, file_path(&first.tree, path));
    }
    // Non-ELF files and metadata are untouched.
    assert_eq!(
        tree.get("/etc/os-release"),
        first.tree.get("/etc/os-release")
    );
    let hello = tree.get("/usr/bin/hello").unwrap();
    assert_eq!(hello.mode, first.tree.get("/usr/bin/hello").unwrap().mode);
    // The store's files are untouched.
    for (p, d) in &originals {
        assert_eq!(&digest(p), d, "{}", p.display());
    }
    // Symbols are gone from the program.
    let stripped_hello = file_path(tree, "/usr/bin/hello");
    let syms = Command::new("aarch64-linux-gnu-nm")
        .arg(&stripped_hello)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&syms.stderr).contains("no symbols"),
        "{}",
        String::from_utf8_lossy(&syms.stdout)
    );

    if !have("qemu-aarch64-static") {
        eprintln!("qemu-aarch64-static not installed; not running the stripped binary");
        return;
    }
    // The stripped program and stripped libz still run.
    let libdir = env.scratch("run-libs");
    fs::copy(
        file_path(tree, "/usr/lib/aarch64-linux-gnu/libz.so.1.2.13"),
        libdir.join("libz.so.1"),
    )
    .unwrap();
    for (prog, expect) in [("hello", "hello from kiln\n"), ("zprog", "1.2.13-kiln\n")] {
        let o = Command::new("qemu-aarch64-static")
            .args(["-L", "/usr/aarch64-linux-gnu", "-E"])
            .arg(format!("LD_LIBRARY_PATH={}", libdir.display()))
            .arg(file_path(tree, &format!("/usr/bin/{prog}")))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{prog}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout), expect);
    }
}

#[test]
fn strip_failure_names_the_file() {
    let env = Env::new();
    let b = build(&env);
    let out = assemble(
        &[app(&env, &b)],
        &os("aarch64"),
        &Options {
            check_elf: false,
            ..Options::default()
        },
    )
    .unwrap();
    let mut tree = out.tree;
    // A strip that fails.
    let err = strip(&mut tree, "false", &env.scratch("s"), &[]).unwrap_err();
    assert!(
        matches!(&err, RootfsError::Strip { path, .. } if path == "/usr/bin/hello"),
        "{err}"
    );
    let err = strip(&mut tree, "no-such-strip-kiln", &env.scratch("s2"), &[]).unwrap_err();
    assert!(err.to_string().contains("could not run"), "{err}");
}

/// A tree's own tool runs from the host through the tree's dynamic linker
/// (here the tree is the host's own root, whose links are absolute too).
#[test]
fn a_trees_strip_runs_through_its_own_dynamic_linker() {
    let tool = kiln_rootfs::Tool::in_tree(std::path::Path::new("/"), "strip").unwrap();
    assert!(
        tool.program.to_string_lossy().contains("ld-linux"),
        "{tool}"
    );
    let out = std::process::Command::new(&tool.program)
        .args(&tool.args)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("GNU strip"));
    let err =
        kiln_rootfs::Tool::in_tree(std::path::Path::new("/"), "no-such-strip-kiln").unwrap_err();
    assert!(err.to_string().contains("no-such-strip-kiln"), "{err}");
}
