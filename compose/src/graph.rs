//! The derivation graph: which recipes a request needs, in what order.
//!
//! Build dependencies gate a node's build (their outputs are mounted into its
//! sandbox); runtime dependencies only pull a recipe into the closure. Only
//! build edges can form a cycle that matters, and a cycle is reported as the
//! whole path, because "cycle involving zlib" is not something anyone can fix.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::Serialize;

use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::dsl::Evaluation;
use crate::model::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DepKind {
    Build,
    Runtime,
}

/// The recipes needed for a request, with edges from a recipe to what it needs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub graph: DiGraph<String, DepKind>,
    pub index: BTreeMap<String, NodeIndex>,
    /// The recipes asked for (board packages, or one recipe).
    pub roots: Vec<String>,
    /// Every node in an order where build dependencies come first.
    pub order: Vec<String>,
}

impl Plan {
    /// The build dependencies of `name`, sorted.
    pub fn build_deps(&self, name: &str) -> Vec<String> {
        self.deps_of(name, DepKind::Build)
    }

    pub fn deps_of(&self, name: &str, kind: DepKind) -> Vec<String> {
        let Some(&ix) = self.index.get(name) else {
            return Vec::new();
        };
        let mut v: Vec<String> = self
            .graph
            .edges_directed(ix, Direction::Outgoing)
            .filter(|e| *e.weight() == kind)
            .map(|e| self.graph[e.target()].clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Recipes that build-depend on `name`.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        let Some(&ix) = self.index.get(name) else {
            return Vec::new();
        };
        let mut v: Vec<String> = self
            .graph
            .edges_directed(ix, Direction::Incoming)
            .filter(|e| *e.weight() == DepKind::Build)
            .map(|e| self.graph[e.source()].clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Graphviz DOT, with runtime edges dashed.
    pub fn to_dot(&self, keys: &BTreeMap<String, String>) -> String {
        let mut out = String::from(
            "digraph kiln {\n  rankdir=LR;\n  node [shape=box, fontname=monospace];\n",
        );
        for name in &self.order {
            let label = match keys.get(name) {
                Some(k) => format!("{name}\\n{}", &k[..k.len().min(12)]),
                None => name.clone(),
            };
            out.push_str(&format!("  \"{name}\" [label=\"{label}\"];\n"));
        }
        for e in self.graph.edge_references() {
            let style = if *e.weight() == DepKind::Runtime {
                " [style=dashed]"
            } else {
                ""
            };
            out.push_str(&format!(
                "  \"{}\" -> \"{}\"{style};\n",
                self.graph[e.source()],
                self.graph[e.target()]
            ));
        }
        out.push_str("}\n");
        out
    }
}

/// Builds the plan for `roots` (names with where they were asked for).
pub fn plan(eval: &Evaluation, roots: &[(String, Span)]) -> Result<Plan, Diagnostics> {
    let mut graph = DiGraph::new();
    let mut index = BTreeMap::new();
    let mut errors = Vec::new();
    let mut queue: Vec<String> = Vec::new();
    let known = || eval.recipes.keys().map(String::as_str);

    for (name, span) in roots {
        if eval.recipes.contains_key(name) {
            queue.push(name.clone());
        } else {
            errors.push(missing(name, span.clone(), "is asked for", known()));
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let ix = *index
            .entry(name.clone())
            .or_insert_with(|| graph.add_node(name.clone()));
        let recipe = &eval.recipes[&name];
        let deps = recipe
            .build_deps
            .iter()
            .map(|d| (d, DepKind::Build))
            .chain(recipe.runtime_deps.iter().map(|d| (d, DepKind::Runtime)));
        for (dep, kind) in deps {
            if !eval.recipes.contains_key(dep) {
                let span = recipe
                    .dep_spans
                    .get(dep)
                    .cloned()
                    .unwrap_or_else(|| recipe.span.clone());
                errors.push(missing(
                    dep,
                    span,
                    &format!("is a dependency of `{name}`"),
                    known(),
                ));
                continue;
            }
            let dix = *index
                .entry(dep.clone())
                .or_insert_with(|| graph.add_node(dep.clone()));
            graph.add_edge(ix, dix, kind);
            queue.push(dep.clone());
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }

    // Cycles only matter along build edges.
    let build_only = graph.filter_map(
        |_, n| Some(n.clone()),
        |_, e| (*e == DepKind::Build).then_some(()),
    );
    let order = match toposort(&build_only, None) {
        Ok(order) => order
            .into_iter()
            .rev()
            .map(|ix| build_only[ix].clone())
            .collect(),
        Err(_) => return Err(Diagnostics(cycles(eval, &build_only))),
    };
    let mut roots: Vec<String> = roots.iter().map(|(n, _)| n.clone()).collect();
    roots.dedup();
    Ok(Plan {
        graph,
        index,
        roots,
        order,
    })
}

fn missing<'a>(
    name: &str,
    span: Span,
    role: &str,
    known: impl Iterator<Item = &'a str>,
) -> Diagnostic {
    let known: Vec<&str> = known.collect();
    let d = Diagnostic::new(span, format!("no recipe named `{name}`, which {role}"));
    match did_you_mean(name, known.iter().copied()) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None => d.help(format!(
            "add recipes/{name}.rhai, or fix the name ({} recipes exist)",
            known.len()
        )),
    }
}

/// One diagnostic per cycle, naming every recipe on it and where each edge was written.
fn cycles(eval: &Evaluation, g: &DiGraph<String, ()>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for scc in tarjan_scc(g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        // Start at the alphabetically first recipe so the message is stable.
        let Some(&start) = scc.iter().min_by_key(|ix| &g[**ix]) else {
            continue;
        };
        let path = cycle_path(g, start, &members);
        let names: Vec<&str> = path.iter().map(|ix| g[*ix].as_str()).collect();
        let first = &eval.recipes[names[0]];
        let second = names.get(1).copied().unwrap_or(names[0]);
        let span = first
            .dep_spans
            .get(second)
            .cloned()
            .unwrap_or_else(|| first.span.clone());
        let mut d = Diagnostic::new(span, format!("dependency cycle: {}", names.join(" -> ")));
        for pair in names.windows(2).skip(1) {
            let r = &eval.recipes[pair[0]];
            let s = r
                .dep_spans
                .get(pair[1])
                .cloned()
                .unwrap_or_else(|| r.span.clone());
            d = d.note(
                s,
                format!("`{}` build-depends on `{}` here", pair[0], pair[1]),
            );
        }
        out.push(
            d.help("a recipe can't need its own output to build; remove one of these build_deps"),
        );
    }
    out
}

/// A path start → … → start inside one strongly connected component.
fn cycle_path(
    g: &DiGraph<String, ()>,
    start: NodeIndex,
    members: &BTreeSet<NodeIndex>,
) -> Vec<NodeIndex> {
    // Breadth-first from start's successors back to start gives a shortest cycle.
    let mut prev: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::new();
    let mut succ: Vec<NodeIndex> = g.neighbors(start).filter(|n| members.contains(n)).collect();
    succ.sort_by_key(|ix| g[*ix].clone());
    for n in succ {
        if n == start {
            return vec![start, start];
        }
        if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(n) {
            e.insert(start);
            queue.push_back(n);
        }
    }
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = g.neighbors(n).filter(|m| members.contains(m)).collect();
        next.sort_by_key(|ix| g[*ix].clone());
        for m in next {
            if m == start {
                let mut path = vec![start];
                let mut cur = n;
                while cur != start {
                    path.push(cur);
                    cur = prev[&cur];
                }
                path.push(start);
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
    }
    vec![start, start]
}
