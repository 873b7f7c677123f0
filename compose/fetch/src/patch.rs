//! Patches, applied in order with the host's GNU patch.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::FetchError;

/// Applies `patches` (file, `-p` level) in order in `src` with the host's
/// GNU patch.
///
/// `--forward` makes an already-applied patch an error rather than a silent
/// reversal, and `--batch` keeps patch from asking questions nobody answers.
pub fn apply_patches(src: &Path, patches: &[(PathBuf, u32)]) -> Result<(), FetchError> {
    for (patch, strip) in patches {
        // patch runs in `src`, so a relative patch path must be resolved here.
        let file = std::path::absolute(patch).map_err(|source| FetchError::Io {
            path: patch.clone(),
            source,
        })?;
        let output = Command::new("patch")
            .arg(format!("-p{strip}"))
            .args(["--batch", "--forward", "--no-backup-if-mismatch", "-i"])
            .arg(&file)
            .current_dir(src)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| FetchError::PatchSpawn {
                patch: patch.clone(),
                source,
            })?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            return Err(FetchError::PatchFailed {
                patch: patch.clone(),
                dir: src.to_owned(),
                status: output.status,
                output: text.trim_end().to_owned(),
            });
        }
    }
    Ok(())
}
