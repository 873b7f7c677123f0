//! Turning a build's output directory into blobs and a [`Manifest`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{IoContext, StoreError};
use crate::manifest::{Entry, EntryKind, Manifest, MetaOverride, CAPABILITY_XATTR};
use crate::store::Store;

/// One path found by the walk.
struct Found {
    rel: String,
    abs: PathBuf,
    meta: fs::Metadata,
}

/// An entry's kind before file contents are stored.
enum Pending {
    Dir,
    File,
    Symlink(String),
    /// Index of the first path with the same inode.
    Hardlink(usize),
}

impl Store {
    /// Walks a directory produced by a build (e.g. the sandbox's `/out`),
    /// stores every regular file (hashing and compressing in parallel) and
    /// returns the manifest. `meta` overrides ownership/mode/capabilities by
    /// manifest path.
    ///
    /// The result depends only on the tree's names, contents, modes and
    /// links: owners are recorded as 0:0 (builds run as root in a user
    /// namespace, so the real owner is meaningless) and times are not
    /// recorded, so the same tree always yields the same manifest digest.
    ///
    /// Extended attributes on disk are not read: those a host adds (SELinux
    /// labels, say) would make the digest depend on the machine. Metadata
    /// that matters in the image is declared through `meta`.
    pub fn ingest_tree(&self, dir: &Path, meta: &[MetaOverride]) -> Result<Manifest, StoreError> {
        let root_meta = fs::metadata(dir).ctx("inspecting", dir)?;
        if !root_meta.is_dir() {
            return Err(StoreError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let mut found = walk(dir)?;
        found.sort_by(|a, b| a.rel.cmp(&b.rel));

        // Classify in sorted order, so "the first path with an inode" is the
        // same on every machine.
        let mut first_with_inode: HashMap<(u64, u64), usize> = HashMap::new();
        let mut pending = Vec::with_capacity(found.len());
        for (i, f) in found.iter().enumerate() {
            let ft = f.meta.file_type();
            let p =
                if ft.is_dir() {
                    Pending::Dir
                } else if ft.is_symlink() {
                    let target = fs::read_link(&f.abs).ctx("reading symlink", &f.abs)?;
                    let target = target.into_os_string().into_string().map_err(|_| {
                        StoreError::NonUtf8Path {
                            path: f.abs.clone(),
                        }
                    })?;
                    Pending::Symlink(target)
                } else if ft.is_file() {
                    if f.meta.nlink() > 1 {
                        match first_with_inode.entry((f.meta.dev(), f.meta.ino())) {
                            std::collections::hash_map::Entry::Occupied(o) => {
                                Pending::Hardlink(*o.get())
                            }
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(i);
                                Pending::File
                            }
                        }
                    } else {
                        Pending::File
                    }
                } else {
                    let kind = if ft.is_block_device() {
                        "block device"
                    } else if ft.is_char_device() {
                        "character device"
                    } else if ft.is_fifo() {
                        "fifo"
                    } else if ft.is_socket() {
                        "socket"
                    } else {
                        "unknown file type"
                    };
                    return Err(StoreError::UnsupportedFileType {
                        path: f.abs.clone(),
                        kind,
                    });
                };
            pending.push(p);
        }

        // Which inode each entry belongs to (its own index, or its hardlink
        // target's), so an override applies to every name of a file.
        let group: Vec<usize> = pending
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                Pending::Hardlink(first) => *first,
                _ => i,
            })
            .collect();

        let kinds: Vec<EntryKind> = found
            .par_iter()
            .zip(pending.into_par_iter())
            .map(|(f, p)| {
                Ok(match p {
                    Pending::Dir => EntryKind::Dir,
                    Pending::Symlink(target) => EntryKind::Symlink { target },
                    Pending::File => {
                        let (blake3, size) = self.put_file(&f.abs)?;
                        EntryKind::File { blake3, size }
                    }
                    Pending::Hardlink(first) => EntryKind::Hardlink {
                        target: found[first].rel.clone(),
                    },
                })
            })
            .collect::<Result<_, StoreError>>()?;

        let mut entries: Vec<Entry> = found
            .into_iter()
            .zip(kinds)
            .map(|(f, kind)| Entry {
                mode: f.meta.mode() & 0o7777,
                path: f.rel,
                uid: 0,
                gid: 0,
                xattrs: BTreeMap::new(),
                kind,
            })
            .collect();
        apply_overrides(&mut entries, &group, meta)?;
        let m = Manifest { entries };
        m.validate()?;
        Ok(m)
    }
}

/// Lists everything below `dir` without following symlinks.
fn walk(dir: &Path) -> Result<Vec<Found>, StoreError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs_dir, rel_dir)) = stack.pop() {
        for entry in fs::read_dir(&abs_dir).ctx("reading directory", &abs_dir)? {
            let entry = entry.ctx("reading directory", &abs_dir)?;
            let abs = entry.path();
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| StoreError::NonUtf8Path { path: abs.clone() })?;
            let rel = if rel_dir.is_empty() {
                name
            } else {
                format!("{rel_dir}/{name}")
            };
            // DirEntry::metadata does not follow symlinks.
            let meta = entry.metadata().ctx("inspecting", &abs)?;
            if meta.is_dir() {
                stack.push((abs.clone(), rel.clone()));
            }
            out.push(Found { rel, abs, meta });
        }
    }
    Ok(out)
}

/// The override values that apply to one inode, with the path each came from.
#[derive(Default)]
struct Merged<'a> {
    mode: Option<(u32, &'a str)>,
    uid: Option<(u32, &'a str)>,
    gid: Option<(u32, &'a str)>,
    caps: Option<(&'a str, &'a str)>,
}

fn merge<'a, T: PartialEq + Copy + std::fmt::Debug>(
    slot: &mut Option<(T, &'a str)>,
    value: Option<T>,
    path: &'a str,
    field: &str,
) -> Result<(), StoreError> {
    let Some(v) = value else { return Ok(()) };
    match slot {
        Some((old, from)) if *old != v => Err(StoreError::InvalidOverride {
            path: path.to_string(),
            reason: format!(
                "{field} {v:?} conflicts with {old:?} given for {from:?}, a hardlink to the same file"
            ),
        }),
        _ => {
            *slot = Some((v, path));
            Ok(())
        }
    }
}

fn apply_overrides(
    entries: &mut [Entry],
    group: &[usize],
    overrides: &[MetaOverride],
) -> Result<(), StoreError> {
    if overrides.is_empty() {
        return Ok(());
    }
    let index: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_str(), i))
        .collect();
    let mut seen = HashSet::new();
    let mut merged: HashMap<usize, Merged> = HashMap::new();
    for o in overrides {
        let path = o.path.strip_prefix('/').unwrap_or(&o.path);
        let &i = index.get(path).ok_or_else(|| StoreError::UnknownOverride {
            path: o.path.clone(),
        })?;
        if !seen.insert(path) {
            return Err(StoreError::InvalidOverride {
                path: o.path.clone(),
                reason: "given more than once".into(),
            });
        }
        if let Some(mode) = o.mode {
            if mode & !0o7777 != 0 {
                return Err(StoreError::InvalidOverride {
                    path: o.path.clone(),
                    reason: format!("mode {mode:o} has bits outside 0o7777"),
                });
            }
        }
        if o.caps.is_some() && matches!(entries[i].kind, EntryKind::Dir | EntryKind::Symlink { .. })
        {
            return Err(StoreError::InvalidOverride {
                path: o.path.clone(),
                reason: "capabilities can only be set on regular files".into(),
            });
        }
        let m = merged.entry(group[i]).or_default();
        merge(&mut m.mode, o.mode, path, "mode")?;
        merge(&mut m.uid, o.uid, path, "uid")?;
        merge(&mut m.gid, o.gid, path, "gid")?;
        merge(&mut m.caps, o.caps.as_deref(), path, "caps")?;
    }
    for (e, g) in entries.iter_mut().zip(group) {
        let Some(m) = merged.get(g) else { continue };
        if let Some((mode, _)) = m.mode {
            e.mode = mode;
        }
        if let Some((uid, _)) = m.uid {
            e.uid = uid;
        }
        if let Some((gid, _)) = m.gid {
            e.gid = gid;
        }
        if let Some((caps, _)) = m.caps {
            e.xattrs
                .insert(CAPABILITY_XATTR.to_string(), caps.to_string());
        }
    }
    Ok(())
}
