//! The hermetic build sandbox: every recipe's steps run in fresh user,
//! mount, pid, net, uts and ipc namespaces, on a root filesystem assembled
//! from nothing but what the [`SandboxSpec`] names.
//!
//! The work is split in two because of what the kernel allows:
//!
//! * [`run`] is called by the engine. The engine is multithreaded, and
//!   `unshare(CLONE_NEWUSER)` refuses multithreaded processes; a new pid
//!   namespace also only applies to children. So `run` writes the spec to
//!   `scratch/spec.json` and re-executes the kiln binary as
//!   `kiln __sandbox <spec>` (see [`HELPER_ARG`]).
//! * [`sandbox_main`] is that helper. It creates the namespaces and forks the
//!   namespace's pid 1, which builds the root, pivots into it and runs the
//!   steps. The helper itself stays in the host's mount namespace so that it
//!   can write the result to `scratch/status.json` once pid 1 has exited.
//!
//! Nothing a build starts can outlive `run()` or kiln: the helper gets
//! `SIGKILL` when the engine thread that spawned it dies (`PR_SET_PDEATHSIG`),
//! pid 1 gets `SIGKILL` when the helper dies, and when pid 1 exits the kernel
//! kills every other process in its pid namespace before the helper's
//! `waitpid` returns.

mod error;
mod failure;
mod helper;
mod jobserver;
mod launch;
mod mounts;
mod report;
mod spec;
mod steps;

pub use error::SandboxError;
pub use helper::sandbox_main;
pub use launch::run;
pub use spec::{Bind, Outcome, SandboxSpec, SandboxStep};

/// The hidden first argument that makes the kiln binary act as the sandbox
/// helper: `kiln __sandbox <spec.json>` must call [`sandbox_main`] before
/// the process starts any thread.
pub const HELPER_ARG: &str = "__sandbox";

/// [`sandbox_main`]'s exit code when every step succeeded.
pub const EXIT_SUCCESS: i32 = 0;
/// [`sandbox_main`]'s exit code when a step failed.
pub const EXIT_STEP_FAILED: i32 = 1;
/// [`sandbox_main`]'s exit code when the sandbox itself failed.
pub const EXIT_ERROR: i32 = 2;
