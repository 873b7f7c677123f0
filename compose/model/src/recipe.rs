//! A recipe as data: what one component is made from and how.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Span;

/// One input tarball, file or directory of a recipe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Downloaded from `url` (or a mirror) and verified against `hash`.
    Remote {
        url: String,
        hash: SourceHash,
        /// Debian source package that carries the same bytes, for `scripts/seed-sources`.
        debian: Option<String>,
        /// Leading path components to drop when unpacking (tar `--strip-components`).
        strip: u32,
        /// Directory below `/build/src` to unpack into ("" for the top).
        dest: String,
        /// Whether to unpack it (archives) or copy it as a file.
        unpack: bool,
        span: Span,
    },
    /// A file or directory that lives next to the recipe.
    Local {
        /// Path relative to the recipe's files directory (or to `base`).
        path: String,
        /// blake3 of the content (for directories, of a canonical listing).
        blake3: String,
        /// Where it lands below `/build/src`.
        dest: String,
        span: Span,
        /// The directory `path` is relative to when it is not the recipe's
        /// own: a board's kernel fragments live next to the board. Never
        /// hashed (the content is), so moving the checkout changes nothing.
        #[serde(skip)]
        base: Option<PathBuf>,
    },
}

/// An expected digest of a remote source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "algo", content = "hex", rename_all = "snake_case")]
pub enum SourceHash {
    Sha256(String),
    Blake3(String),
}

impl fmt::Display for SourceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceHash::Sha256(h) => write!(f, "sha256:{h}"),
            SourceHash::Blake3(h) => write!(f, "blake3:{h}"),
        }
    }
}

/// A patch applied with `patch -p<strip>` in list order after unpacking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    pub path: String,
    pub blake3: String,
    pub strip: u32,
    pub span: Span,
}

/// One build step: a command line, run in the sandbox with `/build/src` as cwd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Short name shown in progress and errors (`configure`, `step 2`, ...).
    pub name: String,
    /// argv; a step written as a string becomes `["/bin/sh", "-euc", text]`.
    pub argv: Vec<String>,
    /// Environment added for this step only.
    pub env: BTreeMap<String, String>,
    pub span: Span,
}

/// Ownership/mode/capabilities an unprivileged build cannot set itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// Absolute path inside the output (`/usr/bin/ping`).
    pub path: String,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Text form of file capabilities (`cap_net_raw+ep`).
    pub caps: Option<String>,
    pub span: Span,
}

/// A recipe after evaluation and after the board's overrides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub name: String,
    pub version: String,
    pub description: String,
    pub license: String,
    pub homepage: String,
    pub cpe: String,
    pub purl: String,
    pub sources: Vec<Source>,
    pub patches: Vec<Patch>,
    /// Recipes whose outputs must be present while building (`/deps/<name>`, `/sysroot`).
    pub build_deps: Vec<String>,
    /// Recipes that must be in the image when this one is.
    pub runtime_deps: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    /// Paths the output must contain; the build fails if one is missing.
    pub installs: Vec<String>,
    /// Absolute paths persisted on the state partition.
    pub state: Vec<String>,
    /// systemd units (file names) the output ships.
    pub units: Vec<String>,
    pub permissions: Vec<Permission>,
    /// A locked set of Debian binary packages to unpack, in lock order,
    /// instead of building from sources (a build environment, say). Read
    /// from the lock file the recipe's `debs` field names.
    pub debs: Vec<Deb>,
    /// Symlinks to make in a package set after unpacking (absolute path in
    /// the tree → target): what maintainer scripts would have made, like
    /// the `awk` and `cc` alternatives.
    pub links: BTreeMap<String, String>,
    /// Absolute paths left out of a package set after unpacking (a
    /// directory with everything below it): documentation, or another
    /// architecture's libraries that a cross build never loads, which would
    /// otherwise be stored, materialized and shared with every build.
    pub exclude: Vec<String>,
    /// Capabilities a board can require of the recipe (a bootloader's
    /// `ab-boot`, `table:mbr`); checked at evaluation, never hashed.
    pub provides: Vec<String>,
    /// Where the script lives; never hashed.
    pub span: Span,
    /// The recipe's files directory (`recipes/<stem>/`); never hashed.
    #[serde(skip)]
    pub files_dir: PathBuf,
    /// Where each dependency name was written, for "missing dependency" errors.
    #[serde(skip)]
    pub dep_spans: BTreeMap<String, Span>,
}

/// One package of a locked set of Debian binary packages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deb {
    pub package: String,
    pub version: String,
    /// Debian's architecture name (`amd64`, `arm64`, `all`).
    pub arch: String,
    /// Where the archive keeps it; mirrors are tried first, by hash.
    pub url: String,
    pub sha256: String,
    /// The command that refreshes the lock, for when the archive has
    /// moved on and this version is gone. Never hashed.
    #[serde(skip)]
    pub refresh: Option<String>,
}
