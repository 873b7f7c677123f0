//! The ELF closure check: every program and library in the image must be
//! for the target architecture, and its interpreter and every `DT_NEEDED`
//! library must resolve inside the image.
//!
//! A missing library is otherwise found on the device, by a service that
//! won't start; a host binary that slipped into a package, by an "exec
//! format error". Both are cheap to find here.
//!
//! The search follows glibc's `ld.so` closely enough for an image: the
//! object's `DT_RPATH` (only when it has no `DT_RUNPATH`), its `DT_RUNPATH`,
//! then `/lib`, `/usr/lib`, `/lib/<triple>`, `/usr/lib/<triple>`, with
//! `$ORIGIN` expanded and symlinks followed inside the tree; a library
//! named like an interpreter in use counts as loaded. Deliberately
//! not modelled: `LD_LIBRARY_PATH`, `ld.so.conf` extra directories,
//! `$LIB`/`$PLATFORM` (such entries are skipped), and `DT_RPATH` inherited
//! from the executable by its libraries (each object must resolve on its
//! own). Any of these can only make the check stricter, never let a missing
//! library through.

use std::collections::{BTreeMap, HashSet};

use kiln_fstree::{name, parent, Kind, Node, Tree};

use crate::elf::{host_path, read_if_elf, ElfInfo, ET_DYN, ET_EXEC};
use crate::error::{IoContext, RootfsError, Unresolved};
use crate::generate::triple;

/// What one dynamically linked object needs.
struct Needs {
    path: String,
    interp: Option<String>,
    needed: Vec<String>,
    search: Vec<String>,
}

/// Checks every ELF file of `tree` outside `skip` (path prefixes). Returns
/// how many ELF files were checked.
pub(crate) fn check(tree: &Tree, arch: &str, skip: &[String]) -> Result<usize, RootfsError> {
    let Some(triple) = triple(arch) else {
        return Err(RootfsError::OsInfo {
            field: "arch",
            value: arch.into(),
            reason: "must be aarch64 or x86_64".into(),
        });
    };
    let defaults: Vec<String> = ["/lib", "/usr/lib"]
        .iter()
        .flat_map(|d| [d.to_string(), format!("{d}/{triple}")])
        .collect();

    let mut wrong = BTreeMap::new();
    let mut all = Vec::new();
    let mut count = 0;
    for (path, node) in tree.iter() {
        let Kind::File(data) = &node.kind else {
            continue;
        };
        if is_skipped(path, skip) {
            continue;
        }
        let Some(bytes) = read_if_elf(data).at(host_path(path, data))? else {
            continue;
        };
        count += 1;
        let info = ElfInfo::parse(&bytes).map_err(|reason| RootfsError::Elf {
            path: path.to_string(),
            reason,
        })?;
        if !info.is_for(arch) {
            wrong.insert(path.to_string(), info.describe());
            continue;
        }
        if info.e_type != ET_EXEC && info.e_type != ET_DYN {
            continue;
        }
        let origin = parent(path);
        let own = if info.runpath.is_empty() {
            &info.rpath
        } else {
            &info.runpath
        };
        let mut search: Vec<String> = own.iter().filter_map(|d| expand(d, origin)).collect();
        search.extend(defaults.iter().cloned());
        all.push(Needs {
            path: path.to_string(),
            interp: info.interp,
            needed: info.needed,
            search,
        });
    }
    if !wrong.is_empty() {
        return Err(RootfsError::WrongArch {
            expected: arch.to_string(),
            files: wrong,
        });
    }

    // ld.so satisfies a DT_NEEDED naming an object already loaded, and the
    // first one loaded is the interpreter itself: libc.so.6 needs
    // ld-linux-x86-64.so.2, found as /lib64/ld-linux-x86-64.so.2 wherever
    // the library directories are.
    let loaded: HashSet<&str> = all
        .iter()
        .filter_map(|n| n.interp.as_deref())
        .filter(|i| is_file(tree, i))
        .map(name)
        .collect();
    let mut missing = Unresolved::default();
    for n in &all {
        if let Some(interp) = &n.interp {
            if !is_file(tree, interp) {
                missing
                    .interpreters
                    .entry(interp.clone())
                    .or_default()
                    .insert(n.path.clone());
            }
        }
        for lib in &n.needed {
            let found = if loaded.contains(lib.as_str()) {
                true
            } else if lib.contains('/') {
                // A path, not a name: ld.so opens it as is.
                is_file(tree, lib)
            } else {
                n.search
                    .iter()
                    .any(|d| is_file(tree, &format!("{d}/{lib}")))
            };
            if !found {
                missing
                    .libraries
                    .entry(lib.clone())
                    .or_default()
                    .insert(n.path.clone());
            }
        }
    }
    if missing.is_empty() {
        Ok(count)
    } else {
        Err(RootfsError::Unresolved(missing))
    }
}

pub(crate) fn is_skipped(path: &str, skip: &[String]) -> bool {
    skip.iter().any(|s| {
        let s = s.trim_end_matches('/');
        path == s
            || path
                .strip_prefix(s)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// A `DT_RUNPATH`/`DT_RPATH` entry with `$ORIGIN` replaced by the object's
/// directory; `None` for entries ld.so would resolve against the current
/// directory (empty or relative) or that use other tokens.
fn expand(entry: &str, origin: &str) -> Option<String> {
    let origin = if origin == "/" { "" } else { origin };
    let e = entry
        .replace("${ORIGIN}", origin)
        .replace("$ORIGIN", origin);
    (e.starts_with('/') && !e.contains('$')).then_some(e)
}

/// Whether `path` leads to a regular file (following symlinks).
fn is_file(tree: &Tree, path: &str) -> bool {
    matches!(
        resolve(tree, path).map(|(_, n)| &n.kind),
        Some(Kind::File(_) | Kind::Hardlink(_))
    )
}

/// Follows `path` through the tree like the kernel would (symlinks in any
/// component, absolute ones from the tree's root, `..`), returning the final
/// path and node; `None` if it doesn't exist or loops (40 links at most,
/// like Linux).
pub(crate) fn resolve<'t>(tree: &'t Tree, path: &str) -> Option<(String, &'t Node)> {
    let mut pending: Vec<String> = components(path).rev().collect();
    let mut cur = String::from("/");
    let mut links = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "." => {}
            ".." => {
                if !matches!(tree.get(&cur)?.kind, Kind::Dir) {
                    return None;
                }
                cur = parent(&cur).to_string();
            }
            name => {
                let next = if cur == "/" {
                    format!("/{name}")
                } else {
                    format!("{cur}/{name}")
                };
                let node = tree.get(&next)?;
                if let Kind::Symlink(target) = &node.kind {
                    links += 1;
                    if links > 40 {
                        return None;
                    }
                    if target.starts_with('/') {
                        cur = "/".into();
                    }
                    pending.extend(components(target).rev());
                } else {
                    cur = next;
                }
            }
        }
    }
    let node = tree.get(&cur)?;
    Some((cur, node))
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_fstree::Data;

    fn tree() -> Tree {
        let mut t = Tree::new();
        t.mkdir_p("/usr/lib/x").unwrap();
        t.insert("/usr/lib/libc.so.6", Node::file(Data::Bytes(vec![]), 0o755))
            .unwrap();
        t.insert("/lib", Node::symlink("usr/lib")).unwrap();
        t.insert("/usr/lib/x/up", Node::symlink("../libc.so.6"))
            .unwrap();
        t.insert("/usr/lib/x/abs", Node::symlink("/lib/x/up"))
            .unwrap();
        t.insert("/usr/lib/x/loop", Node::symlink("loop")).unwrap();
        t.insert("/usr/lib/x/dangling", Node::symlink("nope"))
            .unwrap();
        t
    }

    #[test]
    fn symlinks_resolve_inside_the_tree() {
        let t = tree();
        let r = |p: &str| resolve(&t, p).map(|(p, _)| p);
        assert_eq!(r("/lib/libc.so.6").as_deref(), Some("/usr/lib/libc.so.6"));
        assert_eq!(r("/lib/x/abs").as_deref(), Some("/usr/lib/libc.so.6"));
        assert_eq!(
            r("/lib/x/../libc.so.6").as_deref(),
            Some("/usr/lib/libc.so.6")
        );
        assert_eq!(r("/lib/../lib").as_deref(), Some("/usr/lib"));
        assert_eq!(r("/../../usr").as_deref(), Some("/usr"));
        assert_eq!(r("/lib/x/loop"), None);
        assert_eq!(r("/lib/x/dangling"), None);
        assert_eq!(r("/lib/libc.so.6/.."), None);
        assert!(is_file(&t, "/lib/x/up"));
        assert!(!is_file(&t, "/lib/x"));
    }

    #[test]
    fn origin_expansion() {
        assert_eq!(
            expand("$ORIGIN/../lib", "/usr/bin").as_deref(),
            Some("/usr/bin/../lib")
        );
        assert_eq!(expand("${ORIGIN}", "/opt").as_deref(), Some("/opt"));
        assert_eq!(expand("$ORIGIN/lib", "/").as_deref(), Some("/lib"));
        assert_eq!(expand("", "/usr/bin"), None);
        assert_eq!(expand("lib", "/usr/bin"), None);
        assert_eq!(expand("/usr/$LIB", "/usr/bin"), None);
    }

    #[test]
    fn skip_prefixes() {
        let skip = vec!["/usr/lib/firmware/".to_string()];
        assert!(is_skipped("/usr/lib/firmware/a.elf", &skip));
        assert!(is_skipped("/usr/lib/firmware", &skip));
        assert!(!is_skipped("/usr/lib/firmware2/a", &skip));
    }
}
