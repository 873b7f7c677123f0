//! A recipe's sources in its build tree: remote ones fetched (verified) and
//! unpacked or copied, local ones copied with normalized modes; and its
//! patches, staged to be applied inside the sandbox.

use std::path::Path;

use kiln_engine::NodeError;
use kiln_fetch::Fetcher;
use kiln_model::{Recipe, Source};
use kiln_sandbox::SandboxStep;
use kiln_store::Store;

use super::RecipeError;

/// Fetches and unpacks `recipe`'s sources into `src`.
pub(super) fn prepare(
    recipe: &Recipe,
    fetcher: &Fetcher,
    store: &Store,
    src: &Path,
) -> Result<(), NodeError> {
    let name = &recipe.name;
    let fetch_err = |span: &kiln_model::Span, source| RecipeError::Source {
        recipe: name.clone(),
        span: span.to_string(),
        source,
    };
    for source in &recipe.sources {
        match source {
            Source::Remote {
                url,
                hash,
                strip,
                dest,
                unpack,
                span,
                ..
            } => {
                let digest = fetcher.fetch(url, hash).map_err(|e| fetch_err(span, e))?;
                let dest_dir = src.join(dest);
                let r = if *unpack {
                    kiln_fetch::unpack(store, &digest, &dest_dir, *strip)
                } else {
                    let path = url.split(['?', '#']).next().unwrap_or(url);
                    let file = path
                        .rsplit('/')
                        .next()
                        .filter(|f| !f.is_empty())
                        .unwrap_or("source");
                    kiln_fetch::copy_file(store, &digest, &dest_dir.join(file))
                };
                r.map_err(|e| fetch_err(span, e))?;
            }
            Source::Local {
                path,
                dest,
                span,
                base,
                ..
            } => {
                let from = base.as_ref().unwrap_or(&recipe.files_dir).join(path);
                copy_tree(&from, &src.join(dest)).map_err(|source| RecipeError::CopyLocal {
                    recipe: name.clone(),
                    span: span.to_string(),
                    from: from.clone(),
                    source,
                })?;
            }
        }
    }
    Ok(())
}

/// Where the staged patches are inside the sandbox.
pub(super) const PATCHES_INSIDE: &str = "/build/patches";

/// Copies the recipe's patches into `dir` (bound read-only at
/// [`PATCHES_INSIDE`]) and returns the steps that apply them, in order,
/// before the recipe's own: the build environment's GNU patch runs them,
/// never the host's. `--forward` makes an already-applied patch an error
/// rather than a silent reversal, `--batch` keeps patch from asking
/// questions nobody answers, and no `.orig` backups are left.
pub(super) fn stage_patches(recipe: &Recipe, dir: &Path) -> Result<Vec<SandboxStep>, NodeError> {
    let mut steps = Vec::new();
    for (i, p) in recipe.patches.iter().enumerate() {
        let from = recipe.files_dir.join(&p.path);
        let name = format!(
            "{:02}-{}",
            i + 1,
            Path::new(&p.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        copy_tree(&from, &dir.join(&name)).map_err(|source| RecipeError::CopyLocal {
            recipe: recipe.name.clone(),
            span: p.span.to_string(),
            from: from.clone(),
            source,
        })?;
        steps.push(SandboxStep {
            name: format!("patch {}", p.path),
            argv: vec![
                "patch".into(),
                "--batch".into(),
                "--forward".into(),
                "--no-backup-if-mismatch".into(),
                format!("-p{}", p.strip),
                "-i".into(),
                format!("{PATCHES_INSIDE}/{name}"),
            ],
            env: [("LC_ALL".to_string(), "C".to_string())].into(),
        });
    }
    Ok(steps)
}

/// Copies a recipe's local file or directory into the build, keeping
/// symlinks. Modes are normalized to what the key records — 0755 for
/// directories and executables, 0644 otherwise — so a checkout made under a
/// different umask builds the same bytes.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from)?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, to)
    } else if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to)?;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
    }
}
