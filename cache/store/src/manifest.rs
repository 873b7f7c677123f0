//! The manifest: a complete, deterministic description of an output tree.
//!
//! Its canonical JSON is stored as a blob, and that blob's digest is "the
//! output hash" of a build. Nothing host-specific is recorded (no
//! timestamps, no real owners), so the same tree always gets the same hash.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The extended attribute key under which a file capability override is
/// recorded (as text, e.g. `cap_net_raw+ep`; the image writer encodes it).
pub const CAPABILITY_XATTR: &str = "security.capability";

/// An output tree. Entries are sorted by `path` (byte order), so parents
/// come before their children and the encoding is canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub entries: Vec<Entry>,
}

/// One path of an output tree. Field order is the canonical JSON order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Relative, `/`-separated, no leading slash: `usr/bin/busybox`.
    pub path: String,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Extended attributes to set in the image. Values are hex-encoded bytes,
    /// except [`CAPABILITY_XATTR`], which holds capability text.
    pub xattrs: BTreeMap<String, String>,
    pub kind: EntryKind,
}

// `deny_unknown_fields` everywhere: a manifest from a newer Kiln with a kind
// of entry we don't know must fail loudly, not materialize a partial tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EntryKind {
    Dir,
    File {
        blake3: Digest,
        size: u64,
    },
    Symlink {
        target: String,
    },
    /// Another name for the inode of the `File` entry at `target`, the first
    /// path (in manifest order) with that inode.
    Hardlink {
        target: String,
    },
}

/// Ownership/mode/capability overrides for paths of a build output, which an
/// unprivileged build cannot set on its files itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaOverride {
    /// Like [`Entry::path`]; a leading `/` is accepted and ignored.
    pub path: String,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Capability text, stored under the [`CAPABILITY_XATTR`] key.
    pub caps: Option<String>,
}

/// A structural problem in a manifest, naming the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {path:?}: {reason}")]
pub struct ManifestError {
    pub path: String,
    pub reason: String,
}

impl Manifest {
    /// Builds a manifest from entries in any order.
    pub fn new(mut entries: Vec<Entry>) -> Manifest {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest { entries }
    }

    /// The canonical encoding whose blake3 is the manifest digest: compact
    /// JSON, fields in declaration order, maps sorted.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// The digest `put_manifest` would return, without storing anything.
    pub fn digest(&self) -> Result<Digest, serde_json::Error> {
        Ok(Digest::of(&self.to_canonical_json()?))
    }

    /// Digests of all file contents, each once.
    pub fn blobs(&self) -> impl Iterator<Item = Digest> + '_ {
        let mut seen = HashSet::new();
        self.entries.iter().filter_map(move |e| match e.kind {
            EntryKind::File { blake3, .. } if seen.insert(blake3) => Some(blake3),
            _ => None,
        })
    }

    /// Looks an entry up by path (binary search; entries are sorted).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Checks the invariants materialization relies on for safety:
    /// strictly sorted unique paths; every path normal (no `..`, `.`, empty
    /// or absolute components), so nothing lands outside the tree; every
    /// parent is a `Dir` entry, so no entry is written through a symlink;
    /// every hardlink points at a `File` entry; modes fit in 0o7777.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let err = |path: &str, reason: String| ManifestError {
            path: path.to_string(),
            reason,
        };
        let mut dirs: HashSet<&str> = HashSet::new();
        let mut files: HashSet<&str> = HashSet::new();
        let mut prev: Option<&str> = None;
        for e in &self.entries {
            let p = e.path.as_str();
            if let Some(prev) = prev {
                if prev >= p {
                    return Err(err(p, format!("not sorted after {prev:?} or duplicate")));
                }
            }
            prev = Some(p);
            if !is_normal_path(p) {
                return Err(err(
                    p,
                    "path must be relative, '/'-separated, without '.', '..' or empty components"
                        .into(),
                ));
            }
            if let Some((parent, _)) = p.rsplit_once('/') {
                if !dirs.contains(parent) {
                    return Err(err(
                        p,
                        format!("parent {parent:?} is not a directory entry"),
                    ));
                }
            }
            if e.mode & !0o7777 != 0 {
                return Err(err(p, format!("mode {:o} has bits outside 0o7777", e.mode)));
            }
            match &e.kind {
                EntryKind::Dir => {
                    dirs.insert(p);
                }
                EntryKind::File { .. } => {
                    files.insert(p);
                }
                EntryKind::Symlink { target } => {
                    if target.is_empty() || target.contains('\0') {
                        return Err(err(p, "symlink target is empty or contains NUL".into()));
                    }
                }
                EntryKind::Hardlink { target } => {
                    if !files.contains(target.as_str()) {
                        return Err(err(
                            p,
                            format!("hardlink target {target:?} is not an earlier file entry"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `a/b/c`: non-empty components, none `.` or `..`, no NUL, no leading or
/// trailing slash.
pub(crate) fn is_normal_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
            kind,
        }
    }

    fn file(path: &str) -> Entry {
        entry(
            path,
            EntryKind::File {
                blake3: Digest::of(path.as_bytes()),
                size: 1,
            },
        )
    }

    #[test]
    fn canonical_json_shape_is_stable() {
        let mut e = file("a");
        e.xattrs.insert("user.z".into(), "00".into());
        e.xattrs.insert("user.a".into(), "ff".into());
        let m = Manifest::new(vec![entry("b", EntryKind::Dir), e]);
        let json = String::from_utf8(m.to_canonical_json().unwrap()).unwrap();
        let d = Digest::of(b"a");
        assert_eq!(
            json,
            format!(
                r#"{{"entries":[{{"path":"a","mode":493,"uid":0,"gid":0,"xattrs":{{"user.a":"ff","user.z":"00"}},"kind":{{"file":{{"blake3":"{d}","size":1}}}}}},{{"path":"b","mode":493,"uid":0,"gid":0,"xattrs":{{}},"kind":"dir"}}]}}"#
            )
        );
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let json = r#"{"entries":[{"path":"a","mode":493,"uid":0,"gid":0,"xattrs":{},"kind":"dir","extra":1}]}"#;
        assert!(serde_json::from_str::<Manifest>(json).is_err());
        let json =
            r#"{"entries":[{"path":"a","mode":493,"uid":0,"gid":0,"xattrs":{},"kind":"device"}]}"#;
        assert!(serde_json::from_str::<Manifest>(json).is_err());
    }

    #[test]
    fn validate_accepts_a_good_tree() {
        let m = Manifest::new(vec![
            entry("usr", EntryKind::Dir),
            entry("usr/bin", EntryKind::Dir),
            file("usr/bin/busybox"),
            entry(
                "usr/bin/sh",
                EntryKind::Symlink {
                    target: "busybox".into(),
                },
            ),
            entry(
                "usr/bin/zcat",
                EntryKind::Hardlink {
                    target: "usr/bin/busybox".into(),
                },
            ),
            entry(
                "usr/bin-x",
                EntryKind::Symlink {
                    target: "/abs/ok".into(),
                },
            ),
        ]);
        m.validate().unwrap();
        assert!(m.get("usr/bin/sh").is_some());
        assert!(m.get("usr/bin/nope").is_none());
    }

    #[test]
    fn validate_rejects_escapes_and_bad_structure() {
        let cases: Vec<(Vec<Entry>, &str)> = vec![
            (vec![file("../x")], "../x"),
            (vec![file("/etc")], "/etc"),
            (vec![entry("a", EntryKind::Dir), file("a//b")], "a//b"),
            (vec![entry("a", EntryKind::Dir), file("a/./b")], "a/./b"),
            (vec![file("a/")], "a/"),
            (vec![file("")], ""),
            // Writing through a symlink: "a" is a symlink, not a dir.
            (
                vec![
                    entry(
                        "a",
                        EntryKind::Symlink {
                            target: "/etc".into(),
                        },
                    ),
                    file("a/passwd"),
                ],
                "a/passwd",
            ),
            (vec![file("a/b")], "a/b"),
            (
                vec![entry(
                    "h",
                    EntryKind::Hardlink {
                        target: "nope".into(),
                    },
                )],
                "h",
            ),
            (
                vec![
                    entry("d", EntryKind::Dir),
                    entry("h", EntryKind::Hardlink { target: "d".into() }),
                ],
                "h",
            ),
            (
                vec![entry(
                    "s",
                    EntryKind::Symlink {
                        target: String::new(),
                    },
                )],
                "s",
            ),
        ];
        for (entries, bad) in cases {
            let m = Manifest::new(entries);
            let e = m.validate().unwrap_err();
            assert_eq!(e.path, bad, "{e}");
        }
        let mut m = Manifest::new(vec![file("a")]);
        m.entries[0].mode = 0o100644;
        assert!(m.validate().is_err());
        // Unsorted or duplicate.
        let m = Manifest {
            entries: vec![file("b"), file("a")],
        };
        assert!(m.validate().is_err());
        let m = Manifest {
            entries: vec![file("a"), file("a")],
        };
        assert!(m.validate().is_err());
    }

    #[test]
    fn blobs_are_deduplicated() {
        let mut a = file("a");
        let mut b = file("b");
        let d = Digest::of(b"same");
        a.kind = EntryKind::File { blake3: d, size: 4 };
        b.kind = EntryKind::File { blake3: d, size: 4 };
        let m = Manifest::new(vec![a, b, file("c")]);
        assert_eq!(m.blobs().count(), 2);
    }
}
