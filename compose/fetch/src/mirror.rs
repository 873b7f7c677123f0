//! Mirrors: places holding copies of sources, tried before upstream.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::place::{file_url_path, strip_prefix_ci, url_basename, Expected, Place};
use crate::FetchError;

/// A place holding copies of sources, tried before upstream.
///
/// The layout is ours: `<mirror>/by-hash/<algo>/<hex>` first (a name no
/// upstream rename can break), then `<mirror>/<basename of the URL>` (so a
/// plain directory of downloaded tarballs works as a mirror too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    kind: MirrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum MirrorKind {
    Dir(PathBuf),
    /// Base URL without a trailing slash.
    Http(String),
}

impl Mirror {
    /// Parses `file:///abs/dir`, `/abs/dir` or `http(s)://host/path`.
    ///
    /// Relative paths are refused: a mirror is usually given through an
    /// environment variable, and what it is relative to would be a guess.
    pub fn parse(spec: &str) -> Result<Mirror, FetchError> {
        let bad = |reason: &str| FetchError::BadMirror {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = strip_prefix_ci(spec, "file://") {
            let path = file_url_path(rest)
                .ok_or_else(|| bad("a file:// mirror must name an absolute path (file:///dir)"))?;
            return Ok(Mirror {
                kind: MirrorKind::Dir(path),
            });
        }
        if strip_prefix_ci(spec, "http://")
            .or_else(|| strip_prefix_ci(spec, "https://"))
            .is_some()
        {
            let rest = spec.split_once("://").map(|(_, r)| r).unwrap_or("");
            if rest.is_empty() || rest.starts_with('/') {
                return Err(bad("the URL has no host"));
            }
            return Ok(Mirror {
                kind: MirrorKind::Http(spec.trim_end_matches('/').to_owned()),
            });
        }
        if spec.starts_with('/') {
            return Ok(Mirror {
                kind: MirrorKind::Dir(PathBuf::from(spec)),
            });
        }
        Err(bad(
            "expected an absolute directory, a file:///dir URL or an http(s):// URL",
        ))
    }

    /// Where this mirror could hold the source, in the order they are tried.
    pub(crate) fn places(&self, url: &str, want: &Expected) -> Vec<Place> {
        let by_hash = format!("by-hash/{}/{}", want.algo, want.hex);
        let mut rels = vec![by_hash];
        if let Some(name) = url_basename(url) {
            rels.push(name.to_owned());
        }
        rels.into_iter()
            .map(|rel| match &self.kind {
                MirrorKind::Dir(dir) => Place::File(dir.join(rel)),
                MirrorKind::Http(base) => Place::Http(format!("{base}/{rel}")),
            })
            .collect()
    }
}

impl FromStr for Mirror {
    type Err = FetchError;

    fn from_str(s: &str) -> Result<Mirror, FetchError> {
        Mirror::parse(s)
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            MirrorKind::Dir(dir) => write!(f, "{}", dir.display()),
            MirrorKind::Http(base) => f.write_str(base),
        }
    }
}
