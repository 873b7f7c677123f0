//! What a sandbox sees and runs, as plain data the engine writes to
//! `spec.json` for the helper, and the checks made before anything runs.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A host path made visible inside the sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// Absolute host path (file or directory).
    pub host: PathBuf,
    /// Absolute path inside the sandbox.
    pub inside: PathBuf,
}

/// One command of a recipe's build.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SandboxStep {
    /// Shown in the log and in [`Outcome::StepFailed`].
    pub name: String,
    /// Program and arguments; the program is looked up on the step's `PATH`.
    pub argv: Vec<String>,
    /// Added on top of [`SandboxSpec::env`] for this step only.
    pub env: BTreeMap<String, String>,
}

/// Everything a sandbox sees. Nothing from the host leaks in that is not
/// named here (plus `/dev` nodes, a fresh `/proc`, `/tmp` and a minimal
/// `/etc`), which is what makes a build's key a faithful description of it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SandboxSpec {
    /// Empty host directory owned by this build. The helper writes
    /// `spec.json` and `status.json` here and mounts the new root (a tmpfs)
    /// on `scratch/root`; the host only ever sees an empty directory there.
    pub scratch: PathBuf,
    /// Read-only binds: toolchain host paths, dependency outputs at `/deps/<name>`.
    pub ro_binds: Vec<Bind>,
    /// Writable binds: `/build/src`, `/out`.
    pub rw_binds: Vec<Bind>,
    /// Host directories merged read-only at `/sysroot`; the first one wins
    /// on conflicts. Empty means an empty `/sysroot`.
    pub sysroot: Vec<PathBuf>,
    /// `(inside path, target)`, e.g. `(/bin, usr/bin)`. Created last, so they
    /// never redirect where a mount lands.
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    pub hostname: String,
    /// Also bind the host's `/etc/alternatives` and dynamic linker
    /// configuration (where they exist and no bind names them): a toolchain
    /// made of the host's `/usr` needs them. Off for a build environment
    /// from the store, which must see nothing of the host.
    pub host_etc: bool,
    /// The complete environment of every step; nothing is inherited.
    pub env: BTreeMap<String, String>,
    /// Working directory of every step (must exist once the binds are made).
    pub cwd: PathBuf,
    pub steps: Vec<SandboxStep>,
    /// Host path of the build log. Each step's stdout and stderr are
    /// appended, after a `==> [step N/M] name: argv` header.
    pub log: PathBuf,
}

/// How a sandbox run ended, when the sandbox itself worked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Step `index` (0-based) failed; later steps did not run. `code` is its
    /// exit code (127 if it could not be executed), `signal` the signal that
    /// killed it.
    StepFailed {
        index: usize,
        name: String,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// Catches what would otherwise fail deep inside the helper with a less
/// helpful message, or worse, resolve a path against the wrong root.
pub(crate) fn validate(spec: &SandboxSpec) -> Result<(), String> {
    fn absolute_host(what: &str, path: &Path) -> Result<(), String> {
        if path.is_absolute() {
            Ok(())
        } else {
            Err(format!("{what} {} is not an absolute path", path.display()))
        }
    }
    fn inside(what: &str, path: &Path) -> Result<(), String> {
        let mut components = path.components();
        let rooted = components.next() == Some(Component::RootDir);
        let normal: Vec<_> = components.collect();
        if !rooted || normal.is_empty() || !normal.iter().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "{what} {} must be an absolute path below / without `.` or `..`",
                path.display()
            ));
        }
        Ok(())
    }
    fn no_nul(what: &str, s: &str) -> Result<(), String> {
        if s.contains('\0') {
            Err(format!("{what} {s:?} contains a NUL byte"))
        } else {
            Ok(())
        }
    }
    fn env(map: &BTreeMap<String, String>) -> Result<(), String> {
        for (k, v) in map {
            if k.is_empty() || k.contains('=') {
                return Err(format!("invalid environment variable name {k:?}"));
            }
            no_nul("environment variable", k)?;
            no_nul("environment value", v)?;
        }
        Ok(())
    }

    absolute_host("scratch directory", &spec.scratch)?;
    absolute_host("log", &spec.log)?;
    for b in spec.ro_binds.iter().chain(&spec.rw_binds) {
        absolute_host("bind source", &b.host)?;
        inside("bind target", &b.inside)?;
    }
    for dir in &spec.sysroot {
        absolute_host("sysroot directory", dir)?;
    }
    for (path, _) in &spec.symlinks {
        inside("symlink", path)?;
    }
    if !spec.cwd.is_absolute() {
        return Err(format!(
            "working directory {} is not absolute",
            spec.cwd.display()
        ));
    }
    // sethostname's limit (HOST_NAME_MAX).
    if spec.hostname.is_empty() || spec.hostname.len() > 64 {
        return Err(format!(
            "hostname {:?} must be 1 to 64 bytes",
            spec.hostname
        ));
    }
    env(&spec.env)?;
    for step in &spec.steps {
        if step.argv.is_empty() {
            return Err(format!("step {:?} has an empty argv", step.name));
        }
        for arg in &step.argv {
            no_nul("argument", arg)?;
        }
        env(&step.env)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_paths_must_stay_inside() {
        let mut spec = SandboxSpec {
            scratch: "/s".into(),
            ro_binds: vec![Bind {
                host: "/usr".into(),
                inside: "/usr/../etc".into(),
            }],
            rw_binds: vec![],
            sysroot: vec![],
            symlinks: vec![],
            hostname: "kiln".into(),
            host_etc: true,
            env: BTreeMap::new(),
            cwd: "/".into(),
            steps: vec![],
            log: "/s/log".into(),
        };
        assert!(validate(&spec).is_err());
        spec.ro_binds[0].inside = "/".into();
        assert!(validate(&spec).is_err());
        spec.ro_binds[0].inside = "/usr".into();
        assert!(validate(&spec).is_ok());
    }
}
