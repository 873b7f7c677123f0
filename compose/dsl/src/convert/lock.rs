//! A recipe's `debs` lock: the exact Debian binary packages it unpacks.
//!
//! The lock is JSON in the recipe's own files directory, written by a tool
//! (like `Cargo.lock`), so it is read here rather than in Rhai:
//!
//! ```json
//! { "archive": "http://deb.debian.org/debian",
//!   "packages": [ { "package": "make", "version": "4.3-4.1", "arch": "amd64",
//!                   "filename": "pool/main/m/make-dfsg/make_4.3-4.1_amd64.deb",
//!                   "sha256": "…" } ] }
//! ```

use std::path::Path;

use kiln_model::{Deb, Diagnostic, Span};
use serde::Deserialize;

use super::fields::{is_hex, Fields};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lock {
    archive: String,
    packages: Vec<Locked>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Locked {
    package: String,
    version: String,
    arch: String,
    filename: String,
    sha256: String,
}

/// The packages of the lock `file` (relative to `files_dir`); problems are
/// reported at `span`, the recipe's `debs` field.
pub(super) fn debs(f: &mut Fields, file: &str, files_dir: &Path, span: Span) -> Vec<Deb> {
    let mut fail = |msg: String, help: &str| {
        f.errors
            .push(Diagnostic::new(span.clone(), msg).help(help.to_string()));
    };
    let path = match crate::engine::recipe_file(files_dir, file) {
        Ok(p) => p,
        Err(_) => {
            fail(
                format!("lock file `{file}` is outside the recipe's directory"),
                "name it relative to the recipe's files directory, without `..`",
            );
            return Vec::new();
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            fail(
                format!("cannot read the lock file {}: {e}", path.display()),
                "create it with the tool that writes the lock, or fix the name",
            );
            return Vec::new();
        }
    };
    let lock: Lock = match serde_json::from_str(&text) {
        Ok(l) => l,
        Err(e) => {
            fail(
                format!("lock file `{file}` is not a package lock: {e}"),
                "expected {\"archive\": URL, \"packages\": [{package, version, arch, filename, sha256}]}",
            );
            return Vec::new();
        }
    };
    let archive = lock.archive.trim_end_matches('/').to_string();
    let mut out = Vec::with_capacity(lock.packages.len());
    for (i, p) in lock.packages.into_iter().enumerate() {
        let sha = p.sha256.to_ascii_lowercase();
        if !is_hex(&sha, 64) {
            fail(
                format!(
                    "lock file `{file}`, package {i} (`{}`): sha256 `{}` is not 64 hex digits",
                    p.package, p.sha256
                ),
                "rewrite the lock with its tool",
            );
            continue;
        }
        let clean = !p.filename.is_empty()
            && !p.filename.starts_with('/')
            && p.filename.split('/').all(|c| !c.is_empty() && c != "..");
        if !clean {
            fail(
                format!("lock file `{file}`, package {i} (`{}`): filename `{}` is not a path in the archive", p.package, p.filename),
                "filenames are relative to the archive, like pool/main/m/make-dfsg/make_4.3-4.1_amd64.deb",
            );
            continue;
        }
        out.push(Deb {
            package: p.package,
            version: p.version,
            arch: p.arch,
            url: format!("{archive}/{}", p.filename),
            sha256: sha,
        });
    }
    out
}
