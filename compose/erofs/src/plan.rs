//! Turns the tree into the list of inodes to write: one per path, except
//! that hard links share their target's inode. Inodes are numbered in path
//! order, which fixes every later allocation and so the image bytes.

use std::collections::HashMap;

use kiln_fstree::{Data, Kind, Node, Tree};

use crate::error::ErofsError;
use crate::format::{self, MAX_NAME_LEN};
use crate::xattr;

/// What an inode holds, beyond its metadata.
#[derive(Debug)]
pub enum Content<'t> {
    Dir(Vec<Entry<'t>>),
    File(&'t Data),
    Symlink(&'t str),
    /// Char/block devices (with `rdev`), fifos and sockets.
    Special {
        rdev: u32,
    },
}

/// A directory entry, `.` and `..` included.
#[derive(Debug)]
pub struct Entry<'t> {
    pub name: &'t [u8],
    pub inode: usize,
}

#[derive(Debug)]
pub struct Inode<'t> {
    /// The first path of this inode (for hard links, the linked-to file).
    pub path: &'t str,
    pub node: &'t Node,
    pub content: Content<'t>,
    /// Full `st_mode`: type bits and permissions.
    pub mode: u16,
    pub file_type: u8,
    pub nlink: u32,
    pub size: u64,
    pub xattrs: Vec<u8>,
}

impl Inode<'_> {
    /// Extended (64-byte) inodes only where a value overflows the compact
    /// form's 16-bit ids, 32-bit size or 16-bit link count.
    pub fn extended(&self) -> bool {
        self.node.uid > u32::from(u16::MAX)
            || self.node.gid > u32::from(u16::MAX)
            || self.size > u64::from(u32::MAX)
            || self.nlink > u32::from(u16::MAX)
    }

    pub fn header_len(&self) -> usize {
        format::InodeHeader::size_on_disk(self.extended())
    }
}

/// The inodes in path order; index 0 is the root directory.
pub fn inodes(tree: &Tree) -> Result<Vec<Inode<'_>>, ErofsError> {
    let mut by_path: HashMap<&str, usize> = HashMap::with_capacity(tree.len());
    let mut inodes: Vec<Inode<'_>> = Vec::with_capacity(tree.len());
    for (path, node) in tree.iter() {
        let (content, type_bits, file_type, size) = match &node.kind {
            Kind::Hardlink(_) => continue,
            Kind::Dir => (Content::Dir(Vec::new()), format::S_IFDIR, format::FT_DIR, 0),
            Kind::File(data) => {
                let size = data
                    .len()
                    .map_err(|source| read_error(path, data, source))?;
                (
                    Content::File(data),
                    format::S_IFREG,
                    format::FT_REG_FILE,
                    size,
                )
            }
            Kind::Symlink(target) => {
                if target.is_empty() || target.len() >= format::BLOCK_SIZE || target.contains('\0')
                {
                    return Err(ErofsError::BadSymlink {
                        path: path.to_string(),
                        len: target.len(),
                    });
                }
                let size = target.len() as u64;
                (
                    Content::Symlink(target),
                    format::S_IFLNK,
                    format::FT_SYMLINK,
                    size,
                )
            }
            Kind::CharDev { major, minor } => (
                Content::Special {
                    rdev: device(path, *major, *minor)?,
                },
                format::S_IFCHR,
                format::FT_CHRDEV,
                0,
            ),
            Kind::BlockDev { major, minor } => (
                Content::Special {
                    rdev: device(path, *major, *minor)?,
                },
                format::S_IFBLK,
                format::FT_BLKDEV,
                0,
            ),
            Kind::Fifo => (
                Content::Special { rdev: 0 },
                format::S_IFIFO,
                format::FT_FIFO,
                0,
            ),
            Kind::Socket => (
                Content::Special { rdev: 0 },
                format::S_IFSOCK,
                format::FT_SOCK,
                0,
            ),
        };
        by_path.insert(path, inodes.len());
        inodes.push(Inode {
            path,
            node,
            content,
            mode: type_bits | (node.mode & 0o7777),
            file_type,
            nlink: if matches!(node.kind, Kind::Dir) { 2 } else { 1 },
            size,
            xattrs: xattr::encode_body(path, &node.xattrs)?,
        });
    }

    // Entries: every path but the root is a name in its parent directory.
    let mut entries: Vec<Vec<Entry<'_>>> = inodes.iter().map(|_| Vec::new()).collect();
    for (path, node) in tree.iter() {
        if path == "/" {
            continue;
        }
        let name = kiln_fstree::name(path);
        if name.len() > MAX_NAME_LEN {
            return Err(ErofsError::NameTooLong {
                path: path.to_string(),
                len: name.len(),
            });
        }
        if name.contains('\0') {
            return Err(ErofsError::NulInName {
                path: path.to_string(),
            });
        }
        // `Tree::insert` checks parents and link targets, but `get_mut`
        // can change a node's kind afterwards.
        let broken = |reason: &str| ErofsError::BadTree {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let parent = by_path
            .get(kiln_fstree::parent(path))
            .copied()
            .filter(|&p| matches!(inodes[p].content, Content::Dir(_)))
            .ok_or_else(|| broken("its parent is not a directory"))?;
        let inode = match &node.kind {
            Kind::Hardlink(target) => by_path
                .get(target.as_str())
                .copied()
                .filter(|&i| matches!(inodes[i].content, Content::File(_)))
                .ok_or_else(|| broken("a hard link must point to a regular file"))?,
            _ => by_path
                .get(path)
                .copied()
                .ok_or_else(|| broken("missing from the inode table"))?,
        };
        if matches!(node.kind, Kind::Hardlink(_)) {
            inodes[inode].nlink += 1;
        }
        if matches!(node.kind, Kind::Dir) {
            inodes[parent].nlink += 1;
        }
        entries[parent].push(Entry {
            name: name.as_bytes(),
            inode,
        });
    }

    // `..` of a directory is its parent; the root's is itself.
    let parents: Vec<usize> = inodes
        .iter()
        .map(|i| {
            by_path
                .get(kiln_fstree::parent(i.path))
                .copied()
                .unwrap_or(0)
        })
        .collect();
    for (index, (inode, mut list)) in inodes.iter_mut().zip(entries).enumerate() {
        if let Content::Dir(slot) = &mut inode.content {
            list.push(Entry {
                name: b".",
                inode: index,
            });
            list.push(Entry {
                name: b"..",
                inode: if index == 0 { 0 } else { parents[index] },
            });
            // Lookups binary-search names in plain byte order.
            list.sort_by(|a, b| a.name.cmp(b.name));
            inode.size = crate::dir::size(&list);
            *slot = list;
        }
    }
    Ok(inodes)
}

/// Linux device numbers have a 12-bit major and a 20-bit minor; anything
/// wider cannot be a real device and would be silently truncated.
fn device(path: &str, major: u32, minor: u32) -> Result<u32, ErofsError> {
    if major > 0xfff || minor > 0xf_ffff {
        return Err(ErofsError::BadDevice {
            path: path.to_string(),
            major,
            minor,
        });
    }
    Ok(format::encode_dev(major, minor))
}

pub fn read_error(path: &str, data: &Data, source: std::io::Error) -> ErofsError {
    ErofsError::Read {
        path: path.to_string(),
        host: match data {
            Data::Path(p) => p.clone(),
            Data::Bytes(_) => "<memory>".into(),
        },
        source,
    }
}
