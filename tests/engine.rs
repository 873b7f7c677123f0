//! Building through the real sandbox: caching, early cutoff, isolation,
//! failures and the store's robustness.

mod common;

use common::*;

fn build(p: &TestProject, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--json", "build", "test-board"];
    all.extend_from_slice(args);
    p.kiln(&all)
}

#[test]
fn second_build_runs_nothing_and_everything_is_cached() {
    let p = TestProject::new();
    p.board(&["app"]);
    p.write(
        "recipes/lib.rhai",
        &shell_recipe(
            "lib",
            &[],
            &["mkdir -p /out/usr/lib", "echo lib > /out/usr/lib/data"],
        ),
    );
    p.write(
        "recipes/app.rhai",
        &shell_recipe(
            "app",
            &["lib"],
            &[
                "mkdir -p /out/usr/bin",
                "cat /deps/lib/usr/lib/data /sysroot/usr/lib/data > /out/usr/bin/app",
            ],
        ),
    );
    let first = build(&p, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let o = outcomes(&first);
    assert_eq!(o["lib"], "built");
    assert_eq!(o["app"], "built");

    let second = build(&p, &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    let o = outcomes(&second);
    // the two recipes and the board's image node
    assert_eq!(o.len(), 3, "{o:?}");
    assert!(o.values().all(|k| k == "cached"), "{o:?}");

    // The dependency was really visible at /deps/<name> and in /sysroot.
    let out = p.kiln(&["build", "app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = stdout(&out).trim().to_string();
    let app = std::fs::read_to_string(std::path::Path::new(&path).join("usr/bin/app"))
        .expect("app output");
    assert_eq!(app, "lib\nlib\n");
}

#[test]
fn early_cutoff_when_a_rebuilt_dependency_produces_the_same_bytes() {
    let p = TestProject::new();
    p.board(&["app"]);
    p.write(
        "recipes/lib.rhai",
        &shell_recipe("lib", &[], &["echo same > /out/lib"]),
    );
    p.write(
        "recipes/app.rhai",
        &shell_recipe("app", &["lib"], &["cp /deps/lib/lib /out/app"]),
    );
    assert!(build(&p, &[]).status.success());

    // A different step that writes the same bytes: lib rebuilds, app doesn't.
    p.write(
        "recipes/lib.rhai",
        &shell_recipe("lib", &[], &["printf 'same\\n' > /out/lib"]),
    );
    let again = build(&p, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    let o = outcomes(&again);
    assert_eq!(o["lib"], "built");
    assert_eq!(o["app"], "cached");

    // Different bytes: both rebuild.
    p.write(
        "recipes/lib.rhai",
        &shell_recipe("lib", &[], &["echo different > /out/lib"]),
    );
    let o = outcomes(&build(&p, &[]));
    assert_eq!(o["lib"], "built");
    assert_eq!(o["app"], "built");

    // `kiln why` names the changed input.
    p.write(
        "recipes/lib.rhai",
        &shell_recipe("lib", &[], &["echo changed-again > /out/lib"]),
    );
    let why = p.kiln(&["why", "lib"]);
    assert!(why.status.success(), "{}", stderr(&why));
    let text = stdout(&why);
    assert!(text.contains("recipe.steps[0].argv[2]"), "{text}");
    assert!(text.contains("changed-again"), "{text}");
}

#[test]
fn the_sandbox_has_no_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let p = TestProject::new();
    p.board(&["net"]);
    // bash's /dev/tcp opens a real TCP connection.
    p.write(
        "recipes/net.rhai",
        &shell_recipe(
            "net",
            &[],
            &[&format!(
                "bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' && echo CONNECTED > /out/x"
            )],
        ),
    );
    let o = build(&p, &[]);
    assert!(
        !o.status.success(),
        "a network connection must fail in the sandbox"
    );
    assert!(
        listener.accept().is_err(),
        "the host listener must not see a connection"
    );
    let err = stderr(&o);
    assert!(err.contains("recipe `net` failed in step 1/1"), "{err}");
    assert!(
        err.contains("Network is unreachable") || err.contains("Connection refused"),
        "{err}"
    );
}

#[test]
fn a_recipe_cannot_write_outside_out() {
    let p = TestProject::new();
    p.board(&["w"]);
    let victim = p.root().join("victim");
    p.write(
        "recipes/w.rhai",
        &shell_recipe(
            "w",
            &[],
            &[&format!(
                "touch /usr/kiln-escape || touch {} || echo contained > /out/ok",
                victim.display()
            )],
        ),
    );
    let o = build(&p, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!std::path::Path::new("/usr/kiln-escape").exists());
    assert!(!victim.exists());
    // Both writes failed inside the sandbox, so the step went on to /out.
    assert_eq!(
        std::fs::read_to_string(p.root().join("out/test-board/w/ok")).expect("ok"),
        "contained\n"
    );
    p.write(
        "recipes/w.rhai",
        &shell_recipe("w", &[], &["touch /usr/kiln-escape"]),
    );
    let o = build(&p, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sandbox_identity_and_environment_are_fixed() {
    let p = TestProject::new();
    p.board(&["env"]);
    p.write(
        "recipes/env.rhai",
        &shell_recipe(
            "env",
            &[],
            &["hostname > /out/hostname", "id -u > /out/uid", "echo $$ > /out/pid", "umask > /out/umask", "env | grep -v '^MAKEFLAGS=\\|^MFLAGS=\\|^CARGO_MAKEFLAGS=\\|^PWD=\\|^SHLVL=\\|^_=' | sort > /out/env"],
        ),
    );
    let o = p.kiln(&["build", "env"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = std::path::PathBuf::from(stdout(&o).trim());
    let read = |f: &str| std::fs::read_to_string(out.join(f)).expect("output file");
    assert_eq!(read("hostname"), "kiln\n");
    assert_eq!(read("uid"), "0\n");
    assert!(
        read("pid").trim().parse::<u32>().expect("pid") < 10,
        "pid namespace"
    );
    assert_eq!(read("umask"), "0022\n");
    let env = read("env");
    assert!(env.contains("SOURCE_DATE_EPOCH=1700000000\n"), "{env}");
    assert!(
        env.contains("TZ=UTC\n") && env.contains("LC_ALL=C.UTF-8\n"),
        "{env}"
    );
    assert!(
        env.contains("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\n"),
        "{env}"
    );
    assert!(
        !env.contains(
            &std::env::var("HOME")
                .unwrap_or("/root".into())
                .replace("/tmp", "")
        ) || env.contains("HOME=/tmp")
    );
    assert!(
        !env.contains("CARGO_MANIFEST_DIR"),
        "the host environment leaked: {env}"
    );
}

#[test]
fn failures_name_recipe_step_exit_code_and_log_tail_and_keep_going_builds_the_rest() {
    let p = TestProject::new();
    p.board(&["bad", "good", "after-bad"]);
    p.write(
        "recipes/bad.rhai",
        &shell_recipe(
            "bad",
            &[],
            &[
                "echo preparing",
                "echo 'the real problem' >&2; exit 3",
                "echo never",
            ],
        ),
    );
    p.write(
        "recipes/after-bad.rhai",
        &shell_recipe("after-bad", &["bad"], &["true"]),
    );
    p.write(
        "recipes/good.rhai",
        &shell_recipe("good", &[], &["echo fine > /out/good"]),
    );
    let o = build(&p, &["--keep-going"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("recipe `bad` failed in step 2/3 `step 2`"),
        "{err}"
    );
    assert!(err.contains("recipes/bad.rhai:"), "{err}");
    assert!(err.contains("exit code 3"), "{err}");
    assert!(err.contains("the real problem"), "{err}");
    let out = outcomes(&o);
    assert_eq!(out["good"], "built");
    assert_eq!(out["bad"], "failed");
    assert_eq!(out["after-bad"], "skipped");

    let log = p.kiln(&["log", "bad"]);
    assert!(stdout(&log).contains("the real problem"));
    assert!(!stdout(&log).contains("never\n"));

    // Nothing of the failed build reached the action cache: a fixed recipe builds.
    p.write(
        "recipes/bad.rhai",
        &shell_recipe("bad", &[], &["echo ok > /out/ok"]),
    );
    let o = build(&p, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn declared_installs_and_permissions_are_checked_and_recorded() {
    let p = TestProject::new();
    p.board(&["perm"]);
    p.write(
        "recipes/perm.rhai",
        r#"#{ name: "perm", version: "1",
    steps: ["mkdir -p /out/usr/bin && echo x > /out/usr/bin/ping && chmod 755 /out/usr/bin/ping"],
    installs: ["/usr/bin/ping", "/usr/bin/missing"],
    permissions: [#{ path: "/usr/bin/ping", mode: 0o4755, uid: 0, gid: 0, caps: "cap_net_raw+ep" }] }"#,
    );
    let o = build(&p, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/usr/bin/missing"), "{}", stderr(&o));

    p.write(
        "recipes/perm.rhai",
        &std::fs::read_to_string(p.root().join("recipes/perm.rhai"))
            .expect("read")
            .replace(", \"/usr/bin/missing\"", ""),
    );
    let o = p.kiln(&["--json", "build", "perm"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let output = events(&o)
        .into_iter()
        .find(|e| e["event"] == "built")
        .expect("built event")["output"]
        .as_str()
        .expect("output")
        .to_string();
    let blob = p.store.path().join("cas").join(&output[..2]).join(&output);
    let manifest = zstd_decode(&std::fs::read(blob).expect("manifest blob"));
    let m: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest json");
    let ping = m["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["path"] == "usr/bin/ping")
        .expect("ping")
        .clone();
    assert_eq!(ping["mode"], 0o4755);
    assert_eq!(
        ping["xattrs"]["security.capability"].as_str(),
        Some("cap_net_raw+ep"),
        "{ping}"
    );
}

fn zstd_decode(bytes: &[u8]) -> Vec<u8> {
    let out = std::process::Command::new("zstd")
        .args(["-d", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(bytes)?;
            c.wait_with_output()
        })
        .expect("zstd");
    out.stdout
}

#[test]
fn killed_builds_leave_a_usable_store() {
    let p = TestProject::new();
    p.board(&["slow", "quick"]);
    p.write(
        "recipes/slow.rhai",
        &shell_recipe(
            "slow",
            &[],
            &["echo start > /out/a", "sleep 12.25", "echo done > /out/b"],
        ),
    );
    p.write(
        "recipes/quick.rhai",
        &shell_recipe("quick", &[], &["echo q > /out/q"]),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--project")
        .arg(p.root())
        .arg("--store")
        .arg(p.store.path())
        .args(["--json", "build", "test-board"])
        .env("CI", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill only once the slow step is running: its header is in the live
    // log of the build's work directory.
    let work = p.store.path().join("work");
    let started = (0..600).any(|_| {
        let running = std::fs::read_dir(&work)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().starts_with("slow-")
                    && std::fs::read_to_string(e.path().join("build.log"))
                        .is_ok_and(|log| log.contains("[step 2/3]"))
            });
        if !running {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        running
    });
    assert!(started, "the slow step never started");
    let _ = std::process::Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
    // The sandbox died with it (no stray sleep from the build). The kernel
    // tears the namespace down asynchronously; on a loaded machine that
    // can take a moment, so wait up to 10 s (the step would run for 12).
    // The odd duration tells our sleep from anybody else's.
    let survived = (0..100).all(|_| {
        let ps = std::process::Command::new("pgrep")
            .args(["-f", "sleep 12.25"])
            .output()
            .expect("pgrep");
        let alive = !ps.stdout.is_empty();
        if alive {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        alive
    });
    assert!(!survived, "a sandboxed process survived kill -9 of kiln");

    // The next build of the same recipe (the same key) uses the store
    // correctly: the killed one left no entry, so it is built, whole.
    let o = build(&p, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(outcomes(&o)["slow"], "built");
    assert_eq!(
        std::fs::read_to_string(p.root().join("out/test-board/slow/b")).expect("b"),
        "done\n"
    );
}

/// A Makefile with `n` jobs that each record when they ran.
fn timed_make_recipe(name: &str, n: usize) -> String {
    let targets: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let mut mk = format!("all: {}\n", targets.join(" "));
    for t in &targets {
        mk.push_str(&format!("{t}:\n\t@echo $$(date +%s%N) {t} start >> /out/times; sleep 0.4; echo $$(date +%s%N) {t} end >> /out/times\n"));
    }
    let setup = format!(
        "printf '{}' > Makefile",
        mk.replace('\n', "\\n")
            .replace('\t', "\\t")
            .replace('%', "%%")
    );
    shell_recipe(name, &[], &[&setup, "make"])
}

/// The most jobs running at once across all the given timestamp files.
fn max_concurrency(files: &[std::path::PathBuf]) -> usize {
    let mut events: Vec<(u128, i32)> = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(f).expect("times").lines() {
            let mut parts = line.split_whitespace();
            let t: u128 = parts
                .next()
                .and_then(|t| t.parse().ok())
                .expect("timestamp");
            let kind = parts.nth(1).expect("kind");
            events.push((t, if kind == "start" { 1 } else { -1 }));
        }
    }
    // Ends sort before starts at the same instant.
    events.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in events {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

#[test]
fn concurrent_builds_share_one_jobserver() {
    let p = TestProject::new();
    p.board(&["one", "two"]);
    p.write("recipes/one.rhai", &timed_make_recipe("one", 6));
    p.write("recipes/two.rhai", &timed_make_recipe("two", 6));
    let o = p.kiln(&["build", "one", "two", "--jobs", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let outs: Vec<std::path::PathBuf> = stdout(&o)
        .lines()
        .map(|l| std::path::Path::new(l).join("times"))
        .collect();
    assert_eq!(outs.len(), 2);
    let max = max_concurrency(&outs);
    // make -j alone would run all 12 at once; the shared jobserver allows 3 in total.
    assert!(max <= 3, "{max} jobs ran at once with --jobs 3");
    assert!(max >= 2, "the builds should run in parallel (max {max})");
}

#[test]
fn gc_keeps_recent_builds_and_drops_the_rest() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write(
        "recipes/a.rhai",
        &shell_recipe("a", &[], &["echo one > /out/x"]),
    );
    assert!(build(&p, &[]).status.success());
    let gc = p.kiln(&["gc"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(stdout(&gc).contains("removed 0 blobs"), "{}", stdout(&gc));
    assert_eq!(outcomes(&build(&p, &[]))["a"], "cached");

    // Nothing is recent with a zero age limit: everything goes, and the next build rebuilds.
    let gc = p.kiln(&["gc", "--max-age-days", "0"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(!stdout(&gc).contains("removed 0 blobs"), "{}", stdout(&gc));
    assert_eq!(outcomes(&build(&p, &[]))["a"], "built");
}

#[test]
fn local_files_build_the_same_bytes_whatever_the_checkout_umask() {
    use std::os::unix::fs::PermissionsExt;
    let p = TestProject::new();
    p.board(&["files"]);
    p.write("recipes/files/tree/conf", "x=1\n");
    p.write("recipes/files/tree/run.sh", "echo hi\n");
    p.write(
        "recipes/files.rhai",
        "#{ name: \"files\", version: \"1\", sources: [#{ file: \"tree\" }], steps: [\"cp -a tree/. /out/\"] }",
    );
    let set = |rel: &str, mode: u32| {
        std::fs::set_permissions(p.root().join(rel), std::fs::Permissions::from_mode(mode))
            .expect("chmod")
    };
    let output = |o: &std::process::Output| -> String {
        events(o)
            .into_iter()
            .find(|e| e["event"] == "built")
            .expect("built")["output"]
            .to_string()
    };
    set("recipes/files/tree/conf", 0o664);
    set("recipes/files/tree/run.sh", 0o775);
    set("recipes/files/tree", 0o775);
    let first = build(&p, &[]);
    assert!(first.status.success(), "{}", stderr(&first));

    // Another checkout, another umask, another store: the same output.
    set("recipes/files/tree/conf", 0o600);
    set("recipes/files/tree/run.sh", 0o700);
    set("recipes/files/tree", 0o700);
    let other = tempfile::tempdir().expect("store");
    let second = kiln_in(p.root(), other.path(), &["--json", "build", "test-board"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(output(&first), output(&second));
}

/// Patches apply in order inside the sandbox, with the build
/// environment's GNU patch (never the host's), and a failure names the
/// patch and where the recipe lists it.
#[test]
fn patches_apply_in_order_and_failures_name_the_patch() {
    let p = TestProject::new();
    p.board(&["greet"]);
    p.write("recipes/greet/greeting.txt", "hello\nworld\n");
    p.write(
        "recipes/greet/0001-shout.patch",
        "--- a/greeting.txt\n+++ b/greeting.txt\n@@ -1,2 +1,2 @@\n-hello\n+HELLO\n world\n",
    );
    p.write(
        "recipes/greet/0002-does-not-apply.patch",
        "--- a/greeting.txt\n+++ b/greeting.txt\n@@ -1,2 +1,2 @@\n-goodbye\n+GOODBYE\n moon\n",
    );
    let recipe = |patches: &str| {
        format!(
            "#{{ name: \"greet\", version: \"1\",\n  sources: [#{{ file: \"greeting.txt\" }}],\n  patches: [{patches}],\n  steps: [\"cp greeting.txt /out/\", \"ls > /out/files\"] }}\n"
        )
    };
    p.write("recipes/greet.rhai", &recipe("\"0001-shout.patch\""));
    let o = build(&p, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = p.root().join("out/test-board/greet");
    assert_eq!(
        std::fs::read_to_string(out.join("greeting.txt")).expect("patched"),
        "HELLO\nworld\n"
    );
    // --no-backup-if-mismatch: no .orig litter in the tree.
    let files = std::fs::read_to_string(out.join("files")).expect("files");
    assert!(!files.contains(".orig"), "{files}");

    p.write(
        "recipes/greet.rhai",
        &recipe("\"0001-shout.patch\", \"0002-does-not-apply.patch\""),
    );
    let o = build(&p, &[]);
    assert!(!o.status.success());
    let msg = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        msg.contains("recipe `greet`: patch `0002-does-not-apply.patch` (recipes/greet.rhai:"),
        "{msg}"
    );
    assert!(msg.contains("FAILED"), "patch's output is included: {msg}");

    // --forward: the same patch twice is an error, not a reversal.
    p.write(
        "recipes/greet.rhai",
        &recipe("\"0001-shout.patch\", \"0001-shout.patch\""),
    );
    let o = build(&p, &[]);
    assert!(!o.status.success());
    let msg = format!("{}{}", stdout(&o), stderr(&o));
    assert!(msg.contains("patch `0001-shout.patch`"), "{msg}");
    assert!(
        msg.contains("Reversed (or previously applied) patch detected"),
        "{msg}"
    );
}
