//! The scheduler: runs a plan's nodes as soon as their build dependencies
//! are done, and owns every node's lifecycle, whatever its rule:
//!
//! key → local action cache → shared cache → work dir → execute → store
//! the output → action-cache entry → push.
//!
//! Cache lookups happen on the scheduling thread (they are a file read);
//! only remote fetches and builds go to worker threads. One GNU make
//! jobserver is shared by every build; each running node holds one token
//! for its implicit slot, so N builds plus their `make` children never run
//! more than N jobs on N tokens.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use kiln_remote::Remote;
use kiln_store::{ActionResult, Digest, Store};

use crate::error::EngineError;
use crate::event::{Event, Events};
use crate::graph::Plan;
use crate::keys::key_of;
use crate::rule::{Exec, KeyInputs, NodeError, Rule, Rules};
use crate::shared;
use crate::work::WorkDir;

/// Everything one build shares.
pub struct Context<'a> {
    /// Names the board's directories of logs and key inputs in the store.
    pub board: &'a str,
    pub plan: &'a Plan,
    pub rules: &'a Rules,
    pub store: &'a Store,
    /// The shared cache, if one is configured and not disabled.
    pub remote: Option<&'a Remote>,
}

/// Options that don't change what is built, only how.
#[derive(Clone, Debug)]
pub struct Options {
    pub jobs: usize,
    pub keep_going: bool,
}

/// How one node ended.
#[derive(Debug)]
pub enum NodeResult {
    /// Found in the action cache; `remote` when it came from the shared one.
    Cached {
        key: Digest,
        output: Digest,
        remote: bool,
    },
    /// Made here. `work` is the node's work directory when its rule asked
    /// to keep it for publishing; it is removed when the result is dropped.
    Built {
        key: Digest,
        output: Digest,
        work: Option<Arc<WorkDir>>,
    },
    Failed {
        key: Option<Digest>,
        error: NodeError,
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
    pub fn failed(&self) -> Vec<(&String, &NodeError)> {
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
        board: ctx.board.to_string(),
        nodes: plan.order.len(),
    });

    let jobs = opts.jobs.max(1);
    let jobserver = jobserver::Client::new(jobs).ok();

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
                let node = match prepare(ctx, &name, &results) {
                    Ok(node) => node,
                    Err(result) => {
                        match &result {
                            NodeResult::Failed { error, .. } => {
                                stop |= !opts.keep_going;
                                events.event(&Event::Failed {
                                    recipe: name.clone(),
                                    key: String::new(),
                                    error: error.to_string(),
                                });
                            }
                            NodeResult::Skipped { because } => events.event(&Event::Skipped {
                                recipe: name.clone(),
                                because: because.clone(),
                            }),
                            NodeResult::Cached { .. } | NodeResult::Built { .. } => {}
                        }
                        finish(plan, &name, result, &mut results, &mut waiting, &mut ready);
                        continue;
                    }
                };
                match ctx.store.ac_get(&node.key) {
                    Ok(Some(hit)) => {
                        record_inputs(ctx, &name, &node.inputs);
                        events.event(&Event::Cached {
                            recipe: name.clone(),
                            key: node.key.to_hex(),
                            output: hit.output.to_hex(),
                        });
                        let result = NodeResult::Cached {
                            key: node.key,
                            output: hit.output,
                            remote: false,
                        };
                        finish(plan, &name, result, &mut results, &mut waiting, &mut ready);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let error: NodeError = Box::new(EngineError::ActionCache(e));
                        events.event(&Event::Failed {
                            recipe: name.clone(),
                            key: node.key.to_hex(),
                            error: error.to_string(),
                        });
                        let result = NodeResult::Failed {
                            key: Some(node.key),
                            error,
                        };
                        finish(plan, &name, result, &mut results, &mut waiting, &mut ready);
                        stop |= !opts.keep_going;
                        continue;
                    }
                }
                running += 1;
                let tx = tx.clone();
                let jobserver = jobserver.as_ref();
                scope.spawn(move || {
                    let result = make(ctx, &name, node, jobserver, events);
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
                .find(|d| results.get(d).and_then(NodeResult::output).is_none())
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

/// A ready node, keyed.
struct Ready<'a> {
    rule: &'a dyn Rule,
    inputs: KeyInputs,
    key: Digest,
    /// Each build dependency's key and output.
    deps: BTreeMap<String, (Digest, Digest)>,
}

/// Keys a node whose build dependencies are all done; its inputs are final
/// now.
fn prepare<'a>(
    ctx: &Context<'a>,
    name: &str,
    results: &BTreeMap<String, NodeResult>,
) -> Result<Ready<'a>, NodeResult> {
    let Some(rule) = ctx.rules.get(name) else {
        return Err(NodeResult::Skipped {
            because: format!("no rule makes `{name}`"),
        });
    };
    let deps: BTreeMap<String, (Digest, Digest)> = ctx
        .plan
        .build_deps(name)
        .into_iter()
        .filter_map(|d| {
            let r = results.get(&d)?;
            Some((d, (r.key()?, r.output()?)))
        })
        .collect();
    match key_of(rule.as_ref(), &deps) {
        Ok(inputs) => {
            let key = inputs.key();
            Ok(Ready {
                rule: rule.as_ref(),
                inputs,
                key,
                deps,
            })
        }
        Err(error) => Err(NodeResult::Failed { key: None, error }),
    }
}

/// A local miss: the shared cache, else a build here, then a push.
fn make(
    ctx: &Context,
    name: &str,
    node: Ready,
    jobserver: Option<&jobserver::Client>,
    events: &dyn Events,
) -> NodeResult {
    let key = node.key;
    if let Some(output) = shared::fetch(ctx.remote, ctx.store, events, name, &key) {
        record_inputs(ctx, name, &node.inputs);
        return NodeResult::Cached {
            key,
            output,
            remote: true,
        };
    }
    let t = Instant::now();
    match build(ctx, name, &node, jobserver, events) {
        Ok((output, work)) => {
            record_inputs(ctx, name, &node.inputs);
            events.event(&Event::Built {
                recipe: name.to_string(),
                key: key.to_hex(),
                output: output.to_hex(),
                seconds: t.elapsed().as_secs_f64(),
            });
            shared::push(ctx.remote, ctx.store, events, name, &key);
            NodeResult::Built {
                key,
                output,
                work: work.map(Arc::new),
            }
        }
        Err(error) => {
            events.event(&Event::Failed {
                recipe: name.to_string(),
                key: key.to_hex(),
                error: error.to_string(),
            });
            NodeResult::Failed {
                key: Some(key),
                error,
            }
        }
    }
}

/// Executes the node's rule in a fresh work directory and stores what it
/// made: the output tree and its manifest in the CAS, then (last) the
/// action-cache entry. A failure leaves no entry; the work directory goes.
fn build(
    ctx: &Context,
    name: &str,
    node: &Ready,
    jobserver: Option<&jobserver::Client>,
    events: &dyn Events,
) -> Result<(Digest, Option<WorkDir>), NodeError> {
    let store = ctx.store;
    let kind = node.rule.kind();
    let work = WorkDir::new(store, name, &node.key).map_err(|source| EngineError::WorkDir {
        kind,
        name: name.to_string(),
        source,
    })?;
    let (out, log) = (work.out(), work.log());
    let kept_log = store.log_path(ctx.board, name);
    events.event(&Event::Started {
        recipe: name.to_string(),
        key: node.key.to_hex(),
        log: log.clone(),
    });
    // One token for this node's implicit job slot; released when dropped.
    let token = match jobserver {
        Some(js) => Some(js.acquire().map_err(|source| EngineError::Jobserver {
            kind,
            name: name.to_string(),
            source,
        })?),
        None => None,
    };
    let executed = node.rule.execute(&Exec {
        name,
        key: node.key,
        store,
        deps: &node.deps,
        work: work.path(),
        out: &out,
        log: &log,
        kept_log: &kept_log,
        jobserver,
    });
    drop(token);
    // `kiln log` shows the last log whether or not the node was made; a
    // failure to keep it must not hide the build's own result.
    if let Ok(bytes) = std::fs::read(&log) {
        let _ = store.write_atomic(&kept_log, &bytes);
    }
    let executed = executed?;

    let stored = |what: &'static str| {
        move |source| EngineError::Store {
            kind,
            name: name.to_string(),
            what,
            source,
        }
    };
    let manifest = store
        .ingest_tree(&out, &executed.overrides)
        .map_err(stored("store its output"))?;
    let output = store
        .put_manifest(&manifest)
        .map_err(stored("store its manifest"))?;
    let log_digest = store.put_file(&log).ok().map(|(d, _)| d);
    store
        .ac_put(
            &node.key,
            &ActionResult {
                output,
                log: log_digest,
            },
        )
        .map_err(stored("record the result"))?;
    Ok((output, executed.keep_work.then_some(work)))
}

/// Keeps the inputs of the last build (or cache hit) of `name`, for `kiln
/// why`. A convenience: failing to record it must not fail the build.
fn record_inputs(ctx: &Context, name: &str, inputs: &KeyInputs) {
    if let Ok(bytes) = serde_json::to_vec_pretty(&inputs.value()) {
        let _ = ctx
            .store
            .write_atomic(&ctx.store.inputs_path(ctx.board, name), &bytes);
    }
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
