//! Kiln's engine: recipes and boards in, a content-addressed build graph out,
//! built in sandboxes into the store.
//!
//! Data flows one way through these modules:
//! `dsl` (Rhai → `model`) → `graph` (petgraph DAG) → `key` (content
//! addresses) → `build` (scheduler, `fetch`, `sandbox`) → `kiln_store::Store`.
//! See ARCHITECTURE.md for the invariants.

pub mod build;
pub mod cli;
pub mod diag;
pub mod dsl;
pub mod fetch;
pub mod graph;
pub mod hashing;
pub mod image;
pub mod key;
pub mod mkfs;
pub mod model;
pub mod progress;
pub mod remote;
pub mod run;
pub mod sandbox;
pub mod toolchain;
