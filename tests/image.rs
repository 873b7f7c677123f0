//! Disk images: `kiln build <board>` ends in a complete, checked,
//! reproducible image, cached like any other node, and bad image inputs
//! fail clearly without leaving an image behind.
//!
//! The real-board tests use `boards/qemu-x86_64-tiny.rhai` (busybox on
//! glibc) with sources from the mirror `scripts/seed-sources` fills.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

const BOARD: &str = "qemu-x86_64-tiny";

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{cmd:?} failed: {text}");
    text
}

fn manifest(project: &Path, board: &str) -> serde_json::Value {
    let path = project.join(format!("out/{board}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("manifest json")
}

/// Copies partition `number` of `img` (as the manifest places it) to `dest`.
fn extract_partition(img: &Path, m: &serde_json::Value, number: u64, dest: &Path) {
    let p = m["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|p| p["number"] == number)
        .unwrap_or_else(|| panic!("no partition {number}"));
    let start = p["start"].as_u64().expect("start");
    let size = p["size"].as_u64().expect("size");
    run_ok(Command::new("dd").args([
        format!("if={}", img.display()),
        format!("of={}", dest.display()),
        "bs=1M".into(),
        format!("skip={}", start >> 20),
        format!("count={}", size >> 20),
        "status=none".into(),
    ]));
}

fn build_board(project: &Path, store: &Path) -> Output {
    kiln_in(project, store, &["--offline", "build", BOARD])
}

#[test]
fn board_build_ends_in_a_checked_cached_image() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = tmp.path().join("project");
    copy_project(&project);
    // The shared test store: packages are usually cached from earlier runs.
    let store = repo().join("target/kiln-test-store");
    let o = build_board(&project, &store);
    assert!(o.status.success(), "{}", stderr(&o));

    let img = project.join(format!("out/{BOARD}.img"));
    let zst = project.join(format!("out/{BOARD}.img.zst"));
    let m = manifest(&project, BOARD);
    assert_eq!(m["board"], BOARD);
    assert_eq!(m["image"]["sha256"], sha256(&img));
    assert_eq!(m["compressed"]["sha256"], sha256(&zst));
    assert_eq!(
        std::fs::metadata(&img).expect("img").len(),
        m["image"]["size"].as_u64().expect("size")
    );
    // The .zst is the same disk.
    let unpacked = tmp.path().join("unpacked.img");
    run_ok(
        Command::new("zstd")
            .args(["-q", "-d", "-o"])
            .arg(&unpacked)
            .arg(&zst),
    );
    assert_eq!(sha256(&unpacked), m["image"]["sha256"]);
    std::fs::remove_file(&unpacked).expect("rm");

    // Every package with its version and its key, as `kiln show` has it.
    let packages = m["packages"].as_array().expect("packages");
    let names: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["base-files", "busybox", "busybox-init", "sysroot"]);
    let o = kiln_in(&project, &store, &["show", "busybox", "--board", BOARD]);
    let show: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("show json");
    let busybox = &packages[1];
    assert_eq!(busybox["version"], "1.35.0");
    assert_eq!(busybox["key"], show["key"]);
    assert_eq!(busybox["output"], show["output"]);

    // The table is exactly the board's layout (MiB: gap 4, boot 16, roots
    // 32, state 16, data 32; MBR with an extended partition up to the end;
    // each logical partition follows its EBR one alignment unit later).
    let dump = run_ok(Command::new("sfdisk").arg("-d").arg(&img));
    let sig = m["disk_id"].as_str().expect("disk id");
    assert!(dump.contains(&format!("label-id: {sig}")), "{dump}");
    let mib = 2048;
    let expect = [
        (1, 4 * mib, 16 * mib, "type=e, bootable"),
        (2, 20 * mib, 32 * mib, "type=83"),
        (3, 52 * mib, 32 * mib, "type=83"),
        (4, 84 * mib, 56 * mib, "type=f"),
        (5, 88 * mib, 16 * mib, "type=83"),
        (6, 108 * mib, 32 * mib, "type=83"),
    ];
    for (n, start, size, rest) in expect {
        let line = format!(
            "{}{n} : start={start:>12}, size={size:>12}, {rest}",
            img.display()
        );
        assert!(dump.contains(&line), "missing `{line}` in\n{dump}");
    }

    // Each filesystem passes its own checker and carries its label.
    let part = |n: u64| {
        let p = tmp.path().join(format!("p{n}"));
        extract_partition(&img, &m, n, &p);
        p
    };
    let (boot, root, state, data) = (part(1), part(2), part(5), part(6));
    run_ok(Command::new("fsck.vfat").arg("-n").arg(&boot));
    run_ok(Command::new("fsck.erofs").arg(&root));
    run_ok(Command::new("e2fsck").arg("-fn").arg(&state));
    run_ok(Command::new("e2fsck").arg("-fn").arg(&data));
    for (p, label) in [
        (&boot, "resin-boot"),
        (&root, "resin-rootA"),
        (&state, "resin-state"),
        (&data, "resin-data"),
    ] {
        let got = run_ok(
            Command::new("blkid")
                .args(["-p", "-o", "value", "-s", "LABEL"])
                .arg(p),
        );
        assert_eq!(got.trim(), label);
    }

    // The boot partition: config.json with the board's defaults, the A/B
    // env, os-release, device-type.json, system-connections/.
    let mtype = |f: &str| {
        run_ok(
            Command::new("mtype")
                .arg("-i")
                .arg(&boot)
                .arg(format!("::{f}")),
        )
    };
    let config: serde_json::Value = serde_json::from_str(&mtype("config.json")).expect("config");
    assert_eq!(config["deviceType"], BOARD);
    assert_eq!(config["developmentMode"], false);
    assert_eq!(
        mtype("resinOS_uEnv.txt"),
        "resin_root_part=A\nupgrade_available=0\nbootcount=0\n"
    );
    assert!(mtype("os-release").contains("VARIANT_ID=qemu-x86_64-tiny"));
    let dt: serde_json::Value = serde_json::from_str(&mtype("device-type.json")).expect("dt");
    assert_eq!(dt["slug"], BOARD);
    run_ok(
        Command::new("mdir")
            .arg("-i")
            .arg(&boot)
            .arg("::system-connections"),
    );

    // The root: generated files, stripped programs, one bind unit per state path.
    let tree = tmp.path().join("root");
    run_ok(
        Command::new("fsck.erofs")
            .arg(format!("--extract={}", tree.display()))
            .arg(&root),
    );
    let os_release = std::fs::read_to_string(tree.join("etc/os-release")).expect("os-release");
    assert!(os_release.contains("ID=kiln"), "{os_release}");
    assert!(
        !os_release.to_lowercase().contains("build_id"),
        "{os_release}"
    );
    assert_eq!(
        std::fs::read(tree.join("etc/machine-id")).expect("machine-id"),
        b""
    );
    for d in ["mnt/boot", "mnt/state", "mnt/data"] {
        assert!(tree.join(d).is_dir(), "{d}");
    }
    let file = run_ok(Command::new("file").arg(tree.join("bin/busybox")));
    assert!(
        file.contains("stripped") && !file.contains("not stripped"),
        "{file}"
    );
    assert!(
        tree.join("usr/lib/systemd/system/etc-machine\\x2did.mount")
            .exists()
            || tree
                .join("etc/systemd/system/etc-machine\\x2did.mount")
                .exists(),
        "machine-id bind unit"
    );

    // A second build is a cache hit and leaves the image file alone.
    let before = std::fs::metadata(&img)
        .expect("img")
        .modified()
        .expect("mtime");
    let o = kiln_in(&project, &store, &["--offline", "--json", "build", BOARD]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        outcomes(&o).get("image").map(String::as_str),
        Some("cached")
    );
    let after = std::fs::metadata(&img)
        .expect("img")
        .modified()
        .expect("mtime");
    assert_eq!(before, after, "a cache hit must not rewrite the image");

    // A changed or missing image is restored from the store, sparse.
    std::fs::write(&img, b"scribbled").expect("scribble");
    let o = build_board(&project, &store);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha256(&img), m["image"]["sha256"]);
    std::fs::remove_file(&img).expect("rm");
    let o = build_board(&project, &store);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha256(&img), m["image"]["sha256"]);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&img).expect("img");
    assert!(
        meta.blocks() * 512 < meta.len() / 2,
        "the restored image is not sparse"
    );

    // Changing an image-only input (config.json defaults) rebuilds only the image.
    let board_file = project.join(format!("boards/{BOARD}.rhai"));
    let text = std::fs::read_to_string(&board_file).expect("board");
    let text = text.replace(
        "    partitions: #{",
        "    config_json: #{ developmentMode: true },\n    partitions: #{",
    );
    std::fs::write(&board_file, text).expect("write board");
    let o = kiln_in(&project, &store, &["--offline", "--json", "build", BOARD]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = outcomes(&o);
    assert_eq!(got.get("image").map(String::as_str), Some("built"));
    assert!(
        got.iter().all(|(r, k)| r == "image" || k == "cached"),
        "{got:?}"
    );
    extract_partition(&img, &manifest(&project, BOARD), 1, &boot);
    let config: serde_json::Value = serde_json::from_str(&mtype("config.json")).expect("config");
    assert_eq!(config["developmentMode"], true);
}

/// Two builds of the tiny board's image, kernel and bootloader included,
/// give the same bytes, though everything that must not matter differs
/// between them, much of it reaching the build steps: the checkout (its
/// files written in another order), the store, the user, the clock (a
/// year ahead, SOURCE_DATE_EPOCH fixed), the umask, the number of jobs,
/// the host's installed tools (hidden, and failing ones first on PATH),
/// the order of directory entries in the build trees (a tmpfs against the
/// store's ext4), the time zone, the locale and the host name. `scripts/repro-check` makes
/// the variations and compares every node's output and the image; this
/// test runs it with build A in the test store (empty when CI starts)
/// and B in a new, empty one. What the machine can't vary is a skip.
#[test]
fn image_is_reproducible_across_checkout_store_clock_and_user() {
    let o = Command::new(repo().join("scripts/repro-check"))
        .arg(BOARD)
        .arg("--store-a")
        .arg(repo().join("target/kiln-test-store"))
        .env("KILN", env!("CARGO_BIN_EXE_kiln"))
        .output()
        .expect("run scripts/repro-check");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let all = format!("{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{all}");
    let result = out.lines().last().unwrap_or("");
    assert!(
        result.starts_with(&format!("repro-check {BOARD}: identical: ")),
        "{all}"
    );
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("repro-check: not varied (") else {
            continue;
        };
        let (kind, what) = rest.split_once("): ").unwrap_or(("setup", rest));
        let why = match kind {
            "machine" => kiln_testkit::Cannot::Machine,
            _ => kiln_testkit::Cannot::Setup,
        };
        kiln_testkit::skip(
            "image_is_reproducible_across_checkout_store_clock_and_user",
            &format!("not varied: {what}"),
            why,
        );
    }
}

/// A test project whose packages are shell steps, with an image layout.
fn image_project(partitions: &str) -> TestProject {
    let p = TestProject::new();
    let board = common::BOARD.replace("PACKAGES", "[\"a\", \"b\"]").replace(
        "packages:",
        &format!("partitions: #{{ {partitions} }},\n    packages:"),
    );
    p.write("boards/test-board.rhai", &board);
    p
}

/// Builds the test board, expects failure, and checks nothing was left.
fn fails_cleanly(p: &TestProject) -> String {
    let o = p.kiln(&["build", "test-board"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "the build should fail:\n{err}");
    for f in ["test-board.img", "test-board.img.zst", "test-board.json"] {
        assert!(!p.root().join("out").join(f).exists(), "{f} left behind");
    }
    let work = p.store.path().join("work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch left in the store: {left:?}");
    err
}

const SMALL: &str = "boot_mib: 16, root_mib: 8, state_mib: 8, data_mib: 8";

#[test]
fn rootfs_larger_than_its_partition() {
    let p = image_project("boot_mib: 16, root_mib: 4, state_mib: 8, data_mib: 8");
    // 6 MiB that compression can't shrink.
    p.write(
        "recipes/a.rhai",
        &shell_recipe(
            "a",
            &[],
            &["mkdir -p /out/usr/share && head -c 6291456 /dev/urandom > /out/usr/share/noise"],
        ),
    );
    p.write("recipes/b.rhai", &shell_recipe("b", &[], &["true"]));
    let err = fails_cleanly(&p);
    assert!(err.contains("the root filesystem is"), "{err}");
    assert!(
        err.contains("partition resin-rootA is 4194304 bytes (4 MiB)"),
        "{err}"
    );
    assert!(
        err.contains("raise `partitions.root_mib` in boards/test-board.rhai to at least 8"),
        "{err}"
    );
}

#[test]
fn partitions_that_do_not_fit_the_disk() {
    let p = image_project(&format!("{SMALL}, disk_mib: 40"));
    p.write("recipes/a.rhai", &shell_recipe("a", &[], &["true"]));
    p.write("recipes/b.rhai", &shell_recipe("b", &[], &["true"]));
    let err = fails_cleanly(&p);
    assert!(
        err.contains("the partitions need a disk of at least"),
        "{err}"
    );
    assert!(
        err.contains("(60 MiB) but the disk has 41943040 bytes"),
        "{err}"
    );
    assert!(
        err.contains("fix `partitions` in boards/test-board.rhai"),
        "{err}"
    );
}

#[test]
fn state_path_must_be_absolute() {
    let p = image_project(SMALL);
    p.write(
        "recipes/a.rhai",
        "#{\n    name: \"a\",\n    version: \"1\",\n    steps: [\"true\"],\n    state: [\"var/lib/a\"],\n}\n",
    );
    p.write("recipes/b.rhai", &shell_recipe("b", &[], &["true"]));
    let o = p.kiln(&["build", "test-board"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("recipes/a.rhai:5:"), "{err}");
    assert!(err.contains("var/lib/a"), "{err}");
    assert!(!p.root().join("out/test-board.img").exists());
}

#[test]
fn two_packages_installing_one_path_differently() {
    let p = image_project(SMALL);
    p.write(
        "recipes/a.rhai",
        &shell_recipe("a", &[], &["mkdir -p /out/etc && echo one > /out/etc/motd"]),
    );
    p.write(
        "recipes/b.rhai",
        &shell_recipe("b", &[], &["mkdir -p /out/etc && echo two > /out/etc/motd"]),
    );
    let err = fails_cleanly(&p);
    assert!(
        err.contains("`/etc/motd` is installed by both `a` and `b`"),
        "{err}"
    );
    assert!(err.contains("help: make one of the packages"), "{err}");
}

#[test]
fn a_program_whose_library_is_missing() {
    let p = image_project(SMALL);
    // The host's `true` is an x86_64 program that needs glibc, which no
    // package of this board provides.
    p.write(
        "recipes/a.rhai",
        &shell_recipe(
            "a",
            &[],
            &["mkdir -p /out/usr/bin && cp /usr/bin/true /out/usr/bin/true"],
        ),
    );
    p.write("recipes/b.rhai", &shell_recipe("b", &[], &["true"]));
    let err = fails_cleanly(&p);
    assert!(err.contains("libc.so.6"), "{err}");
    assert!(err.contains("/usr/bin/true"), "{err}");
    assert!(err.contains("ld-linux-x86-64.so.2"), "{err}");
    assert!(
        err.contains("help: add the package that provides the library"),
        "{err}"
    );
}

/// Changing one kernel config fragment rebuilds the kernel and the image,
/// nothing else. (A shell "kernel" keeps this fast; the real one is keyed
/// the same way.)
#[test]
fn a_fragment_change_rebuilds_only_the_kernel_and_the_image() {
    let p = image_project(SMALL);
    p.write(
        "recipes/a.rhai",
        &shell_recipe("a", &[], &["mkdir -p /out/etc && echo a > /out/etc/a"]),
    );
    p.write("recipes/b.rhai", &shell_recipe("b", &[], &["true"]));
    p.write(
        "recipes/linux.rhai",
        &shell_recipe(
            "linux",
            &[],
            &["mkdir -p /out/boot && for f in $KILN_KCONFIG_FRAGMENTS; do cat $f; done > /out/boot/kernel"],
        ),
    );
    let loader = bootloader_recipe(
        "loader",
        "mkdir -p /out/boot && echo script > /out/boot/boot.scr",
    );
    p.write("recipes/loader.rhai", &loader);
    p.write("boards/test/kernel.config", "CONFIG_EROFS_FS=y\n");
    let board = std::fs::read_to_string(p.root().join("boards/test-board.rhai")).expect("board");
    let board = board.replace(
        "    packages:",
        "    kernel: #{ recipe: \"linux\", base: \"tinyconfig\", fragments: [\"test/kernel.config\"] },\n    bootloader: #{ recipe: \"loader\", config: \"x\" },\n    packages:",
    );
    p.write("boards/test-board.rhai", &board);
    let o = p.kiln(&["--json", "build", "test-board"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let boot = |p: &TestProject| {
        let img = p.root().join("out/test-board.img");
        let m = manifest(p.root(), "test-board");
        let off = partition_start(&m, 1);
        run_ok(
            Command::new("mtype")
                .arg("-i")
                .arg(format!("{}@@{off}", img.display()))
                .arg("::kernel"),
        )
    };
    assert_eq!(boot(&p), "CONFIG_EROFS_FS=y\n");

    p.write(
        "boards/test/kernel.config",
        "CONFIG_EROFS_FS=y\nCONFIG_EXT4_FS=y\n",
    );
    let o = p.kiln(&["--json", "build", "test-board"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = outcomes(&o);
    let built: Vec<&str> = got
        .iter()
        .filter(|(_, k)| k.as_str() == "built")
        .map(|(r, _)| r.as_str())
        .collect();
    assert_eq!(built, ["image", "linux"], "{got:?}");
    assert_eq!(boot(&p), "CONFIG_EROFS_FS=y\nCONFIG_EXT4_FS=y\n");
}

fn partition_start(m: &serde_json::Value, number: u64) -> u64 {
    m["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|p| p["number"] == number)
        .and_then(|p| p["start"].as_u64())
        .expect("partition start")
}
