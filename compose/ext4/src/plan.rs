//! From a tree to numbered inodes: validation, inode numbers, directory
//! entries, link counts and xattr placement, with no I/O except learning
//! host file sizes.
//!
//! A hard link shares its target's inode, so its own mode, owner and xattrs
//! are ignored; the target's apply to every name.
//!
//! Inode numbers: the root is 2, lost+found 11 (created 0700 root:root when
//! the tree has none, because e2fsck insists on it), then each directory's
//! entries get consecutive numbers in name order before its subdirectories
//! are visited (depth first). Data is laid out in the same order, so a
//! directory's files sit together on disk and near their inodes.

use std::collections::{BTreeMap, HashMap};

use kiln_fstree::{name, parent, Data, Kind, Node, Tree};

use crate::dir::{self, Entry};
use crate::error::Ext4Error;
use crate::geometry::{BLOCK_SIZE, FIRST_INO};
use crate::htree::{Htree, MAX_LEAVES};
use crate::inode::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK};
use crate::xattr::{self, MAX_REFCOUNT};

pub(crate) const ROOT_INO: u32 = 2;
/// lost+found gets this many blocks at least, like mke2fs (16 KiB), so
/// e2fsck can reconnect orphans without allocating.
const LOST_FOUND_BLOCKS: u64 = 4;
/// ext4's `EXT4_LINK_MAX`; directories with more subdirectories record 1
/// (the `dir_nlink` feature).
const LINK_MAX: u32 = 65000;
/// Symlink targets shorter than this live in the inode itself.
const FAST_SYMLINK_MAX: usize = 59;

/// lost+found when the tree has none: 0700 root:root, like mke2fs.
static LOST_FOUND: Node = Node {
    kind: Kind::Dir,
    mode: 0o700,
    uid: 0,
    gid: 0,
    xattrs: BTreeMap::new(),
};
/// `Tree` always has a root directory; this only guards against a caller
/// having replaced it with another kind of node.
static ROOT: Node = Node {
    kind: Kind::Dir,
    mode: 0o755,
    uid: 0,
    gid: 0,
    xattrs: BTreeMap::new(),
};

pub(crate) enum Body<'t> {
    /// `htree` is set by [`Plan::index_dirs`] for directories larger
    /// than a block; `blocks` then counts the index blocks too.
    Dir {
        entries: Vec<Entry>,
        blocks: u64,
        htree: Option<Htree>,
    },
    File {
        data: &'t Data,
        size: u64,
    },
    FastSymlink(&'t str),
    SlowSymlink(&'t str),
    Device {
        i_block: [u8; 60],
        major: u32,
        minor: u32,
    },
    Special,
}

pub(crate) struct Planned<'t> {
    pub ino: u32,
    pub path: &'t str,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub links: u16,
    pub body: Body<'t>,
    pub xattrs: Vec<xattr::Attr>,
    pub ibody: Vec<u8>,
    /// Index into [`Plan::xattr_blocks`].
    pub xattr_block: Option<usize>,
}

pub(crate) struct SharedBlock {
    pub body: Vec<u8>,
    pub refcount: u32,
}

pub(crate) struct Plan<'t> {
    /// In inode number order: 2, 11, 12, 13, ...
    pub inodes: Vec<Planned<'t>>,
    pub xattr_blocks: Vec<SharedBlock>,
}

impl Plan<'_> {
    /// The highest inode number used (all of 1..=it are in use).
    pub fn max_ino(&self) -> u32 {
        FIRST_INO + self.inodes.len() as u32 - 2
    }

    /// Gives directories larger than one block an htree index, hashed
    /// with the filesystem's `seed`.
    pub fn index_dirs(&mut self, seed: &[u32; 4]) -> Result<(), Ext4Error> {
        for p in &mut self.inodes {
            if let Body::Dir {
                entries,
                blocks,
                htree,
            } = &mut p.body
            {
                match Htree::plan(entries, seed) {
                    Ok(Some(h)) => {
                        *blocks = h.blocks();
                        *htree = Some(h);
                    }
                    Ok(None) => {}
                    Err(leaves) => {
                        return Err(Ext4Error::DirTooLarge {
                            path: p.path.to_string(),
                            entries: entries.len() - 2,
                            leaves,
                            max_leaves: MAX_LEAVES,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

/// Index into [`Plan::inodes`] for an inode number ≥ 11 or the root.
pub(crate) fn index_of(ino: u32) -> Option<usize> {
    match ino {
        ROOT_INO => Some(0),
        i if i >= FIRST_INO => Some((i - FIRST_INO + 1) as usize),
        _ => None,
    }
}

fn check_name(path: &str) -> Result<(), Ext4Error> {
    let n = name(path);
    let reason = if n.len() > 255 {
        format!("name is {} bytes; ext4 allows at most 255", n.len())
    } else if n.contains('\0') {
        "name contains a NUL byte".to_string()
    } else {
        return Ok(());
    };
    Err(Ext4Error::BadName {
        path: path.to_string(),
        reason,
    })
}

fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::Dir => dir::FT_DIR,
        Kind::File(_) | Kind::Hardlink(_) => dir::FT_REG,
        Kind::Symlink(_) => dir::FT_SYMLINK,
        Kind::CharDev { .. } => dir::FT_CHR,
        Kind::BlockDev { .. } => dir::FT_BLK,
        Kind::Fifo => dir::FT_FIFO,
        Kind::Socket => dir::FT_SOCK,
    }
}

/// Linux's device number encoding in `i_block`: the old 8:8 form in word 0
/// when it fits, else the 12:20 form in word 1.
fn device_block(path: &str, major: u32, minor: u32) -> Result<[u8; 60], Ext4Error> {
    if major >= 1 << 12 || minor >= 1 << 20 {
        return Err(Ext4Error::BadDevice {
            path: path.to_string(),
            major,
            minor,
        });
    }
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        b[0..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
    } else {
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        b[4..8].copy_from_slice(&new.to_le_bytes());
    }
    Ok(b)
}

/// The content size; host files must be regular files, so that a bad
/// source path fails here rather than half-way through writing.
fn data_len(path: &str, data: &Data) -> Result<u64, Ext4Error> {
    let size = match data {
        Data::Bytes(b) => b.len() as u64,
        Data::Path(host) => {
            let err = |source| Ext4Error::ReadData {
                path: path.to_string(),
                host: host.clone(),
                source,
            };
            let meta = std::fs::metadata(host).map_err(err)?;
            if !meta.is_file() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a regular file",
                )));
            }
            meta.len()
        }
    };
    // Logical block numbers are 32 bits.
    if size.div_ceil(BLOCK_SIZE) > u64::from(u32::MAX) {
        return Err(Ext4Error::FileTooLarge {
            path: path.to_string(),
            size,
        });
    }
    Ok(size)
}

pub(crate) fn plan(tree: &Tree) -> Result<Plan<'_>, Ext4Error> {
    // Children per directory; `iter()` is in path order, so each list is
    // in byte order of the names.
    let mut kids: HashMap<&str, Vec<(&str, &Node)>> = HashMap::new();
    for (path, node) in tree.iter() {
        if path != "/" {
            kids.entry(parent(path)).or_default().push((path, node));
        }
    }
    let (lost_found, lost_found_synth): (&Node, bool) = match tree.get("/lost+found") {
        Some(n) if n.kind == Kind::Dir => (n, false),
        Some(_) => return Err(Ext4Error::LostFoundNotDir),
        None => (&LOST_FOUND, true),
    };
    let root = tree
        .get("/")
        .filter(|n| n.kind == Kind::Dir)
        .unwrap_or(&ROOT);

    // Inode numbers.
    let mut ino_of: HashMap<&str, u32> = HashMap::new();
    ino_of.insert("/", ROOT_INO);
    ino_of.insert("/lost+found", FIRST_INO);
    let mut order: Vec<(&str, Option<&Node>)> = vec![("/", None), ("/lost+found", None)];
    let mut next = FIRST_INO + 1;
    let mut hardlinks: HashMap<&str, u32> = HashMap::new();
    let mut stack = vec!["/"];
    while let Some(d) = stack.pop() {
        let mut subdirs = Vec::new();
        for &(path, node) in kids.get(d).map(Vec::as_slice).unwrap_or_default() {
            check_name(path)?;
            if node.kind == Kind::Dir {
                subdirs.push(path);
            }
            if path == "/lost+found" {
                continue;
            }
            if let Kind::Hardlink(target) = &node.kind {
                match tree.get(target) {
                    Some(Node {
                        kind: Kind::File(_),
                        ..
                    }) => *hardlinks.entry(target.as_str()).or_default() += 1,
                    _ => {
                        return Err(Ext4Error::BadHardlink {
                            path: path.to_string(),
                            target: target.clone(),
                        })
                    }
                }
                continue;
            }
            ino_of.insert(path, next);
            order.push((path, Some(node)));
            // Overflow is caught by the inode count check (2^32 inodes
            // cannot be planned in memory anyway).
            next = next.saturating_add(1);
        }
        stack.extend(subdirs.into_iter().rev());
    }

    let mut shared: Vec<SharedBlock> = Vec::new();
    let mut open_block: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut inodes = Vec::with_capacity(order.len());
    for (path, node) in order {
        let node = match (path, node) {
            ("/", _) => root,
            ("/lost+found", _) => lost_found,
            (_, Some(n)) => n,
            (_, None) => continue,
        };
        let ino = ino_of.get(path).copied().unwrap_or_default();
        let perm = node.mode & 0o7777;
        let (type_bits, links, body) = match &node.kind {
            Kind::Dir => {
                let parent_ino = if path == "/" {
                    ROOT_INO
                } else {
                    ino_of.get(parent(path)).copied().unwrap_or(ROOT_INO)
                };
                let mut entries = vec![
                    Entry {
                        name: b".".to_vec(),
                        ino,
                        file_type: dir::FT_DIR,
                    },
                    Entry {
                        name: b"..".to_vec(),
                        ino: parent_ino,
                        file_type: dir::FT_DIR,
                    },
                ];
                let mut subdirs = 0u32;
                for &(cpath, cnode) in kids.get(path).map(Vec::as_slice).unwrap_or_default() {
                    let target = match &cnode.kind {
                        Kind::Hardlink(t) => t.as_str(),
                        _ => cpath,
                    };
                    if cnode.kind == Kind::Dir {
                        subdirs += 1;
                    }
                    entries.push(Entry {
                        name: name(cpath).as_bytes().to_vec(),
                        ino: ino_of.get(target).copied().unwrap_or_default(),
                        file_type: file_type(&cnode.kind),
                    });
                }
                if path == "/" && lost_found_synth {
                    subdirs += 1;
                    let at = entries[2..]
                        .partition_point(|e| e.name.as_slice() < b"lost+found".as_slice())
                        + 2;
                    entries.insert(
                        at,
                        Entry {
                            name: b"lost+found".to_vec(),
                            ino: FIRST_INO,
                            file_type: dir::FT_DIR,
                        },
                    );
                }
                let mut blocks = dir::blocks_needed(&entries);
                if path == "/lost+found" {
                    blocks = blocks.max(LOST_FOUND_BLOCKS);
                }
                let links = 2 + subdirs;
                let links = if links > LINK_MAX { 1 } else { links };
                (
                    S_IFDIR,
                    links,
                    Body::Dir {
                        entries,
                        blocks,
                        htree: None,
                    },
                )
            }
            Kind::File(data) => {
                let links = 1 + hardlinks.get(path).copied().unwrap_or(0);
                if links > LINK_MAX {
                    return Err(Ext4Error::BadHardlink {
                        path: path.to_string(),
                        target: format!("{path} has {links} links; ext4 allows at most {LINK_MAX}"),
                    });
                }
                let size = data_len(path, data)?;
                (S_IFREG, links, Body::File { data, size })
            }
            Kind::Symlink(target) => {
                let bad = |reason| Ext4Error::BadSymlink {
                    path: path.to_string(),
                    len: target.len(),
                    reason,
                };
                if target.is_empty() {
                    return Err(bad("empty targets are invalid"));
                }
                if target.len() >= BLOCK_SIZE as usize {
                    return Err(bad("at most 4095 bytes fit"));
                }
                if target.contains('\0') {
                    return Err(bad("contains a NUL byte"));
                }
                let body = if target.len() <= FAST_SYMLINK_MAX {
                    Body::FastSymlink(target)
                } else {
                    Body::SlowSymlink(target)
                };
                (S_IFLNK, 1, body)
            }
            Kind::CharDev { major, minor } => (
                S_IFCHR,
                1,
                Body::Device {
                    i_block: device_block(path, *major, *minor)?,
                    major: *major,
                    minor: *minor,
                },
            ),
            Kind::BlockDev { major, minor } => (
                S_IFBLK,
                1,
                Body::Device {
                    i_block: device_block(path, *major, *minor)?,
                    major: *major,
                    minor: *minor,
                },
            ),
            Kind::Fifo => (S_IFIFO, 1, Body::Special),
            Kind::Socket => (S_IFSOCK, 1, Body::Special),
            // Hard links were filtered out above.
            Kind::Hardlink(_) => continue,
        };
        let attrs = xattr::parse(path, &node.xattrs)?;
        let placed = xattr::place(path, &attrs)?;
        let xattr_block = match placed.block {
            None => None,
            Some(body) => {
                // Identical xattr blocks are shared, as the kernel does.
                let idx = match open_block.get(&body) {
                    Some(&i) if shared[i].refcount < MAX_REFCOUNT => i,
                    _ => {
                        shared.push(SharedBlock {
                            body: body.clone(),
                            refcount: 0,
                        });
                        open_block.insert(body, shared.len() - 1);
                        shared.len() - 1
                    }
                };
                shared[idx].refcount += 1;
                Some(idx)
            }
        };
        inodes.push(Planned {
            ino,
            path,
            mode: type_bits | perm,
            uid: node.uid,
            gid: node.gid,
            links: links as u16,
            body,
            xattrs: attrs,
            ibody: placed.ibody,
            xattr_block,
        });
    }
    Ok(Plan {
        inodes,
        xattr_blocks: shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_links_and_entries() {
        let mut t = Tree::new();
        t.mkdir_p("/b/sub").unwrap();
        t.mkdir_p("/a").unwrap();
        t.insert("/a/f", Node::file(Data::Bytes(b"x".to_vec()), 0o644))
            .unwrap();
        t.insert(
            "/b/link",
            Node {
                kind: Kind::Hardlink("/a/f".into()),
                ..Node::dir(0)
            },
        )
        .unwrap();
        t.insert("/z", Node::symlink("a/f")).unwrap();
        let p = plan(&t).unwrap();
        let by_path: HashMap<&str, &Planned> = p.inodes.iter().map(|i| (i.path, i)).collect();
        // Root's entries first (a, b, z), then a's, then b's.
        let order: Vec<(&str, u32)> = p.inodes.iter().map(|i| (i.path, i.ino)).collect();
        assert_eq!(
            order,
            vec![
                ("/", 2),
                ("/lost+found", 11),
                ("/a", 12),
                ("/b", 13),
                ("/z", 14),
                ("/a/f", 15),
                ("/b/sub", 16)
            ]
        );
        assert_eq!(p.max_ino(), 16);
        assert_eq!(by_path["/a/f"].links, 2);
        assert_eq!(by_path["/"].links, 5); // ., .., a, b, lost+found
        let Body::Dir { entries, .. } = &by_path["/"].body else {
            panic!()
        };
        let names: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
        assert_eq!(
            names,
            vec![&b"."[..], b"..", b"a", b"b", b"lost+found", b"z"]
        );
        let Body::Dir { entries, .. } = &by_path["/b"].body else {
            panic!()
        };
        assert_eq!(
            entries.iter().find(|e| e.name == b"link").map(|e| e.ino),
            Some(15)
        );
        let Body::Dir { blocks, .. } = &by_path["/lost+found"].body else {
            panic!()
        };
        assert_eq!(*blocks, 4);
        for (i, planned) in p.inodes.iter().enumerate() {
            assert_eq!(index_of(planned.ino), Some(i));
        }
    }

    #[test]
    fn rejects_what_ext4_cannot_store() {
        let mut t = Tree::new();
        t.insert(&format!("/{}", "n".repeat(256)), Node::dir(0o755))
            .unwrap();
        assert!(matches!(plan(&t), Err(Ext4Error::BadName { .. })));
        let mut t = Tree::new();
        t.insert("/lost+found", Node::symlink("x")).unwrap();
        assert!(matches!(plan(&t), Err(Ext4Error::LostFoundNotDir)));
        let mut t = Tree::new();
        t.insert(
            "/dev",
            Node {
                kind: Kind::CharDev {
                    major: 5000,
                    minor: 1,
                },
                ..Node::dir(0o600)
            },
        )
        .unwrap();
        assert!(matches!(plan(&t), Err(Ext4Error::BadDevice { .. })));
        let mut t = Tree::new();
        t.insert("/l", Node::symlink("")).unwrap();
        assert!(matches!(plan(&t), Err(Ext4Error::BadSymlink { .. })));
    }

    #[test]
    fn devices_use_both_encodings() {
        let b = device_block("/d", 8, 1).unwrap();
        assert_eq!(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), 0x801);
        let b = device_block("/d", 259, 70000).unwrap();
        assert_eq!(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), 0);
        let new = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        assert_eq!(new & 0xff, 70000 & 0xff);
        assert_eq!((new >> 8) & 0xfff, 259);
        assert_eq!(new >> 20, 70000 >> 8);
    }
}
