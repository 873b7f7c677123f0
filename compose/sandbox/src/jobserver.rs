//! The GNU make jobserver as the steps see it: the variables carried over
//! from the engine, with a named-pipe jobserver turned into descriptors
//! (its host path is not visible in the sandbox).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::failure::{os_fail, Failure};

/// How make and cargo find a jobserver. The steps' environment is reset, so
/// these are the only variables the helper carries over from its own.
const JOBSERVER_VARS: [&str; 3] = ["MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"];

/// The jobserver variables the engine passed to the helper, as the steps
/// must see them.
pub(crate) struct Jobserver {
    pub(crate) vars: Vec<(&'static str, OsString)>,
    /// Keeps an opened named-pipe jobserver open for the steps to inherit.
    _fifo: Option<OwnedFd>,
}

impl Jobserver {
    pub(crate) fn from_env() -> Result<Jobserver, Failure> {
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
}
