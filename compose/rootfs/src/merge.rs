//! Merging package outputs into one tree.
//!
//! The rule is the same for every kind of path: two packages may install
//! the same path only if they describe it identically (same kind, content
//! digest or link target, mode, owner and xattrs). That includes
//! directories: "first wins" would make the image depend on package order,
//! and a silently changed mode on `/etc` or `/home/root` is exactly the kind
//! of difference nobody notices until a device misbehaves.

use std::collections::{BTreeMap, HashMap};
use std::fs;

use kiln_fstree::{Data, Kind, Node};
use kiln_store::{Entry, EntryKind, CAPABILITY_XATTR};

use crate::caps;
use crate::error::RootfsError;
use crate::staging::{Owner, Staging};
use crate::Package;

/// Merges `packages` in order. `first` remembers the first entry seen for
/// every path, to compare later packages' entries against.
pub(crate) fn merge<'a>(
    staging: &mut Staging<'_>,
    packages: &'a [Package],
) -> Result<(), RootfsError> {
    let mut first: HashMap<&'a str, (usize, &'a Entry)> = HashMap::new();
    for (index, pkg) in packages.iter().enumerate() {
        pkg.manifest
            .validate()
            .map_err(|source| RootfsError::Manifest {
                package: pkg.name.clone(),
                source,
            })?;
        for entry in &pkg.manifest.entries {
            let path = format!("/{}", entry.path);
            if let Some((other, seen)) = first.get(entry.path.as_str()) {
                if let Some(detail) = difference(seen, entry) {
                    return Err(RootfsError::Conflict {
                        path,
                        first: packages[*other].name.clone(),
                        second: pkg.name.clone(),
                        detail,
                    });
                }
                staging.add_owner(&path, Owner::Package(index));
                continue;
            }
            let node = node(pkg, entry)?;
            staging
                .tree
                .insert(&path, node)
                .map_err(|source| RootfsError::Tree {
                    package: pkg.name.clone(),
                    source,
                })?;
            staging.add_owner(&path, Owner::Package(index));
            first.insert(entry.path.as_str(), (index, entry));
        }
    }
    Ok(())
}

/// Why two entries for the same path can't both be installed, if they
/// can't.
fn difference(a: &Entry, b: &Entry) -> Option<String> {
    let kind = |k: &EntryKind| match k {
        EntryKind::Dir => "a directory".to_string(),
        EntryKind::File { blake3, size } => format!("a file ({size} bytes, blake3 {blake3})"),
        EntryKind::Symlink { target } => format!("a symlink to `{target}`"),
        EntryKind::Hardlink { target } => format!("a hard link to `/{target}`"),
    };
    if a.kind != b.kind {
        return Some(format!(
            "the first has {}, the second {}",
            kind(&a.kind),
            kind(&b.kind)
        ));
    }
    if a.mode != b.mode {
        return Some(format!("mode {:04o} vs {:04o}", a.mode, b.mode));
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        return Some(format!("owner {}:{} vs {}:{}", a.uid, a.gid, b.uid, b.gid));
    }
    if a.xattrs != b.xattrs {
        return Some(format!("xattrs {:?} vs {:?}", a.xattrs, b.xattrs));
    }
    None
}

/// The tree node for a manifest entry: file contents point into the
/// package's materialized output, xattrs are decoded.
fn node(pkg: &Package, e: &Entry) -> Result<Node, RootfsError> {
    let path = format!("/{}", e.path);
    let kind = match &e.kind {
        EntryKind::Dir => Kind::Dir,
        EntryKind::File { size, .. } => {
            let host = pkg.files.join(&e.path);
            let bad = |reason: String| RootfsError::Content {
                package: pkg.name.clone(),
                path: path.clone(),
                host: host.clone(),
                reason,
            };
            // A cheap check that `files` is this manifest's output: a wrong
            // directory would otherwise only show up as a broken image.
            let meta =
                fs::symlink_metadata(&host).map_err(|e| bad(format!("is unreadable: {e}")))?;
            if !meta.is_file() {
                return Err(bad("is not a regular file".into()));
            }
            if meta.len() != *size {
                return Err(bad(format!(
                    "has {} bytes, the manifest says {size}",
                    meta.len()
                )));
            }
            Kind::File(Data::Path(host))
        }
        EntryKind::Symlink { target } => Kind::Symlink(target.clone()),
        EntryKind::Hardlink { target } => Kind::Hardlink(format!("/{target}")),
    };
    let mut xattrs = BTreeMap::new();
    for (name, value) in &e.xattrs {
        let bytes = if name == CAPABILITY_XATTR {
            if !matches!(e.kind, EntryKind::File { .. }) {
                return Err(RootfsError::Xattr {
                    package: pkg.name.clone(),
                    path,
                    name: name.clone(),
                    reason: "capabilities can only be set on a regular file (for a hard link, \
                             set them on the first path of the inode)"
                        .into(),
                });
            }
            caps::encode(value).map_err(|source| RootfsError::Capability {
                package: pkg.name.clone(),
                path: path.clone(),
                source,
            })?
        } else {
            hex(value).ok_or_else(|| RootfsError::Xattr {
                package: pkg.name.clone(),
                path: path.clone(),
                name: name.clone(),
                reason: format!("value {value:?} is not hex-encoded bytes"),
            })?
        };
        xattrs.insert(name.clone(), bytes);
    }
    // `validate` has checked that the mode fits in 0o7777.
    let mode = (e.mode & 0o7777) as u16;
    Ok(Node {
        kind,
        mode,
        uid: e.uid,
        gid: e.gid,
        xattrs,
    })
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decoding() {
        assert_eq!(hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex(""), Some(vec![]));
        assert_eq!(hex("0"), None);
        assert_eq!(hex("zz"), None);
        assert_eq!(hex("é0"), None);
    }
}
