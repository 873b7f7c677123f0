//! Where a source's bytes can be read (a file or an HTTP URL) and how they
//! are checked (the declared hash, streamed).

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use kiln_model::SourceHash;
use sha2::Digest as _;

use crate::{Failure, FetchError};

/// The declared hash, validated and lowercased.
#[derive(Clone, Debug)]
pub(crate) struct Expected {
    pub(crate) algo: &'static str,
    pub(crate) hex: String,
}

impl Expected {
    pub(crate) fn new(url: &str, hash: &SourceHash) -> Result<Expected, FetchError> {
        let (algo, hex) = match hash {
            SourceHash::Sha256(h) => ("sha256", h),
            SourceHash::Blake3(h) => ("blake3", h),
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FetchError::BadHash {
                url: url.to_owned(),
                algo,
                hex: hex.clone(),
            });
        }
        Ok(Expected {
            algo,
            hex: hex.to_ascii_lowercase(),
        })
    }

    pub(crate) fn hasher(&self) -> Hasher {
        if self.algo == "sha256" {
            Hasher::Sha256(sha2::Sha256::new())
        } else {
            Hasher::Blake3(Box::new(blake3::Hasher::new()))
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.hex)
    }
}

pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    pub(crate) fn finish_hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
        }
    }
}

/// A location one attempt reads from.
#[derive(Clone, Debug)]
pub(crate) enum Place {
    File(PathBuf),
    Http(String),
}

impl Place {
    pub(crate) fn for_url(url: &str) -> Result<Place, Failure> {
        if let Some(rest) = strip_prefix_ci(url, "file://") {
            return file_url_path(rest).map(Place::File).ok_or_else(|| {
                Failure::Unsupported("a file:// URL must name an absolute path".into())
            });
        }
        if strip_prefix_ci(url, "http://").is_some() || strip_prefix_ci(url, "https://").is_some() {
            return Ok(Place::Http(url.to_owned()));
        }
        Err(Failure::Unsupported(
            "unsupported URL scheme (expected http, https or file)".into(),
        ))
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::File(path) => write!(f, "{}", path.display()),
            Place::Http(url) => f.write_str(url),
        }
    }
}

pub(crate) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The absolute path of a `file://` URL's remainder (`/dir` or `localhost/dir`).
pub(crate) fn file_url_path(rest: &str) -> Option<PathBuf> {
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        return None;
    }
    Some(PathBuf::from(OsString::from_vec(percent_decode(rest))))
}

/// Decodes `%XX` escapes; anything malformed is kept as it is.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The last path segment of a URL, without query or fragment, as written
/// (not percent-decoded, so `scripts/seed-sources` computes the same name).
pub(crate) fn url_basename(url: &str) -> Option<&str> {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (_, name) = path.rsplit_once('/')?;
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basenames() {
        assert_eq!(
            url_basename("https://h/a/b-1.0.tar.gz?x=1#f"),
            Some("b-1.0.tar.gz")
        );
        assert_eq!(url_basename("https://h/dir/"), None);
        assert_eq!(url_basename("https://h"), None);
        assert_eq!(url_basename("https://h/.."), None);
        assert_eq!(url_basename("file:///srv/x%2By.tar"), Some("x%2By.tar"));
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("/a%20b%2"), b"/a b%2");
    }
}
