//! Where a value was written, for messages.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a value came from in a `.rhai` file, for error messages.
///
/// Never part of a key: moving a recipe inside its file, or the checkout on
/// disk, must not change what it builds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The file as the user named it (relative to the project root when possible).
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}
