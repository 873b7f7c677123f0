//! The hermetic build sandbox: every recipe's steps run in fresh user,
//! mount, pid, net, uts and ipc namespaces, on a root filesystem assembled
//! from nothing but what the [`SandboxSpec`] names.
//!
//! The work is split in two because of what the kernel allows:
//!
//! * [`run`] is called by the engine. The engine is multithreaded, and
//!   `unshare(CLONE_NEWUSER)` refuses multithreaded processes; a new pid
//!   namespace also only applies to children. So `run` writes the spec to
//!   `scratch/spec.json` and re-executes the kiln binary as
//!   `kiln __sandbox <spec>` (see [`HELPER_ARG`]).
//! * [`sandbox_main`] is that helper. It creates the namespaces and forks the
//!   namespace's pid 1, which builds the root, pivots into it and runs the
//!   steps. The helper itself stays in the host's mount namespace so that it
//!   can write the result to `scratch/status.json` once pid 1 has exited.
//!
//! Nothing a build starts can outlive `run()` or kiln: the helper gets
//! `SIGKILL` when the engine thread that spawned it dies (`PR_SET_PDEATHSIG`),
//! pid 1 gets `SIGKILL` when the helper dies, and when pid 1 exits the kernel
//! kills every other process in its pid namespace before the helper's
//! `waitpid` returns.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::sys::stat::{umask, Mode};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{
    chdir, fork, getgid, getppid, getuid, pipe2, pivot_root, sethostname, ForkResult, Pid,
};
use serde::{Deserialize, Serialize};

/// The hidden first argument that makes the kiln binary act as the sandbox
/// helper: `kiln __sandbox <spec.json>` must call [`sandbox_main`] before
/// the process starts any thread.
pub const HELPER_ARG: &str = "__sandbox";

/// [`sandbox_main`]'s exit code when every step succeeded.
pub const EXIT_SUCCESS: i32 = 0;
/// [`sandbox_main`]'s exit code when a step failed.
pub const EXIT_STEP_FAILED: i32 = 1;
/// [`sandbox_main`]'s exit code when the sandbox itself failed.
pub const EXIT_ERROR: i32 = 2;

const SPEC_FILE: &str = "spec.json";
const STATUS_FILE: &str = "status.json";
/// The helper's own stderr (panics, a failure to write the status file).
/// A file rather than a pipe, so that `run` never waits on whoever else
/// might hold the pipe open.
const HELPER_STDERR_FILE: &str = "helper.stderr";
/// Mount point of the new root below `scratch`.
const ROOT_DIR: &str = "root";

/// How make and cargo find a jobserver. The steps' environment is reset, so
/// these are the only variables the helper carries over from its own.
const JOBSERVER_VARS: [&str; 3] = ["MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"];

/// Host files that make a Debian toolchain work: `/usr/bin/cc` and friends
/// are symlinks through `/etc/alternatives`, and multiarch libraries are only
/// found through `ld.so.cache`. Bound read-only when they exist.
const HOST_ETC: [&str; 4] = [
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
];

/// Device nodes bound from the host. A user namespace cannot `mknod`, so
/// binding the host's nodes is the only way to have them.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files\n\
                        networks: files\nprotocols: files\nservices: files\n";

/// A host path made visible inside the sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// Absolute host path (file or directory).
    pub host: PathBuf,
    /// Absolute path inside the sandbox.
    pub inside: PathBuf,
}

/// One command of a recipe's build.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SandboxStep {
    /// Shown in the log and in [`Outcome::StepFailed`].
    pub name: String,
    /// Program and arguments; the program is looked up on the step's `PATH`.
    pub argv: Vec<String>,
    /// Added on top of [`SandboxSpec::env`] for this step only.
    pub env: BTreeMap<String, String>,
}

/// Everything a sandbox sees. Nothing from the host leaks in that is not
/// named here (plus `/dev` nodes, a fresh `/proc`, `/tmp` and a minimal
/// `/etc`), which is what makes a build's key a faithful description of it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SandboxSpec {
    /// Empty host directory owned by this build. The helper writes
    /// `spec.json` and `status.json` here and mounts the new root (a tmpfs)
    /// on `scratch/root`; the host only ever sees an empty directory there.
    pub scratch: PathBuf,
    /// Read-only binds: toolchain host paths, dependency outputs at `/deps/<name>`.
    pub ro_binds: Vec<Bind>,
    /// Writable binds: `/build/src`, `/out`.
    pub rw_binds: Vec<Bind>,
    /// Host directories merged read-only at `/sysroot`; the first one wins
    /// on conflicts. Empty means an empty `/sysroot`.
    pub sysroot: Vec<PathBuf>,
    /// `(inside path, target)`, e.g. `(/bin, usr/bin)`. Created last, so they
    /// never redirect where a mount lands.
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    pub hostname: String,
    /// The complete environment of every step; nothing is inherited.
    pub env: BTreeMap<String, String>,
    /// Working directory of every step (must exist once the binds are made).
    pub cwd: PathBuf,
    pub steps: Vec<SandboxStep>,
    /// Host path of the build log. Each step's stdout and stderr are
    /// appended, after a `==> [step N/M] name: argv` header.
    pub log: PathBuf,
}

/// How a sandbox run ended, when the sandbox itself worked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Step `index` (0-based) failed; later steps did not run. `code` is its
    /// exit code (127 if it could not be executed), `signal` the signal that
    /// killed it.
    StepFailed {
        index: usize,
        name: String,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// Why a sandbox could not run the steps to an [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec is unusable as given (relative path, empty argv, ...).
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),

    /// A file in the scratch directory could not be written or read.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The helper process could not be started.
    #[error("cannot start sandbox helper {}: {source}", helper.display())]
    Spawn {
        helper: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Waiting for the helper failed (not expected to happen).
    #[error("cannot wait for the sandbox helper: {source}")]
    Wait {
        #[source]
        source: io::Error,
    },

    /// Building the sandbox failed (namespaces, a mount, pivot_root, ...).
    /// `message` names the operation, the path and the errno.
    #[error("sandbox setup failed: {message}")]
    Setup { message: String },

    /// The sandbox was set up but could not run the steps (e.g. the log
    /// became unwritable).
    #[error("sandbox failed: {message}")]
    Failed { message: String },

    /// The helper exited without leaving a result: it was killed, or is not
    /// a kiln binary that dispatches [`HELPER_ARG`].
    #[error("sandbox helper {} ended ({status}) without reporting a result{}", helper.display(), stderr_suffix(.stderr))]
    HelperDied {
        helper: PathBuf,
        status: ExitStatus,
        /// What the helper printed on stderr, if anything.
        stderr: String,
    },

    /// `status.json` exists but is not something a helper writes.
    #[error("malformed sandbox status {}: {source}", path.display())]
    MalformedStatus {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// What the helper leaves in `status.json`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "result", rename_all = "snake_case")]
enum Report {
    Success,
    StepFailed {
        index: usize,
        name: String,
        code: Option<i32>,
        signal: Option<i32>,
    },
    SetupFailed {
        message: String,
    },
    Failed {
        message: String,
    },
}

impl Report {
    fn exit_code(&self) -> i32 {
        match self {
            Report::Success => EXIT_SUCCESS,
            Report::StepFailed { .. } => EXIT_STEP_FAILED,
            Report::SetupFailed { .. } | Report::Failed { .. } => EXIT_ERROR,
        }
    }
}

impl From<Outcome> for Report {
    fn from(outcome: Outcome) -> Report {
        match outcome {
            Outcome::Success => Report::Success,
            Outcome::StepFailed {
                index,
                name,
                code,
                signal,
            } => Report::StepFailed {
                index,
                name,
                code,
                signal,
            },
        }
    }
}

/// Runs `spec`'s steps in a sandbox and waits for them.
///
/// `helper` is the kiln executable (an absolute path, normally
/// `std::env::current_exe()`); it is run as `helper __sandbox
/// <scratch>/spec.json` with an empty environment, and must call
/// [`sandbox_main`] for that. With a `jobserver`, its descriptors are
/// inherited by the helper and the steps, and `MAKEFLAGS`, `MFLAGS` and
/// `CARGO_MAKEFLAGS` point at it in every step.
///
/// Blocks until the sandbox is gone, including anything the steps left
/// running. Call it from a thread that outlives the call (it does: the call
/// blocks), since the helper is killed when the spawning thread exits.
pub fn run(
    spec: &SandboxSpec,
    helper: &Path,
    jobserver: Option<&jobserver::Client>,
) -> Result<Outcome, SandboxError> {
    validate(spec).map_err(SandboxError::InvalidSpec)?;
    let spec_path = spec.scratch.join(SPEC_FILE);
    let status_path = spec.scratch.join(STATUS_FILE);
    let stderr_path = spec.scratch.join(HELPER_STDERR_FILE);

    let json = serde_json::to_vec_pretty(spec)
        .map_err(|e| SandboxError::InvalidSpec(format!("cannot encode the spec: {e}")))?;
    fs::write(&spec_path, json).map_err(|source| SandboxError::Io {
        action: "cannot write sandbox spec",
        path: spec_path.clone(),
        source,
    })?;
    match fs::remove_file(&status_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SandboxError::Io {
                action: "cannot remove stale sandbox status",
                path: status_path,
                source,
            })
        }
    }

    let stderr = File::create(&stderr_path).map_err(|source| SandboxError::Io {
        action: "cannot create",
        path: stderr_path.clone(),
        source,
    })?;

    let mut cmd = Command::new(helper);
    cmd.arg(HELPER_ARG)
        .arg(&spec_path)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    if let Some(client) = jobserver {
        client.configure_make(&mut cmd);
    }
    let engine = Pid::this();
    // SAFETY: the closure runs between fork and exec, where only
    // async-signal-safe functions may be called; prctl and getppid are plain
    // system calls and nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The engine may have died between fork and prctl; then no
            // signal will ever come.
            if getppid() != engine {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| SandboxError::Spawn {
        helper: helper.to_owned(),
        source,
    })?;
    let status = child
        .wait()
        .map_err(|source| SandboxError::Wait { source })?;

    let bytes = match fs::read(&status_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SandboxError::HelperDied {
                helper: helper.to_owned(),
                status,
                // Only a diagnostic; an unreadable file just means no details.
                stderr: fs::read(&stderr_path)
                    .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                    .unwrap_or_default(),
            });
        }
        Err(source) => {
            return Err(SandboxError::Io {
                action: "cannot read sandbox status",
                path: status_path,
                source,
            })
        }
    };
    let report: Report =
        serde_json::from_slice(&bytes).map_err(|source| SandboxError::MalformedStatus {
            path: status_path,
            source,
        })?;
    match report {
        Report::Success => Ok(Outcome::Success),
        Report::StepFailed {
            index,
            name,
            code,
            signal,
        } => Ok(Outcome::StepFailed {
            index,
            name,
            code,
            signal,
        }),
        Report::SetupFailed { message } => Err(SandboxError::Setup { message }),
        Report::Failed { message } => Err(SandboxError::Failed { message }),
    }
}

/// The helper: `kiln __sandbox <spec.json>`. Returns the process exit code
/// ([`EXIT_SUCCESS`], [`EXIT_STEP_FAILED`] or [`EXIT_ERROR`]); the details
/// go to `status.json` next to the spec, which is what [`run`] reads.
///
/// Must be called while the process is single-threaded (first thing in
/// `main`), because `unshare(CLONE_NEWUSER)` fails otherwise.
pub fn sandbox_main(spec_path: &Path) -> i32 {
    let report = helper(spec_path);
    let status_path = spec_path.with_file_name(STATUS_FILE);
    let written = serde_json::to_vec(&report)
        .map_err(|e| e.to_string())
        .and_then(|json| fs::write(&status_path, json).map_err(|e| e.to_string()));
    match written {
        Ok(()) => report.exit_code(),
        Err(e) => {
            eprintln!(
                "kiln: cannot write sandbox status {}: {e}",
                status_path.display()
            );
            EXIT_ERROR
        }
    }
}

/// A failure inside the helper, already phrased for the user: what was
/// being done, to which path, and the errno's description.
#[derive(Debug)]
struct Failure(String);

fn os_fail(what: impl fmt::Display, errno: Errno) -> Failure {
    Failure(format!("{what}: {}", errno.desc()))
}

fn io_fail(what: impl fmt::Display, err: &io::Error) -> Failure {
    Failure(format!("{what}: {}", io_desc(err)))
}

/// "No such file or directory" rather than std's "... (os error 2)".
fn io_desc(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(n) => Errno::from_raw(n).desc().to_owned(),
        None => err.to_string(),
    }
}

fn helper(spec_path: &Path) -> Report {
    let spec = match load_spec(spec_path) {
        Ok(spec) => spec,
        Err(Failure(message)) => return Report::SetupFailed { message },
    };
    let log = match OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(&spec.log)
    {
        Ok(log) => log,
        Err(e) => {
            let message = io_fail(format!("cannot open build log {}", spec.log.display()), &e).0;
            return Report::SetupFailed { message };
        }
    };
    let report =
        sandbox(&spec, &log).unwrap_or_else(|Failure(message)| Report::SetupFailed { message });
    let note = match &report {
        Report::SetupFailed { message } => Some(format!("kiln: sandbox setup failed: {message}\n")),
        Report::Failed { message } => Some(format!("kiln: sandbox failed: {message}\n")),
        Report::Success | Report::StepFailed { .. } => None,
    };
    if let Some(note) = note {
        // Best effort: the same message reaches the engine via status.json.
        let _ = (&log).write_all(note.as_bytes());
    }
    report
}

fn load_spec(spec_path: &Path) -> Result<SandboxSpec, Failure> {
    let bytes = fs::read(spec_path).map_err(|e| {
        io_fail(
            format!("cannot read sandbox spec {}", spec_path.display()),
            &e,
        )
    })?;
    let spec: SandboxSpec = serde_json::from_slice(&bytes).map_err(|e| {
        Failure(format!(
            "malformed sandbox spec {}: {e}",
            spec_path.display()
        ))
    })?;
    validate(&spec)
        .map_err(|m| Failure(format!("invalid sandbox spec {}: {m}", spec_path.display())))?;
    Ok(spec)
}

/// Creates the namespaces, forks pid 1 and waits for its report.
fn sandbox(spec: &SandboxSpec, log: &File) -> Result<Report, Failure> {
    let jobserver = Jobserver::from_env()?;
    let (uid, gid) = (getuid(), getgid());
    // The mount namespace is created by pid 1 alone: pivot_root changes the
    // root of every process in the namespace, and this process must keep
    // the host's view to write status.json.
    unshare(
        CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(|e| {
        let hint = match e {
            Errno::EINVAL => " (the helper must be single-threaded)",
            Errno::EPERM | Errno::ENOSPC => {
                " (are unprivileged user namespaces disabled? see user.max_user_namespaces \
                 and kernel.apparmor_restrict_unprivileged_userns)"
            }
            _ => "",
        };
        Failure(format!(
            "cannot create user, pid, net, uts and ipc namespaces: {}{hint}",
            e.desc()
        ))
    })?;
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/uid_map", &format!("0 {uid} 1\n"))?;
    write_proc("/proc/self/gid_map", &format!("0 {gid} 1\n"))?;

    let (status_r, status_w) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| os_fail("cannot create a pipe", e))?;
    let (life_r, life_w) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| os_fail("cannot create a pipe", e))?;
    // SAFETY: unshare(CLONE_NEWUSER) above succeeded, which the kernel only
    // allows in a single-threaded process, so the child cannot inherit a
    // lock held by another thread.
    match unsafe { fork() }.map_err(|e| os_fail("cannot fork the sandbox's init process", e))? {
        ForkResult::Child => {
            drop(status_r);
            drop(life_w);
            let code = init(spec, log, &jobserver, status_w, &life_r);
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            drop(status_w);
            drop(life_r);
            let report = collect(child, status_r)
                .unwrap_or_else(|Failure(message)| Report::Failed { message });
            drop(life_w);
            Ok(report)
        }
    }
}

fn write_proc(path: &str, content: &str) -> Result<(), Failure> {
    fs::write(path, content).map_err(|e| {
        io_fail(
            format!("cannot write {:?} to {path}", content.trim_end()),
            &e,
        )
    })
}

/// Reads pid 1's report and reaps it. pid 1's exit kills and waits for
/// everything else in its pid namespace, so once `waitpid` returns the
/// sandbox is empty.
fn collect(child: Pid, status_r: OwnedFd) -> Result<Report, Failure> {
    let mut buf = Vec::new();
    let read = File::from(status_r).read_to_end(&mut buf);
    let status = loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    read.map_err(|e| io_fail("cannot read the result of the sandbox's init process", &e))?;
    let status = status.map_err(|e| os_fail("cannot wait for the sandbox's init process", e))?;
    if buf.is_empty() {
        return Err(Failure(format!(
            "the sandbox's init process {} without reporting a result",
            describe_wait(status)
        )));
    }
    serde_json::from_slice(&buf).map_err(|e| {
        Failure(format!(
            "malformed result from the sandbox's init process: {e}"
        ))
    })
}

fn describe_wait(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with code {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("was killed by {signal}"),
        other => format!("stopped ({other:?})"),
    }
}

/// pid 1 of the sandbox: sets everything up, runs the steps, reports.
/// Returns the exit code; exiting kills whatever the steps left behind.
fn init(
    spec: &SandboxSpec,
    log: &File,
    jobserver: &Jobserver,
    status_w: OwnedFd,
    lifeline: &OwnedFd,
) -> i32 {
    let report = match die_with_helper(lifeline).and_then(|()| setup(spec)) {
        Err(Failure(message)) => Report::SetupFailed { message },
        Ok(()) => match run_steps(spec, log, jobserver) {
            Ok(outcome) => outcome.into(),
            Err(Failure(message)) => Report::Failed { message },
        },
    };
    let Ok(json) = serde_json::to_vec(&report) else {
        return EXIT_ERROR;
    };
    match File::from(status_w).write_all(&json) {
        Ok(()) => report.exit_code(),
        Err(_) => EXIT_ERROR,
    }
}

/// Makes pid 1 (and with it the whole namespace) die with the helper. The
/// helper never writes to the lifeline pipe, so it only becomes readable
/// (EOF) once the helper is gone — which covers the helper dying before
/// `PR_SET_PDEATHSIG` took effect.
fn die_with_helper(lifeline: &OwnedFd) -> Result<(), Failure> {
    prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| os_fail("cannot set the parent-death signal", e))?;
    let mut fds = [PollFd::new(lifeline.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => Ok(()),
        Ok(_) => Err(Failure("the sandbox helper exited during setup".to_owned())),
        Err(e) => Err(os_fail("cannot poll the sandbox helper's lifeline", e)),
    }
}

/// Read-only or writable bind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadOnly,
    ReadWrite,
}

/// Builds the root in `scratch/root` and pivots into it.
fn setup(spec: &SandboxSpec) -> Result<(), Failure> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| os_fail("cannot create a mount namespace", e))?;
    // Without this, our mounts would propagate back to the host's shared mounts.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| os_fail("cannot make the host's mounts private", e))?;

    let root = spec.scratch.join(ROOT_DIR);
    fs::create_dir_all(&root)
        .map_err(|e| io_fail(format!("cannot create sandbox root {}", root.display()), &e))?;
    mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| os_fail(format!("cannot mount tmpfs at {}", root.display()), e))?;

    write_etc(&root, &spec.hostname)?;
    mount_fs(
        &root,
        "proc",
        "/proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_dev(&root)?;
    mount_fs(
        &root,
        "tmpfs",
        "/tmp",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount_sysroot(&root, &spec.sysroot)?;
    for b in &spec.ro_binds {
        bind(&root, &b.host, &b.inside, Access::ReadOnly)?;
    }
    for b in &spec.rw_binds {
        bind(&root, &b.host, &b.inside, Access::ReadWrite)?;
    }
    for etc in HOST_ETC {
        let (host, inside) = (Path::new(etc), Path::new(etc));
        let named = spec
            .ro_binds
            .iter()
            .chain(&spec.rw_binds)
            .any(|b| b.inside == inside);
        if !named && fs::symlink_metadata(host).is_ok() {
            bind(&root, host, inside, Access::ReadOnly)?;
        }
    }
    for (inside, target) in &spec.symlinks {
        let path = under(&root, inside);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| {
                io_fail(
                    format!("cannot create the parent of symlink {}", inside.display()),
                    &e,
                )
            })?;
        }
        symlink(target, &path).map_err(|e| {
            io_fail(
                format!(
                    "cannot create symlink {} -> {}",
                    inside.display(),
                    target.display()
                ),
                &e,
            )
        })?;
    }

    sethostname(&spec.hostname)
        .map_err(|e| os_fail(format!("cannot set hostname {:?}", spec.hostname), e))?;
    // Writable places are exactly the rw binds, /tmp and /dev/shm.
    mount(
        None::<&str>,
        &root,
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| os_fail("cannot make the sandbox root read-only", e))?;

    // pivot_root(".", ".") stacks the old root on top of the new one, where
    // it can be detached; no put_old directory is needed in a read-only root.
    chdir(&root).map_err(|e| os_fail(format!("cannot enter {}", root.display()), e))?;
    pivot_root(".", ".")
        .map_err(|e| os_fail(format!("cannot pivot_root into {}", root.display()), e))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| os_fail("cannot detach the host's root filesystem", e))?;
    chdir("/").map_err(|e| os_fail("cannot enter /", e))?;
    // The net namespace is left as created: only a loopback device, down.
    umask(Mode::from_bits_truncate(0o022));
    chdir(&spec.cwd).map_err(|e| {
        os_fail(
            format!("cannot enter working directory {}", spec.cwd.display()),
            e,
        )
    })?;
    Ok(())
}

/// `inside` (absolute, validated) below `root`. `Path::join` would discard
/// `root` for an absolute path.
fn under(root: &Path, inside: &Path) -> PathBuf {
    let mut path = root.to_path_buf();
    for component in inside.components() {
        if let Component::Normal(name) = component {
            path.push(name);
        }
    }
    path
}

fn write_etc(root: &Path, hostname: &str) -> Result<(), Failure> {
    let etc = root.join("etc");
    fs::create_dir_all(&etc).map_err(|e| io_fail("cannot create /etc", &e))?;
    let files = [
        ("passwd", PASSWD.to_owned()),
        ("group", GROUP.to_owned()),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
        ("hostname", format!("{hostname}\n")),
        ("nsswitch.conf", NSSWITCH.to_owned()),
    ];
    for (name, content) in files {
        fs::write(etc.join(name), content)
            .map_err(|e| io_fail(format!("cannot write /etc/{name}"), &e))?;
    }
    Ok(())
}

/// Mounts a fresh filesystem without a backing device (tmpfs, proc).
fn mount_fs(
    root: &Path,
    fstype: &str,
    inside: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Failure> {
    let target = under(root, Path::new(inside));
    fs::create_dir_all(&target)
        .map_err(|e| io_fail(format!("cannot create mount point {inside}"), &e))?;
    mount(Some(fstype), &target, Some(fstype), flags, data)
        .map_err(|e| os_fail(format!("cannot mount {fstype} at {inside}"), e))
}

fn mount_dev(root: &Path) -> Result<(), Failure> {
    mount_fs(
        root,
        "tmpfs",
        "/dev",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        // Some containers have no /dev/tty; nothing in a build needs it.
        if name == "tty" && fs::symlink_metadata(&host).is_err() {
            continue;
        }
        bind(root, &host, &host, Access::ReadWrite)?;
    }
    let dev = root.join("dev");
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name))
            .map_err(|e| io_fail(format!("cannot create symlink /dev/{name} -> {target}"), &e))?;
    }
    mount_fs(
        root,
        "tmpfs",
        "/dev/shm",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    // Ptys are a nicety (some test suites want them), not a requirement: a
    // kernel that refuses a devpts instance here just gets no /dev/ptmx.
    let pts = dev.join("pts");
    fs::create_dir_all(&pts).map_err(|e| io_fail("cannot create mount point /dev/pts", &e))?;
    let devpts = mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    );
    if devpts.is_ok() {
        symlink("pts/ptmx", dev.join("ptmx"))
            .map_err(|e| io_fail("cannot create symlink /dev/ptmx -> pts/ptmx", &e))?;
    }
    Ok(())
}

fn mount_sysroot(root: &Path, dirs: &[PathBuf]) -> Result<(), Failure> {
    let inside = Path::new("/sysroot");
    let target = under(root, inside);
    match dirs {
        [] => fs::create_dir_all(&target)
            .map_err(|e| io_fail("cannot create mount point /sysroot", &e)),
        [only] => bind(root, only, inside, Access::ReadOnly),
        _ => {
            let mut lower = Vec::new();
            for (i, dir) in dirs.iter().enumerate() {
                match fs::metadata(dir) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(os_fail(
                            format!("cannot use {} as a sysroot layer", dir.display()),
                            Errno::ENOTDIR,
                        ))
                    }
                    Err(e) => {
                        return Err(io_fail(
                            format!("cannot use {} as a sysroot layer", dir.display()),
                            &e,
                        ))
                    }
                }
                if i > 0 {
                    lower.push(b':');
                }
                lower.extend(escape_overlay_path(dir.as_os_str().as_bytes()));
            }
            fs::create_dir_all(&target)
                .map_err(|e| io_fail("cannot create mount point /sysroot", &e))?;
            let mut data = b"lowerdir=".to_vec();
            data.extend(&lower);
            // Without an upperdir an overlay is read-only by construction;
            // MS_RDONLY makes that visible in /proc/mounts too.
            mount(
                Some("overlay"),
                &target,
                Some("overlay"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(OsStr::from_bytes(&data)),
            )
            .map_err(|e| {
                os_fail(
                    format!(
                        "cannot mount an overlay of {} at /sysroot",
                        String::from_utf8_lossy(&lower)
                    ),
                    e,
                )
            })
        }
    }
}

/// overlayfs splits its options on `,` and `lowerdir` on `:`; both honour
/// a backslash escape.
fn escape_overlay_path(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if matches!(b, b'\\' | b':' | b',') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Binds `host` at `inside` below `root`. Recursive, so that mounts below
/// `host` come along: a user namespace refuses a non-recursive bind of a
/// tree with (locked) submounts.
fn bind(root: &Path, host: &Path, inside: &Path, access: Access) -> Result<(), Failure> {
    let what = || {
        let ro = if access == Access::ReadOnly {
            " read-only"
        } else {
            ""
        };
        format!(
            "cannot bind-mount {} at {}{ro}",
            host.display(),
            inside.display()
        )
    };
    let meta = fs::metadata(host).map_err(|e| io_fail(what(), &e))?;
    let target = under(root, inside);
    make_mount_point(&target, meta.is_dir()).map_err(|e| {
        io_fail(
            format!(
                "cannot create mount point {} for {}",
                inside.display(),
                host.display()
            ),
            &e,
        )
    })?;
    mount(
        Some(host),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| os_fail(what(), e))?;
    if access == Access::ReadOnly {
        remount_read_only(&target).map_err(|e| os_fail(what(), e))?;
    }
    Ok(())
}

fn make_mount_point(target: &Path, dir: bool) -> io::Result<()> {
    if dir {
        return fs::create_dir_all(target);
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    if fs::symlink_metadata(target).is_err() {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(target)?;
    }
    Ok(())
}

/// Makes a fresh bind mount read-only.
///
/// A bind ignores `MS_RDONLY`, so this is a second, remounting step. In a
/// user namespace the host mount's nosuid/nodev/noexec flags are locked: a
/// remount that would clear them is refused with EPERM, so they are read
/// back with statvfs and kept. (Atime flags are kept by the kernel when the
/// remount names none.) That remount only covers the top mount; submounts
/// brought along by the recursive bind are made read-only with
/// `mount_setattr(AT_RECURSIVE)` (Linux 5.12+).
fn remount_read_only(target: &Path) -> Result<(), Errno> {
    let locked = statvfs(target)?.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (st, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if locked.contains(st) {
            flags |= ms;
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)?;
    set_read_only_recursive(target)
}

fn set_read_only_recursive(target: &Path) -> Result<(), Errno> {
    let path = CString::new(target.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` is a mount_attr of the size
    // passed; both outlive the call, which only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        // Older kernel: the top mount is read-only, submounts stay as they are.
        Err(Errno::ENOSYS) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The jobserver variables the engine passed to the helper, as the steps
/// must see them.
struct Jobserver {
    vars: Vec<(&'static str, OsString)>,
    /// Keeps an opened named-pipe jobserver open for the steps to inherit.
    _fifo: Option<OwnedFd>,
}

impl Jobserver {
    fn from_env() -> Result<Jobserver, Failure> {
        let mut vars: Vec<(&'static str, OsString)> = JOBSERVER_VARS
            .iter()
            .filter_map(|&name| std::env::var_os(name).map(|value| (name, value)))
            .collect();
        // make 4.4 hands out a named pipe (`--jobserver-auth=fifo:PATH`), but
        // PATH is a host path the sandbox cannot see. Open it here and pass
        // the descriptor instead, which every make and cargo understand.
        let Some(path) = vars.iter().find_map(|(_, value)| fifo_path(value)) else {
            return Ok(Jobserver { vars, _fifo: None });
        };
        // No O_CLOEXEC: the steps must inherit it.
        let fd = open(path.as_str(), OFlag::O_RDWR, Mode::empty())
            .map_err(|e| os_fail(format!("cannot open jobserver fifo {path}"), e))?;
        let raw = fd.as_raw_fd();
        for (_, value) in &mut vars {
            *value = replace_fifo_auth(value, &path, raw);
        }
        Ok(Jobserver {
            vars,
            _fifo: Some(fd),
        })
    }
}

/// The path of the last `--jobserver-auth=fifo:PATH` in make flags, which is
/// the one make itself honours.
fn fifo_path(flags: &OsStr) -> Option<String> {
    flags
        .to_str()?
        .split_ascii_whitespace()
        .rev()
        .find(|word| word.starts_with("--jobserver-auth=") || word.starts_with("--jobserver-fds="))
        .and_then(|word| word.split_once("=fifo:"))
        .map(|(_, path)| path.to_owned())
}

fn replace_fifo_auth(flags: &OsStr, path: &str, fd: i32) -> OsString {
    match flags.to_str() {
        Some(s) => s
            .replace(&format!("fifo:{path}"), &format!("{fd},{fd}"))
            .into(),
        None => flags.to_owned(),
    }
}

/// Runs the steps one after the other, reaping every process that exits on
/// the way (orphans are reparented to pid 1).
fn run_steps(spec: &SandboxSpec, log: &File, jobserver: &Jobserver) -> Result<Outcome, Failure> {
    let log_err =
        |e: io::Error| io_fail(format!("cannot write build log {}", spec.log.display()), &e);
    let total = spec.steps.len();
    for (index, step) in spec.steps.iter().enumerate() {
        let label = format!("[step {}/{total}] {}", index + 1, step.name);
        let header = format!("==> {label}: {}\n", quote_argv(&step.argv));
        (&*log).write_all(header.as_bytes()).map_err(log_err)?;

        let Some((program, args)) = step.argv.split_first() else {
            return Err(Failure(format!("step {:?} has an empty argv", step.name)));
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(&spec.env)
            .envs(&step.env)
            .envs(jobserver.vars.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(log_err)?)
            .stderr(log.try_clone().map_err(log_err)?);
        let (code, signal) = match cmd.spawn() {
            Err(e) => {
                let msg = format!("kiln: cannot execute {program}: {}\n", io_desc(&e));
                (&*log).write_all(msg.as_bytes()).map_err(log_err)?;
                (Some(127), None)
            }
            Ok(child) => {
                let pid = i32::try_from(child.id())
                    .map_err(|_| Failure(format!("step {:?} got an impossible pid", step.name)))?;
                match reap_until(Pid::from_raw(pid))? {
                    Ended::Exited(0) => continue,
                    Ended::Exited(code) => (Some(code), None),
                    Ended::Killed(signal) => (None, Some(signal as i32)),
                }
            }
        };
        let why = match (code, signal) {
            (_, Some(sig)) => match Signal::try_from(sig) {
                Ok(s) => format!("killed by {s}"),
                Err(_) => format!("killed by signal {sig}"),
            },
            (Some(code), None) => format!("exit code {code}"),
            (None, None) => "unknown status".to_owned(),
        };
        (&*log)
            .write_all(format!("==> {label} failed: {why}\n").as_bytes())
            .map_err(log_err)?;
        return Ok(Outcome::StepFailed {
            index,
            name: step.name.clone(),
            code,
            signal,
        });
    }
    Ok(Outcome::Success)
}

/// How a step's process ended.
enum Ended {
    Exited(i32),
    Killed(Signal),
}

/// Waits for `pid` to terminate, reaping any other process on the way.
fn reap_until(pid: Pid) -> Result<Ended, Failure> {
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Ok(Ended::Exited(code)),
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => return Ok(Ended::Killed(signal)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(os_fail("cannot wait for a build step", e)),
        }
    }
}

/// The argv as a shell would need it, so the log header can be pasted.
fn quote_argv(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let plain = !arg.is_empty()
            && arg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%^".contains(&b));
        if plain {
            out.push_str(arg);
        } else {
            out.push('\'');
            out.push_str(&arg.replace('\'', r"'\''"));
            out.push('\'');
        }
    }
    out
}

/// Catches what would otherwise fail deep inside the helper with a less
/// helpful message, or worse, resolve a path against the wrong root.
fn validate(spec: &SandboxSpec) -> Result<(), String> {
    fn absolute_host(what: &str, path: &Path) -> Result<(), String> {
        if path.is_absolute() {
            Ok(())
        } else {
            Err(format!("{what} {} is not an absolute path", path.display()))
        }
    }
    fn inside(what: &str, path: &Path) -> Result<(), String> {
        let mut components = path.components();
        let rooted = components.next() == Some(Component::RootDir);
        let normal: Vec<_> = components.collect();
        if !rooted || normal.is_empty() || !normal.iter().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "{what} {} must be an absolute path below / without `.` or `..`",
                path.display()
            ));
        }
        Ok(())
    }
    fn no_nul(what: &str, s: &str) -> Result<(), String> {
        if s.contains('\0') {
            Err(format!("{what} {s:?} contains a NUL byte"))
        } else {
            Ok(())
        }
    }
    fn env(map: &BTreeMap<String, String>) -> Result<(), String> {
        for (k, v) in map {
            if k.is_empty() || k.contains('=') {
                return Err(format!("invalid environment variable name {k:?}"));
            }
            no_nul("environment variable", k)?;
            no_nul("environment value", v)?;
        }
        Ok(())
    }

    absolute_host("scratch directory", &spec.scratch)?;
    absolute_host("log", &spec.log)?;
    for b in spec.ro_binds.iter().chain(&spec.rw_binds) {
        absolute_host("bind source", &b.host)?;
        inside("bind target", &b.inside)?;
    }
    for dir in &spec.sysroot {
        absolute_host("sysroot directory", dir)?;
    }
    for (path, _) in &spec.symlinks {
        inside("symlink", path)?;
    }
    if !spec.cwd.is_absolute() {
        return Err(format!(
            "working directory {} is not absolute",
            spec.cwd.display()
        ));
    }
    // sethostname's limit (HOST_NAME_MAX).
    if spec.hostname.is_empty() || spec.hostname.len() > 64 {
        return Err(format!(
            "hostname {:?} must be 1 to 64 bytes",
            spec.hostname
        ));
    }
    env(&spec.env)?;
    for step in &spec.steps {
        if step.argv.is_empty() {
            return Err(format!("step {:?} has an empty argv", step.name));
        }
        for arg in &step.argv {
            no_nul("argument", arg)?;
        }
        env(&step.env)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_jobserver_is_rewritten_to_descriptors() {
        let flags = OsStr::new(" -j --jobserver-auth=fifo:/tmp/GMfifo12 V=1");
        let path = fifo_path(flags);
        assert_eq!(path.as_deref(), Some("/tmp/GMfifo12"));
        assert_eq!(
            replace_fifo_auth(flags, "/tmp/GMfifo12", 7),
            OsString::from(" -j --jobserver-auth=7,7 V=1")
        );
        assert_eq!(fifo_path(OsStr::new("-j --jobserver-auth=3,4")), None);
    }

    #[test]
    fn overlay_paths_are_escaped() {
        assert_eq!(
            escape_overlay_path(b"/a:b,c\\d"),
            b"/a\\:b\\,c\\\\d".to_vec()
        );
    }

    #[test]
    fn argv_is_quoted_like_a_shell() {
        let argv = ["sh", "-c", "echo 'hi' > /out/x", ""].map(String::from);
        assert_eq!(quote_argv(&argv), r#"sh -c 'echo '\''hi'\'' > /out/x' ''"#);
    }

    #[test]
    fn inside_paths_must_stay_inside() {
        let mut spec = SandboxSpec {
            scratch: "/s".into(),
            ro_binds: vec![Bind {
                host: "/usr".into(),
                inside: "/usr/../etc".into(),
            }],
            rw_binds: vec![],
            sysroot: vec![],
            symlinks: vec![],
            hostname: "kiln".into(),
            env: BTreeMap::new(),
            cwd: "/".into(),
            steps: vec![],
            log: "/s/log".into(),
        };
        assert!(validate(&spec).is_err());
        spec.ro_binds[0].inside = "/".into();
        assert!(validate(&spec).is_err());
        spec.ro_binds[0].inside = "/usr".into();
        assert!(validate(&spec).is_ok());
    }
}
