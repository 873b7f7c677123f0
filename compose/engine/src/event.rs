//! What the scheduler reports as it goes; the CLI renders these (a live
//! display, plain lines, or JSON lines with `--json`).

use std::path::PathBuf;

use serde::Serialize;

/// One thing that happened. Nodes are named in the `recipe` field, for
/// every kind of node: the JSON lines are an interface scripts read.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Plan {
        board: String,
        nodes: usize,
    },
    Cached {
        recipe: String,
        key: String,
        output: String,
    },
    /// A verified remote hit: the closure was downloaded into the store.
    Fetched {
        recipe: String,
        key: String,
        output: String,
        blobs: usize,
        bytes: u64,
        seconds: f64,
    },
    /// A node built here was uploaded to the remote cache.
    Pushed {
        recipe: String,
        key: String,
        blobs: usize,
        bytes: u64,
    },
    /// Something the user should know that does not stop the build.
    Warning {
        message: String,
    },
    Started {
        recipe: String,
        key: String,
        log: PathBuf,
    },
    Built {
        recipe: String,
        key: String,
        output: String,
        seconds: f64,
    },
    Failed {
        recipe: String,
        key: String,
        error: String,
    },
    Skipped {
        recipe: String,
        because: String,
    },
    Done {
        built: usize,
        cached: usize,
        fetched: usize,
        failed: usize,
        skipped: usize,
        seconds: f64,
    },
}

pub trait Events: Sync {
    fn event(&self, e: &Event);
}
