//! The helper process (`kiln __sandbox <spec>`): creates the namespaces,
//! forks the sandbox's pid 1, and writes its report to `status.json`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getgid, getuid, pipe2, ForkResult, Pid};

use crate::failure::{io_fail, os_fail, Failure};
use crate::jobserver::Jobserver;
use crate::mounts::setup;
use crate::report::{Report, STATUS_FILE};
use crate::spec::validate;
use crate::steps::run_steps;
use crate::{SandboxSpec, EXIT_ERROR};

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
