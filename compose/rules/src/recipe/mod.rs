//! The recipe rule: one component built from its sources by its steps, in
//! a sandbox that sees the toolchain's host paths and its build
//! dependencies' outputs (at `/deps/<name>`, merged at `/sysroot`).

mod error;
pub mod key;
mod sources;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_engine::{Deps, Exec, Executed, KeyInputs, NodeError, Publish, Rule, LOG_TAIL_LINES};
use kiln_fetch::{Fetcher, Mirror};
use kiln_model::{Fingerprint, Recipe, Target};
use kiln_sandbox::{Bind, Outcome, SandboxSpec, SandboxStep};
use kiln_store::MetaOverride;

pub use error::RecipeError;
use key::{RecipeInput, RecipeKey, KEY_SCHEMA};

/// What every recipe of one board builds with.
pub struct Toolbox {
    pub target: Target,
    pub fingerprint: Fingerprint,
    /// The environment every step starts from (before the recipe's own).
    pub base_env: BTreeMap<String, String>,
    /// Host directories mounted read-only in every sandbox.
    pub host_paths: Vec<PathBuf>,
    /// The build environment's node: its tree is the sandbox's `/usr`, and
    /// nothing of the host is mounted.
    pub usr: Option<String>,
    pub mirrors: Vec<Mirror>,
    pub offline: bool,
    /// The `kiln` executable, re-run as `kiln __sandbox SPEC` for each build.
    pub sandbox_helper: PathBuf,
    /// `out/<board>`: where a requested recipe's output is linked.
    pub links: PathBuf,
    /// Print the output path of a requested recipe (`kiln build <recipe>`).
    pub print_outputs: bool,
}

pub struct RecipeRule {
    recipe: Recipe,
    toolbox: Arc<Toolbox>,
}

impl RecipeRule {
    pub fn new(recipe: Recipe, toolbox: Arc<Toolbox>) -> RecipeRule {
        RecipeRule { recipe, toolbox }
    }

    /// The environment of every step (base, then the recipe's).
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = self.toolbox.base_env.clone();
        env.extend(self.recipe.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }
}

impl Rule for RecipeRule {
    fn kind(&self) -> &'static str {
        "recipe"
    }

    fn key_inputs(&self, deps: &Deps) -> Result<KeyInputs, NodeError> {
        let key = RecipeKey {
            schema: KEY_SCHEMA.to_string(),
            recipe: RecipeInput::of(&self.recipe),
            target: self.toolbox.target.clone(),
            toolchain: self.toolbox.fingerprint.clone(),
            env: self.env(),
            // Keyed on outputs, not keys: a dependency rebuilt to the same
            // bytes leaves this key alone (early cutoff).
            deps: deps
                .iter()
                .map(|(name, d)| (name.clone(), d.output.clone()))
                .collect(),
        };
        Ok(KeyInputs::new(KEY_SCHEMA, &key)?)
    }

    fn execute(&self, exec: &Exec<'_>) -> Result<Executed, NodeError> {
        let recipe = &self.recipe;
        let name = &recipe.name;
        let src = exec.work.join("src");
        let scratch = exec.work.join("sandbox");
        let patches = exec.work.join("patches");
        for d in [&src, &scratch, &patches] {
            std::fs::create_dir_all(d).map_err(|source| RecipeError::Dir {
                path: d.clone(),
                source,
            })?;
        }
        let fetcher = Fetcher::new(
            exec.store,
            self.toolbox.mirrors.clone(),
            self.toolbox.offline,
        );
        sources::prepare(recipe, &fetcher, exec.store, &src)?;
        let patch_steps = sources::stage_patches(recipe, &patches)?;

        let mut ro_binds: Vec<Bind> = self
            .toolbox
            .host_paths
            .iter()
            .map(|p| Bind {
                host: p.clone(),
                inside: p.clone(),
            })
            .collect();
        if !patch_steps.is_empty() {
            ro_binds.push(Bind {
                host: patches.clone(),
                inside: sources::PATCHES_INSIDE.into(),
            });
        }
        let mut sysroot = Vec::new();
        let mut symlinks = host_merged_usr_links();
        for (dep, (_, output)) in exec.deps {
            let path =
                exec.store
                    .materialize(output)
                    .map_err(|source| RecipeError::Materialize {
                        dep: dep.clone(),
                        source,
                    })?;
            if self.toolbox.usr.as_ref() == Some(dep) {
                ro_binds.push(Bind {
                    host: path.join("usr"),
                    inside: "/usr".into(),
                });
                symlinks = env_merged_usr_links(&path);
                continue;
            }
            ro_binds.push(Bind {
                host: path.clone(),
                inside: PathBuf::from("/deps").join(dep),
            });
            sysroot.push(path);
        }
        let spec = SandboxSpec {
            scratch,
            ro_binds,
            rw_binds: vec![
                Bind {
                    host: src.clone(),
                    inside: "/build/src".into(),
                },
                Bind {
                    host: exec.out.to_path_buf(),
                    inside: "/out".into(),
                },
            ],
            sysroot,
            symlinks,
            hostname: "kiln".into(),
            host_etc: self.toolbox.usr.is_none(),
            env: self.env(),
            cwd: "/build/src".into(),
            steps: patch_steps
                .iter()
                .cloned()
                .chain(recipe.steps.iter().map(|s| SandboxStep {
                    name: s.name.clone(),
                    argv: s.argv.clone(),
                    env: s.env.clone(),
                }))
                .collect(),
            log: exec.log.to_path_buf(),
        };
        match kiln_sandbox::run(&spec, &self.toolbox.sandbox_helper, exec.jobserver) {
            Ok(Outcome::Success) => {}
            Ok(Outcome::StepFailed {
                index,
                name: step,
                code,
                signal,
            }) => {
                let how = match (code, signal) {
                    (Some(c), _) => format!("exit code {c}"),
                    (None, Some(s)) => format!("signal {s}"),
                    _ => "an unknown status".into(),
                };
                let log = exec.kept_log.to_path_buf();
                let tail = kiln_engine::tail(exec.log, LOG_TAIL_LINES);
                if let Some(p) = recipe.patches.get(index) {
                    return Err(RecipeError::PatchFailed {
                        recipe: name.clone(),
                        patch: p.path.clone(),
                        span: p.span.to_string(),
                        how,
                        log,
                        tail,
                    }
                    .into());
                }
                let index = index - recipe.patches.len();
                let span = recipe
                    .steps
                    .get(index)
                    .map(|s| s.span.to_string())
                    .unwrap_or_default();
                return Err(RecipeError::StepFailed {
                    recipe: name.clone(),
                    step: index + 1,
                    of: recipe.steps.len(),
                    name: step,
                    span,
                    how,
                    log,
                    tail,
                }
                .into());
            }
            Err(source) => {
                return Err(RecipeError::Sandbox {
                    recipe: name.clone(),
                    source,
                }
                .into())
            }
        }

        let missing: Vec<String> = recipe
            .installs
            .iter()
            .filter(|p| {
                std::fs::symlink_metadata(exec.out.join(p.trim_start_matches('/'))).is_err()
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(RecipeError::MissingInstalls {
                recipe: name.clone(),
                span: recipe.span.to_string(),
                paths: missing,
            }
            .into());
        }
        let overrides = recipe
            .permissions
            .iter()
            .map(|p| MetaOverride {
                path: p.path.trim_start_matches('/').to_string(),
                mode: p.mode,
                uid: p.uid,
                gid: p.gid,
                caps: p.caps.clone(),
            })
            .collect();
        Ok(Executed {
            overrides,
            keep_work: false,
        })
    }

    fn describe(&self) -> (&'static str, serde_json::Value) {
        let value = serde_json::to_value(&self.recipe).unwrap_or(serde_json::Value::Null);
        ("recipe", value)
    }

    fn version(&self) -> &str {
        &self.recipe.version
    }

    fn publish(&self, p: &Publish<'_>) -> Result<Vec<String>, NodeError> {
        publish_link(&self.toolbox, &self.recipe.name, p)
    }
}

/// `out/<board>/<name>` → the output in the store, like Nix's `result`;
/// the output's path, when the build asked for it by name.
pub(crate) fn publish_link(
    toolbox: &Toolbox,
    name: &str,
    p: &Publish<'_>,
) -> Result<Vec<String>, NodeError> {
    let path = p
        .store
        .materialize(&p.output)
        .map_err(|source| RecipeError::Materialize {
            dep: name.to_string(),
            source,
        })?;
    link(&path, &toolbox.links.join(name));
    Ok(if toolbox.print_outputs {
        vec![path.display().to_string()]
    } else {
        Vec::new()
    })
}

/// A convenience link: a failure to make it must not fail the build.
fn link(target: &Path, link: &Path) {
    if let Some(parent) = link.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = kiln_atomic::symlink(target, link, kiln_atomic::Durability::Scratch);
}

/// The build environment's root links (`/bin` → `usr/bin`, ...), as its
/// merged-/usr tree has them.
fn env_merged_usr_links(env: &Path) -> Vec<(PathBuf, PathBuf)> {
    crate::debs::MERGED
        .iter()
        .filter_map(|d| {
            let link = env.join(d);
            std::fs::read_link(link)
                .ok()
                .map(|t| (PathBuf::from("/").join(d), t))
        })
        .collect()
}

/// A host toolchain's: Debian 12 is merged-/usr, `/bin` and friends are
/// symlinks into `/usr`.
fn host_merged_usr_links() -> Vec<(PathBuf, PathBuf)> {
    ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
        .iter()
        .filter_map(|p| std::fs::read_link(p).ok().map(|t| (PathBuf::from(p), t)))
        .collect()
}
