//! What can go wrong in a node's lifecycle that is not its rule's doing.

use kiln_store::StoreError;

use crate::rule::Failure;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A store we can't read from is a store we can't trust to write to.
    #[error("cannot read the action cache: {0}")]
    ActionCache(StoreError),

    #[error("{kind} `{name}`: cannot create its work directory: {source}")]
    WorkDir {
        kind: &'static str,
        name: String,
        source: kiln_atomic::Error,
    },

    #[error("{kind} `{name}`: cannot take a jobserver token: {source}")]
    Jobserver {
        kind: &'static str,
        name: String,
        source: std::io::Error,
    },

    /// Storing the output tree, its manifest or its action-cache entry.
    #[error("{kind} `{name}`: cannot {what}: {source}")]
    Store {
        kind: &'static str,
        name: String,
        what: &'static str,
        source: StoreError,
    },
}

impl Failure for EngineError {}
