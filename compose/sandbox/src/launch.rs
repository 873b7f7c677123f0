//! The engine's side: write the spec, run `kiln __sandbox <spec>`, wait, and
//! read `status.json`.

use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::unistd::{getppid, Pid};

use crate::report::{Report, HELPER_STDERR_FILE, SPEC_FILE, STATUS_FILE};
use crate::spec::validate;
use crate::{Outcome, SandboxError, SandboxSpec, HELPER_ARG};

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
