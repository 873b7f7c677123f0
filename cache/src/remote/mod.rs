//! The remote cache: action-cache entries and blobs shared through a server
//! (HTTP/WebDAV, REAPI, or a shared directory), signed and verified.
//!
//! Data flows one way per call: `fetch` brings an entry's closure into the
//! local store and records the entry there only when everything checked
//! out; `push` sends a local entry's closure, blobs first and the signed
//! entry last, so a consumer never finds an entry whose blobs are not yet
//! there. Network trouble never fails a build: the first failure marks the
//! remote down for the rest of the process (one warning, no repeated
//! timeouts) and everything goes on locally.

mod backend;
mod dir;
mod entry;
mod http;
mod reapi;
mod stats;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ac::ActionResult;
use crate::digest::Digest;
use crate::manifest::EntryKind;
use crate::store::Store;
use crate::StoreError;

pub use backend::{Addressing, Backend, BackendError, TransferError};
pub use entry::{BlobRef, Entry, PublicKey, SecretKey, SignedEntry, SCHEMA};
pub use stats::{Snapshot, Stats};

/// HEAD requests in flight at once when asking which blobs a server lacks.
pub(crate) const HEAD_PARALLELISM: usize = 16;

/// Where a remote cache is, parsed from `--cache URL` or kiln.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `http://` or `https://` base URL.
    Http(String),
    /// `grpc://host:port[/instance]` (or `grpcs://`): a REAPI server.
    Reapi { endpoint: String, instance: String },
    /// `file:///path` or an absolute path: a shared directory.
    Dir(PathBuf),
}

impl Location {
    pub fn parse(url: &str) -> Result<Location, String> {
        let url = url.trim();
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Location::Http(url.to_string()));
        }
        for (scheme, http) in [("grpc://", "http://"), ("grpcs://", "https://")] {
            if let Some(rest) = url.strip_prefix(scheme) {
                let (host, instance) = rest.split_once('/').unwrap_or((rest, ""));
                if host.is_empty() {
                    return Err(format!("cache URL {url:?}: no host after {scheme}"));
                }
                return Ok(Location::Reapi {
                    endpoint: format!("{http}{host}"),
                    instance: instance.trim_end_matches('/').to_string(),
                });
            }
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.starts_with('/') {
            return Ok(Location::Dir(PathBuf::from(path)));
        }
        Err(format!(
            "cache URL {url:?}: expected http(s)://HOST/PATH (WebDAV), grpc(s)://HOST:PORT[/INSTANCE] (REAPI), or file:///DIR"
        ))
    }
}

/// Everything that says how to use a remote.
pub struct Config {
    pub location: Location,
    /// Never upload.
    pub read_only: bool,
    /// Signs what this process uploads; without one nothing is uploaded.
    pub signing_key: Option<SecretKey>,
    /// Keys whose entries are used. The signing key's public half is
    /// trusted too.
    pub trusted: Vec<PublicKey>,
    /// Per-operation network timeout.
    pub timeout: Duration,
    /// Blob transfers in flight at once.
    pub transfers: usize,
}

/// What a `fetch` found.
#[derive(Debug)]
pub enum Fetch {
    /// The entry and its closure are now in the local store.
    Hit {
        result: ActionResult,
        blobs: usize,
        bytes: u64,
    },
    Miss,
    /// The server had an entry that must not be used; why, by name.
    Refused(String),
    /// The server could not be used (the first time: later calls are `Off`).
    Unavailable(String),
    /// The remote is down or disabled for this process.
    Off,
}

/// What a `push` did.
#[derive(Debug)]
pub enum Push {
    Uploaded {
        blobs: usize,
        bytes: u64,
    },
    /// The server already had this entry and every blob of it.
    Present,
    ReadOnly,
    /// No signing key: nothing is uploaded that nobody could trust.
    Unsigned,
    Unavailable(String),
    Off,
    /// A local problem (a missing or corrupt blob); the entry is not pushed.
    Failed(String),
}

pub struct Remote {
    backend: Box<dyn Backend>,
    read_only: bool,
    signer: Option<SecretKey>,
    trusted: Vec<PublicKey>,
    transfers: usize,
    down: AtomicBool,
    /// Blobs that failed verification on the way in: the server's copy is
    /// bad, so a push sends them even though the server says it has them.
    suspect: Mutex<BTreeSet<Digest>>,
    pub stats: Stats,
    warned_unsigned: AtomicUsize,
}

impl Remote {
    pub fn new(config: Config) -> Result<Remote, String> {
        let backend: Box<dyn Backend> = match &config.location {
            Location::Http(url) => Box::new(http::Http::new(url, config.timeout)),
            Location::Dir(path) => Box::new(dir::Dir::new(path)),
            Location::Reapi { endpoint, instance } => {
                reapi::Reapi::connect(endpoint, instance, config.timeout)?
            }
        };
        let mut trusted = config.trusted;
        if let Some(k) = &config.signing_key {
            if !trusted.contains(&k.public()) {
                trusted.push(k.public());
            }
        }
        Ok(Remote {
            backend,
            read_only: config.read_only,
            signer: config.signing_key,
            trusted,
            transfers: config.transfers.max(1),
            down: AtomicBool::new(false),
            suspect: Mutex::new(BTreeSet::new()),
            stats: Stats::default(),
            warned_unsigned: AtomicUsize::new(0),
        })
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    pub fn trusts_anyone(&self) -> bool {
        !self.trusted.is_empty()
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Marks the remote down; true the first time (the caller warns once).
    fn went_down(&self) -> bool {
        !self.down.swap(true, Ordering::Relaxed)
    }

    fn unavailable<T>(&self, e: &BackendError, make: impl FnOnce(String) -> T, off: T) -> T {
        self.stats.add_error();
        if self.went_down() {
            make(e.to_string())
        } else {
            off
        }
    }

    /// Looks `key` up on the server and, when its entry checks out, brings
    /// its closure into `store` and records it there.
    pub fn fetch(&self, store: &Store, key: &Digest) -> Fetch {
        if self.is_down() {
            return Fetch::Off;
        }
        let started = Instant::now();
        let doc = match self.backend.get_entry(key) {
            Ok(Some(doc)) => doc,
            Ok(None) => {
                self.stats.add_lookup(false, started.elapsed());
                return Fetch::Miss;
            }
            Err(e) => return self.unavailable(&e, Fetch::Unavailable, Fetch::Off),
        };
        let entry = match SignedEntry::verify(&doc, key, &self.trusted) {
            Ok(entry) => entry,
            Err(why) => {
                self.stats.add_refused();
                return Fetch::Refused(why);
            }
        };
        let result = match self.fetch_closure(store, &entry) {
            Ok((blobs, bytes)) => {
                let result = ActionResult {
                    output: entry.output,
                    log: entry.log,
                };
                if let Err(e) = store.ac_put(key, &result) {
                    return Fetch::Refused(format!("cannot record it locally: {e}"));
                }
                Fetch::Hit {
                    result,
                    blobs,
                    bytes,
                }
            }
            Err(FetchError::Refused(why)) => {
                self.stats.add_refused();
                Fetch::Refused(why)
            }
            Err(FetchError::Unavailable(e)) => {
                return self.unavailable(&e, Fetch::Unavailable, Fetch::Off)
            }
        };
        self.stats
            .add_lookup(matches!(result, Fetch::Hit { .. }), started.elapsed());
        result
    }

    fn fetch_closure(&self, store: &Store, entry: &Entry) -> Result<(usize, u64), FetchError> {
        let needed: Vec<&BlobRef> = entry
            .blobs
            .iter()
            .filter(|b| !store.has(&b.blake3))
            .collect();
        let started = Instant::now();
        let results = parallel(&needed, self.transfers, |b| self.backend.download(b, store));
        let mut bytes = 0;
        let mut refused = Vec::new();
        for (b, r) in needed.iter().zip(results) {
            match r {
                Ok(n) => bytes += n,
                Err(TransferError::Backend(e)) => return Err(FetchError::Unavailable(e)),
                Err(TransferError::Refused { digest, reason }) => {
                    self.suspect_blob(digest);
                    refused.push(format!("blob {digest}: {reason}"));
                }
                Err(TransferError::Store(e)) => {
                    refused.push(format!("blob {}: {e}", b.blake3));
                }
            }
        }
        self.stats
            .add_download(needed.len() - refused.len(), bytes, started.elapsed());
        if !refused.is_empty() {
            return Err(FetchError::Refused(refused.join("; ")));
        }
        // The manifest hashes to the signed output digest, so its file list is
        // what the signer built; each of its blobs must be in the closure.
        let manifest = store
            .get_manifest(&entry.output)
            .map_err(|e| FetchError::Refused(format!("output {}: {e}", entry.output)))?;
        for e in &manifest.entries {
            if let EntryKind::File { blake3, size } = &e.kind {
                let listed = entry
                    .blobs
                    .iter()
                    .any(|b| b.blake3 == *blake3 && b.size == *size);
                if !listed || !store.has(blake3) {
                    return Err(FetchError::Refused(format!(
                        "the manifest's {} ({blake3}) is not in the signed closure",
                        e.path
                    )));
                }
            }
        }
        Ok((needed.len(), bytes))
    }

    fn suspect_blob(&self, d: Digest) {
        if let Ok(mut s) = self.suspect.lock() {
            s.insert(d);
        }
    }

    /// Sends `key`'s local entry (`result`) and its closure to the server.
    pub fn push(&self, store: &Store, key: &Digest, result: &ActionResult) -> Push {
        if self.read_only {
            return Push::ReadOnly;
        }
        let Some(signer) = &self.signer else {
            self.warned_unsigned.fetch_add(1, Ordering::Relaxed);
            return Push::Unsigned;
        };
        if self.is_down() {
            return Push::Off;
        }
        let closure = match closure(store, result, self.backend.addressing()) {
            Ok(c) => c,
            Err(e) => return Push::Failed(format!("cannot list what {key} needs: {e}")),
        };
        let started = Instant::now();
        let mut missing = match self.backend.missing(&closure) {
            Ok(m) => m,
            Err(e) => return self.unavailable(&e, Push::Unavailable, Push::Off),
        };
        if let Ok(suspect) = self.suspect.lock() {
            for b in &closure {
                if suspect.contains(&b.blake3) && !missing.contains(b) {
                    missing.push(b.clone());
                }
            }
        }
        let entry = Entry {
            schema: SCHEMA.into(),
            key: *key,
            output: result.output,
            log: result.log,
            blobs: closure,
        };
        if missing.is_empty() {
            if let Ok(Some(doc)) = self.backend.get_entry(key) {
                if SignedEntry::verify(&doc, key, &self.trusted).is_ok_and(|e| e == entry) {
                    return Push::Present;
                }
            }
        }
        let results = parallel(&missing, self.transfers, |b| self.backend.upload(b, store));
        let mut bytes = 0;
        for r in results {
            match r {
                Ok(n) => bytes += n,
                Err(TransferError::Backend(e)) => {
                    return self.unavailable(&e, Push::Unavailable, Push::Off)
                }
                Err(e) => return Push::Failed(e.to_string()),
            }
        }
        if let Ok(mut suspect) = self.suspect.lock() {
            for b in &missing {
                suspect.remove(&b.blake3);
            }
        }
        let doc = signer.sign(entry).to_json();
        if let Err(e) = self.backend.put_entry(key, &doc) {
            return self.unavailable(&e, Push::Unavailable, Push::Off);
        }
        self.stats
            .add_upload(missing.len(), bytes, started.elapsed());
        Push::Uploaded {
            blobs: missing.len(),
            bytes,
        }
    }
}

enum FetchError {
    Refused(String),
    Unavailable(BackendError),
}

/// Every blob `result` needs: its manifest, the manifest's files, its log;
/// sorted, with sizes (and sha256 when the server addresses by it).
fn closure(
    store: &Store,
    result: &ActionResult,
    addressing: Addressing,
) -> Result<Vec<BlobRef>, StoreError> {
    let manifest = store.get_manifest(&result.output)?;
    let mut blobs: Vec<(Digest, u64)> = vec![(result.output, store.content_size(&result.output)?)];
    if let Some(log) = result.log {
        blobs.push((log, store.content_size(&log)?));
    }
    for e in &manifest.entries {
        if let EntryKind::File { blake3, size } = &e.kind {
            blobs.push((*blake3, *size));
        }
    }
    blobs.sort();
    blobs.dedup_by_key(|(d, _)| *d);
    blobs
        .into_iter()
        .map(|(blake3, size)| {
            let sha256 = match addressing {
                Addressing::Blake3 => None,
                Addressing::Sha256 => Some(sha256_of(store, &blake3)?),
            };
            Ok(BlobRef {
                blake3,
                size,
                sha256,
            })
        })
        .collect()
}

fn sha256_of(store: &Store, d: &Digest) -> Result<String, StoreError> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut export = store.export_raw(d)?;
    std::io::copy(&mut export, &mut hasher).map_err(|source| StoreError::Io {
        action: "reading blob",
        path: store.blob_path(d),
        source,
    })?;
    Ok(hex::encode(hasher.finalize()))
}

/// Runs `f` over `items` on up to `n` threads; results in item order.
pub(crate) fn parallel<T: Sync, R: Send>(
    items: &[T],
    n: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if items.len() <= 1 || n <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..n.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}
