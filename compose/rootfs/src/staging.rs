//! The tree being assembled, plus who put each path there.
//!
//! Ownership is what turns "path exists" into a useful error: every
//! conflict names the packages involved, and the report can say which
//! package a path of the image came from.

use std::collections::BTreeMap;

use kiln_fstree::{parent, Kind, Node, Tree};

use crate::error::RootfsError;

/// Who put a path in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Index into the package list.
    Package(usize),
    /// Written by this crate (os-release, fstab, mount points, units).
    Generated,
}

/// The name reported for paths Kiln generates itself.
pub const GENERATED: &str = "kiln (generated)";

pub(crate) struct Staging<'a> {
    pub tree: Tree,
    /// Every path (but `/`) → its owners, first first.
    pub owners: BTreeMap<String, Vec<Owner>>,
    names: Vec<&'a str>,
}

impl<'a> Staging<'a> {
    pub fn new(names: Vec<&'a str>) -> Staging<'a> {
        Staging {
            tree: Tree::new(),
            owners: BTreeMap::new(),
            names,
        }
    }

    pub fn name(&self, owner: Owner) -> &str {
        match owner {
            Owner::Package(i) => self.names.get(i).copied().unwrap_or("?"),
            Owner::Generated => GENERATED,
        }
    }

    /// The first owner of `path`, by name (for error messages).
    pub fn first_owner(&self, path: &str) -> String {
        self.owners
            .get(path)
            .and_then(|o| o.first())
            .map_or(GENERATED, |o| self.name(*o))
            .to_string()
    }

    pub fn add_owner(&mut self, path: &str, owner: Owner) {
        let owners = self.owners.entry(path.to_string()).or_default();
        if !owners.contains(&owner) {
            owners.push(owner);
        }
    }

    /// Makes sure every ancestor of `path` is a directory, creating missing
    /// ones (0755, root:root). An existing directory is accepted whatever its
    /// mode: it only contains what Kiln generates, it doesn't describe it.
    pub fn ensure_parents(&mut self, path: &str) -> Result<(), RootfsError> {
        let p = parent(path);
        if p == "/" {
            return Ok(());
        }
        self.ensure_dir(p, path)
    }

    /// Like [`Self::ensure_parents`], for `dir` itself too. `for_path` is
    /// what is being generated, for the error message.
    pub fn ensure_dir(&mut self, dir: &str, for_path: &str) -> Result<(), RootfsError> {
        let mut at = String::new();
        for comp in dir.split('/').filter(|c| !c.is_empty()) {
            at.push('/');
            at.push_str(comp);
            match self.tree.get(&at).map(|n| &n.kind) {
                Some(Kind::Dir) => {}
                Some(_) => {
                    return Err(RootfsError::ParentNotDir {
                        path: for_path.to_string(),
                        parent: at.clone(),
                        package: self.first_owner(&at),
                    })
                }
                None => {
                    self.tree.insert(&at, Node::dir(0o755)).map_err(|source| {
                        RootfsError::Tree {
                            package: GENERATED.into(),
                            source,
                        }
                    })?;
                    self.add_owner(&at, Owner::Generated);
                }
            }
        }
        Ok(())
    }

    /// Adds a generated non-directory node. Any package already shipping
    /// the path is an error: the generated content would silently replace
    /// the package's (or the other way round).
    pub fn add_generated(&mut self, path: &str, node: Node, what: &str) -> Result<(), RootfsError> {
        self.ensure_parents(path)?;
        if self.tree.get(path).is_some() {
            return Err(RootfsError::Generated {
                path: path.to_string(),
                what: what.to_string(),
                package: self.first_owner(path),
            });
        }
        self.tree
            .insert(path, node)
            .map_err(|source| RootfsError::Tree {
                package: GENERATED.into(),
                source,
            })?;
        self.add_owner(path, Owner::Generated);
        Ok(())
    }

    /// Adds a generated directory with a fixed mode, root-owned. A package
    /// may ship the same directory only with exactly that metadata, the
    /// rule for directories shared between packages.
    pub fn add_generated_dir(
        &mut self,
        path: &str,
        mode: u16,
        what: &str,
    ) -> Result<(), RootfsError> {
        self.ensure_parents(path)?;
        let want = Node::dir(mode);
        match self.tree.get(path) {
            Some(n) if *n == want => {}
            Some(n) => {
                let found =
                    match n.kind {
                        Kind::Dir => format!(
                        "{what}; it must be a directory with mode {mode:04o}, owner 0:0 and no \
                         xattrs, not mode {:04o}, owner {}:{}{}",
                        n.mode,
                        n.uid,
                        n.gid,
                        if n.xattrs.is_empty() { "" } else { ", with xattrs" }
                    ),
                        _ => format!("{what}; it must be a directory"),
                    };
                return Err(RootfsError::Generated {
                    path: path.to_string(),
                    what: found,
                    package: self.first_owner(path),
                });
            }
            None => {
                self.tree
                    .insert(path, want)
                    .map_err(|source| RootfsError::Tree {
                        package: GENERATED.into(),
                        source,
                    })?;
            }
        }
        self.add_owner(path, Owner::Generated);
        Ok(())
    }

    /// The report's ownership map, with names.
    pub fn owner_names(&self) -> BTreeMap<String, Vec<String>> {
        self.owners
            .iter()
            .map(|(p, o)| {
                (
                    p.clone(),
                    o.iter().map(|o| self.name(*o).to_string()).collect(),
                )
            })
            .collect()
    }
}
