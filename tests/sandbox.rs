//! End-to-end tests of the build sandbox, against the real kernel.
//!
//! `sandbox::run` re-executes a helper binary as `<helper> __sandbox <spec>`.
//! The engine passes the kiln binary; here this test binary plays the
//! helper: `helper_hook` runs from `.init_array`, before libtest's `main`
//! starts any thread (which `unshare(CLONE_NEWUSER)` would refuse), and
//! turns the process into the helper when it sees those arguments. So the
//! tests exercise exactly the code path the engine uses.
//!
//! Needs unprivileged user namespaces, overlayfs in a user namespace, bash
//! and GNU make on the host; the toolchain is `/usr` bound read-only.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_sandbox::{
    self as sandbox, Bind, Outcome, SandboxError, SandboxSpec, SandboxStep, HELPER_ARG,
};

extern "C" fn helper_hook() {
    let args: Vec<_> = std::env::args_os().collect();
    if args.len() == 3 && args[1] == HELPER_ARG {
        std::process::exit(sandbox::sandbox_main(Path::new(&args[2])));
    }
}

// A priority above std's own (00099), which captures argv for
// `std::env::args_os` this early.
#[used]
#[unsafe(link_section = ".init_array.65000")]
static HELPER_HOOK: extern "C" fn() = helper_hook;

/// A sandbox with `/usr` (and the usual merged-usr symlinks), a writable
/// `/build/src` and `/out`, and nothing else.
struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    out: PathBuf,
    spec: SandboxSpec,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = dir.path().to_path_buf();
        let (scratch, src, out) = (root.join("scratch"), root.join("src"), root.join("out"));
        for d in [&scratch, &src, &out] {
            fs::create_dir(d).expect("create fixture dir");
        }
        let spec = SandboxSpec {
            scratch,
            ro_binds: vec![bind("/usr", "/usr")],
            rw_binds: vec![bind(&src, "/build/src"), bind(&out, "/out")],
            sysroot: vec![],
            symlinks: ["bin", "lib", "lib64", "sbin"]
                .iter()
                .map(|d| {
                    (
                        PathBuf::from(format!("/{d}")),
                        PathBuf::from(format!("usr/{d}")),
                    )
                })
                .collect(),
            hostname: "kiln".into(),
            host_etc: true,
            env: env(&[("PATH", "/usr/bin:/bin"), ("LC_ALL", "C")]),
            cwd: "/build/src".into(),
            steps: vec![],
            log: root.join("build.log"),
        };
        Fixture {
            _dir: dir,
            src,
            out,
            spec,
        }
    }

    fn host(&self) -> &Path {
        self._dir.path()
    }

    fn run(&self) -> Result<Outcome, SandboxError> {
        self.run_with(None)
    }

    fn run_with(&self, jobserver: Option<&jobserver::Client>) -> Result<Outcome, SandboxError> {
        let exe = std::env::current_exe().expect("current_exe");
        sandbox::run(&self.spec, &exe, jobserver)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.spec.log).unwrap_or_default()
    }

    /// Runs and insists on success, showing the log otherwise.
    fn succeed(&self) {
        match self.run() {
            Ok(Outcome::Success) => {}
            other => panic!("expected success, got {other:?}\nlog:\n{}", self.log()),
        }
    }
}

fn bind(host: impl Into<PathBuf>, inside: &str) -> Bind {
    Bind {
        host: host.into(),
        inside: inside.into(),
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn bash(name: &str, script: &str) -> SandboxStep {
    SandboxStep {
        name: name.into(),
        argv: vec!["bash".into(), "-euc".into(), script.into()],
        env: BTreeMap::new(),
    }
}

/// A string no other process on the machine has in its command line.
fn unique_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}{:09}", std::process::id(), nanos)
}

/// Host processes whose command line contains `needle`.
fn processes_matching(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // Processes may exit while we look.
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) && pid != std::process::id() {
            found.push((pid, cmdline));
        }
    }
    found
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...", and comm may contain spaces.
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(1)?.parse().ok()
}

fn wait_until_gone(needle: &str) -> Vec<(u32, String)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_matching(needle);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn step_output_lands_in_the_host_out_dir() {
    let mut f = Fixture::new();
    f.spec.steps = vec![bash("write", "echo hi > /out/x")];
    f.succeed();
    assert_eq!(
        fs::read_to_string(f.out.join("x")).expect("read out/x"),
        "hi\n"
    );
    assert!(
        f.log()
            .contains("==> [step 1/1] write: bash -euc 'echo hi > /out/x'\n"),
        "log: {}",
        f.log()
    );
}

#[test]
fn nothing_outside_the_writable_binds_can_be_written() {
    let mut f = Fixture::new();
    let token = unique_token();
    let host_file = f.host().join("escaped");
    fs::write(f.src.join("script"), "").expect("write");
    f.spec.steps = vec![bash(
        "escape",
        &format!(
            r#"
            expect_fail() {{ if "$@" 2>>/tmp/err; then echo "unexpectedly succeeded: $*"; exit 10; fi; }}
            expect_fail touch /usr/kiln-test-{token}
            grep -q 'Read-only file system' /tmp/err || {{ cat /tmp/err; exit 11; }}
            expect_fail touch /kiln-test-{token}
            expect_fail mkdir /work
            expect_fail touch /work/kiln-test-{token}
            expect_fail touch /root/kiln-test-{token}
            expect_fail touch {host}
            expect_fail touch /etc/passwd
            test ! -e {host_dir}
            echo ok > /out/ok
            echo tmp > /tmp/fine
            "#,
            host = host_file.display(),
            host_dir = f.host().display(),
        ),
    )];
    f.succeed();
    assert!(f.out.join("ok").exists());
    assert!(!Path::new(&format!("/usr/kiln-test-{token}")).exists());
    assert!(!Path::new(&format!("/kiln-test-{token}")).exists());
    assert!(!Path::new(&format!("/work/kiln-test-{token}")).exists());
    assert!(!Path::new(&format!("/root/kiln-test-{token}")).exists());
    assert!(!host_file.exists());
}

#[test]
fn there_is_no_network() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a host listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("local addr").port();

    let mut f = Fixture::new();
    f.spec.steps = vec![bash(
        "connect",
        &format!(
            r#"
            if : 2>/tmp/local 3<>/dev/tcp/127.0.0.1/{port}; then echo "reached the host"; exit 10; fi
            if : 2>/tmp/external 3<>/dev/tcp/1.1.1.1/80; then echo "reached 1.1.1.1"; exit 11; fi
            cat /tmp/local /tmp/external
            grep -q 'Network is unreachable' /tmp/local
            grep -q 'Network is unreachable' /tmp/external
            # Only a loopback device, and it is down.
            test "$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')" = lo
            "#
        ),
    )];
    f.succeed();
    match listener.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("the host listener was reached: {other:?}"),
    }
}

#[test]
fn identity_and_environment_are_the_sandboxes_own() {
    let mut f = Fixture::new();
    f.spec.env = env(&[("PATH", "/usr/bin:/bin"), ("KILN_SPEC_VAR", "spec")]);
    f.spec.steps = vec![
        bash(
            "identity",
            "uname -n > /out/hostname; id -u > /out/uid; echo $$ > /out/pid; \
             cat /etc/hostname > /out/etc-hostname; getent hosts kiln > /out/hosts; \
             id -un > /out/user; pwd > /out/pwd; umask > /out/umask",
        ),
        SandboxStep {
            name: "env".into(),
            argv: vec!["env".into()],
            env: env(&[("KILN_STEP_VAR", "step"), ("KILN_SPEC_VAR", "overridden")]),
        },
    ];
    f.succeed();
    let read = |name: &str| {
        fs::read_to_string(f.out.join(name))
            .unwrap_or_else(|e| panic!("read {name}: {e}"))
            .trim()
            .to_owned()
    };
    assert_eq!(read("hostname"), "kiln");
    assert_eq!(read("etc-hostname"), "kiln");
    assert_eq!(read("uid"), "0");
    assert_eq!(read("user"), "root");
    assert_eq!(read("pwd"), "/build/src");
    assert_eq!(read("umask"), "0022");
    assert!(read("hosts").starts_with("127.0.0.1"), "{}", read("hosts"));
    let pid: u32 = read("pid").parse().expect("pid is a number");
    assert!(
        pid <= 3,
        "the first step's pid is {pid}, not a fresh pid namespace"
    );

    // The env step's output is everything after its header.
    let log = f.log();
    let (_, output) = log
        .split_once("==> [step 2/2] env: env\n")
        .unwrap_or_else(|| panic!("no env header in log:\n{log}"));
    let mut seen: Vec<&str> = output.lines().collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            "KILN_SPEC_VAR=overridden",
            "KILN_STEP_VAR=step",
            "PATH=/usr/bin:/bin"
        ],
        "HOME and the rest of the test's environment must not leak in"
    );
}

#[test]
fn a_failing_step_stops_the_build() {
    let mut f = Fixture::new();
    f.spec.steps = vec![
        bash("first", "touch /out/first"),
        bash("second", "echo failing; exit 3"),
        bash("third", "touch /out/third"),
    ];
    let outcome = f.run().expect("sandbox runs");
    assert_eq!(
        outcome,
        Outcome::StepFailed {
            index: 1,
            name: "second".into(),
            code: Some(3),
            signal: None
        }
    );
    assert!(f.out.join("first").exists());
    assert!(!f.out.join("third").exists());
    let log = f.log();
    assert!(log.contains("==> [step 2/3] second: "), "{log}");
    assert!(
        log.contains("failing\n==> [step 2/3] second failed: exit code 3\n"),
        "{log}"
    );
    assert!(!log.contains("[step 3/3]"), "{log}");
}

#[test]
fn a_step_killed_by_a_signal_reports_it() {
    let mut f = Fixture::new();
    f.spec.steps = vec![bash("suicide", "kill -KILL $$")];
    let outcome = f.run().expect("sandbox runs");
    assert_eq!(
        outcome,
        Outcome::StepFailed {
            index: 0,
            name: "suicide".into(),
            code: None,
            signal: Some(9)
        }
    );
    assert!(
        f.log().contains("suicide failed: killed by SIGKILL"),
        "{}",
        f.log()
    );
}

#[test]
fn a_missing_program_is_a_step_failure() {
    let mut f = Fixture::new();
    f.spec.steps = vec![
        SandboxStep {
            name: "configure".into(),
            argv: vec!["/no/such/program".into(), "--flag".into()],
            env: BTreeMap::new(),
        },
        bash("after", "touch /out/after"),
    ];
    let outcome = f.run().expect("sandbox runs");
    assert_eq!(
        outcome,
        Outcome::StepFailed {
            index: 0,
            name: "configure".into(),
            code: Some(127),
            signal: None
        }
    );
    assert!(
        f.log()
            .contains("kiln: cannot execute /no/such/program: No such file or directory\n"),
        "{}",
        f.log()
    );
    assert!(!f.out.join("after").exists());
}

#[test]
fn dependencies_are_read_only_and_the_sysroot_is_merged() {
    let mut f = Fixture::new();
    let dep = f.host().join("dep");
    let (a, b) = (f.host().join("sysroot-a"), f.host().join("sysroot-b"));
    for (dir, files) in [
        (&dep, &[("lib.txt", "dep")][..]),
        (&a, &[("only-a", "a"), ("both", "from a")][..]),
        (&b, &[("only-b", "b"), ("both", "from b")][..]),
    ] {
        fs::create_dir(dir).expect("mkdir");
        for (name, content) in files {
            fs::write(dir.join(name), content).expect("write");
        }
    }
    f.spec.ro_binds.push(bind(&dep, "/deps/foo"));
    f.spec.sysroot = vec![a.clone(), b.clone()];
    f.spec.steps = vec![bash(
        "check",
        r#"
        test "$(cat /deps/foo/lib.txt)" = dep
        if touch /deps/foo/new 2>/tmp/e; then exit 10; fi
        grep -q 'Read-only file system' /tmp/e
        test "$(cat /sysroot/only-a)" = a
        test "$(cat /sysroot/only-b)" = b
        test "$(cat /sysroot/both)" = "from a"
        if touch /sysroot/new 2>/dev/null; then exit 11; fi
        if rm /sysroot/only-b 2>/dev/null; then exit 12; fi
        "#,
    )];
    f.succeed();
    assert!(!dep.join("new").exists());
    assert!(b.join("only-b").exists());

    // One layer is a plain read-only bind; none is an empty directory.
    f.spec.sysroot = vec![b.clone()];
    f.spec.steps = vec![bash(
        "one",
        r#"test "$(cat /sysroot/both)" = "from b"; if touch /sysroot/new 2>/dev/null; then exit 10; fi"#,
    )];
    f.succeed();
    f.spec.sysroot = vec![];
    f.spec.steps = vec![bash(
        "none",
        r#"test -d /sysroot; test -z "$(ls -A /sysroot)""#,
    )];
    f.succeed();
}

#[test]
fn make_uses_the_engines_jobserver() {
    let mut f = Fixture::new();
    let jobs: Vec<String> = (1..=6).map(|i| format!("j{i}")).collect();
    let mut makefile = format!("all: {}\n", jobs.join(" "));
    for job in &jobs {
        // Each job records how many jobs are running at its start.
        makefile.push_str(&format!(
            "{job}:\n\t@touch /tmp/running/$@; ls /tmp/running | wc -l > /out/$@.count; \
             sleep 0.4; rm /tmp/running/$@\n"
        ));
    }
    fs::write(f.src.join("Makefile"), makefile).expect("write Makefile");
    f.spec.steps = vec![bash(
        "make",
        r#"printf '%s\n' "$MAKEFLAGS" > /out/makeflags; rm -rf /tmp/running; mkdir /tmp/running; make"#,
    )];
    let max_parallel = |f: &Fixture| {
        jobs.iter()
            .map(|job| {
                let path = f.out.join(format!("{job}.count"));
                let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{job}: {e}"));
                text.trim().parse::<usize>().expect("count is a number")
            })
            .max()
            .unwrap_or(0)
    };

    // Two tokens plus make's implicit one: up to three jobs at once.
    let client = jobserver::Client::new(2).expect("create jobserver");
    match f.run_with(Some(&client)) {
        Ok(Outcome::Success) => {}
        other => panic!("make failed: {other:?}\n{}", f.log()),
    }
    let makeflags = fs::read_to_string(f.out.join("makeflags")).expect("makeflags");
    assert!(
        makeflags.contains("--jobserver-auth="),
        "MAKEFLAGS={makeflags}"
    );
    assert!(!f.log().contains("jobserver unavailable"), "{}", f.log());
    assert!(!f.log().contains("warning"), "{}", f.log());
    let parallel = max_parallel(&f);
    assert!(
        (2..=3).contains(&parallel),
        "{parallel} jobs ran at once; the jobserver allows 3"
    );
    assert_eq!(
        client.available().expect("available"),
        2,
        "make kept tokens"
    );

    // With both tokens held by the engine, make may only run one job.
    let held = [
        client.acquire().expect("acquire"),
        client.acquire().expect("acquire"),
    ];
    match f.run_with(Some(&client)) {
        Ok(Outcome::Success) => {}
        other => panic!("make failed: {other:?}\n{}", f.log()),
    }
    assert_eq!(max_parallel(&f), 1, "make ignored the jobserver");
    drop(held);
}

#[test]
fn without_a_jobserver_no_makeflags_leak_in() {
    let mut f = Fixture::new();
    f.spec.steps = vec![bash(
        "flags",
        r#"echo "${MAKEFLAGS-unset} ${MFLAGS-unset} ${CARGO_MAKEFLAGS-unset}" > /out/flags"#,
    )];
    f.succeed();
    assert_eq!(
        fs::read_to_string(f.out.join("flags")).expect("flags"),
        "unset unset unset\n"
    );
}

#[test]
fn background_processes_die_with_the_sandbox() {
    let mut f = Fixture::new();
    let token = unique_token();
    f.spec.steps = vec![
        bash(
            "daemonize",
            &format!("sleep 1000.{token} & setsid sleep 1001.{token} & disown -a; echo started"),
        ),
        bash("next", "true"),
    ];
    f.succeed();
    // pid 1's exit kills the namespace before the helper reaps it, so this
    // holds the moment run() returns.
    let left = processes_matching(&token);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn killing_the_helper_kills_the_sandbox() {
    let mut f = Fixture::new();
    let token = unique_token();
    f.spec.steps = vec![bash(
        "hang",
        &format!("sleep 1000.{token} & touch /out/ready; sleep 1001.{token}"),
    )];
    let ready = f.out.join("ready");
    let spec_path = f.spec.scratch.join("spec.json");
    let result = std::thread::scope(|s| {
        let running = s.spawn(|| f.run());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "the step never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let needle = format!("{HELPER_ARG} {}", spec_path.display());
        // The sandbox's pid 1 is a fork of the helper, with the same
        // command line; the helper is the one whose parent is this process.
        let helpers: Vec<_> = processes_matching(&needle)
            .into_iter()
            .filter(|(pid, _)| parent_of(*pid) == Some(std::process::id()))
            .collect();
        assert_eq!(helpers.len(), 1, "helpers: {helpers:?}");
        let pid = i32::try_from(helpers[0].0).expect("pid fits");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
            .expect("kill the helper");
        running.join().expect("run() panicked")
    });
    match result {
        Err(SandboxError::HelperDied { .. }) => {}
        other => panic!("expected HelperDied, got {other:?}"),
    }
    let left = wait_until_gone(&token);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn setup_failures_name_the_mount_and_the_errno() {
    let mut f = Fixture::new();
    f.spec
        .ro_binds
        .push(bind("/nonexistent-kiln-dep", "/deps/missing"));
    f.spec.steps = vec![bash("never", "touch /out/ran")];
    match f.run() {
        Err(SandboxError::Setup { message }) => assert_eq!(
            message,
            "cannot bind-mount /nonexistent-kiln-dep at /deps/missing read-only: \
             No such file or directory"
        ),
        other => panic!("expected a setup error, got {other:?}"),
    }
    assert!(!f.out.join("ran").exists());

    let mut f = Fixture::new();
    f.spec.cwd = "/no/such/dir".into();
    f.spec.steps = vec![bash("never", "true")];
    match f.run() {
        Err(e @ SandboxError::Setup { .. }) => assert_eq!(
            e.to_string(),
            "sandbox setup failed: cannot enter working directory /no/such/dir: \
             No such file or directory"
        ),
        other => panic!("expected a setup error, got {other:?}"),
    }
}

#[test]
fn toolchain_binaries_and_ld_cache_work() {
    // /usr/bin/cc is a symlink through /etc/alternatives on Debian.
    let mut f = Fixture::new();
    fs::write(f.src.join("hello.c"), "int main(void) { return 0; }\n").expect("write");
    f.spec.steps = vec![bash(
        "cc",
        "test -e /etc/ld.so.cache; \
         if command -v cc >/dev/null; then cc -o /out/hello hello.c && /out/hello; fi",
    )];
    f.succeed();
}

#[test]
fn invalid_specs_are_rejected_before_spawning() {
    let mut f = Fixture::new();
    f.spec.rw_binds.push(bind("/tmp", "relative/path"));
    match f.run() {
        Err(SandboxError::InvalidSpec(msg)) => assert!(msg.contains("relative/path"), "{msg}"),
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    let mut f = Fixture::new();
    f.spec.steps = vec![SandboxStep {
        name: "empty".into(),
        argv: vec![],
        env: BTreeMap::new(),
    }];
    assert!(matches!(f.run(), Err(SandboxError::InvalidSpec(_))));
}

#[test]
fn a_helper_that_is_not_kiln_is_reported() {
    let f = Fixture::new();
    match sandbox::run(&f.spec, Path::new("/bin/true"), None) {
        Err(e @ SandboxError::HelperDied { .. }) => {
            assert!(e.to_string().contains("without reporting a result"), "{e}")
        }
        other => panic!("expected HelperDied, got {other:?}"),
    }
}
