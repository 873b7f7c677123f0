//! The `kiln` command line, over the stages that do the work:
//!
//! `kiln-dsl` (Rhai → `kiln-model`) → `kiln-rules` (the plan and each
//! node's rule) → `kiln-engine` (keys, the scheduler, the shared cache) →
//! `kiln-store`; the rules build with `kiln-fetch`, `kiln-sandbox` and
//! `kiln-image`. This crate parses arguments, renders events and prints
//! results. See ARCHITECTURE.md for the data flow and the invariants.

pub mod cli;
pub mod progress;
pub mod qemu;
