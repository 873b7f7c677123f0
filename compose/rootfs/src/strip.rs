//! Stripping ELF files for the image, without touching the store.
//!
//! Package outputs keep their symbols (the store is shared, and debugging
//! needs them); the image gets stripped copies. Each copy is written to a
//! scratch directory, named by the blake3 of its input, and the tree's data
//! is pointed at it: the package's files are never modified.
//!
//! Per kind of file, like Debian's `dh_strip`:
//! - executables (`ET_EXEC`, or `ET_DYN` with an interpreter, i.e. PIE):
//!   `--strip-all`;
//! - shared libraries (`ET_DYN` without an interpreter): `--strip-unneeded`,
//!   which keeps what relocation processing needs;
//! - relocatable objects (kernel modules, `.o`) are left alone: stripping
//!   would drop module signatures and the symbols a link needs.
//!
//! Always `--enable-deterministic-archives` (no timestamps, uids or modes in
//! archive headers), and `.gnu_debuglink` and `.comment` removed: the image
//! carries no debug link to files it doesn't have, and no compiler banner.
//! `strip` itself is deterministic, so the same input gives the same bytes.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kiln_atomic::{Durability, TempFile};
use kiln_fstree::{Data, Kind, Tree};

use crate::closure::is_skipped;
use crate::elf::{host_path, read_if_elf, ElfInfo, ET_DYN, ET_EXEC};
use crate::error::{IoContext, RootfsError};

/// The `strip` to run: a program and the arguments that always come first.
/// A tool from a build environment in the store runs through that
/// environment's own dynamic linker (`ld.so --library-path ... strip`),
/// so neither the host's binutils nor its libraries are used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl From<&str> for Tool {
    /// A tool found on PATH by name.
    fn from(name: &str) -> Tool {
        Tool {
            program: PathBuf::from(name),
            args: Vec::new(),
        }
    }
}

impl Tool {
    /// `name` from `root`'s `/usr/bin`, run from the host with `root`'s own
    /// dynamic linker and libraries: how a build environment's `strip`
    /// runs without the host's binutils. Symlinks are followed inside
    /// `root` (an absolute target means `root`'s, not the host's).
    pub fn in_tree(root: &Path, name: &str) -> Result<Tool, RootfsError> {
        let fail = |reason: String| RootfsError::Tool {
            tool: name.to_string(),
            root: root.to_path_buf(),
            reason,
        };
        let program = resolve_in(root, &Path::new("/usr/bin").join(name)).map_err(fail)?;
        let bytes = fs::read(&program).at(&program)?;
        let info = ElfInfo::parse(&bytes)
            .map_err(|e| fail(format!("{} is not an ELF program: {e}", program.display())))?;
        let interp = info
            .interp
            .ok_or_else(|| fail(format!("{} has no dynamic linker", program.display())))?;
        let ld = resolve_in(root, Path::new(&interp)).map_err(fail)?;
        let mut libs = OsString::new();
        if let Some(dir) = ld.parent() {
            libs.push(dir);
            libs.push(":");
        }
        libs.push(root.join("usr/lib"));
        Ok(Tool {
            program: ld,
            args: vec!["--library-path".into(), libs, program.into_os_string()],
        })
    }
}

/// `path` inside `root`, its symlinks followed within `root`.
fn resolve_in(root: &Path, path: &Path) -> Result<PathBuf, String> {
    let mut cur = PathBuf::from("/");
    let mut todo: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&part);
        let on_host = root.join(next.strip_prefix("/").unwrap_or(&next));
        match fs::symlink_metadata(&on_host) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(format!("too many links resolving {}", path.display()));
                }
                let target = fs::read_link(&on_host).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        std::path::Component::Normal(n) => todo.push(n.to_os_string()),
                        std::path::Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => cur = next,
            Err(e) => return Err(format!("{} in {}: {e}", next.display(), root.display())),
        }
    }
    Ok(root.join(cur.strip_prefix("/").unwrap_or(&cur)))
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program.display())?;
        for a in &self.args {
            write!(f, " {}", a.to_string_lossy())?;
        }
        Ok(())
    }
}

/// Flags every strip run gets, after the per-kind one.
const COMMON: [&str; 3] = [
    "--enable-deterministic-archives",
    "--remove-section=.gnu_debuglink",
    "--remove-section=.comment",
];

/// What [`strip`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripReport {
    /// Files now pointing at a stripped copy.
    pub stripped: Vec<String>,
    /// ELF files strip left byte-identical (already stripped); they keep
    /// their original data.
    pub unchanged: usize,
    /// Total size of the stripped files before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Strips every ELF executable and shared library of `tree` (outside the
/// `skip` path prefixes) with the target's `strip` command (e.g.
/// `aarch64-linux-gnu-strip`), writing the results under `work_dir` and
/// pointing the tree at them. `work_dir` must outlive the tree's use
/// (the image writer reads from it); the caller removes it.
pub fn strip(
    tree: &mut Tree,
    strip: impl Into<Tool>,
    work_dir: &Path,
    skip: &[String],
) -> Result<StripReport, RootfsError> {
    let strip = strip.into();
    fs::create_dir_all(work_dir).at(work_dir)?;
    let paths: Vec<String> = tree
        .iter()
        .filter(|(p, n)| matches!(n.kind, Kind::File(_)) && !is_skipped(p, skip))
        .map(|(p, _)| p.to_string())
        .collect();
    let mut report = StripReport::default();
    // Input digest → stripped copy (None: strip changed nothing).
    let mut done: HashMap<blake3::Hash, Option<PathBuf>> = HashMap::new();
    for path in paths {
        let Some(Kind::File(data)) = tree.get(&path).map(|n| &n.kind) else {
            continue;
        };
        let data = data.clone();
        let Some(bytes) = read_if_elf(&data).at(host_path(&path, &data))? else {
            continue;
        };
        let info = ElfInfo::parse(&bytes).map_err(|reason| RootfsError::Elf {
            path: path.clone(),
            reason,
        })?;
        let how = match info.e_type {
            ET_EXEC => "--strip-all",
            ET_DYN if info.has_interp => "--strip-all",
            ET_DYN => "--strip-unneeded",
            _ => continue,
        };
        let digest = blake3::hash(&bytes);
        let copy = match done.get(&digest) {
            Some(copy) => copy.clone(),
            None => {
                let copy = strip_one(&strip, how, &path, &data, &bytes, &digest, work_dir)?;
                done.insert(digest, copy.clone());
                copy
            }
        };
        match copy {
            Some(out) => {
                report.bytes_before += bytes.len() as u64;
                report.bytes_after += fs::metadata(&out).at(&out)?.len();
                if let Some(node) = tree.get_mut(&path) {
                    node.kind = Kind::File(Data::Path(out));
                }
                report.stripped.push(path);
            }
            None => report.unchanged += 1,
        }
    }
    Ok(report)
}

/// Runs strip on one file; the stripped copy, or `None` if strip changed
/// nothing.
fn strip_one(
    strip: &Tool,
    how: &str,
    path: &str,
    data: &Data,
    bytes: &[u8],
    digest: &blake3::Hash,
    work_dir: &Path,
) -> Result<Option<PathBuf>, RootfsError> {
    let name = format!("{}{how}", digest.to_hex());
    let out = work_dir.join(&name);
    // strip writes the copy itself; it is renamed into place only when
    // strip succeeded and changed something.
    let tmp = TempFile::new_in(work_dir, &format!("{name}.tmp-"))?;
    let input = match data {
        Data::Path(p) => p.clone(),
        Data::Bytes(b) => {
            let input = work_dir.join(format!("{name}.in"));
            fs::write(&input, b).at(&input)?;
            input
        }
    };
    let result = Command::new(&strip.program)
        .args(&strip.args)
        .arg(how)
        .args(COMMON)
        .arg("-o")
        .arg(tmp.path())
        .arg(&input)
        .stdin(Stdio::null())
        .output();
    if matches!(data, Data::Bytes(_)) {
        fs::remove_file(&input).at(&input)?;
    }
    let command = format!(
        "{strip} {how} {} -o {}",
        COMMON.join(" "),
        tmp.path().display()
    );
    let output = result.map_err(|e| RootfsError::Strip {
        path: path.to_string(),
        command: command.clone(),
        status: "could not run".into(),
        stderr: e.to_string(),
    })?;
    if !output.status.success() {
        return Err(RootfsError::Strip {
            path: path.to_string(),
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let stripped = fs::read(tmp.path()).at(tmp.path())?;
    if stripped == bytes {
        return Ok(None);
    }
    tmp.persist(&out, Durability::Scratch)?;
    Ok(Some(out))
}
