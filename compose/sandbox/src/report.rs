//! `status.json`: how the helper tells the engine what happened. The one
//! wire format between the two processes besides `spec.json`.

use serde::{Deserialize, Serialize};

use crate::{Outcome, EXIT_ERROR, EXIT_STEP_FAILED, EXIT_SUCCESS};

/// What the helper leaves in `status.json`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Report {
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
    pub(crate) fn exit_code(&self) -> i32 {
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

pub(crate) const SPEC_FILE: &str = "spec.json";
pub(crate) const STATUS_FILE: &str = "status.json";
/// The helper's own stderr (panics, a failure to write the status file).
/// A file rather than a pipe, so that `run` never waits on whoever else
/// might hold the pipe open.
pub(crate) const HELPER_STDERR_FILE: &str = "helper.stderr";
/// Mount point of the new root below `scratch`.
pub(crate) const ROOT_DIR: &str = "root";
