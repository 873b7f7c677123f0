//! The Debian package set rule: a locked set of Debian binary packages
//! unpacked into one tree, as `dpkg-deb --extract` would (no maintainer
//! scripts run), merged-/usr ([`usrmerge`]), with the links the recipe
//! declares in place of what maintainer scripts would make. The first node kind beyond recipes and images: a build
//! environment from exact, hash-pinned packages is one of these.
//!
//! Its key is the packages' names, versions, architectures and sha256s, in
//! lock order: the lock names the bytes, so mirrors and URLs don't matter,
//! and a new package version is a new key for this node and for exactly
//! the nodes that build with it.

mod usrmerge;

pub use usrmerge::MERGED;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use kiln_engine::{Deps, Exec, Executed, Failure, KeyInputs, NodeError, Publish, Rule};
use kiln_fetch::{FetchError, Fetcher};
use kiln_model::{Recipe, SourceHash};
use serde::Serialize;

use crate::recipe::Toolbox;

/// Bumped when the same lock would unpack to different bytes.
/// (v2: merged-/usr, declared links; v3: excluded paths.)
pub const DEBS_SCHEMA: &str = "kiln-debs-v3";

#[derive(Serialize)]
struct DebsKey<'a> {
    name: &'a str,
    version: &'a str,
    packages: Vec<DebKey<'a>>,
    links: &'a BTreeMap<String, String>,
    exclude: &'a [String],
}

#[derive(Serialize)]
struct DebKey<'a> {
    package: &'a str,
    version: &'a str,
    arch: &'a str,
    sha256: &'a str,
}

pub struct DebsRule {
    recipe: Recipe,
    toolbox: Arc<Toolbox>,
}

impl DebsRule {
    pub fn new(recipe: Recipe, toolbox: Arc<Toolbox>) -> DebsRule {
        DebsRule { recipe, toolbox }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DebsError {
    #[error(
        "package set `{set}`: {package} {version} ({url}): {source}\n  = help: {}",
        match refresh {
            Some(cmd) => format!("if the archive no longer has this version, `{cmd}` refreshes the lock"),
            None => "if the archive no longer has this version, refresh the lock (scripts/lock-debs)".into(),
        }
    )]
    Fetch {
        set: String,
        package: String,
        version: String,
        url: String,
        refresh: Option<String>,
        source: FetchError,
    },
    #[error("package set `{set}`: cannot make a merged /usr: {source}")]
    Merge { set: String, source: std::io::Error },
    #[error("package set `{set}`: cannot make the link {path} -> {target}: {source}")]
    Link {
        set: String,
        path: String,
        target: String,
        source: std::io::Error,
    },
    #[error("package set `{set}`: cannot write its log: {source}")]
    Log { set: String, source: std::io::Error },
    #[error(
        "package set `{set}`: `exclude` names {path}, which none of its packages has\n  = help: remove it from `exclude` (a refreshed lock may have moved it)"
    )]
    ExcludeMissing { set: String, path: String },
    #[error("package set `{set}`: cannot leave out {path}: {source}")]
    Exclude {
        set: String,
        path: String,
        source: std::io::Error,
    },
}

impl Failure for DebsError {}

impl Rule for DebsRule {
    fn kind(&self) -> &'static str {
        "package set"
    }

    fn key_inputs(&self, _deps: &Deps) -> Result<KeyInputs, NodeError> {
        let key = DebsKey {
            name: &self.recipe.name,
            version: &self.recipe.version,
            packages: self
                .recipe
                .debs
                .iter()
                .map(|d| DebKey {
                    package: &d.package,
                    version: &d.version,
                    arch: &d.arch,
                    sha256: &d.sha256,
                })
                .collect(),
            links: &self.recipe.links,
            exclude: &self.recipe.exclude,
        };
        Ok(KeyInputs::new(DEBS_SCHEMA, &key)?)
    }

    fn execute(&self, exec: &Exec<'_>) -> Result<Executed, NodeError> {
        let set = &self.recipe.name;
        let fetcher = Fetcher::new(
            exec.store,
            self.toolbox.mirrors.clone(),
            self.toolbox.offline,
        );
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(exec.log)
            .map_err(|source| DebsError::Log {
                set: set.clone(),
                source,
            })?;
        let total = self.recipe.debs.len();
        for (i, d) in self.recipe.debs.iter().enumerate() {
            writeln!(
                log,
                "==> [step {}/{total}] {} {} ({})",
                i + 1,
                d.package,
                d.version,
                d.arch
            )
            .map_err(|source| DebsError::Log {
                set: set.clone(),
                source,
            })?;
            let fail = |source| DebsError::Fetch {
                set: set.clone(),
                package: d.package.clone(),
                version: d.version.clone(),
                url: d.url.clone(),
                refresh: d.refresh.clone(),
                source,
            };
            let digest = fetcher
                .fetch(&d.url, &SourceHash::Sha256(d.sha256.clone()))
                .map_err(fail)?;
            kiln_fetch::unpack_deb(exec.store, &digest, exec.out).map_err(fail)?;
        }
        usrmerge::merge(exec.out).map_err(|source| DebsError::Merge {
            set: set.clone(),
            source,
        })?;
        for (path, target) in &self.recipe.links {
            let at = exec.out.join(path.trim_start_matches('/'));
            let made = at
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| match std::fs::symlink_metadata(&at) {
                    Ok(_) => std::fs::remove_file(&at),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                })
                .and_then(|()| std::os::unix::fs::symlink(target, &at));
            made.map_err(|source| DebsError::Link {
                set: set.clone(),
                path: path.clone(),
                target: target.clone(),
                source,
            })?;
        }
        for path in &self.recipe.exclude {
            exclude(exec.out, set, path)?;
        }
        Ok(Executed::default())
    }

    fn describe(&self) -> (&'static str, serde_json::Value) {
        let value = serde_json::json!({
            "name": self.recipe.name,
            "version": self.recipe.version,
            "debs": self.recipe.debs,
            "links": self.recipe.links,
            "exclude": self.recipe.exclude,
        });
        ("package_set", value)
    }

    fn version(&self) -> &str {
        &self.recipe.version
    }

    fn publish(&self, p: &Publish<'_>) -> Result<Vec<String>, NodeError> {
        crate::recipe::publish_link(&self.toolbox, &self.recipe.name, p)
    }
}

/// Removes `path` (absolute in the set's tree; its last component may be
/// a glob: `*`, `?`, `[...]`) and everything below it. A path that names
/// nothing is an error: an exclusion that silently stopped matching would
/// hide that the set grew.
fn exclude(out: &Path, set: &str, path: &str) -> Result<(), NodeError> {
    let fail = |source| DebsError::Exclude {
        set: set.to_string(),
        path: path.to_string(),
        source,
    };
    let rel = Path::new(path.trim_start_matches('/'));
    let (dir, name) = match (rel.parent(), rel.file_name()) {
        (Some(dir), Some(name)) => (out.join(dir), name.to_string_lossy().into_owned()),
        _ => return Err(fail(std::io::Error::other("not a path below the root")).into()),
    };
    let pattern = glob::Pattern::new(&name).map_err(|e| fail(std::io::Error::other(e.msg)))?;
    let names: Vec<std::ffi::OsString> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(fail)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(fail(e).into()),
    };
    let mut removed = 0;
    for n in names
        .iter()
        .filter(|n| pattern.matches(&n.to_string_lossy()))
    {
        let at = dir.join(n);
        let is_dir = std::fs::symlink_metadata(&at).map_err(fail)?.is_dir();
        match is_dir {
            true => std::fs::remove_dir_all(&at),
            false => std::fs::remove_file(&at),
        }
        .map_err(fail)?;
        removed += 1;
    }
    if removed == 0 {
        return Err(DebsError::ExcludeMissing {
            set: set.to_string(),
            path: path.to_string(),
        }
        .into());
    }
    Ok(())
}
