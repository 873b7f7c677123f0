//! Why a sandbox could not run a build's steps to an outcome.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

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
