//! Running the steps in pid 1: one after the other, each with the spec's
//! environment plus its own, output appended to the log after a header the
//! progress display reads, every exited process reaped on the way.

use std::fs::File;
use std::io::{self, Write};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::failure::{io_desc, io_fail, os_fail, Failure};
use crate::jobserver::Jobserver;
use crate::{Outcome, SandboxSpec};

/// Runs the steps one after the other, reaping every process that exits on
/// the way (orphans are reparented to pid 1).
pub(crate) fn run_steps(
    spec: &SandboxSpec,
    log: &File,
    jobserver: &Jobserver,
) -> Result<Outcome, Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_quoted_like_a_shell() {
        let argv = ["sh", "-c", "echo 'hi' > /out/x", ""].map(String::from);
        assert_eq!(quote_argv(&argv), r#"sh -c 'echo '\''hi'\'' > /out/x' ''"#);
    }
}
