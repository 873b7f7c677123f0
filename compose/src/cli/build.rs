//! `kiln build`: a board (its packages, kernel, bootloader and image) or
//! some of its nodes, then what the requested nodes publish to `out/`.

use std::collections::BTreeMap;

use kiln_engine::{Context, NodeError, NodeResult, Options, Publish, Report};
use kiln_store::Root;

use super::session::{is_board, Roots, Session};
use super::{cache, CliResult, Failure};
use crate::progress::{Mode, Progress};

pub(super) fn run(
    s: &Session,
    targets: &[String],
    board: Option<&str>,
    keep_going: bool,
    jobs: Option<usize>,
    no_image: bool,
) -> CliResult {
    let (board_name, names): (String, Vec<String>) = match targets {
        [one] if board.is_none() && is_board(s, one) => (one.clone(), Vec::new()),
        _ => (s.board_name(board)?, targets.to_vec()),
    };
    let board_build = names.is_empty();
    let what = if board_build {
        Roots::Board { image: !no_image }
    } else {
        Roots::Nodes(names.clone())
    };
    let loaded = s.load(&board_name, &what, !board_build)?;
    let store = &loaded.store;
    let _lock = store
        .lock_shared()
        .map_err(|e| Failure::usage(format!("error: {e}")))?;
    let progress = Progress::new(Mode::detect(s.json));
    let remote = s.remote_for_build(&progress)?;
    let board = loaded.eval.board.name.clone();
    let ctx = Context {
        board: &board,
        plan: &loaded.plan,
        rules: &loaded.rules,
        store,
        remote: remote.as_ref(),
    };
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let report = kiln_engine::run(&ctx, &Options { jobs, keep_going }, &progress);
    progress.finish();
    if let Some(remote) = &remote {
        cache::record_stats(store, remote, &format!("build {board_name}"));
    }

    // Every build is a GC root, so `kiln gc` keeps what was just built.
    let root = Root {
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        keys: report
            .results
            .values()
            .filter_map(NodeResult::key)
            .collect(),
        outputs: report
            .results
            .values()
            .filter_map(NodeResult::output)
            .collect(),
    };
    let root_name = if board_build {
        board.clone()
    } else {
        format!("{board}.{}", names.join("+"))
    };
    if let Err(e) = store.write_root(&root_name, &root) {
        eprintln!("warning: cannot record GC root {root_name}: {e}");
    }

    if let Some(message) = failures(&loaded.rules, &report) {
        return Err(Failure::build(message));
    }
    // What was asked for goes where users find it, in the order it was asked.
    for name in &loaded.plan.roots {
        let (Some(rule), Some(result)) = (loaded.rules.get(name), report.results.get(name)) else {
            continue;
        };
        let (Some(key), Some(output)) = (result.key(), result.output()) else {
            continue;
        };
        let work = match result {
            NodeResult::Built { work, .. } => work.as_deref().map(|w| w.path()),
            _ => None,
        };
        let lines = rule
            .publish(&Publish {
                store,
                key,
                output,
                work,
            })
            .map_err(|e| Failure::build(closing(&e)))?;
        if !s.json {
            for line in lines {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// The closing message of a build with failures: those whose rule says
/// more on its own, then the rest listed by kind.
fn failures(rules: &kiln_engine::Rules, report: &Report) -> Option<String> {
    let failed = report.failed();
    if failed.is_empty() {
        return None;
    }
    let mut own = Vec::new();
    let mut by_kind: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, error) in &failed {
        match error.report() {
            Some(message) => own.push(message),
            None => {
                let kind = rules.get(*name).map_or("node", |r| r.kind());
                by_kind.entry(kind).or_default().push(name.as_str());
            }
        }
    }
    let mut lines = own;
    for (kind, names) in by_kind {
        lines.push(format!(
            "error: {} {kind}{} failed: {}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ));
    }
    Some(lines.join("\n"))
}

/// A failure after the build, as the user reads it.
fn closing(e: &NodeError) -> String {
    e.report().unwrap_or_else(|| format!("error: {e}"))
}
