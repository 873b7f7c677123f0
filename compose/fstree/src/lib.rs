//! A filesystem tree as plain data, between image assembly and the
//! filesystem writers.
//!
//! Writers never look at the build host's files for metadata: owners, modes,
//! device numbers and xattrs come from here (recorded by builds and recipes),
//! and every timestamp is the one epoch the writer is given. That is what
//! makes images independent of who built them, where and when.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where a regular file's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    Bytes(Vec<u8>),
    /// A file on the build host (e.g. a materialized store output); only its
    /// content is used.
    Path(PathBuf),
}

impl Data {
    /// Reads the whole content.
    pub fn read(&self) -> io::Result<Vec<u8>> {
        match self {
            Data::Bytes(b) => Ok(b.clone()),
            Data::Path(p) => fs::read(p),
        }
    }

    pub fn len(&self) -> io::Result<u64> {
        match self {
            Data::Bytes(b) => Ok(b.len() as u64),
            Data::Path(p) => Ok(fs::metadata(p)?.len()),
        }
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Data),
    /// Symlink target, as stored.
    Symlink(String),
    /// Another path of the tree (a regular file) this is a hard link to.
    Hardlink(String),
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Full xattr names (`security.capability`, `user.foo`) → raw values.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Node {
    pub fn dir(mode: u16) -> Node {
        Node {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        }
    }

    pub fn file(data: Data, mode: u16) -> Node {
        Node {
            kind: Kind::File(data),
            mode,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        }
    }

    pub fn symlink(target: impl Into<String>) -> Node {
        Node {
            kind: Kind::Symlink(target.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("`{0}` is not an absolute, normalized path")]
    BadPath(String),
    #[error("cannot add `{path}`: its parent `{parent}` is not a directory in the tree")]
    NoParent { path: String, parent: String },
    #[error("cannot add `{0}`: the path already exists")]
    Exists(String),
    #[error("hard link `{path}` points to `{target}`, which is not a regular file in the tree")]
    BadHardlink { path: String, target: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Paths are absolute and normalized (`/`, `/usr`, `/usr/bin/sh`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

fn valid(path: &str) -> bool {
    path == "/"
        || (path.starts_with('/')
            && !path.ends_with('/')
            && path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// The parent of a normalized absolute path (`/` for top-level entries).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "/",
    }
}

/// The last component of a path.
pub fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

impl Tree {
    /// A tree with only the root directory (0755, root:root).
    pub fn new() -> Tree {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), Node::dir(0o755));
        Tree { nodes }
    }

    /// Adds a node; its parent directory must already exist.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), TreeError> {
        if !valid(path) || path == "/" {
            return Err(TreeError::BadPath(path.to_string()));
        }
        let p = parent(path);
        if !matches!(self.nodes.get(p).map(|n| &n.kind), Some(Kind::Dir)) {
            return Err(TreeError::NoParent {
                path: path.into(),
                parent: p.into(),
            });
        }
        if self.nodes.contains_key(path) {
            return Err(TreeError::Exists(path.into()));
        }
        if let Kind::Hardlink(target) = &node.kind {
            if !matches!(self.nodes.get(target).map(|n| &n.kind), Some(Kind::File(_))) {
                return Err(TreeError::BadHardlink {
                    path: path.into(),
                    target: target.clone(),
                });
            }
        }
        self.nodes.insert(path.to_string(), node);
        Ok(())
    }

    /// Adds a directory and any missing parents (0755, root:root).
    pub fn mkdir_p(&mut self, path: &str) -> Result<(), TreeError> {
        if !valid(path) {
            return Err(TreeError::BadPath(path.to_string()));
        }
        if path == "/" || self.nodes.contains_key(path) {
            return Ok(());
        }
        self.mkdir_p(parent(path))?;
        self.insert(path, Node::dir(0o755))
    }

    /// Replaces the metadata or content of an existing path.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path)
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every node, in path order (`/` first; a directory before its contents).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_str(), n))
    }

    /// The direct children of a directory, sorted by name (byte order).
    pub fn children<'a>(&'a self, dir: &str) -> Vec<(&'a str, &'a Node)> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let mut out: Vec<(&str, &Node)> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| p.len() > prefix.len() && !p[prefix.len()..].contains('/'))
            .map(|(p, n)| (p.as_str(), n))
            .collect();
        out.sort_by(|a, b| name(a.0).as_bytes().cmp(name(b.0).as_bytes()));
        out
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// Reads a directory from disk with its real owners and modes (for tests
    /// and benchmarks); hard links are detected by inode.
    pub fn from_dir(root: &Path) -> Result<Tree, TreeError> {
        let mut tree = Tree::new();
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TreeError::Io {
                path: path.clone(),
                source,
            }
        };
        let meta = fs::symlink_metadata(root).map_err(io_err(root))?;
        if let Some(r) = tree.get_mut("/") {
            r.mode = (meta.mode() & 0o7777) as u16;
            r.uid = meta.uid();
            r.gid = meta.gid();
        }
        let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
        let mut stack = vec![(root.to_path_buf(), "/".to_string())];
        while let Some((dir, tpath)) = stack.pop() {
            let mut entries: Vec<fs::DirEntry> = fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .collect::<Result<_, _>>()
                .map_err(io_err(&dir))?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let host = e.path();
                let Some(name) = e.file_name().to_str().map(String::from) else {
                    return Err(TreeError::BadPath(host.display().to_string()));
                };
                let path = if tpath == "/" {
                    format!("/{name}")
                } else {
                    format!("{tpath}/{name}")
                };
                let m = fs::symlink_metadata(&host).map_err(io_err(&host))?;
                let ft = m.file_type();
                let (major, minor) = (libc::major(m.rdev()), libc::minor(m.rdev()));
                let kind = if ft.is_dir() {
                    stack.push((host.clone(), path.clone()));
                    Kind::Dir
                } else if ft.is_symlink() {
                    let t = fs::read_link(&host).map_err(io_err(&host))?;
                    Kind::Symlink(t.to_string_lossy().into_owned())
                } else if ft.is_file() {
                    if m.nlink() > 1 {
                        if let Some(first) = inodes.get(&(m.dev(), m.ino())) {
                            Kind::Hardlink(first.clone())
                        } else {
                            inodes.insert((m.dev(), m.ino()), path.clone());
                            Kind::File(Data::Path(host.clone()))
                        }
                    } else {
                        Kind::File(Data::Path(host.clone()))
                    }
                } else if ft.is_char_device() {
                    Kind::CharDev { major, minor }
                } else if ft.is_block_device() {
                    Kind::BlockDev { major, minor }
                } else if ft.is_fifo() {
                    Kind::Fifo
                } else {
                    Kind::Socket
                };
                let node = Node {
                    kind,
                    mode: (m.mode() & 0o7777) as u16,
                    uid: m.uid(),
                    gid: m.gid(),
                    xattrs: BTreeMap::new(),
                };
                tree.insert(&path, node)?;
            }
        }
        Ok(tree)
    }
}

/// A filesystem UUID as `blkid` prints it: `8-4-4-4-12` lower-case hex.
/// Here because every writer and the image manifest print UUIDs.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_must_exist_and_children_are_sorted() {
        let mut t = Tree::new();
        assert!(matches!(
            t.insert("/a/b", Node::dir(0o755)),
            Err(TreeError::NoParent { .. })
        ));
        t.mkdir_p("/usr/bin").unwrap();
        t.insert("/usr/bin/z", Node::file(Data::Bytes(b"z".to_vec()), 0o755))
            .unwrap();
        t.insert("/usr/bin/a", Node::symlink("z")).unwrap();
        t.insert("/usr/bin-x", Node::dir(0o755)).unwrap();
        let kids: Vec<&str> = t.children("/usr/bin").iter().map(|(p, _)| *p).collect();
        assert_eq!(kids, vec!["/usr/bin/a", "/usr/bin/z"]);
        let top: Vec<&str> = t.children("/usr").iter().map(|(p, _)| *p).collect();
        assert_eq!(top, vec!["/usr/bin", "/usr/bin-x"]);
        assert!(matches!(
            t.insert(
                "/usr/bin/l",
                Node {
                    kind: Kind::Hardlink("/usr/bin/a".into()),
                    ..Node::dir(0)
                }
            ),
            Err(TreeError::BadHardlink { .. })
        ));
        assert!(matches!(
            t.insert("/x/../y", Node::dir(0o755)),
            Err(TreeError::BadPath(_))
        ));
    }
}
