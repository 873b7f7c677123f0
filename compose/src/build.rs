//! The scheduler: runs a plan's nodes as soon as their build dependencies are
//! done, each build in its own sandbox, sharing one GNU make jobserver.
//!
//! Cache lookups happen on the scheduling thread (they are a file read);
//! only real builds go to worker threads. Each running build holds one
//! jobserver token for its implicit make slot, so N builds plus their
//! `make` children never run more than N jobs on N tokens.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_remote::Remote;
use kiln_store::{ActionResult, Digest, MetaOverride, Store};
use serde::Serialize;

use crate::dsl::{Evaluation, Project};
use crate::fetch::{self, Fetcher};
use crate::graph::Plan;
use crate::key::{KeyInputs, RecipeInput, KEY_SCHEMA};
use crate::model::{Recipe, Source};
use crate::sandbox::{self, Bind, Outcome, SandboxSpec, SandboxStep};
use crate::toolchain::{self, Fingerprint};

/// How many lines of a failed build's log to print.
pub const LOG_TAIL_LINES: usize = 25;

/// What the scheduler reports as it goes; the CLI renders these.
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

/// Options that don't change what is built, only how.
#[derive(Clone, Debug)]
pub struct Options {
    pub jobs: usize,
    pub keep_going: bool,
    pub mirrors: Vec<fetch::Mirror>,
    pub offline: bool,
    /// The `kiln` executable, re-run as `kiln __sandbox SPEC` for each build.
    pub sandbox_helper: PathBuf,
}

/// Everything fixed for one board that every node's key needs.
pub struct Context<'a> {
    pub project: &'a Project,
    pub eval: &'a Evaluation,
    pub plan: &'a Plan,
    pub store: &'a Store,
    /// The shared cache, if one is configured and not disabled.
    pub remote: Option<&'a Remote>,
    pub fingerprint: Fingerprint,
    /// The environment every step starts from (without the recipe's env).
    pub base_env: BTreeMap<String, String>,
}

impl<'a> Context<'a> {
    pub fn new(
        project: &'a Project,
        eval: &'a Evaluation,
        plan: &'a Plan,
        store: &'a Store,
        remote: Option<&'a Remote>,
    ) -> Result<Context<'a>, toolchain::ToolchainError> {
        let board = &eval.board;
        let fingerprint = toolchain::fingerprint(&board.toolchain, &board.target, store)?;
        let cc = toolchain::c_compiler(&board.toolchain, &board.target)?;
        let base_env = toolchain::base_env(&board.toolchain, &board.target, &cc);
        Ok(Context {
            project,
            eval,
            plan,
            store,
            remote,
            fingerprint,
            base_env,
        })
    }

    pub fn recipe(&self, name: &str) -> &'a Recipe {
        &self.eval.recipes[name]
    }

    /// The environment of every step of `name` (base, then the recipe's).
    pub fn env_of(&self, recipe: &Recipe) -> BTreeMap<String, String> {
        let mut env = self.base_env.clone();
        env.extend(recipe.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// Key inputs of `name`, given its dependencies' outputs (or derivation hashes).
    pub fn inputs(&self, name: &str, deps: BTreeMap<String, String>) -> KeyInputs {
        let recipe = self.recipe(name);
        KeyInputs {
            schema: KEY_SCHEMA.to_string(),
            recipe: RecipeInput::of(recipe),
            target: self.eval.board.target.clone(),
            toolchain: self.fingerprint.clone(),
            env: self.env_of(recipe),
            deps,
        }
    }

    /// Derivation hashes of every node (keys with dependency derivations in place of outputs).
    pub fn derivations(&self) -> BTreeMap<String, String> {
        let mut drv: BTreeMap<String, String> = BTreeMap::new();
        for name in &self.plan.order {
            let deps = self
                .plan
                .build_deps(name)
                .into_iter()
                .map(|d| {
                    let h = drv.get(&d).cloned().unwrap_or_default();
                    (d, format!("drv:{h}"))
                })
                .collect();
            drv.insert(
                name.clone(),
                self.inputs(name, deps).hash().to_hex().to_string(),
            );
        }
        drv
    }

    /// Keys of every node whose dependencies are all in the action cache
    /// (in plan order), with their outputs when cached.
    pub fn resolve_keys(&self) -> BTreeMap<String, (KeyInputs, Digest, Option<Digest>)> {
        let mut out: BTreeMap<String, (KeyInputs, Digest, Option<Digest>)> = BTreeMap::new();
        for name in &self.plan.order {
            let mut deps = BTreeMap::new();
            let mut complete = true;
            for d in self.plan.build_deps(name) {
                match out.get(&d).and_then(|(_, _, o)| *o) {
                    Some(o) => {
                        deps.insert(d, o.to_hex());
                    }
                    None => complete = false,
                }
            }
            if !complete {
                continue;
            }
            let inputs = self.inputs(name, deps);
            let key = digest_of(&inputs);
            let output = self.store.ac_get(&key).ok().flatten().map(|r| r.output);
            out.insert(name.clone(), (inputs, key, output));
        }
        out
    }

    fn inputs_record(&self, name: &str) -> PathBuf {
        self.store
            .root()
            .join("inputs")
            .join(&self.eval.board.name)
            .join(format!("{name}.json"))
    }

    /// The inputs of the last build (or cache hit) of `name` on this board.
    pub fn last_inputs(&self, name: &str) -> Option<KeyInputs> {
        let bytes = std::fs::read(self.inputs_record(name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn record_inputs(&self, name: &str, inputs: &KeyInputs) {
        if let Ok(bytes) = serde_json::to_vec_pretty(inputs) {
            // `kiln why` is a convenience; a failure to record it must not fail the build.
            let _ = self.store.write_atomic(&self.inputs_record(name), &bytes);
        }
    }

    /// Where the latest log of `name` on this board is kept.
    pub fn log_path(&self, name: &str) -> PathBuf {
        log_path(self.store, &self.eval.board.name, name)
    }
}

pub fn log_path(store: &Store, board: &str, recipe: &str) -> PathBuf {
    store.logs_dir().join(board).join(format!("{recipe}.log"))
}

pub fn digest_of(inputs: &KeyInputs) -> Digest {
    Digest::of(&inputs.canonical())
}

/// How one node ended.
#[derive(Clone, Debug)]
pub enum NodeResult {
    /// Found in the action cache; `remote` when it came from the shared one.
    Cached {
        key: Digest,
        output: Digest,
        remote: bool,
    },
    Built {
        key: Digest,
        output: Digest,
    },
    Failed {
        key: Option<Digest>,
        error: String,
    },
    Skipped {
        because: String,
    },
}

impl NodeResult {
    pub fn output(&self) -> Option<Digest> {
        match self {
            NodeResult::Cached { output, .. } | NodeResult::Built { output, .. } => Some(*output),
            _ => None,
        }
    }

    pub fn key(&self) -> Option<Digest> {
        match self {
            NodeResult::Cached { key, .. } | NodeResult::Built { key, .. } => Some(*key),
            NodeResult::Failed { key, .. } => *key,
            NodeResult::Skipped { .. } => None,
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub results: BTreeMap<String, NodeResult>,
    pub elapsed: Duration,
}

impl Report {
    pub fn failed(&self) -> Vec<(&String, &String)> {
        self.results
            .iter()
            .filter_map(|(n, r)| match r {
                NodeResult::Failed { error, .. } => Some((n, error)),
                _ => None,
            })
            .collect()
    }

    /// Built, cached locally, fetched from the remote, failed, skipped.
    pub fn count(&self) -> (usize, usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0, 0);
        for r in self.results.values() {
            match r {
                NodeResult::Built { .. } => c.0 += 1,
                NodeResult::Cached { remote: false, .. } => c.1 += 1,
                NodeResult::Cached { remote: true, .. } => c.2 += 1,
                NodeResult::Failed { .. } => c.3 += 1,
                NodeResult::Skipped { .. } => c.4 += 1,
            }
        }
        c
    }
}

/// Runs the plan. Failures are in the report, not an `Err`: with
/// `keep_going` a build goes on past them.
pub fn run(ctx: &Context, opts: &Options, events: &dyn Events) -> Report {
    let start = Instant::now();
    let plan = ctx.plan;
    events.event(&Event::Plan {
        board: ctx.eval.board.name.clone(),
        nodes: plan.order.len(),
    });

    let jobs = opts.jobs.max(1);
    let jobserver = jobserver::Client::new(jobs).ok();
    let fetcher = Fetcher::new(ctx.store, opts.mirrors.clone(), opts.offline);

    let mut waiting: BTreeMap<String, usize> = plan
        .order
        .iter()
        .map(|n| (n.clone(), plan.build_deps(n).len()))
        .collect();
    let mut ready: VecDeque<String> = plan
        .order
        .iter()
        .filter(|n| waiting[*n] == 0)
        .cloned()
        .collect();
    let mut results: BTreeMap<String, NodeResult> = BTreeMap::new();
    let mut running = 0usize;
    let mut stop = false;

    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(String, NodeResult)>();
        loop {
            while !stop && running < jobs {
                let Some(name) = ready.pop_front() else { break };
                // Inputs are final now: every build dependency has an output.
                let dep_outputs: Vec<(String, Digest)> = plan
                    .build_deps(&name)
                    .into_iter()
                    .filter_map(|d| results.get(&d).and_then(NodeResult::output).map(|o| (d, o)))
                    .collect();
                let deps = dep_outputs
                    .iter()
                    .map(|(d, o)| (d.clone(), o.to_hex()))
                    .collect();
                let inputs = ctx.inputs(&name, deps);
                let key = digest_of(&inputs);
                match ctx.store.ac_get(&key) {
                    Ok(Some(hit)) => {
                        ctx.record_inputs(&name, &inputs);
                        events.event(&Event::Cached {
                            recipe: name.clone(),
                            key: key.to_hex(),
                            output: hit.output.to_hex(),
                        });
                        finish(
                            plan,
                            &name,
                            NodeResult::Cached {
                                key,
                                output: hit.output,
                                remote: false,
                            },
                            &mut results,
                            &mut waiting,
                            &mut ready,
                        );
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // A store we can't read from is a store we can't trust to write to.
                        let error = format!("cannot read the action cache: {e}");
                        events.event(&Event::Failed {
                            recipe: name.clone(),
                            key: key.to_hex(),
                            error: error.clone(),
                        });
                        finish(
                            plan,
                            &name,
                            NodeResult::Failed {
                                key: Some(key),
                                error,
                            },
                            &mut results,
                            &mut waiting,
                            &mut ready,
                        );
                        stop |= !opts.keep_going;
                        continue;
                    }
                }
                running += 1;
                let tx = tx.clone();
                let fetcher = &fetcher;
                let jobserver = jobserver.as_ref();
                scope.spawn(move || {
                    if let Some(output) =
                        crate::remote::fetch(ctx.remote, ctx.store, events, &name, &key)
                    {
                        ctx.record_inputs(&name, &inputs);
                        let result = NodeResult::Cached {
                            key,
                            output,
                            remote: true,
                        };
                        let _ = tx.send((name, result));
                        return;
                    }
                    let log = live_log(ctx.store, &name, &key);
                    events.event(&Event::Started {
                        recipe: name.clone(),
                        key: key.to_hex(),
                        log: log.clone(),
                    });
                    let t = Instant::now();
                    let r = build_node(
                        ctx,
                        opts,
                        fetcher,
                        jobserver,
                        &name,
                        &inputs,
                        key,
                        &dep_outputs,
                    );
                    let result = match r {
                        Ok(output) => {
                            ctx.record_inputs(&name, &inputs);
                            events.event(&Event::Built {
                                recipe: name.clone(),
                                key: key.to_hex(),
                                output: output.to_hex(),
                                seconds: t.elapsed().as_secs_f64(),
                            });
                            crate::remote::push(ctx.remote, ctx.store, events, &name, &key);
                            NodeResult::Built { key, output }
                        }
                        Err(error) => {
                            events.event(&Event::Failed {
                                recipe: name.clone(),
                                key: key.to_hex(),
                                error: error.clone(),
                            });
                            NodeResult::Failed {
                                key: Some(key),
                                error,
                            }
                        }
                    };
                    // The receiver lives until every worker is done.
                    let _ = tx.send((name, result));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((name, result)) = rx.recv() else { break };
            running -= 1;
            if matches!(result, NodeResult::Failed { .. }) && !opts.keep_going {
                stop = true;
            }
            finish(plan, &name, result, &mut results, &mut waiting, &mut ready);
        }
    });

    // Whatever never ran was skipped because of a failure.
    for name in &plan.order {
        if !results.contains_key(name) {
            let because = plan
                .build_deps(name)
                .into_iter()
                .find(|d| !matches!(results.get(d), Some(NodeResult::Built { .. } | NodeResult::Cached { .. })))
                .map(|d| format!("dependency `{d}` did not build"))
                .unwrap_or_else(|| "the build stopped after a failure (use --keep-going to build what still can be)".into());
            events.event(&Event::Skipped {
                recipe: name.clone(),
                because: because.clone(),
            });
            results.insert(name.clone(), NodeResult::Skipped { because });
        }
    }
    let report = Report {
        results,
        elapsed: start.elapsed(),
    };
    let (built, cached, fetched, failed, skipped) = report.count();
    events.event(&Event::Done {
        built,
        cached,
        fetched,
        failed,
        skipped,
        seconds: report.elapsed.as_secs_f64(),
    });
    report
}

/// Records a node's result and queues dependents whose build deps are now done.
fn finish(
    plan: &Plan,
    name: &str,
    result: NodeResult,
    results: &mut BTreeMap<String, NodeResult>,
    waiting: &mut BTreeMap<String, usize>,
    ready: &mut VecDeque<String>,
) {
    let ok = result.output().is_some();
    results.insert(name.to_string(), result);
    if !ok {
        return;
    }
    for dep in plan.dependents(name) {
        if let Some(n) = waiting.get_mut(&dep) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                ready.push_back(dep);
            }
        }
    }
}

/// Where a build of `name` with `key` works; unique per process so two
/// kiln processes building the same key don't share scratch space.
fn work_dir(store: &Store, name: &str, key: &Digest) -> PathBuf {
    let dir = format!("{name}-{}-{}", &key.to_hex()[..12], std::process::id());
    store.root().join("work").join(dir)
}

/// The log a running build writes (the progress display reads its step headers);
/// it is copied to `logs/<board>/<recipe>.log` when the build ends.
fn live_log(store: &Store, name: &str, key: &Digest) -> PathBuf {
    work_dir(store, name, key).join("build.log")
}

/// A build's scratch space, removed when dropped whatever happened.
pub struct WorkDir(PathBuf);

impl WorkDir {
    /// A fresh, empty scratch directory for `name` with `key`.
    pub fn new(store: &Store, name: &str, key: &Digest) -> std::io::Result<WorkDir> {
        let work = WorkDir(work_dir(store, name, key));
        remove_tree(&work.0);
        std::fs::create_dir_all(&work.0)?;
        Ok(work)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        remove_tree(&self.0);
    }
}

/// Removes a tree even where a build left read-only directories.
pub fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    make_writable(path);
    let _ = std::fs::remove_dir_all(path);
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_node(
    ctx: &Context,
    opts: &Options,
    fetcher: &Fetcher,
    jobserver: Option<&jobserver::Client>,
    name: &str,
    inputs: &KeyInputs,
    key: Digest,
    deps: &[(String, Digest)],
) -> Result<Digest, String> {
    let recipe = ctx.recipe(name);
    let store = ctx.store;
    let work = WorkDir(work_dir(store, name, &key));
    remove_tree(&work.0);
    let src = work.0.join("src");
    let out = work.0.join("out");
    let scratch = work.0.join("sandbox");
    for d in [&src, &out, &scratch] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let log = live_log(store, name, &key);

    prepare_sources(recipe, fetcher, store, &src)?;

    let mut ro_binds: Vec<Bind> = ctx
        .eval
        .board
        .toolchain
        .host_paths
        .iter()
        .map(|p| Bind {
            host: p.clone(),
            inside: p.clone(),
        })
        .collect();
    let mut sysroot = Vec::new();
    for (dep, output) in deps {
        let path = store
            .materialize(output)
            .map_err(|e| format!("cannot materialize the output of `{dep}`: {e}"))?;
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
                host: out.clone(),
                inside: "/out".into(),
            },
        ],
        sysroot,
        symlinks: merged_usr_links(),
        hostname: "kiln".into(),
        env: inputs.env.clone(),
        cwd: "/build/src".into(),
        steps: recipe
            .steps
            .iter()
            .map(|s| SandboxStep {
                name: s.name.clone(),
                argv: s.argv.clone(),
                env: s.env.clone(),
            })
            .collect(),
        log: log.clone(),
    };

    // One token for this build's implicit job slot; released when dropped.
    let _token = match jobserver {
        Some(js) => Some(
            js.acquire()
                .map_err(|e| format!("cannot take a jobserver token: {e}"))?,
        ),
        None => None,
    };
    let outcome = sandbox::run(&spec, &opts.sandbox_helper, jobserver);
    drop(_token);
    let keep_log = |log: &Path| {
        let dest = ctx.log_path(name);
        if let Ok(bytes) = std::fs::read(log) {
            let _ = store.write_atomic(&dest, &bytes);
        }
        dest
    };
    match outcome {
        Ok(Outcome::Success) => {}
        Ok(Outcome::StepFailed {
            index,
            name: step,
            code,
            signal,
        }) => {
            let kept = keep_log(&log);
            let how = match (code, signal) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "an unknown status".into(),
            };
            let span = recipe
                .steps
                .get(index)
                .map(|s| s.span.to_string())
                .unwrap_or_default();
            return Err(format!(
                "recipe `{name}` failed in step {}/{} `{step}` ({span}) with {how}\n--- last {LOG_TAIL_LINES} lines of {} ---\n{}",
                index + 1,
                recipe.steps.len(),
                kept.display(),
                tail(&log, LOG_TAIL_LINES)
            ));
        }
        Err(e) => {
            keep_log(&log);
            return Err(format!("recipe `{name}`: the sandbox could not run: {e}"));
        }
    }
    keep_log(&log);

    let missing: Vec<&String> = recipe
        .installs
        .iter()
        .filter(|p| std::fs::symlink_metadata(out.join(p.trim_start_matches('/'))).is_err())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "recipe `{name}` built, but its output lacks {} that `installs` promises ({}): {}",
            if missing.len() == 1 {
                "a path"
            } else {
                "paths"
            },
            recipe.span,
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let meta: Vec<MetaOverride> = recipe
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
    let manifest = store
        .ingest_tree(&out, &meta)
        .map_err(|e| format!("recipe `{name}`: cannot store its output: {e}"))?;
    let output = store
        .put_manifest(&manifest)
        .map_err(|e| format!("recipe `{name}`: cannot store its manifest: {e}"))?;
    let log_digest = store.put_file(&log).ok().map(|(d, _)| d);
    store
        .ac_put(
            &key,
            &ActionResult {
                output,
                log: log_digest,
            },
        )
        .map_err(|e| format!("recipe `{name}`: cannot record the result: {e}"))?;
    Ok(output)
}

/// Debian 12 is merged-/usr: `/bin` and friends are symlinks into `/usr`.
fn merged_usr_links() -> Vec<(PathBuf, PathBuf)> {
    ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
        .iter()
        .filter_map(|p| std::fs::read_link(p).ok().map(|t| (PathBuf::from(p), t)))
        .collect()
}

/// Fetches, unpacks and patches a recipe's sources into `src`.
fn prepare_sources(
    recipe: &Recipe,
    fetcher: &Fetcher,
    store: &Store,
    src: &Path,
) -> Result<(), String> {
    let name = &recipe.name;
    for source in &recipe.sources {
        match source {
            Source::Remote {
                url,
                hash,
                strip,
                dest,
                unpack,
                span,
                ..
            } => {
                let digest = fetcher
                    .fetch(url, hash)
                    .map_err(|e| format!("recipe `{name}` ({span}): {e}"))?;
                let dest_dir = src.join(dest);
                let r = if *unpack {
                    fetch::unpack(store, &digest, &dest_dir, *strip)
                } else {
                    let path = url.split(['?', '#']).next().unwrap_or(url);
                    let file = path
                        .rsplit('/')
                        .next()
                        .filter(|f| !f.is_empty())
                        .unwrap_or("source");
                    fetch::copy_file(store, &digest, &dest_dir.join(file))
                };
                r.map_err(|e| format!("recipe `{name}` ({span}): {e}"))?;
            }
            Source::Local {
                path,
                dest,
                span,
                base,
                ..
            } => {
                let from = base.as_ref().unwrap_or(&recipe.files_dir).join(path);
                copy_tree(&from, &src.join(dest)).map_err(|e| {
                    format!(
                        "recipe `{name}` ({span}): cannot copy {}: {e}",
                        from.display()
                    )
                })?;
            }
        }
    }
    let patches: Vec<(PathBuf, u32)> = recipe
        .patches
        .iter()
        .map(|p| (recipe.files_dir.join(&p.path), p.strip))
        .collect();
    fetch::apply_patches(src, &patches).map_err(|e| format!("recipe `{name}`: {e}"))
}

/// Copies a recipe's local file or directory into the build, keeping
/// symlinks. Modes are normalized to what the key records — 0755 for
/// directories and executables, 0644 otherwise — so a checkout made under a
/// different umask builds the same bytes.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from)?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, to)
    } else if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to)?;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
