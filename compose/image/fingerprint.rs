//! The image writers' fingerprint: what the image key says about the code
//! that writes the image.
//!
//! The image's bytes are a function of its inputs and of the code of
//! `kiln-image` and of everything it builds with. So the fingerprint covers
//! exactly that: the source files of `kiln-image` and of every workspace
//! crate in its dependency closure (normal and build dependencies, never
//! dev-dependencies: tests, examples and benches don't write images), and
//! the locked name, version and checksum of every external crate in that
//! closure, from `Cargo.lock`. Nothing else: a change to the DSL, the
//! engine, the remote cache or the CLI leaves image keys alone.
//!
//! Used by `build.rs`, which bakes the result into the crate as
//! `KILN_IMAGE_WRITERS`, and by `tests/image_key.rs`, which runs it on
//! copies of the checkout. It reads only files, by paths relative to the
//! workspace root, so the checkout's location never changes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The fingerprint and the files it read (for `rerun-if-changed`).
pub struct Fingerprint {
    pub hex: String,
    pub files: Vec<PathBuf>,
}

/// The fingerprint of `package`'s closure in the workspace at `root`.
pub fn fingerprint(root: &Path, package: &str) -> Result<Fingerprint, String> {
    let ws = Workspace::read(root)?;
    let (crates, external) = ws.closure(package)?;
    let mut files = vec![root.join("Cargo.lock")];
    let mut sources = Vec::new();
    for name in &crates {
        let dir = &ws.members[name].dir;
        collect(&root.join(dir), &mut sources).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    sources.sort();
    let mut h = blake3::Hasher::new();
    h.update(b"kiln-image-writers-v2\0");
    for f in &sources {
        let rel = f.strip_prefix(root).unwrap_or(f);
        let bytes = std::fs::read(f).map_err(|e| format!("reading {}: {e}", f.display()))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update(&[0]);
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    for p in ws.lock.closure(&external)? {
        h.update(format!("{}\0{}\0{}\0", p.name, p.version, p.checksum).as_bytes());
    }
    files.extend(sources);
    Ok(Fingerprint {
        hex: h.finalize().to_hex().to_string(),
        files,
    })
}

/// A workspace member as far as the fingerprint cares.
struct Member {
    /// Relative to the workspace root.
    dir: PathBuf,
    /// `(name as written, package name)` of normal and build dependencies.
    deps: Vec<(String, String)>,
}

struct Workspace {
    members: BTreeMap<String, Member>,
    lock: Lock,
}

impl Workspace {
    fn read(root: &Path) -> Result<Workspace, String> {
        let top = read_toml(&root.join("Cargo.toml"))?;
        let ws = top
            .get("workspace")
            .ok_or("Cargo.toml has no [workspace]")?;
        let dirs: Vec<String> = ws
            .get("members")
            .and_then(|m| m.as_array())
            .ok_or("[workspace] has no members")?
            .iter()
            .filter_map(|m| m.as_str().map(String::from))
            .collect();
        let shared = ws.get("dependencies").and_then(|d| d.as_table());
        let mut members = BTreeMap::new();
        for dir in dirs {
            let manifest = read_toml(&root.join(&dir).join("Cargo.toml"))?;
            let name = manifest
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .ok_or_else(|| format!("{dir}/Cargo.toml has no package name"))?
                .to_string();
            let mut deps = Vec::new();
            for section in ["dependencies", "build-dependencies"] {
                let Some(table) = manifest.get(section).and_then(|d| d.as_table()) else {
                    continue;
                };
                for (key, spec) in table {
                    // `foo.workspace = true` takes its spec from the workspace.
                    let spec = match spec.get("workspace").and_then(|w| w.as_bool()) {
                        Some(true) => shared.and_then(|s| s.get(key)).unwrap_or(spec),
                        _ => spec,
                    };
                    let package = spec
                        .get("package")
                        .and_then(|p| p.as_str())
                        .unwrap_or(key)
                        .to_string();
                    deps.push((key.clone(), package));
                }
            }
            members.insert(
                name,
                Member {
                    dir: PathBuf::from(dir),
                    deps,
                },
            );
        }
        let lock = Lock::read(&root.join("Cargo.lock"))?;
        Ok(Workspace { members, lock })
    }

    /// The workspace crates `package` builds with (itself included) and the
    /// lock entries of the external crates they use directly.
    fn closure(&self, package: &str) -> Result<(BTreeSet<String>, Vec<LockRef>), String> {
        let mut crates = BTreeSet::new();
        let mut external = Vec::new();
        let mut todo = vec![package.to_string()];
        while let Some(name) = todo.pop() {
            if !crates.insert(name.clone()) {
                continue;
            }
            let member = self
                .members
                .get(&name)
                .ok_or_else(|| format!("`{name}` is not a workspace member"))?;
            let locked = self.lock.by_name(&name)?;
            for (_, package) in &member.deps {
                if self.members.contains_key(package) {
                    todo.push(package.clone());
                    continue;
                }
                // The member's lock entry names the version it resolved to.
                let r = locked
                    .deps
                    .iter()
                    .find(|r| r.name == *package)
                    .ok_or_else(|| format!("Cargo.lock: `{name}` does not list `{package}`"))?;
                external.push(r.clone());
            }
        }
        Ok((crates, external))
    }
}

/// `name` or `name version` as Cargo.lock writes a dependency.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LockRef {
    name: String,
    version: Option<String>,
}

struct LockPackage {
    name: String,
    version: String,
    checksum: String,
    deps: Vec<LockRef>,
}

struct Lock {
    packages: Vec<LockPackage>,
}

impl Lock {
    fn read(path: &Path) -> Result<Lock, String> {
        let doc = read_toml(path)?;
        let mut packages = Vec::new();
        for p in doc
            .get("package")
            .and_then(|p| p.as_array())
            .ok_or("Cargo.lock has no packages")?
        {
            let field = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let deps = p
                .get("dependencies")
                .and_then(|d| d.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str())
                        .map(|d| {
                            let mut words = d.split(' ');
                            LockRef {
                                name: words.next().unwrap_or("").to_string(),
                                version: words.next().map(String::from),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            packages.push(LockPackage {
                name: field("name"),
                version: field("version"),
                checksum: field("checksum"),
                deps,
            });
        }
        Ok(Lock { packages })
    }

    fn by_name(&self, name: &str) -> Result<&LockPackage, String> {
        self.find(&LockRef {
            name: name.to_string(),
            version: None,
        })
    }

    fn find(&self, r: &LockRef) -> Result<&LockPackage, String> {
        let mut found = self
            .packages
            .iter()
            .filter(|p| p.name == r.name && r.version.as_ref().is_none_or(|v| *v == p.version));
        match (found.next(), found.next()) {
            (Some(p), None) => Ok(p),
            (None, _) => Err(format!("Cargo.lock has no `{}`", r.name)),
            (Some(_), Some(_)) => Err(format!("Cargo.lock has several `{}`", r.name)),
        }
    }

    /// Every package reachable from `roots`, each once, sorted.
    fn closure(&self, roots: &[LockRef]) -> Result<Vec<&LockPackage>, String> {
        let mut seen: BTreeMap<(String, String), &LockPackage> = BTreeMap::new();
        let mut todo: Vec<LockRef> = roots.to_vec();
        while let Some(r) = todo.pop() {
            let p = self.find(&r)?;
            if seen
                .insert((p.name.clone(), p.version.clone()), p)
                .is_none()
            {
                todo.extend(p.deps.iter().cloned());
            }
        }
        Ok(seen.into_values().collect())
    }
}

fn read_toml(path: &Path) -> Result<toml::Table, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A crate's files: everything under its directory but tests, examples,
/// benches, build output, and other packages nested inside.
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    if !meta.is_dir() {
        return Ok(());
    }
    for e in std::fs::read_dir(path)? {
        let e = e?;
        let p = e.path();
        let name = e.file_name();
        if ["tests", "target", "examples", "benches"]
            .iter()
            .any(|n| name == *n)
        {
            continue;
        }
        if p.is_dir() && p.join("Cargo.toml").is_file() {
            continue;
        }
        collect(&p, out)?;
    }
    Ok(())
}
