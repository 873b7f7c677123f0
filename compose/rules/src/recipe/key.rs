//! What a recipe's key covers.
//!
//! A recipe's **key** is blake3 over a canonical JSON encoding of everything
//! that can change its output: the recipe's build-relevant data with the
//! contents (not paths) of its sources and files, the target, the toolchain
//! fingerprint, the full step environment, and the **output** digests of its
//! build dependencies. Keying on dependency outputs rather than their keys
//! gives early cutoff: a dependency rebuilt to the same bytes leaves its
//! dependents' keys unchanged.
//!
//! Deliberately left out: the checkout path, file locations inside scripts,
//! source URLs and mirrors (the hash names the bytes), licence and SBOM
//! fields, `state` and `units` (they shape the image, not the build), and step
//! names. Changing those must not cost a rebuild.
//!
//! The **derivation hash** is the same encoding with dependency derivation
//! hashes in place of their outputs; it exists before anything is built and
//! is what `kiln show` and `kiln graph` print.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use kiln_model::{Fingerprint, Recipe, Source, SourceHash, Target};

/// Bumped whenever the meaning of a key's inputs changes, or the engine
/// changes how it turns the same inputs into an output (v2: local files are
/// copied with normalized modes).
pub const KEY_SCHEMA: &str = "kiln-key-v2";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceInput {
    Remote {
        hash: SourceHash,
        strip: u32,
        dest: String,
        unpack: bool,
    },
    Local {
        blake3: String,
        dest: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInput {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionInput {
    pub path: String,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub caps: Option<String>,
}

/// The recipe fields that can change what a build produces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeInput {
    pub name: String,
    pub version: String,
    pub sources: Vec<SourceInput>,
    pub patches: Vec<(String, u32)>,
    pub steps: Vec<StepInput>,
    pub installs: Vec<String>,
    pub permissions: Vec<PermissionInput>,
}

impl RecipeInput {
    pub fn of(r: &Recipe) -> RecipeInput {
        RecipeInput {
            name: r.name.clone(),
            version: r.version.clone(),
            sources: r
                .sources
                .iter()
                .map(|s| match s {
                    Source::Remote {
                        hash,
                        strip,
                        dest,
                        unpack,
                        ..
                    } => SourceInput::Remote {
                        hash: hash.clone(),
                        strip: *strip,
                        dest: dest.clone(),
                        unpack: *unpack,
                    },
                    Source::Local { blake3, dest, .. } => SourceInput::Local {
                        blake3: blake3.clone(),
                        dest: dest.clone(),
                    },
                })
                .collect(),
            patches: r
                .patches
                .iter()
                .map(|p| (p.blake3.clone(), p.strip))
                .collect(),
            steps: r
                .steps
                .iter()
                .map(|s| StepInput {
                    argv: s.argv.clone(),
                    env: s.env.clone(),
                })
                .collect(),
            installs: r.installs.clone(),
            permissions: r
                .permissions
                .iter()
                .map(|p| PermissionInput {
                    path: p.path.clone(),
                    mode: p.mode,
                    uid: p.uid,
                    gid: p.gid,
                    caps: p.caps.clone(),
                })
                .collect(),
        }
    }
}

/// Everything a recipe's key is computed from (after the schema tag, which
/// the engine writes first). Stored after each build so `kiln why` can say
/// which part changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeKey {
    pub schema: String,
    pub recipe: RecipeInput,
    pub target: Target,
    pub toolchain: Fingerprint,
    /// The environment of every step, before the step's own additions
    /// (base + toolchain + recipe env), without the jobserver variables.
    pub env: BTreeMap<String, String>,
    /// Build dependency name → its output digest (for keys) or derivation
    /// hash prefixed `drv:` (for derivation hashes).
    pub deps: BTreeMap<String, String>,
}
