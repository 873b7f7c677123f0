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
mod pipeline;
mod reapi;
mod resolve;
mod s3;
mod stats;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_store::ActionResult;
use kiln_store::Digest;
use kiln_store::EntryKind;
use kiln_store::Store;
use kiln_store::StoreError;

pub use backend::{Addressing, Backend, BackendError, TransferError};
pub use entry::{BlobRef, Entry, PublicKey, SecretKey, SignedEntry, SCHEMA};
pub use s3::S3Location;
pub use stats::{Snapshot, Stats};

/// Where a remote cache is, parsed from `--cache URL` or kiln.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `http://` or `https://` base URL.
    Http(String),
    /// `grpc://host:port[/instance]`: a REAPI server (plain gRPC; TLS is not
    /// built in).
    Reapi { endpoint: String, instance: String },
    /// `file:///path` or an absolute path: a shared directory.
    Dir(PathBuf),
    /// `s3://bucket[/prefix][?endpoint=URL&region=REGION]`.
    S3(s3::S3Location),
}

impl Location {
    pub fn parse(url: &str) -> Result<Location, String> {
        let url = url.trim();
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Location::Http(url.to_string()));
        }
        if url.starts_with("grpcs://") {
            return Err(format!(
                "cache URL {url:?}: REAPI over TLS is not supported yet; use grpc:// (plain gRPC) on a trusted network, or put the server behind a TLS tunnel"
            ));
        }
        if let Some(rest) = url.strip_prefix("grpc://") {
            let (host, instance) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() {
                return Err(format!("cache URL {url:?}: no host after grpc://"));
            }
            return Ok(Location::Reapi {
                endpoint: format!("http://{host}"),
                instance: instance.trim_end_matches('/').to_string(),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return s3::S3Location::parse(url, rest).map(Location::S3);
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.starts_with('/') {
            return Ok(Location::Dir(PathBuf::from(path)));
        }
        Err(format!(
            "cache URL {url:?}: expected http(s)://HOST/PATH (WebDAV), grpc://HOST:PORT[/INSTANCE] (REAPI), s3://BUCKET[/PREFIX][?endpoint=URL] (S3) or file:///DIR"
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
}

impl Remote {
    pub fn new(config: Config) -> Result<Remote, String> {
        let backend: Box<dyn Backend> = match &config.location {
            Location::Http(url) => Box::new(http::Http::new(url, config.timeout, config.transfers)),
            Location::Dir(path) => Box::new(dir::Dir::new(path)),
            Location::S3(loc) => Box::new(s3::S3::new(loc, config.timeout)?),
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
        let entry = match self.lookup(key) {
            Ok(entry) => entry,
            Err(f) => return f,
        };
        match self.complete(store, std::slice::from_ref(&entry)).pop() {
            Some(Ok((blobs, bytes))) => Fetch::Hit {
                result: ActionResult {
                    output: entry.output,
                    log: entry.log,
                },
                blobs,
                bytes,
            },
            Some(Err(f)) => f,
            None => Fetch::Miss,
        }
    }

    /// The verified entry for `key`, without its blobs: enough to know the
    /// node's output (so dependents' keys can be computed) before anything
    /// is downloaded. `Err` is the `Fetch` to report instead.
    pub fn lookup(&self, key: &Digest) -> Result<Entry, Fetch> {
        if self.is_down() {
            return Err(Fetch::Off);
        }
        let started = Instant::now();
        let doc = match self.backend.get_entry(key) {
            Ok(Some(doc)) => doc,
            Ok(None) => {
                self.stats.add_miss(started.elapsed());
                return Err(Fetch::Miss);
            }
            Err(e) => return Err(self.unavailable(&e, Fetch::Unavailable, Fetch::Off)),
        };
        self.stats.add_lookup_time(started.elapsed());
        match SignedEntry::verify(&doc, key, &self.trusted) {
            Ok(entry) => Ok(entry),
            Err(why) => {
                self.stats.add_refused();
                Err(Fetch::Refused(why))
            }
        }
    }

    /// Brings the closures of verified `entries` into `store` (all their
    /// missing blobs in one parallel pool) and records each entry whose
    /// closure checked out. One result per entry: blobs and bytes moved for
    /// it, or the `Fetch` to report.
    pub fn complete(&self, store: &Store, entries: &[Entry]) -> Vec<Result<(usize, u64), Fetch>> {
        let mut needed: Vec<&BlobRef> = entries
            .iter()
            .flat_map(|e| &e.blobs)
            .filter(|b| !store.has(&b.blake3))
            .collect();
        needed.sort();
        needed.dedup_by_key(|b| b.blake3);
        needed.sort_by_key(|b| std::cmp::Reverse(b.size));
        let started = Instant::now();
        let results = parallel(&needed, self.transfers, |b| self.backend.download(b, store));
        let mut moved: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut refused: BTreeMap<Digest, String> = BTreeMap::new();
        let mut staged = Vec::new();
        let mut down = None;
        for (b, r) in needed.iter().zip(results) {
            match r {
                Ok((s, n)) => {
                    moved.insert(b.blake3, n);
                    staged.push(s);
                }
                Err(TransferError::Backend(e)) => down = Some(e),
                Err(TransferError::Refused { digest, reason }) => {
                    self.suspect_blob(digest);
                    refused.insert(b.blake3, format!("blob {digest}: {reason}"));
                }
                Err(TransferError::Store(e)) => {
                    refused.insert(b.blake3, format!("blob {}: {e}", b.blake3));
                }
            }
        }
        self.stats
            .add_download(moved.len(), moved.values().sum(), started.elapsed());
        if down.is_none() {
            if let Err(e) = store.install_staged(staged) {
                let why = format!("cannot store what was fetched: {e}");
                return entries
                    .iter()
                    .map(|_| Err(Fetch::Refused(why.clone())))
                    .collect();
            }
        }
        if let Some(e) = down {
            let first = self.unavailable(&e, Fetch::Unavailable, Fetch::Off);
            let mut out = vec![Err(first)];
            out.extend(entries.iter().skip(1).map(|_| Err(Fetch::Off)));
            return out;
        }
        entries
            .iter()
            .map(|entry| {
                let why: Vec<&str> = entry
                    .blobs
                    .iter()
                    .filter_map(|b| refused.get(&b.blake3).map(String::as_str))
                    .collect();
                if !why.is_empty() {
                    self.stats.add_refused();
                    return Err(Fetch::Refused(why.join("; ")));
                }
                if let Err(why) = check_manifest(store, entry) {
                    self.stats.add_refused();
                    return Err(Fetch::Refused(why));
                }
                let result = ActionResult {
                    output: entry.output,
                    log: entry.log,
                };
                store
                    .ac_put(&entry.key, &result)
                    .map_err(|e| Fetch::Refused(format!("cannot record it locally: {e}")))?;
                self.stats.add_hit();
                let mine: Vec<u64> = entry
                    .blobs
                    .iter()
                    .filter_map(|b| moved.get(&b.blake3).copied())
                    .collect();
                Ok((mine.len(), mine.iter().sum()))
            })
            .collect()
    }

    fn suspect_blob(&self, d: Digest) {
        if let Ok(mut s) = self.suspect.lock() {
            s.insert(d);
        }
    }

    /// Sends `key`'s local entry (`result`) and its closure to the server.
    pub fn push(&self, store: &Store, key: &Digest, result: &ActionResult) -> Push {
        self.push_many(store, &[(*key, *result)])
            .pop()
            .unwrap_or(Push::Present)
    }

    /// Sends several local entries: one question for all their blobs, one
    /// parallel pool for the uploads, then the signed entries (last, so no
    /// entry is visible before its blobs). One result per entry.
    pub fn push_many(&self, store: &Store, items: &[(Digest, ActionResult)]) -> Vec<Push> {
        let all = |p: fn() -> Push| items.iter().map(|_| p()).collect::<Vec<_>>();
        // The remote went away: the first entry says so (once per process),
        // the rest are off.
        let down = |e: &BackendError| {
            let mut out = all(|| Push::Off);
            if let Some(first) = out.first_mut() {
                *first = self.unavailable(e, Push::Unavailable, Push::Off);
            }
            out
        };
        if self.read_only {
            return all(|| Push::ReadOnly);
        }
        let Some(signer) = &self.signer else {
            return all(|| Push::Unsigned);
        };
        if self.is_down() {
            return all(|| Push::Off);
        }
        let addressing = self.backend.addressing();
        let mut entries = Vec::new();
        for (key, result) in items {
            match closure(store, result, addressing) {
                Ok(blobs) => entries.push(Entry {
                    schema: SCHEMA.into(),
                    key: *key,
                    output: result.output,
                    log: result.log,
                    blobs,
                }),
                Err(e) => {
                    let mut out = all(|| Push::Off);
                    out[entries.len()] = Push::Failed(format!("cannot list what {key} needs: {e}"));
                    return out;
                }
            }
        }
        let started = Instant::now();
        let mut wanted: Vec<BlobRef> = entries.iter().flat_map(|e| e.blobs.clone()).collect();
        wanted.sort();
        wanted.dedup_by_key(|b| b.blake3);
        // Biggest first (here and in `complete`): a big blob picked up last
        // would finish alone.
        wanted.sort_by_key(|b| std::cmp::Reverse(b.size));
        let suspect: BTreeSet<Digest> = self.suspect.lock().map(|s| s.clone()).unwrap_or_default();
        // Per wanted blob: Some(bytes) uploaded, None already there.
        let outcomes: Vec<Result<Option<u64>, TransferError>> = if self.backend.batch_missing() {
            // One question for every blob (FindMissingBlobs), then the uploads.
            let mut missing: BTreeSet<Digest> = match self.backend.missing(&wanted) {
                Ok(m) => m.into_iter().map(|b| b.blake3).collect(),
                Err(e) => return down(&e),
            };
            missing.extend(suspect.iter().copied());
            parallel(&wanted, self.transfers, |b| {
                if missing.contains(&b.blake3) {
                    self.backend.upload(b, store).map(Some)
                } else {
                    Ok(None)
                }
            })
        } else {
            // Ask and send blob by blob, all in one pool, so the questions
            // overlap the uploads.
            parallel(&wanted, self.transfers, |b| {
                if !suspect.contains(&b.blake3)
                    && self.backend.missing(std::slice::from_ref(b))?.is_empty()
                {
                    return Ok(None);
                }
                self.backend.upload(b, store).map(Some)
            })
        };
        let mut sent: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut failed: BTreeMap<Digest, String> = BTreeMap::new();
        // Blobs found damaged or gone here (and removed by the store).
        let mut damaged: BTreeSet<Digest> = BTreeSet::new();
        let mut missing_set: BTreeSet<Digest> = BTreeSet::new();
        for (b, r) in wanted.iter().zip(outcomes) {
            match r {
                Ok(None) => {}
                Ok(Some(n)) => {
                    sent.insert(b.blake3, n);
                    missing_set.insert(b.blake3);
                }
                Err(TransferError::Backend(e)) => return down(&e),
                Err(e) => {
                    if matches!(
                        e,
                        TransferError::Refused { .. }
                            | TransferError::Store(
                                StoreError::Corrupt { .. } | StoreError::MissingBlob { .. }
                            )
                    ) {
                        damaged.insert(b.blake3);
                    }
                    failed.insert(b.blake3, e.to_string());
                    missing_set.insert(b.blake3);
                }
            }
        }
        // An entry whose blobs were all there may be there itself.
        let present: Vec<bool> = parallel(&entries, self.transfers, |e| {
            e.blobs.iter().all(|b| !missing_set.contains(&b.blake3))
                && matches!(self.backend.get_entry(&e.key), Ok(Some(doc))
                    if SignedEntry::verify(&doc, &e.key, &self.trusted).is_ok_and(|v| v == *e))
        });
        if let Ok(mut suspect) = self.suspect.lock() {
            for d in sent.keys() {
                suspect.remove(d);
            }
        }
        let docs: Vec<Option<Result<Vec<u8>, BackendError>>> = entries
            .iter()
            .zip(&present)
            .map(|(e, &present)| {
                let blocked = e.blobs.iter().any(|b| failed.contains_key(&b.blake3));
                (!present && !blocked).then(|| {
                    signer
                        .sign(e.clone())
                        .and_then(|signed| signed.to_json())
                        .map_err(|e| {
                            BackendError::Protocol(format!("cannot encode the entry: {e}"))
                        })
                })
            })
            .collect();
        let indexed: Vec<usize> = (0..entries.len()).collect();
        let put = parallel(&indexed, self.transfers, |&i| match &docs[i] {
            Some(Ok(doc)) => self.backend.put_entry(&entries[i].key, doc).map(|_| true),
            Some(Err(e)) => Err(e.clone()),
            None => Ok(false),
        });
        self.stats
            .add_upload(sent.len(), sent.values().sum(), started.elapsed());
        let mut counted = BTreeSet::new();
        entries
            .iter()
            .zip(put)
            .zip(&present)
            .map(|((e, put), &present)| {
                if let Some(why) = e.blobs.iter().find_map(|b| failed.get(&b.blake3)) {
                    if e.blobs.iter().any(|b| damaged.contains(&b.blake3)) {
                        // Its output is no longer whole here: the next
                        // build must make it again, not trust the entry.
                        return match store.ac_remove(&e.key) {
                            Ok(()) => Push::Failed(format!(
                                "{why}; its local cache entry is dropped, so the next build rebuilds it"
                            )),
                            Err(err) => Push::Failed(format!("{why}; {err}")),
                        };
                    }
                    return Push::Failed(why.clone());
                }
                match put {
                    Err(err) => self.unavailable(&err, Push::Unavailable, Push::Off),
                    Ok(false) if present => Push::Present,
                    Ok(_) => {
                        // A blob shared by several entries counts for the first.
                        let mine: Vec<u64> = e
                            .blobs
                            .iter()
                            .filter(|b| counted.insert(b.blake3))
                            .filter_map(|b| sent.get(&b.blake3).copied())
                            .collect();
                        Push::Uploaded {
                            blobs: mine.len(),
                            bytes: mine.iter().sum(),
                        }
                    }
                }
            })
            .collect()
    }
}

/// The manifest hashes to the signed output digest, so its file list is
/// what the signer built; each of its blobs must be in the signed closure
/// (with the same size) and now in the store.
fn check_manifest(store: &Store, entry: &Entry) -> Result<(), String> {
    let manifest = store
        .get_manifest(&entry.output)
        .map_err(|e| format!("output {}: {e}", entry.output))?;
    for e in &manifest.entries {
        if let EntryKind::File { blake3, size } = &e.kind {
            let listed = entry
                .blobs
                .iter()
                .any(|b| b.blake3 == *blake3 && b.size == *size);
            if !listed || !store.has(blake3) {
                return Err(format!(
                    "the manifest's {} ({blake3}) is not in the signed closure",
                    e.path
                ));
            }
        }
    }
    Ok(())
}

/// Every blob `result` needs: its manifest, the manifest's files, its log;
/// sorted, with sizes (and sha256 when the server addresses by it).
fn closure(
    store: &Store,
    result: &ActionResult,
    addressing: Addressing,
) -> Result<Vec<BlobRef>, StoreError> {
    let (manifest, manifest_size) = store.get_manifest_sized(&result.output)?;
    let mut blobs: Vec<(Digest, u64)> = vec![(result.output, manifest_size)];
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
