//! Failures inside the helper and pid 1, phrased for the user: what was
//! being done, to which path, and the errno's description.

use std::fmt;
use std::io;

use nix::errno::Errno;

/// A failure inside the helper, already phrased for the user: what was
/// being done, to which path, and the errno's description.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

pub(crate) fn os_fail(what: impl fmt::Display, errno: Errno) -> Failure {
    Failure(format!("{what}: {}", errno.desc()))
}

pub(crate) fn io_fail(what: impl fmt::Display, err: &io::Error) -> Failure {
    Failure(format!("{what}: {}", io_desc(err)))
}

/// "No such file or directory" rather than std's "... (os error 2)".
pub(crate) fn io_desc(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(n) => Errno::from_raw(n).desc().to_owned(),
        None => err.to_string(),
    }
}
