//! Commands about the project and the store as a whole: `kiln check`,
//! `kiln sources` and `kiln gc`.

use std::time::Duration;

use kiln_model::{Diagnostics, Evaluation};

use super::session::Session;
use super::{CliResult, Failure};

pub(super) fn gc(s: &Session, days: u64) -> CliResult {
    let store = s.store()?;
    let report = store
        .gc(Duration::from_secs(days * 86_400))
        .map_err(|e| Failure::usage(format!("error: gc: {e}")))?;
    println!(
        "kiln gc: removed {} blobs ({} bytes), {} cache entries, {} outputs, {} old roots; kept {} blobs",
        report.blobs_removed,
        report.bytes_freed,
        report.ac_removed,
        report.outputs_removed,
        report.roots_removed,
        report.blobs_kept
    );
    Ok(())
}

/// Evaluates every board (each evaluates every recipe) and plans it.
fn evaluate_all(s: &Session) -> Result<Vec<Evaluation>, Failure> {
    let boards = s
        .project
        .board_files()
        .map_err(|e| Failure::usage(format!("error: cannot list boards: {e}")))?;
    let mut evals = Vec::new();
    let mut errors = Vec::new();
    for b in boards {
        let planned = kiln_dsl::evaluate(&s.project, &b).and_then(|e| {
            kiln_rules::check(&e)?;
            kiln_rules::plan(&e, &kiln_rules::board_roots(&e), true)?;
            Ok(e)
        });
        match planned {
            Ok(e) => evals.push(e),
            Err(d) => errors.extend(d.0),
        }
    }
    // The same bad recipe is reported once, not once per board.
    let mut seen = std::collections::BTreeSet::new();
    errors.retain(|d| seen.insert(d.to_string()));
    if errors.is_empty() {
        Ok(evals)
    } else {
        Err(s.diagnostics(Diagnostics(errors)))
    }
}

pub(super) fn check(s: &Session) -> CliResult {
    let evals = evaluate_all(s)?;
    let recipes: std::collections::BTreeSet<&String> =
        evals.iter().flat_map(|e| e.recipes.keys()).collect();
    println!(
        "kiln check: {} boards and {} recipes evaluate cleanly",
        evals.len(),
        recipes.len()
    );
    Ok(())
}

/// Every remote source of every recipe that evaluates for some board, and
/// every locked Debian package, for `scripts/seed-sources`. A board or
/// recipe that does not evaluate is reported (and the exit code says so)
/// after the list, so that one bad script never stops the rest from being
/// seeded.
pub(super) fn sources(s: &Session) -> CliResult {
    let boards = s
        .project
        .board_files()
        .map_err(|e| Failure::usage(format!("error: cannot list boards: {e}")))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for b in boards {
        let partial = kiln_dsl::evaluate_partial(&s.project, &b);
        errors.extend(partial.errors);
        for r in partial.recipes.values() {
            for src in &r.sources {
                if let kiln_model::Source::Remote {
                    url, hash, debian, ..
                } = src
                {
                    let (algo, hex) = match hash {
                        kiln_model::SourceHash::Sha256(h) => ("sha256", h),
                        kiln_model::SourceHash::Blake3(h) => ("blake3", h),
                    };
                    if seen.insert((r.name.clone(), hex.clone())) {
                        out.push(serde_json::json!({
                            "recipe": r.name, "url": url, "algo": algo, "hash": hex, "debian": debian,
                        }));
                    }
                }
            }
            for d in &r.debs {
                if seen.insert((r.name.clone(), d.sha256.clone())) {
                    // `package:arch=version`: one binary package, as
                    // seed-sources fetches it with apt-get download.
                    let debian = format!("{}:{}={}", d.package, d.arch, d.version);
                    out.push(serde_json::json!({
                        "recipe": r.name, "url": d.url, "algo": "sha256", "hash": d.sha256, "debian": debian,
                    }));
                }
            }
        }
    }
    let text = serde_json::to_string_pretty(&out)
        .map_err(|e| Failure::build(format!("error: encoding the sources: {e}")))?;
    println!("{text}");
    // The same bad recipe is reported once, not once per board.
    let mut shown = std::collections::BTreeSet::new();
    errors.retain(|d| shown.insert(d.to_string()));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(s.diagnostics(Diagnostics(errors)))
    }
}
