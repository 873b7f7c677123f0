//! Merging package outputs: contents, metadata, links, capabilities and
//! the conflict rules.

mod common;

use common::{link, mkdir, os, write, Env};
use kiln_fstree::{Data, Kind};
use kiln_rootfs::{assemble, encode_capabilities, Options, RootfsError, GENERATED};
use kiln_store::MetaOverride;

fn opts() -> Options {
    Options::default()
}

#[test]
fn different_contents_name_both_packages_and_the_path() {
    let env = Env::new();
    let a = env.package("alpha", &[], |d| write(d, "usr/bin/tool", b"A", 0o755));
    let b = env.package("beta", &[], |d| write(d, "usr/bin/tool", b"B", 0o755));
    let err = assemble(&[a, b], &os("aarch64"), &opts()).unwrap_err();
    match &err {
        RootfsError::Conflict {
            path,
            first,
            second,
            detail,
        } => {
            assert_eq!(path, "/usr/bin/tool");
            assert_eq!((first.as_str(), second.as_str()), ("alpha", "beta"));
            assert!(detail.contains("a file (1 bytes"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("`/usr/bin/tool`") && msg.contains("`alpha`") && msg.contains("`beta`"),
        "{msg}"
    );
}

#[test]
fn file_versus_symlink_and_directory_modes_conflict() {
    let env = Env::new();
    let a = env.package("alpha", &[], |d| write(d, "etc/motd", b"hi", 0o644));
    let b = env.package("beta", &[], |d| link(d, "etc/motd", "issue"));
    let err = assemble(&[a.clone(), b], &os("aarch64"), &opts()).unwrap_err();
    assert!(
        matches!(&err, RootfsError::Conflict { path, detail, .. }
            if path == "/etc/motd" && detail.contains("a symlink to `issue`")),
        "{err}"
    );

    let c = env.package("gamma", &[], |d| mkdir(d, "etc", 0o700));
    let err = assemble(&[a, c], &os("aarch64"), &opts()).unwrap_err();
    assert!(
        matches!(&err, RootfsError::Conflict { path, first, second, detail }
            if path == "/etc" && first == "alpha" && second == "gamma"
                && detail == "mode 0755 vs 0700"),
        "{err}"
    );
}

#[test]
fn identical_duplicates_merge() {
    let env = Env::new();
    let fill = |d: &std::path::Path| {
        write(d, "usr/share/common/data", b"same bytes", 0o644);
        link(d, "usr/share/common/link", "data");
    };
    let a = env.package("alpha", &[], fill);
    let b = env.package("beta", &[], |d| {
        fill(d);
        write(d, "usr/share/beta-only", b"b", 0o644);
    });
    let out = assemble(&[a, b], &os("aarch64"), &opts()).unwrap();
    let owners = &out.report.owners;
    assert_eq!(owners["/usr/share/common/data"], ["alpha", "beta"]);
    assert_eq!(owners["/usr/share/beta-only"], ["beta"]);
    assert_eq!(owners["/etc/fstab"], [GENERATED]);
    let node = out.tree.get("/usr/share/common/data").unwrap();
    match &node.kind {
        Kind::File(data) => assert_eq!(data.read().unwrap(), b"same bytes"),
        other => panic!("{other:?}"),
    }
    assert_eq!(node.mode, 0o644);
}

#[test]
fn modes_links_and_capabilities_come_from_the_manifest() {
    let env = Env::new();
    let meta = [
        MetaOverride {
            path: "/usr/bin/ping".into(),
            caps: Some("cap_net_raw+ep".into()),
            ..Default::default()
        },
        MetaOverride {
            path: "usr/bin/su".into(),
            mode: Some(0o4755),
            uid: Some(0),
            gid: Some(5),
            ..Default::default()
        },
    ];
    let pkg = env.package("tools", &meta, |d| {
        write(d, "usr/bin/ping", b"ping", 0o755);
        write(d, "usr/bin/su", b"su", 0o755);
        std::fs::hard_link(d.join("usr/bin/su"), d.join("usr/bin/su2")).unwrap();
        link(d, "usr/bin/pong", "ping");
    });
    let out = assemble(&[pkg], &os("aarch64"), &opts()).unwrap();
    let ping = out.tree.get("/usr/bin/ping").unwrap();
    assert_eq!(
        ping.xattrs["security.capability"],
        encode_capabilities("cap_net_raw+ep").unwrap()
    );
    assert_eq!(
        ping.xattrs["security.capability"],
        [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    let su = out.tree.get("/usr/bin/su").unwrap();
    assert_eq!((su.mode, su.uid, su.gid), (0o4755, 0, 5));
    assert_eq!(
        out.tree.get("/usr/bin/su2").unwrap().kind,
        Kind::Hardlink("/usr/bin/su".into())
    );
    assert_eq!(
        out.tree.get("/usr/bin/pong").unwrap().kind,
        Kind::Symlink("ping".into())
    );
    assert_eq!(out.report.hardlinks, 1);
    assert_eq!(out.report.symlinks, 1 + out.bind_units.len());
}

#[test]
fn bad_capability_text_names_package_path_and_position() {
    let env = Env::new();
    let meta = [MetaOverride {
        path: "usr/bin/ping".into(),
        caps: Some("cap_net_raw,cap_bogus+ep".into()),
        ..Default::default()
    }];
    let pkg = env.package("iputils", &meta, |d| write(d, "usr/bin/ping", b"x", 0o755));
    let err = assemble(&[pkg], &os("aarch64"), &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RootfsError::Capability { .. }), "{msg}");
    assert!(
        msg.contains("`iputils`") && msg.contains("/usr/bin/ping"),
        "{msg}"
    );
    assert!(
        msg.contains("unknown capability \"cap_bogus\" at column 13 (item 2"),
        "{msg}"
    );
}

#[test]
fn shipping_a_generated_file_is_an_error() {
    let env = Env::new();
    let pkg = env.package("base-files", &[], |d| {
        write(d, "etc/os-release", b"ID=debian\n", 0o644)
    });
    let err = assemble(&[pkg], &os("aarch64"), &opts()).unwrap_err();
    assert!(
        matches!(&err, RootfsError::Generated { path, package, .. }
            if path == "/etc/os-release" && package == "base-files"),
        "{err}"
    );
    // A mount point may be shipped, but only exactly as generated.
    let ok = env.package("skel", &[], |d| {
        mkdir(d, "tmp", 0o1777);
        mkdir(d, "mnt/data", 0o755);
    });
    assemble(&[ok], &os("aarch64"), &opts()).unwrap();
    let bad = env.package("skel2", &[], |d| mkdir(d, "proc", 0o755));
    let err = assemble(&[bad], &os("aarch64"), &opts()).unwrap_err();
    assert!(
        matches!(&err, RootfsError::Generated { path, package, what }
            if path == "/proc" && package == "skel2" && what.contains("mode 0555")),
        "{err}"
    );
}

#[test]
fn declared_units_must_be_shipped_by_their_package() {
    let env = Env::new();
    let mut pkg = env.package("chrony", &[], |d| {
        write(
            d,
            "usr/lib/systemd/system/chronyd.service",
            b"[Service]\n",
            0o644,
        );
        link(d, "lib", "usr/lib");
    });
    pkg.units = vec!["chronyd.service".into()];
    let out = assemble(std::slice::from_ref(&pkg), &os("aarch64"), &opts()).unwrap();
    assert_eq!(
        out.report.units,
        [(
            "chrony".to_string(),
            "/usr/lib/systemd/system/chronyd.service".to_string()
        )]
    );
    pkg.units.push("chrony-wait.service".into());
    let err = assemble(&[pkg], &os("aarch64"), &opts()).unwrap_err();
    assert!(
        matches!(&err, RootfsError::MissingUnit { package, unit, .. }
            if package == "chrony" && unit == "chrony-wait.service"),
        "{err}"
    );
}

#[test]
fn files_must_match_the_manifest() {
    let env = Env::new();
    let mut pkg = env.package("alpha", &[], |d| write(d, "a", b"abc", 0o644));
    let other = env.scratch("other");
    write(&other, "a", b"abcd", 0o644);
    pkg.files = other;
    let err = assemble(&[pkg.clone()], &os("aarch64"), &opts()).unwrap_err();
    assert!(
        matches!(&err, RootfsError::Content { package, path, reason, .. }
            if package == "alpha" && path == "/a" && reason.contains("4 bytes")),
        "{err}"
    );
    let dup = assemble(&[pkg.clone(), pkg], &os("aarch64"), &opts()).unwrap_err();
    assert!(matches!(dup, RootfsError::DuplicatePackage(n) if n == "alpha"));
}

#[test]
fn file_data_points_into_the_materialized_output() {
    let env = Env::new();
    let pkg = env.package("alpha", &[], |d| write(d, "usr/bin/x", b"x", 0o755));
    let files = pkg.files.clone();
    let out = assemble(&[pkg], &os("aarch64"), &opts()).unwrap();
    assert_eq!(
        out.tree.get("/usr/bin/x").unwrap().kind,
        Kind::File(Data::Path(files.join("usr/bin/x")))
    );
}
