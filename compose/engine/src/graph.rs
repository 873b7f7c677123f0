//! The node graph: which nodes a request needs, and in what order.
//!
//! Build dependencies gate a node's build (their outputs are its inputs);
//! runtime dependencies only pull a node into the closure. Only build edges
//! can form a cycle that matters, and a cycle is reported as the whole path,
//! because "cycle involving zlib" is not something anyone can fix. Errors
//! name nodes only: the rules layer knows where each edge was written and
//! turns them into diagnostics.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DepKind {
    Build,
    Runtime,
}

/// Why a request has no plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphError {
    /// A root names no node.
    MissingRoot { name: String },
    /// `node` depends on `dep`, which names no node.
    MissingDep { node: String, dep: String },
    /// Build edges from `path[0]` back to itself (first and last are equal).
    Cycle { path: Vec<String> },
}

/// The nodes needed for a request, with edges from a node to what it needs.
#[derive(Clone, Debug)]
pub struct Plan {
    graph: DiGraph<String, DepKind>,
    index: BTreeMap<String, NodeIndex>,
    /// The nodes asked for.
    pub roots: Vec<String>,
    /// Every node in an order where build dependencies come first.
    pub order: Vec<String>,
}

/// Plans `roots` over the nodes `deps` declares: each node's name maps to
/// its dependencies, in the order they were written.
pub fn plan(
    deps: &BTreeMap<String, Vec<(String, DepKind)>>,
    roots: &[String],
) -> Result<Plan, Vec<GraphError>> {
    let mut graph = DiGraph::new();
    let mut index = BTreeMap::new();
    let mut errors = Vec::new();
    let mut queue: Vec<String> = Vec::new();
    for name in roots {
        if deps.contains_key(name) {
            queue.push(name.clone());
        } else {
            errors.push(GraphError::MissingRoot { name: name.clone() });
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
        for (dep, kind) in deps.get(&name).into_iter().flatten() {
            if !deps.contains_key(dep) {
                errors.push(GraphError::MissingDep {
                    node: name.clone(),
                    dep: dep.clone(),
                });
                continue;
            }
            let dix = *index
                .entry(dep.clone())
                .or_insert_with(|| graph.add_node(dep.clone()));
            graph.add_edge(ix, dix, *kind);
            queue.push(dep.clone());
        }
    }
    if !errors.is_empty() {
        return Err(errors);
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
        Err(_) => return Err(cycles(&build_only)),
    };
    let mut roots = roots.to_vec();
    roots.dedup();
    Ok(Plan {
        graph,
        index,
        roots,
        order,
    })
}

impl Plan {
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The build dependencies of `name`, sorted.
    pub fn build_deps(&self, name: &str) -> Vec<String> {
        self.deps_of(name, DepKind::Build)
    }

    pub fn deps_of(&self, name: &str, kind: DepKind) -> Vec<String> {
        self.edges(name, Direction::Outgoing, kind)
    }

    /// Nodes that build-depend on `name`.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        self.edges(name, Direction::Incoming, DepKind::Build)
    }

    fn edges(&self, name: &str, dir: Direction, kind: DepKind) -> Vec<String> {
        let Some(&ix) = self.index.get(name) else {
            return Vec::new();
        };
        let mut v: Vec<String> = self
            .graph
            .edges_directed(ix, dir)
            .filter(|e| *e.weight() == kind)
            .map(|e| {
                let other = if dir == Direction::Outgoing {
                    e.target()
                } else {
                    e.source()
                };
                self.graph[other].clone()
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// `names` and everything they reach over runtime edges, sorted.
    pub fn runtime_closure(&self, names: &[String]) -> Vec<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<String> = names.to_vec();
        while let Some(p) = todo.pop() {
            if seen.insert(p.clone()) {
                todo.extend(self.deps_of(&p, DepKind::Runtime));
            }
        }
        seen.into_iter().collect()
    }

    /// Graphviz DOT, with runtime edges dashed; `labels` adds a second line
    /// (a short hash) under a node's name.
    pub fn to_dot(&self, labels: &BTreeMap<String, String>) -> String {
        let mut out = String::from(
            "digraph kiln {\n  rankdir=LR;\n  node [shape=box, fontname=monospace];\n",
        );
        for name in &self.order {
            let label = match labels.get(name) {
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

/// One error per cycle, naming every node on it.
fn cycles(g: &DiGraph<String, ()>) -> Vec<GraphError> {
    let mut out = Vec::new();
    for scc in tarjan_scc(g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        // Start at the alphabetically first node so the message is stable.
        let Some(&start) = scc.iter().min_by_key(|ix| &g[**ix]) else {
            continue;
        };
        let path = cycle_path(g, start, &members)
            .into_iter()
            .map(|ix| g[ix].clone())
            .collect();
        out.push(GraphError::Cycle { path });
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
    let mut queue = VecDeque::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decls(edges: &[(&str, &[(&str, DepKind)])]) -> BTreeMap<String, Vec<(String, DepKind)>> {
        edges
            .iter()
            .map(|(n, ds)| {
                (
                    n.to_string(),
                    ds.iter().map(|(d, k)| (d.to_string(), *k)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn build_deps_come_first_and_runtime_edges_only_pull_in() {
        use DepKind::*;
        let d = decls(&[
            ("app", &[("lib", Build), ("tool", Runtime)]),
            ("lib", &[]),
            ("tool", &[("app", Runtime)]),
        ]);
        let p = plan(&d, &["app".into()]).expect("plan");
        let pos = |n: &str| p.order.iter().position(|x| x == n).expect(n);
        assert!(pos("lib") < pos("app"));
        assert!(p.contains("tool"));
        assert_eq!(p.runtime_closure(&["app".into()]), ["app", "tool"]);
        assert_eq!(p.dependents("lib"), ["app"]);
    }

    #[test]
    fn a_build_cycle_is_reported_as_its_path() {
        use DepKind::*;
        let d = decls(&[
            ("b", &[("c", Build)]),
            ("c", &[("a", Build)]),
            ("a", &[("b", Build)]),
        ]);
        let e = plan(&d, &["a".into()]).expect_err("cycle");
        assert_eq!(
            e,
            [GraphError::Cycle {
                path: ["a", "b", "c", "a"].map(String::from).to_vec()
            }]
        );
    }
}
