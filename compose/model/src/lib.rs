//! Plain data that flows from evaluation to the graph, the rules and the
//! image: what a recipe or a board *is* once its script has run, where each
//! value was written ([`Span`]), and the [`Diagnostic`]s that point there.
//!
//! Nothing here knows about Rhai, the store or the sandbox. Keeping these
//! types dumb is what lets a key be a hash of a canonical encoding of them,
//! and lets every later stage depend on this crate without compiling an
//! interpreter.

mod board;
mod diag;
mod fingerprint;
mod project;
mod recipe;
mod span;

pub use board::{
    Board, BootloaderConfig, KernelConfig, OsRelease, Override, PartitionLayout, QemuConfig,
    Target, Toolchain,
};
pub use diag::{did_you_mean, Diagnostic, Diagnostics};
pub use fingerprint::{Fingerprint, ToolFingerprint};
pub use project::{Evaluation, Project};
pub use recipe::{Deb, Patch, Permission, Recipe, Source, SourceHash, Step};
pub use span::Span;

/// The one epoch of every build step (`SOURCE_DATE_EPOCH`) and of every
/// timestamp in an image: outputs don't depend on when they were made.
pub const SOURCE_DATE_EPOCH: u64 = 1_700_000_000;
