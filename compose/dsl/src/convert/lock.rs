//! A recipe's `debs` lock: the exact Debian binary packages it unpacks.
//!
//! The lock is JSON in the recipe's own files directory, written by
//! `scripts/lock-debs` (like `Cargo.lock` by cargo), so it is read here
//! rather than in Rhai:
//!
//! ```json
//! { "generated_by": "scripts/lock-debs recipes/build-env/packages",
//!   "packages": [ { "package": "make", "version": "4.3-4.1", "arch": "amd64",
//!                   "url": "http://deb.debian.org/debian/pool/main/m/make-dfsg/make_4.3-4.1_amd64.deb",
//!                   "sha256": "…" } ] }
//! ```
//!
//! Each package has its own URL: security updates come from another
//! archive than the release.

use std::path::Path;

use kiln_model::{Deb, Diagnostic, Span};
use serde::Deserialize;

use super::fields::{is_hex, Fields};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lock {
    /// The command that wrote it, to run again to refresh it.
    #[serde(default)]
    generated_by: Option<String>,
    packages: Vec<Locked>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Locked {
    package: String,
    version: String,
    arch: String,
    url: String,
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
                "expected {\"packages\": [{package, version, arch, url, sha256}]}; scripts/lock-debs writes it",
            );
            return Vec::new();
        }
    };
    let refresh = lock.generated_by.clone();
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
        let web = p.url.starts_with("http://") || p.url.starts_with("https://");
        if !web || !p.url.ends_with(".deb") {
            fail(
                format!(
                    "lock file `{file}`, package {i} (`{}`): `{}` is not the http(s) URL of a .deb",
                    p.package, p.url
                ),
                "rewrite the lock with scripts/lock-debs",
            );
            continue;
        }
        out.push(Deb {
            package: p.package,
            version: p.version,
            arch: p.arch,
            url: p.url,
            sha256: sha,
            refresh: refresh.clone(),
        });
    }
    out
}
