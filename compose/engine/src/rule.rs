//! What a kind of node must say for the engine to build it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kiln_store::{Digest, MetaOverride, Store};
use serde::Serialize;

/// Every node's rule, by node name.
pub type Rules = BTreeMap<String, Arc<dyn Rule>>;

/// What a build dependency gives its dependent's key: its key and output
/// digest as hex, or, for derivation hashes (known before anything is
/// built), `drv:<derivation>` for both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepRef {
    pub key: String,
    pub output: String,
}

/// A node's build dependencies, by name.
pub type Deps = BTreeMap<String, DepRef>;

/// Serializing a rule's key inputs failed. It cannot for plain data, but a
/// key must never silently become the hash of nothing.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the key inputs ({schema}): {source}")]
pub struct KeyError {
    pub schema: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// What a node's key is computed from: a schema tag that names the rule
/// and the meaning of its inputs, and the canonical JSON of every input
/// that can change the output. Rules build it from plain structs whose
/// fields serialize in declaration order, with every map a `BTreeMap`, so
/// equal inputs give equal bytes.
#[derive(Clone, Debug)]
pub struct KeyInputs {
    schema: &'static str,
    json: Vec<u8>,
}

impl KeyInputs {
    pub fn new(schema: &'static str, inputs: &impl Serialize) -> Result<KeyInputs, KeyError> {
        let json = serde_json::to_vec(inputs).map_err(|source| KeyError { schema, source })?;
        Ok(KeyInputs { schema, json })
    }

    pub fn schema(&self) -> &'static str {
        self.schema
    }

    /// `schema \0 json`: the bytes the key hashes.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.schema.len() + 1 + self.json.len());
        out.extend_from_slice(self.schema.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.json);
        out
    }

    pub fn key(&self) -> Digest {
        Digest::of(&self.canonical())
    }

    /// The inputs as JSON, for `kiln show` and `kiln why`.
    pub fn value(&self) -> serde_json::Value {
        // The bytes came from serde_json a moment ago.
        serde_json::from_slice(&self.json).unwrap_or(serde_json::Value::Null)
    }
}

/// A node that could not be made, as its rule tells it.
pub trait Failure: std::error::Error + Send + Sync + 'static {
    /// `kiln build`'s closing message for this failure, when the rule has
    /// its own (the image says which board field to change). Failures
    /// without one are listed together, by kind.
    fn report(&self) -> Option<String> {
        None
    }
}

pub type NodeError = Box<dyn Failure>;

impl<E: Failure> From<E> for NodeError {
    fn from(e: E) -> NodeError {
        Box::new(e)
    }
}

impl Failure for KeyError {}

/// What `execute` gets: a fresh work directory, the place for the output
/// tree and the log, the dependencies' results, the store and the
/// jobserver.
pub struct Exec<'a> {
    pub name: &'a str,
    pub key: Digest,
    pub store: &'a Store,
    /// Each build dependency's key and output.
    pub deps: &'a BTreeMap<String, (Digest, Digest)>,
    /// Scratch space, empty when `execute` starts; removed after the node
    /// unless `execute` asks to keep it.
    pub work: &'a Path,
    /// Where the output tree goes (`work/out`, empty); the engine stores it.
    pub out: &'a Path,
    /// The live log (`work/build.log`, empty). Lines `==> [step N/M] name`
    /// are what the progress display shows; the engine keeps the log for
    /// `kiln log` whether or not the node was made.
    pub log: &'a Path,
    /// Where the engine keeps the log after `execute` returns, for error
    /// messages to point at.
    pub kept_log: &'a Path,
    /// The build's one GNU make jobserver; the engine holds a token for
    /// this node's implicit slot while `execute` runs.
    pub jobserver: Option<&'a jobserver::Client>,
}

/// What a successful `execute` tells the engine.
#[derive(Debug, Default)]
pub struct Executed {
    /// Modes, owners and capabilities the build could not set itself.
    pub overrides: Vec<MetaOverride>,
    /// Keep the work directory until the build's results are dropped, for
    /// [`Rule::publish`] (the image keeps its sparse disk there rather than
    /// expanding the stored `.zst` again).
    pub keep_work: bool,
}

/// What `publish` gets: a node made or found, and its kept work directory.
pub struct Publish<'a> {
    pub store: &'a Store,
    pub key: Digest,
    pub output: Digest,
    pub work: Option<&'a Path>,
}

/// One kind of node.
pub trait Rule: Send + Sync {
    /// What the node is, in messages: `recipe`, `image`.
    fn kind(&self) -> &'static str;

    /// Everything that can change the output, given each build
    /// dependency's key and output.
    fn key_inputs(&self, deps: &Deps) -> Result<KeyInputs, NodeError>;

    /// Makes the output tree in `exec.out`.
    fn execute(&self, exec: &Exec<'_>) -> Result<Executed, NodeError>;

    /// The node's own data for `kiln show`: a field name and a value.
    fn describe(&self) -> (&'static str, serde_json::Value);

    /// A version for `kiln graph --format json`.
    fn version(&self) -> &str;

    /// Puts a requested node's output where users find it (`out/`), after
    /// a build in which nothing failed; returns the lines to print.
    fn publish(&self, _p: &Publish<'_>) -> Result<Vec<String>, NodeError> {
        Ok(Vec::new())
    }
}
