//! Getting remote sources into the store, and out of it into a build tree.
//!
//! A remote source is identified by the hash its recipe declares, never by its
//! URL. That is what lets the fetcher take the bytes from anywhere — a local
//! index, a mirror, upstream — while trusting none of them: every download is
//! hashed as it streams to a temporary file and only verified bytes reach the
//! content-addressed store.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::Duration;

use kiln_store::{Digest, Store, StoreError};
use sha2::Digest as _;

use crate::model::SourceHash;

/// Why fetching, unpacking or patching a source failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
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

    #[error("cannot run `patch` for {}: {source} (is GNU patch installed?)", patch.display())]
    PatchSpawn {
        patch: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("patch {} does not apply in {} ({status}):\n{output}", patch.display(), dir.display())]
    PatchFailed {
        patch: PathBuf,
        dir: PathBuf,
        status: ExitStatus,
        output: String,
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

fn render_unavailable(url: &str, hash: &SourceHash, attempts: &[Attempt], offline: bool) -> String {
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
    fn places(&self, url: &str, want: &Expected) -> Vec<Place> {
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

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The absolute path of a `file://` URL's remainder (`/dir` or `localhost/dir`).
fn file_url_path(rest: &str) -> Option<PathBuf> {
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        return None;
    }
    Some(PathBuf::from(OsString::from_vec(percent_decode(rest))))
}

/// Decodes `%XX` escapes; anything malformed is kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
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
fn url_basename(url: &str) -> Option<&str> {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (_, name) = path.rsplit_once('/')?;
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// The declared hash, validated and lowercased.
#[derive(Clone, Debug)]
struct Expected {
    algo: &'static str,
    hex: String,
}

impl Expected {
    fn new(url: &str, hash: &SourceHash) -> Result<Expected, FetchError> {
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

    fn hasher(&self) -> Hasher {
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

enum Hasher {
    Sha256(sha2::Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    fn finish_hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
        }
    }
}

/// A location one attempt reads from.
#[derive(Clone, Debug)]
enum Place {
    File(PathBuf),
    Http(String),
}

impl Place {
    fn for_url(url: &str) -> Result<Place, Failure> {
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

/// How one attempt went wrong: the place's fault (try the next one) or ours
/// (the store or the temporary file; no other place will do better).
enum Tried {
    Failed(Failure),
    Fatal(FetchError),
}

/// HTTP timeouts. There is no overall limit, because a kernel tarball on a
/// slow link legitimately takes minutes; instead every phase and every single
/// read has one, so a dead or stalled server fails the attempt instead of
/// hanging the build.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    connect: Duration,
    read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
        }
    }
}

/// Fetches remote sources into the store, verifying them against their
/// declared hashes.
pub struct Fetcher<'s> {
    store: &'s Store,
    mirrors: Vec<Mirror>,
    offline: bool,
    agent: ureq::Agent,
}

impl<'s> Fetcher<'s> {
    /// `offline` means: never contact a source's own URL, only the local index
    /// and the mirrors (which may themselves be remote).
    pub fn new(store: &'s Store, mirrors: Vec<Mirror>, offline: bool) -> Fetcher<'s> {
        Fetcher::with_timeouts(store, mirrors, offline, Timeouts::default())
    }

    fn with_timeouts(
        store: &'s Store,
        mirrors: Vec<Mirror>,
        offline: bool,
        t: Timeouts,
    ) -> Fetcher<'s> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            // We hash the bytes as sent; ask servers not to re-encode them.
            .accept_encoding("identity")
            .timeout_resolve(Some(t.connect))
            .timeout_connect(Some(t.connect))
            .timeout_send_request(Some(t.connect))
            .timeout_recv_response(Some(t.read))
            .timeout_per_read(Some(t.read))
            .build()
            .into();
        Fetcher {
            store,
            mirrors,
            offline,
            agent,
        }
    }

    pub fn mirrors(&self) -> &[Mirror] {
        &self.mirrors
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    /// Makes sure the bytes with `hash` are in the store and returns their
    /// store digest (blake3).
    ///
    /// Tries, in order: the local index (no I/O beyond one small file and an
    /// existence check when the source was fetched before), every mirror (by
    /// hash, then by the URL's file name), then `url` itself unless offline.
    pub fn fetch(&self, url: &str, hash: &SourceHash) -> Result<Digest, FetchError> {
        let want = Expected::new(url, hash)?;
        if let Some(digest) = self.lookup(&want) {
            return Ok(digest);
        }

        let mut attempts = Vec::new();
        let mut places: Vec<Place> = self
            .mirrors
            .iter()
            .flat_map(|m| m.places(url, &want))
            .collect();
        if self.offline {
            attempts.push(Attempt {
                place: url.to_owned(),
                failure: Failure::SkippedOffline,
            });
        } else {
            match Place::for_url(url) {
                Ok(place) => places.push(place),
                Err(failure) => attempts.push(Attempt {
                    place: url.to_owned(),
                    failure,
                }),
            }
        }

        let mut tried = Vec::new();
        for place in places {
            match self.try_place(&place, &want) {
                Ok(digest) => return Ok(digest),
                Err(Tried::Fatal(err)) => return Err(err),
                Err(Tried::Failed(failure)) => tried.push(Attempt {
                    place: place.to_string(),
                    failure,
                }),
            }
        }
        // Report in the order things were tried: places first, then why
        // upstream itself was not.
        tried.extend(attempts);
        Err(FetchError::Unavailable {
            url: url.to_owned(),
            hash: hash.clone(),
            attempts: tried,
            offline: self.offline,
        })
    }

    fn index_path(&self, want: &Expected) -> PathBuf {
        self.store
            .root()
            .join("sources")
            .join(format!("{}-{}", want.algo, want.hex))
    }

    /// The digest recorded for `want` by an earlier fetch, if its blob is
    /// still in the store. The index is only a cache: anything unreadable in
    /// it just means fetching again.
    fn lookup(&self, want: &Expected) -> Option<Digest> {
        let text = fs::read_to_string(self.index_path(want)).ok()?;
        let digest = Digest::from_hex(text.trim()).ok()?;
        self.store.has(&digest).then_some(digest)
    }

    fn try_place(&self, place: &Place, want: &Expected) -> Result<Digest, Tried> {
        match place {
            Place::File(path) => {
                let mut file = File::open(path).map_err(|e| {
                    Tried::Failed(match e.kind() {
                        io::ErrorKind::NotFound => Failure::NotFound,
                        _ => Failure::Read(e.to_string()),
                    })
                })?;
                self.receive(&mut file, want, None)
            }
            Place::Http(url) => {
                let response = self
                    .agent
                    .get(url)
                    .call()
                    .map_err(|e| Tried::Failed(ureq_failure(e)))?;
                let status = response.status();
                if status.as_u16() == 404 || status.as_u16() == 410 {
                    return Err(Tried::Failed(Failure::NotFound));
                }
                if !status.is_success() {
                    return Err(Tried::Failed(Failure::Http {
                        status: status.as_u16(),
                        reason: status.canonical_reason().unwrap_or("").to_owned(),
                    }));
                }
                // ureq transparently decodes a Content-Encoding; if a server
                // sets one on a tarball the hash will not match, and this
                // says why.
                let note = response
                    .headers()
                    .get("content-encoding")
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.eq_ignore_ascii_case("identity"))
                    .map(|v| format!("the server sent Content-Encoding: {v}"));
                let mut body = response.into_body().into_reader();
                self.receive(&mut body, want, note)
            }
        }
    }

    /// Streams `reader` to a temporary file while hashing it, and puts it in
    /// the store only if the hash is the declared one.
    fn receive(
        &self,
        reader: &mut dyn Read,
        want: &Expected,
        note: Option<String>,
    ) -> Result<Digest, Tried> {
        // The store's temp directory: same file system as the blobs, and
        // swept by the store if we are killed mid-download.
        let mut tmp = self.store.scratch_file(".fetch-").map_err(|source| {
            Tried::Fatal(FetchError::Store {
                what: "creating a download file".into(),
                source,
            })
        })?;
        let mut hasher = want.hasher();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Tried::Failed(Failure::Read(e.to_string()))),
            };
            hasher.update(&buf[..n]);
            tmp.file_mut().write_all(&buf[..n]).map_err(|source| {
                Tried::Fatal(FetchError::Io {
                    path: tmp.path().to_path_buf(),
                    source,
                })
            })?;
        }
        let actual = hasher.finish_hex();
        if actual != want.hex {
            return Err(Tried::Failed(Failure::Mismatch {
                expected: want.to_string(),
                actual: format!("{}:{actual}", want.algo),
                note,
            }));
        }
        let (digest, _size) = self.store.put_file(tmp.path()).map_err(|source| {
            Tried::Fatal(FetchError::Store {
                what: format!("storing {want}"),
                source,
            })
        })?;
        let index = self.index_path(want);
        self.store
            .write_atomic(&index, digest.to_hex().as_bytes())
            .map_err(|source| {
                Tried::Fatal(FetchError::Store {
                    what: format!("writing {}", index.display()),
                    source,
                })
            })?;
        Ok(digest)
    }
}

fn ureq_failure(err: ureq::Error) -> Failure {
    match err {
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Failure::Unreachable("connection refused".into())
        }
        ureq::Error::Io(e) => Failure::Unreachable(e.to_string()),
        ureq::Error::Timeout(which) => Failure::Unreachable(format!("timed out ({which})")),
        ureq::Error::HostNotFound => Failure::Unreachable("host not found".into()),
        ureq::Error::StatusCode(status) => Failure::Http {
            status,
            reason: String::new(),
        },
        other => Failure::Unreachable(other.to_string()),
    }
}

/// Copies a stored source as it is (`unpack: false`).
pub fn copy_file(store: &Store, digest: &Digest, dest: &Path) -> Result<(), FetchError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|source| FetchError::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    store
        .copy_to(digest, dest)
        .map_err(|source| FetchError::Store {
            what: format!("copying {digest} to {}", dest.display()),
            source,
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    Tar,
}

/// Recognises an archive by its first bytes; file names lie, magic doesn't.
fn detect(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Format::Gzip)
    } else if head.starts_with(b"BZh") {
        Some(Format::Bzip2)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Format::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Format::Zstd)
    } else if head.get(257..262) == Some(b"ustar") || is_v7_tar_header(head) {
        Some(Format::Tar)
    } else {
        None
    }
}

/// Pre-POSIX tar headers have no magic; their checksum is what identifies them.
fn is_v7_tar_header(head: &[u8]) -> bool {
    let Some(header) = head.get(..512) else {
        return false;
    };
    if header[0] == 0 {
        return false;
    }
    let field = &header[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let Some(recorded) = std::str::from_utf8(&digits)
        .ok()
        .and_then(|d| u32::from_str_radix(d, 8).ok())
    else {
        return false;
    };
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == recorded
}

/// Unpacks the stored archive `digest` into `dest`, dropping `strip` leading
/// path components.
///
/// Entries with absolute paths or `..` are refused, and nothing is written
/// through a symlink the archive created, so an archive cannot write outside
/// `dest`. Modes are kept (permission bits only: a source tree has no use for
/// setuid bits, and installed files get theirs from `permissions`); owners
/// and times are not, since outputs are normalised later anyway.
pub fn unpack(store: &Store, digest: &Digest, dest: &Path, strip: u32) -> Result<(), FetchError> {
    let label = digest.to_hex();
    let path = store.blob_path(digest);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FetchError::Store {
                what: format!("unpacking into {}", dest.display()),
                source: StoreError::MissingBlob { digest: *digest },
            })
        }
        Err(source) => return Err(FetchError::Io { path, source }),
    };
    // Streamed straight from the compressed blob, so a kernel tarball is
    // never held in memory; the blob is hashed on the way, as the store's own
    // reads do.
    let result = zstd::stream::read::Decoder::new(file)
        .map_err(|source| FetchError::Corrupt {
            digest: label.clone(),
            source,
        })
        .and_then(|decoder| {
            let mut blob = HashingReader {
                inner: decoder,
                hasher: blake3::Hasher::new(),
            };
            unpack_reader(&mut blob, &label, dest, strip)?;
            // The archive may end before the blob does (tar padding).
            io::copy(&mut blob, &mut io::sink()).map_err(|source| FetchError::Corrupt {
                digest: label.clone(),
                source,
            })?;
            if Digest::from(blob.hasher.finalize()) == *digest {
                Ok(())
            } else {
                Err(FetchError::Corrupt {
                    digest: label.clone(),
                    source: io::Error::other("the stored blob does not match its digest"),
                })
            }
        });
    match result {
        // A damaged blob shows up as an undecodable archive or a wrong hash;
        // let the store verify it, which also removes it so the next fetch
        // downloads it again. If it is intact, the archive itself is broken.
        Err(err @ FetchError::Corrupt { .. }) => match store.get_bytes(digest) {
            Err(source) => Err(FetchError::Store {
                what: format!("unpacking into {}", dest.display()),
                source,
            }),
            Ok(_) => Err(err),
        },
        other => other,
    }
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn unpack_reader<'r, R: Read + 'r>(
    mut reader: R,
    label: &str,
    dest: &Path,
    strip: u32,
) -> Result<(), FetchError> {
    let corrupt = |source| FetchError::Corrupt {
        digest: label.to_owned(),
        source,
    };
    let head = read_head(&mut reader, 512).map_err(corrupt)?;
    let format = detect(&head).ok_or_else(|| FetchError::UnknownFormat {
        digest: label.to_owned(),
        magic: hex::encode(&head[..head.len().min(8)]),
    })?;
    let stream = Cursor::new(head).chain(reader);
    let decoded: Box<dyn Read + 'r> = match format {
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Format::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(stream)),
        Format::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(stream)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(stream).map_err(corrupt)?),
        Format::Tar => Box::new(stream),
    };
    fs::create_dir_all(dest).map_err(|source| FetchError::Io {
        path: dest.to_owned(),
        source,
    })?;
    Extractor::new(label, dest, strip).run(decoded)
}

/// Reads up to `n` bytes, fewer only at end of input.
fn read_head(reader: &mut dyn Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    reader.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// An archive path made relative and stripped, or why it is refused.
/// `Ok(None)` means nothing is left after stripping.
fn clean_path(raw: &Path, strip: u32) -> Result<Option<PathBuf>, &'static str> {
    let mut out = PathBuf::new();
    let mut skipped = 0;
    for component in raw.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err("absolute path"),
            Component::ParentDir => return Err("path contains `..`"),
            Component::CurDir => {}
            Component::Normal(_) if skipped < strip => skipped += 1,
            Component::Normal(name) => out.push(name),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

struct Extractor<'a> {
    label: &'a str,
    dest: &'a Path,
    strip: u32,
    /// Relative directories known to be real directories (not symlinks).
    dirs: HashSet<PathBuf>,
    /// Directory modes, applied at the end so read-only directories can
    /// still be filled.
    dir_modes: Vec<(PathBuf, u32)>,
}

impl<'a> Extractor<'a> {
    fn new(label: &'a str, dest: &'a Path, strip: u32) -> Extractor<'a> {
        Extractor {
            label,
            dest,
            strip,
            dirs: HashSet::new(),
            dir_modes: Vec::new(),
        }
    }

    fn run(mut self, input: Box<dyn Read + '_>) -> Result<(), FetchError> {
        let mut archive = tar::Archive::new(input);
        let entries = archive.entries().map_err(|source| FetchError::Corrupt {
            digest: self.label.to_owned(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| FetchError::Corrupt {
                digest: self.label.to_owned(),
                source,
            })?;
            self.entry(entry)?;
        }
        self.dir_modes
            .sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (rel, mode) in std::mem::take(&mut self.dir_modes) {
            let full = self.dest.join(&rel);
            // Only if it is still the directory we made (not since replaced
            // by a symlink, which chmod would follow).
            let is_dir = fs::symlink_metadata(&full)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if is_dir {
                fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                    .map_err(|source| self.unpack_err(&rel, source))?;
            }
        }
        Ok(())
    }

    fn unpack_err(&self, entry: &Path, source: io::Error) -> FetchError {
        FetchError::Unpack {
            digest: self.label.to_owned(),
            entry: entry.to_owned(),
            source,
        }
    }

    fn refuse(&self, entry: &Path, reason: impl Into<String>) -> FetchError {
        FetchError::UnsafeEntry {
            digest: self.label.to_owned(),
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), FetchError> {
        let raw = entry
            .path()
            .map_err(|source| FetchError::Corrupt {
                digest: self.label.to_owned(),
                source,
            })?
            .into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let Some(rel) = clean_path(&raw, self.strip).map_err(|why| self.refuse(&raw, why))? else {
            return Ok(());
        };
        // Only read for the kinds that use it: archivers often leave the
        // field empty on links.
        let mode = |entry: &tar::Entry<'_, R>| {
            entry
                .header()
                .mode()
                .map(|m| m & 0o777)
                .map_err(|source| self.unpack_err(&raw, source))
        };
        let full = self.dest.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                let mode = mode(&entry)?;
                self.ensure_dir(&raw, &rel)?;
                self.dir_modes.push((rel, mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mode = mode(&entry)?;
                self.prepare(&raw, &rel)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&full)
                    .map_err(|source| self.unpack_err(&raw, source))?;
                io::copy(&mut entry, &mut file).map_err(|source| self.unpack_err(&raw, source))?;
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|source| self.unpack_err(&raw, source))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|source| self.unpack_err(&raw, source))?
                    .ok_or_else(|| self.refuse(&raw, "symlink without a target"))?
                    .into_owned();
                self.prepare(&raw, &rel)?;
                std::os::unix::fs::symlink(&target, &full)
                    .map_err(|source| self.unpack_err(&raw, source))?;
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(|source| self.unpack_err(&raw, source))?
                    .ok_or_else(|| self.refuse(&raw, "hard link without a target"))?
                    .into_owned();
                let target = clean_path(&target_raw, self.strip)
                    .map_err(|why| {
                        self.refuse(
                            &raw,
                            format!("hard link target `{}`: {why}", target_raw.display()),
                        )
                    })?
                    .ok_or_else(|| {
                        self.refuse(
                            &raw,
                            format!(
                                "hard link target `{}` is empty after stripping {} components",
                                target_raw.display(),
                                self.strip
                            ),
                        )
                    })?;
                if target == rel {
                    return Ok(());
                }
                if let Some(parent) = target.parent() {
                    self.check_dirs(&raw, parent)?;
                }
                self.prepare(&raw, &rel)?;
                fs::hard_link(self.dest.join(&target), &full)
                    .map_err(|source| self.unpack_err(&raw, source))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(self.refuse(&raw, "device nodes and fifos are not unpacked"));
            }
            other => {
                return Err(self.refuse(
                    &raw,
                    format!("unknown entry type {:?}", char::from(other.as_byte())),
                ));
            }
        }
        Ok(())
    }

    /// Makes `rel`'s parent a real directory and removes whatever is at `rel`,
    /// so a non-directory entry can be created there.
    fn prepare(&mut self, raw: &Path, rel: &Path) -> Result<(), FetchError> {
        if let Some(parent) = rel.parent() {
            self.ensure_dir(raw, parent)?;
        }
        let full = self.dest.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {
                // Only an empty one: replacing a tree would lose entries.
                fs::remove_dir(&full).map_err(|source| self.unpack_err(raw, source))?;
                self.dirs.remove(rel);
            }
            Ok(_) => fs::remove_file(&full).map_err(|source| self.unpack_err(raw, source))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(self.unpack_err(raw, source)),
        }
        Ok(())
    }

    /// Makes every prefix of `rel` a directory, refusing to go through a
    /// symlink: that is how an archive would otherwise write outside `dest`.
    fn ensure_dir(&mut self, raw: &Path, rel: &Path) -> Result<(), FetchError> {
        self.walk_dirs(raw, rel, true)
    }

    /// Like `ensure_dir` but creates nothing (for hard link targets).
    fn check_dirs(&mut self, raw: &Path, rel: &Path) -> Result<(), FetchError> {
        self.walk_dirs(raw, rel, false)
    }

    fn walk_dirs(&mut self, raw: &Path, rel: &Path, create: bool) -> Result<(), FetchError> {
        if rel.as_os_str().is_empty() || self.dirs.contains(rel) {
            return Ok(());
        }
        let mut cur = PathBuf::new();
        for component in rel.components() {
            cur.push(component);
            if self.dirs.contains(&cur) {
                continue;
            }
            let full = self.dest.join(&cur);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(self.refuse(
                        raw,
                        format!(
                            "`{}` is a symlink; refusing to write through it",
                            cur.display()
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(self.unpack_err(
                        raw,
                        io::Error::other(format!("`{}` is not a directory", cur.display())),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&full).map_err(|source| self.unpack_err(raw, source))?;
                }
                Err(source) => return Err(self.unpack_err(raw, source)),
            }
            self.dirs.insert(cur.clone());
        }
        Ok(())
    }
}

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
    fn paths_are_cleaned_and_stripped() {
        let clean = |p: &str, n| clean_path(Path::new(p), n);
        assert_eq!(clean("./a/b/c", 1), Ok(Some(PathBuf::from("b/c"))));
        assert_eq!(clean("a/", 1), Ok(None));
        assert_eq!(clean("a/../b", 0), Err("path contains `..`"));
        assert_eq!(clean("/etc/passwd", 1), Err("absolute path"));
    }

    #[test]
    fn formats_are_detected_by_magic() {
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(detect(&tar), Some(Format::Tar));
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Some(Format::Gzip));
        assert_eq!(detect(b"BZh91AY"), Some(Format::Bzip2));
        assert_eq!(detect(b"\xfd7zXZ\x00\x00"), Some(Format::Xz));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some(Format::Zstd));
        assert_eq!(detect(b"PK\x03\x04"), None);
        assert_eq!(percent_decode("/a%20b%2"), b"/a b%2");
    }

    /// A server that accepts and then says nothing must fail the attempt
    /// after the read timeout, not hang.
    #[test]
    fn stalled_server_times_out() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let hold = std::thread::spawn(move || {
            let conn = listener.accept();
            let _ = wait.recv_timeout(Duration::from_secs(10));
            drop(conn);
        });
        let mirror = Mirror::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let fetcher = Fetcher::with_timeouts(
            &store,
            vec![mirror],
            true,
            Timeouts {
                connect: Duration::from_secs(1),
                read: Duration::from_millis(300),
            },
        );
        let start = std::time::Instant::now();
        let err = fetcher
            .fetch(
                "https://x.invalid/a.tar",
                &SourceHash::Sha256("0".repeat(64)),
            )
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(err.to_string().contains("timed out"), "{err}");
        done.send(()).unwrap();
        hold.join().unwrap();
    }
}
