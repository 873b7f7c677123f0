//! Why a recipe could not be built, in the words its messages have always
//! used: the recipe, where in its file, and what to look at.

use std::path::PathBuf;

use kiln_engine::{Failure, LOG_TAIL_LINES};
use kiln_fetch::FetchError;
use kiln_sandbox::SandboxError;
use kiln_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot create {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("recipe `{recipe}` ({span}): {source}")]
    Source {
        recipe: String,
        span: String,
        source: FetchError,
    },

    #[error("recipe `{recipe}` ({span}): cannot copy {}: {source}", from.display())]
    CopyLocal {
        recipe: String,
        span: String,
        from: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "recipe `{recipe}`: patch `{patch}` ({span}) does not apply (patch ended with {how})\n--- last {LOG_TAIL_LINES} lines of {} ---\n{tail}",
        log.display()
    )]
    PatchFailed {
        recipe: String,
        patch: String,
        span: String,
        how: String,
        log: PathBuf,
        tail: String,
    },

    #[error("cannot materialize the output of `{dep}`: {source}")]
    Materialize { dep: String, source: StoreError },

    #[error(
        "recipe `{recipe}` failed in step {step}/{of} `{name}` ({span}) with {how}\n--- last {LOG_TAIL_LINES} lines of {} ---\n{tail}",
        log.display()
    )]
    StepFailed {
        recipe: String,
        /// 1-based.
        step: usize,
        of: usize,
        name: String,
        span: String,
        how: String,
        /// The kept log, for `kiln log`.
        log: PathBuf,
        tail: String,
    },

    #[error("recipe `{recipe}`: the sandbox could not run: {source}")]
    Sandbox {
        recipe: String,
        source: SandboxError,
    },

    #[error(
        "recipe `{recipe}` built, but its output lacks {} that `installs` promises ({span}): {}",
        if paths.len() == 1 { "a path" } else { "paths" },
        paths.join(", ")
    )]
    MissingInstalls {
        recipe: String,
        span: String,
        paths: Vec<String>,
    },
}

impl Failure for RecipeError {}
