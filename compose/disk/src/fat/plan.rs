//! Everything about a tree that can be checked before formatting: node
//! kinds, names, sizes, and whether it all fits.
//!
//! The space check is exact for what fatfs writes: one cluster chain per
//! non-empty file, and per directory one short-name entry plus
//! `ceil(UTF-16 length / 13)` long-name entries per child (fatfs writes a
//! long name for every entry, even valid 8.3 names), plus four slots for
//! `.` and `..` in subdirectories (fatfs gives them long-name entries too,
//! which `dots` turns into deleted slots) and the volume label in the root.

use std::collections::HashMap;

use kiln_fstree::{Data, Kind, Tree};

use super::geometry::{FatKind, Geometry, FAT16_ROOT_ENTRIES};
use crate::error::FatError;

/// Bytes of a FAT directory entry.
const ENTRY: u64 = 32;
/// The largest file FAT stores (32-bit size field).
const MAX_FILE: u64 = u32::MAX as u64;

/// What the tree will take.
#[derive(Debug)]
pub(crate) struct Plan {
    pub files: usize,
    pub dirs: usize,
    pub clusters: u64,
}

pub(crate) fn plan(tree: &Tree, geo: &Geometry) -> Result<Plan, FatError> {
    let cluster = u64::from(geo.cluster_bytes);
    let mut files = 0;
    let mut dirs = 0;
    let mut clusters = 0u64;
    for (path, node) in tree.iter() {
        if !node.xattrs.is_empty() {
            return Err(FatError::Xattrs {
                path: path.into(),
                count: node.xattrs.len(),
            });
        }
        match &node.kind {
            Kind::Dir => {
                let entries = dir_entries(tree, path)?;
                if path == "/" {
                    // Plus the volume label entry.
                    let n = entries + 1;
                    match geo.kind {
                        FatKind::Fat16 if n > FAT16_ROOT_ENTRIES => {
                            return Err(FatError::RootDirFull {
                                needed: n,
                                max: FAT16_ROOT_ENTRIES,
                            })
                        }
                        // A fixed region outside the data clusters.
                        FatKind::Fat16 => {}
                        FatKind::Fat32 => clusters += (n * ENTRY).div_ceil(cluster),
                    }
                } else {
                    dirs += 1;
                    clusters += ((entries + 4) * ENTRY).div_ceil(cluster);
                }
            }
            Kind::File(data) => {
                let size = data_len(path, data)?;
                if size > MAX_FILE {
                    return Err(FatError::FileTooLarge {
                        path: path.into(),
                        size,
                        max: MAX_FILE,
                    });
                }
                files += 1;
                clusters += size.div_ceil(cluster);
            }
            other => {
                return Err(FatError::Unsupported {
                    path: path.into(),
                    kind: kind_name(other),
                })
            }
        }
    }
    if clusters > geo.clusters {
        return Err(FatError::NoSpace {
            size_bytes: u64::from(geo.total_sectors) * crate::layout::SECTOR,
            kind: geo.kind.name(),
            cluster_bytes: geo.cluster_bytes,
            needed_clusters: clusters,
            needed_bytes: clusters * cluster,
            available_clusters: geo.clusters,
        });
    }
    Ok(Plan {
        files,
        dirs,
        clusters,
    })
}

pub(crate) fn data_len(path: &str, data: &Data) -> Result<u64, FatError> {
    data.len().map_err(|source| FatError::Read {
        path: match data {
            Data::Path(p) => p.clone(),
            Data::Bytes(_) => path.into(),
        },
        source,
    })
}

/// Checks a directory's child names and returns how many directory entries
/// they take.
fn dir_entries(tree: &Tree, dir: &str) -> Result<u64, FatError> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut entries = 0;
    for (path, _) in tree.children(dir) {
        let name = kiln_fstree::name(path);
        check_name(path, name)?;
        // fatfs (like Windows and Linux vfat) compares names by their
        // Unicode upper case.
        let key: String = name.chars().flat_map(char::to_uppercase).collect();
        if let Some(other) = seen.insert(key, path) {
            return Err(FatError::NameClash {
                path: path.into(),
                other: other.into(),
            });
        }
        entries += (name.encode_utf16().count() as u64).div_ceil(13) + 1;
    }
    Ok(entries)
}

/// The long-name rules fatfs enforces (its `validate_long_name`), plus
/// trailing dots and spaces, which Windows and Linux vfat strip on lookup
/// so the file could never be opened under its name.
fn check_name(path: &str, name: &str) -> Result<(), FatError> {
    let bad = |reason: String| FatError::BadName {
        path: path.into(),
        reason,
    };
    let units = name.encode_utf16().count();
    if units > 255 || name.len() > 255 {
        return Err(bad(format!(
            "{units} UTF-16 units ({} bytes); at most 255",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|&c| !fat_char(c)) {
        return Err(bad(format!(
            "{c:?} (U+{:04X}) is not allowed in FAT long names",
            u32::from(c)
        )));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err(bad(
            "a trailing dot or space is dropped by FAT drivers on lookup".into(),
        ));
    }
    Ok(())
}

fn fat_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || ('\u{80}'..='\u{FFFF}').contains(&c)
        || "$%'-_@~`!(){}. +,;=[]^#&".contains(c)
}

fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Dir => "directory",
        Kind::File(_) => "regular file",
        Kind::Symlink(_) => "symlink",
        Kind::Hardlink(_) => "hard link",
        Kind::CharDev { .. } => "character device",
        Kind::BlockDev { .. } => "block device",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_fstree::Node;

    fn geo() -> Geometry {
        Geometry::new(40 << 20, FatKind::Fat32).unwrap()
    }

    #[test]
    fn names_are_checked() {
        for (name, ok) in [
            ("config.json", true),
            ("ünï cödé", true),
            ("a:b", false),
            ("a*", false),
            ("trailing.", false),
            ("\u{1F600}", false),
        ] {
            let mut t = Tree::new();
            t.insert(&format!("/{name}"), Node::dir(0o755)).unwrap();
            let r = plan(&t, &geo());
            assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
        }
    }

    #[test]
    fn counts_clusters() {
        let mut t = Tree::new();
        t.mkdir_p("/a").unwrap();
        t.insert("/a/f", Node::file(Data::Bytes(vec![1; 1025]), 0o644))
            .unwrap();
        let p = plan(&t, &geo()).unwrap();
        // Root: label, "a" (long + short entry) = 1 cluster; /a: . and ..
        // (4 slots), "f" (2) = 1 cluster; f: 3 clusters of 512 bytes.
        assert_eq!((p.files, p.dirs, p.clusters), (1, 1, 5));
    }
}
