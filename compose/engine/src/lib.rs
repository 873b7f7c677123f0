//! Kiln's engine: a graph of nodes, each one a [`Rule`]; one key walk; and
//! the scheduler that owns every node's lifecycle.
//!
//! Like buck2's DICE, the engine knows nothing of what a node is. A rule
//! says what its key covers ([`Rule::key_inputs`]) and how to make its
//! output in a work directory ([`Rule::execute`]); everything else is the
//! engine's, the same for every kind of node:
//!
//! ```text
//! key inputs → key → action cache → shared cache → execute → store the
//! output tree → action-cache entry (last) → push → events
//! ```
//!
//! A new kind of node (an update bundle, a container image, an SBOM) is a
//! new `Rule`; the scheduler, the key walk, the shared cache, GC and the
//! CLI's `build`, `show`, `why`, `log`, `graph` and `cache push/pull` serve
//! it unchanged.

mod error;
mod event;
pub mod graph;
mod keys;
mod rule;
mod schedule;
mod shared;
mod work;

pub use error::EngineError;
pub use event::{Event, Events};
pub use graph::{DepKind, GraphError, Plan};
pub use keys::{derivation_inputs, derivations, diff, key_of, walk, Change, Walked};
pub use rule::{
    DepRef, Deps, Exec, Executed, Failure, KeyError, KeyInputs, NodeError, Publish, Rule, Rules,
};
pub use schedule::{run, Context, NodeResult, Options, Report};
pub use shared::short;
pub use work::{tail, WorkDir, LOG_TAIL_LINES};
