//! What identifies a toolchain in a key: not its name, but its tools.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolFingerprint {
    pub path: String,
    pub version: String,
    pub blake3: String,
    /// Further files that decide the tool's output (gcc's cc1, rustc's std).
    pub extra: BTreeMap<String, String>,
}

/// Everything about the toolchain that goes into a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub tools: BTreeMap<String, ToolFingerprint>,
    pub host_paths: Vec<PathBuf>,
}
