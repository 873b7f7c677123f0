//! The one key walk. A node's key is its rule's key inputs given its build
//! dependencies' keys and outputs, so keys can only be known in plan order,
//! each once the nodes before it have outputs. The scheduler keys nodes as
//! they become ready ([`key_of`]); everything else (`kiln show`, `why`,
//! `graph`, `cache push/pull`) walks the plan with [`walk`].

use std::collections::BTreeMap;

use kiln_store::Digest;

use crate::graph::Plan;
use crate::rule::{DepRef, Deps, KeyInputs, NodeError, Rule, Rules};

/// One keyed node of a walk.
#[derive(Clone, Debug)]
pub struct Walked {
    pub inputs: KeyInputs,
    pub key: Digest,
    /// What `resolve` found, if anything.
    pub output: Option<Digest>,
}

/// The key inputs of a node whose build dependencies have these keys and
/// outputs.
pub fn key_of(
    rule: &dyn Rule,
    deps: &BTreeMap<String, (Digest, Digest)>,
) -> Result<KeyInputs, NodeError> {
    let refs: Deps = deps
        .iter()
        .map(|(name, (key, output))| {
            let r = DepRef {
                key: key.to_hex(),
                output: output.to_hex(),
            };
            (name.clone(), r)
        })
        .collect();
    rule.key_inputs(&refs)
}

/// Walks `plan` in order. A node whose build dependencies all have an
/// output is keyed, and `resolve(name, key)` says what its output is (the
/// local action cache, a remote, ...), if known. Nodes that cannot be keyed
/// (a dependency unresolved, or no rule) are left out.
pub fn walk(
    plan: &Plan,
    rules: &Rules,
    mut resolve: impl FnMut(&str, &Digest) -> Option<Digest>,
) -> BTreeMap<String, Walked> {
    let mut out: BTreeMap<String, Walked> = BTreeMap::new();
    for name in &plan.order {
        let Some(rule) = rules.get(name) else {
            continue;
        };
        // Every build dependency must have been keyed and resolved.
        let deps: Option<BTreeMap<String, (Digest, Digest)>> = plan
            .build_deps(name)
            .into_iter()
            .map(|d| {
                let w = out.get(&d)?;
                Some((d, (w.key, w.output?)))
            })
            .collect();
        let Some(deps) = deps else { continue };
        let Ok(inputs) = key_of(rule.as_ref(), &deps) else {
            continue;
        };
        let key = inputs.key();
        let output = resolve(name, &key);
        out.insert(
            name.clone(),
            Walked {
                inputs,
                key,
                output,
            },
        );
    }
    out
}

/// Derivation hashes: keys with each dependency's derivation, written
/// `drv:<hash>`, in place of its key and output. They exist before anything
/// is built; `kiln show` and `kiln graph` print them.
pub fn derivations(plan: &Plan, rules: &Rules) -> BTreeMap<String, String> {
    derivation_inputs(plan, rules)
        .into_iter()
        .map(|(name, inputs)| (name, inputs.key().to_hex()))
        .collect()
}

/// The key inputs the derivation hashes are computed from.
pub fn derivation_inputs(plan: &Plan, rules: &Rules) -> BTreeMap<String, KeyInputs> {
    let mut drv: BTreeMap<String, KeyInputs> = BTreeMap::new();
    for name in &plan.order {
        let Some(rule) = rules.get(name) else {
            continue;
        };
        let deps: Option<Deps> = plan
            .build_deps(name)
            .into_iter()
            .map(|d| {
                let h = format!("drv:{}", drv.get(&d)?.key().to_hex());
                Some((
                    d,
                    DepRef {
                        key: h.clone(),
                        output: h,
                    },
                ))
            })
            .collect();
        let Some(deps) = deps else { continue };
        if let Ok(inputs) = rule.key_inputs(&deps) {
            drv.insert(name.clone(), inputs);
        }
    }
    drv
}

/// One changed input between two nodes' key inputs, for `kiln why`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub path: String,
    pub old: Option<serde_json::Value>,
    pub new: Option<serde_json::Value>,
}

/// The leaves that differ between two key inputs (as [`KeyInputs::value`]
/// gives them), as JSON paths.
pub fn diff(old: &serde_json::Value, new: &serde_json::Value) -> Vec<Change> {
    let mut out = Vec::new();
    diff_values("", old, new, &mut out);
    out
}

fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<Change>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff_values(&p, va, vb, out),
                    (va, vb) => out.push(Change {
                        path: p,
                        old: va.cloned(),
                        new: vb.cloned(),
                    }),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff_values(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(Change {
            path: path.to_string(),
            old: Some(a.clone()),
            new: Some(b.clone()),
        }),
        _ => {}
    }
}
