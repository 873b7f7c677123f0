//! Looking at nodes without building them: `kiln show`, `graph`, `why`
//! and `log`. Every kind of node answers the same way.

use kiln_engine::DepKind;

use super::session::{Loaded, Roots, Session};
use super::{CliResult, Failure, GraphFormat};

/// Keys of every node whose dependencies are in the action cache, with
/// their outputs when cached.
fn local_walk(l: &Loaded) -> std::collections::BTreeMap<String, kiln_engine::Walked> {
    kiln_engine::walk(&l.plan, &l.rules, |_, key| {
        l.store.ac_get(key).ok().flatten().map(|r| r.output)
    })
}

fn load_node(s: &Session, node: &str, board: Option<&str>) -> Result<(String, Loaded), Failure> {
    let board = s.board_name(board)?;
    let loaded = s.load(&board, &Roots::Nodes(vec![node.to_string()]), false)?;
    Ok((board, loaded))
}

pub(super) fn show(s: &Session, node: &str, board: Option<&str>) -> CliResult {
    let (_, l) = load_node(s, node, board)?;
    let drv = kiln_engine::derivation_inputs(&l.plan, &l.rules);
    let keys = local_walk(&l);
    let Some(rule) = l.rules.get(node) else {
        return Err(Failure::usage(format!("error: no node `{node}`")));
    };
    let walked = keys.get(node);
    let inputs = match walked {
        Some(w) => w.inputs.value(),
        // Not keyable yet: the inputs with no dependency results, or, for a
        // node that needs them (the image), those of its derivation.
        None => rule
            .key_inputs(&Default::default())
            .map(|i| i.value())
            .or_else(|_| drv.get(node).map(|i| i.value()).ok_or(()))
            .unwrap_or(serde_json::Value::Null),
    };
    let (field, data) = rule.describe();
    let mut out = serde_json::json!({
        "board": l.eval.board.name,
        "derivation": drv.get(node).map(|i| i.key().to_hex()),
        "key": walked.map(|w| w.key.to_hex()),
        "output": walked.and_then(|w| w.output).map(|o| o.to_hex()),
        "build_deps": l.plan.build_deps(node),
        "runtime_deps": l.plan.deps_of(node, DepKind::Runtime),
        "inputs": inputs,
    });
    out[field] = data;
    print_json(&out)
}

pub(super) fn graph(s: &Session, board: Option<&str>, format: GraphFormat) -> CliResult {
    let board = s.board_name(board)?;
    let l = s.load(&board, &Roots::Board { image: true }, false)?;
    let drv = kiln_engine::derivations(&l.plan, &l.rules);
    match format {
        GraphFormat::Dot => print!("{}", l.plan.to_dot(&drv)),
        GraphFormat::Json => {
            let keys = local_walk(&l);
            let nodes: Vec<serde_json::Value> = l
                .plan
                .order
                .iter()
                .map(|n| {
                    let w = keys.get(n);
                    serde_json::json!({
                        "name": n,
                        "version": l.rules.get(n).map(|r| r.version()),
                        "derivation": drv.get(n),
                        "key": w.map(|w| w.key.to_hex()),
                        "output": w.and_then(|w| w.output).map(|o| o.to_hex()),
                        "build_deps": l.plan.build_deps(n),
                        "runtime_deps": l.plan.deps_of(n, DepKind::Runtime),
                    })
                })
                .collect();
            let out = serde_json::json!({
                "board": l.eval.board.name,
                "roots": l.plan.roots,
                "nodes": nodes,
            });
            print_json(&out)?;
        }
    }
    Ok(())
}

pub(super) fn why(s: &Session, node: &str, board: Option<&str>) -> CliResult {
    let (board, l) = load_node(s, node, board)?;
    let last: Option<serde_json::Value> = std::fs::read(l.store.inputs_path(&board, node))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(last) = last else {
        println!("{node}: never built for board {board} with this store; `kiln build {node} --board {board}` builds it");
        return Ok(());
    };
    let keys = local_walk(&l);
    let Some(now) = keys.get(node) else {
        let unbuilt: Vec<String> = l
            .plan
            .build_deps(node)
            .into_iter()
            .filter(|d| keys.get(d).is_none_or(|w| w.output.is_none()))
            .collect();
        println!(
            "{node}: its key can't be known yet: build dependencies not built with their current inputs: {}",
            unbuilt.join(", ")
        );
        for d in unbuilt {
            println!("  (run `kiln why {d} --board {board}`)");
        }
        return Ok(());
    };
    let changes = kiln_engine::diff(&last, &now.inputs.value());
    if changes.is_empty() {
        let state = if now.output.is_some() {
            "cached"
        } else {
            "not in the cache (it was removed?)"
        };
        println!(
            "{node}: no inputs changed since the last build; key {} is {state}",
            now.key.to_hex()
        );
        return Ok(());
    }
    println!(
        "{node}: {} input{} changed since the last build:",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    );
    for c in changes {
        let show = |v: &Option<serde_json::Value>| match v {
            Some(v) => shorten(&v.to_string()),
            None => "(absent)".into(),
        };
        println!(
            "  {}:\n    was {}\n    now {}",
            c.path,
            show(&c.old),
            show(&c.new)
        );
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}

pub(super) fn log(s: &Session, node: &str, board: Option<&str>) -> CliResult {
    let store = s.store()?;
    let boards: Vec<String> = match board {
        Some(b) => vec![b.to_string()],
        None => store.boards_with_logs(),
    };
    let found: Vec<(String, std::path::PathBuf)> = boards
        .into_iter()
        .map(|b| {
            let p = store.log_path(&b, node);
            (b, p)
        })
        .filter(|(_, p)| p.is_file())
        .collect();
    match found.as_slice() {
        [] => Err(Failure::usage(format!(
            "error: no build log for `{node}` in {}\n  = help: build it first",
            store.logs_dir().display()
        ))),
        [(_, p)] => {
            let text = std::fs::read(p)
                .map_err(|e| Failure::usage(format!("error: {}: {e}", p.display())))?;
            use std::io::Write;
            let _ = std::io::stdout().write_all(&text);
            Ok(())
        }
        many => Err(Failure::usage(format!(
            "error: `{node}` was built for several boards: {}\n  = help: pass --board",
            many.iter()
                .map(|(b, _)| b.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn print_json(v: &serde_json::Value) -> CliResult {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Failure::build(format!("error: encoding the output: {e}")))?;
    println!("{text}");
    Ok(())
}
