//! A recipe's sources in its build tree: remote ones fetched (verified) and
//! unpacked or copied, local ones copied with normalized modes, then the
//! patches.

use std::path::{Path, PathBuf};

use kiln_engine::NodeError;
use kiln_fetch::Fetcher;
use kiln_model::{Recipe, Source};
use kiln_store::Store;

use super::RecipeError;

/// Fetches, unpacks and patches `recipe`'s sources into `src`.
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
    let patches: Vec<(PathBuf, u32)> = recipe
        .patches
        .iter()
        .map(|p| (recipe.files_dir.join(&p.path), p.strip))
        .collect();
    kiln_fetch::apply_patches(src, &patches).map_err(|source| {
        RecipeError::Patch {
            recipe: name.clone(),
            source,
        }
        .into()
    })
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
