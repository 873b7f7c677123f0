//! Why fetching, unpacking or patching a source failed, and every place the
//! fetcher tried.

use std::fmt;
use std::io;
use std::path::PathBuf;

use kiln_model::SourceHash;
use kiln_store::StoreError;

/// Why fetching, unpacking or patching a source failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("stored source {digest} is not a Debian package: {reason}")]
    NotADeb { digest: String, reason: String },

    #[error("invalid mirror `{spec}`: {reason}")]
    BadMirror { spec: String, reason: String },

    /// The declared hash cannot be used: it also names files in the mirror and
    /// the index, so anything but plain hex could escape those directories.
    #[error("invalid {algo} hash `{hex}` for {url}: expected 64 hex digits")]
    BadHash {
        url: String,
        algo: &'static str,
        hex: String,
    },

    /// Every place that could hold the source was tried and none delivered
    /// bytes with the declared hash.
    #[error("{}", render_unavailable(url, hash, attempts, *offline))]
    Unavailable {
        url: String,
        hash: SourceHash,
        attempts: Vec<Attempt>,
        offline: bool,
    },

    #[error("store: {what}: {source}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "blob {digest} is not a tar archive (gzip, bzip2, xz, zstd or plain tar); \
         it starts with {magic}; declare the source with `unpack: false` to copy it as a file"
    )]
    UnknownFormat { digest: String, magic: String },

    #[error("reading archive {digest}: {source}")]
    Corrupt {
        digest: String,
        #[source]
        source: io::Error,
    },

    #[error("unpacking {digest}: entry `{}`: {source}", entry.display())]
    Unpack {
        digest: String,
        entry: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("unpacking {digest}: refusing entry `{}`: {reason}", entry.display())]
    UnsafeEntry {
        digest: String,
        entry: PathBuf,
        reason: String,
    },
}

/// One place the fetcher looked, and why it did not get the source there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// A path or URL.
    pub place: String,
    pub failure: Failure,
}

/// Why one place did not deliver the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No such file, or HTTP 404/410.
    NotFound,
    /// Any other non-success HTTP status.
    Http { status: u16, reason: String },
    /// The server could not be reached: refused, unknown host, timeout, TLS.
    Unreachable(String),
    /// The transfer started but broke off.
    Read(String),
    /// Bytes arrived but are not the declared ones.
    Mismatch {
        expected: String,
        actual: String,
        /// Anything that may explain it (e.g. a server that re-encoded the body).
        note: Option<String>,
    },
    /// The URL's scheme is not one we can fetch.
    Unsupported(String),
    /// `--offline` kept us from trying upstream.
    SkippedOffline,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotFound => f.write_str("not found"),
            Failure::Http { status, reason } if reason.is_empty() => write!(f, "HTTP {status}"),
            Failure::Http { status, reason } => write!(f, "HTTP {status} {reason}"),
            Failure::Unreachable(why) => f.write_str(why),
            Failure::Read(why) => write!(f, "transfer failed: {why}"),
            Failure::Mismatch {
                expected,
                actual,
                note,
            } => {
                write!(f, "hash mismatch: expected {expected}, got {actual}")?;
                if let Some(note) = note {
                    write!(f, " ({note})")?;
                }
                Ok(())
            }
            Failure::Unsupported(why) => f.write_str(why),
            Failure::SkippedOffline => f.write_str("skipped because of --offline"),
        }
    }
}

pub(crate) fn render_unavailable(
    url: &str,
    hash: &SourceHash,
    attempts: &[Attempt],
    offline: bool,
) -> String {
    let mut out = format!("cannot fetch {url} ({hash}); tried:");
    if attempts
        .iter()
        .all(|a| a.failure == Failure::SkippedOffline)
    {
        out.push_str("\n  (no mirrors configured)");
    }
    for attempt in attempts {
        out.push_str(&format!("\n  {}: {}", attempt.place, attempt.failure));
    }
    if offline {
        out.push_str(
            "\nhelp: `--offline` skipped the upstream URL; run `scripts/seed-sources` \
             to fill a local mirror from Debian's source archive, or fetch without --offline",
        );
    }
    out
}
