//! HTTP/WebDAV caches in the bazel-remote layout: `GET/PUT/HEAD
//! <base>/ac/<key>` for entry documents and `<base>/cas/<blake3>` for blobs.
//!
//! Blobs travel in the store's zstd form, so uploads stream the stored file
//! as it is and downloads are written as they arrive (decoded on the fly
//! only to check them). Any server that stores PUT bodies and serves them
//! back works: nginx's dav module, Apache mod_dav, bazel-remote.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ureq::http::{StatusCode, Uri};
use ureq::unversioned::transport::DefaultConnector;

use kiln_store::Digest;
use kiln_store::Staged;
use kiln_store::Store;

use super::backend::{send_stored, Backend, BackendError, Outgoing, TransferError};
use super::entry::BlobRef;
use super::pipeline::{Pipeline, PipelineError};
use super::resolve::{Addresses, CachingResolver};

const USER_AGENT: &str = concat!("kiln/", env!("CARGO_PKG_VERSION"));
/// An entry document is small; anything bigger is not one.
const MAX_ENTRY: u64 = 64 << 20;

pub struct Http {
    base: String,
    /// The URL's path, for pipelined requests.
    base_path: String,
    agent: ureq::Agent,
    /// For asking about many blobs at once (plain http only); taken away
    /// for good if the server does not pipeline.
    pipeline: Option<Pipeline>,
    pipelining: AtomicBool,
    transfers: usize,
}

impl Http {
    pub fn new(base: &str, timeout: Duration, transfers: usize) -> Http {
        let addresses = Arc::new(Addresses::default());
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(USER_AGENT)
            .accept_encoding("identity")
            .timeout_resolve(Some(timeout))
            .timeout_connect(Some(timeout))
            .timeout_send_request(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(timeout))
            // Every transfer thread keeps its connection (ureq keeps 3 per
            // host by default, and reconnecting per blob halves throughput).
            .max_idle_connections(64)
            .max_idle_connections_per_host(64)
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            DefaultConnector::default(),
            CachingResolver(addresses.clone()),
        );
        let base = base.trim_end_matches('/').to_string();
        let pipeline = Pipeline::for_base(&base, timeout, USER_AGENT, addresses);
        let base_path = base
            .parse::<Uri>()
            .ok()
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        Http {
            pipelining: AtomicBool::new(pipeline.is_some()),
            base,
            base_path,
            agent,
            pipeline,
            transfers: transfers.max(1),
        }
    }

    fn url(&self, kind: &str, d: &Digest) -> String {
        format!("{}/{kind}/{}", self.base, d.to_hex())
    }
}

impl Http {
    /// Whether the server lacks `blob`, by one HEAD.
    fn head(&self, blob: &BlobRef) -> Result<bool, BackendError> {
        let url = self.url("cas", &blob.blake3);
        let resp = self.agent.head(&url).call().map_err(|e| failure(&url, e))?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(true),
            s if s.is_success() => Ok(false),
            s => Err(bad_status("HEAD", &url, s)),
        }
    }
}

/// Reads what is left of a reply (nginx answers a PUT with a short HTML
/// body): only a fully read reply gives its connection back to the pool,
/// and a new connection per blob halves upload throughput.
fn drain(resp: ureq::http::Response<ureq::Body>) {
    let _ = std::io::copy(
        &mut resp.into_body().into_reader().take(1 << 20),
        &mut std::io::sink(),
    );
}

fn failure(url: &str, e: ureq::Error) -> BackendError {
    BackendError::Unavailable(format!("{url}: {e}"))
}

/// 5xx (and 408/429) mean "not now"; other unexpected statuses mean the
/// server is not a cache we can use.
fn bad_status(method: &str, url: &str, status: StatusCode) -> BackendError {
    let msg = format!("{method} {url}: HTTP {status}");
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        BackendError::Unavailable(msg)
    } else {
        BackendError::Protocol(msg)
    }
}

impl Backend for Http {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn get_entry(&self, key: &Digest) -> Result<Option<Vec<u8>>, BackendError> {
        let url = self.url("ac", key);
        let resp = self.agent.get(&url).call().map_err(|e| failure(&url, e))?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let mut doc = Vec::new();
                resp.into_body()
                    .into_reader()
                    .take(MAX_ENTRY)
                    .read_to_end(&mut doc)
                    .map_err(|e| BackendError::Unavailable(format!("GET {url}: {e}")))?;
                Ok(Some(doc))
            }
            s => Err(bad_status("GET", &url, s)),
        }
    }

    fn put_entry(&self, key: &Digest, doc: &[u8]) -> Result<(), BackendError> {
        let url = self.url("ac", key);
        let resp = self
            .agent
            .put(&url)
            .send(doc)
            .map_err(|e| failure(&url, e))?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            s => Err(bad_status("PUT", &url, s)),
        }
    }

    /// Pipelined HEADs can ask about a whole closure at once; otherwise
    /// each blob is asked about right before its upload.
    fn batch_missing(&self) -> bool {
        self.pipelining.load(Ordering::Relaxed)
    }

    fn missing(&self, blobs: &[BlobRef]) -> Result<Vec<BlobRef>, BackendError> {
        if let Some(pipeline) = self.pipeline.as_ref().filter(|_| self.batch_missing()) {
            let paths: Vec<String> = blobs
                .iter()
                .map(|b| format!("{}/cas/{}", self.base_path, b.blake3.to_hex()))
                .collect();
            match pipeline.head_all(&paths, self.transfers) {
                Ok(statuses) => {
                    let mut missing = Vec::new();
                    for ((b, path), status) in blobs.iter().zip(&paths).zip(statuses) {
                        match StatusCode::from_u16(status) {
                            Ok(StatusCode::NOT_FOUND) => missing.push(b.clone()),
                            Ok(s) if s.is_success() => {}
                            Ok(s) => return Err(bad_status("HEAD", path, s)),
                            Err(_) => {
                                return Err(BackendError::Protocol(format!(
                                    "HEAD {path}: status {status}"
                                )))
                            }
                        }
                    }
                    return Ok(missing);
                }
                Err(PipelineError::Unavailable(e)) => return Err(BackendError::Unavailable(e)),
                // Ask blob by blob from now on.
                Err(PipelineError::Unsupported(_)) => {
                    self.pipelining.store(false, Ordering::Relaxed);
                }
            }
        }
        let asked = super::parallel(blobs, self.transfers, |b| self.head(b));
        let mut missing = Vec::new();
        for (b, r) in blobs.iter().zip(asked) {
            if r? {
                missing.push(b.clone());
            }
        }
        Ok(missing)
    }

    fn download(&self, blob: &BlobRef, store: &Store) -> Result<(Staged, u64), TransferError> {
        let url = self.url("cas", &blob.blake3);
        let resp = self.agent.get(&url).call().map_err(|e| failure(&url, e))?;
        match resp.status() {
            StatusCode::NOT_FOUND => Err(TransferError::Refused {
                digest: blob.blake3,
                reason: "the server does not have it".into(),
            }),
            s if s.is_success() => {
                let mut body = resp.into_body();
                let mut reader = body.as_reader();
                store
                    .import_compressed(&blob.blake3, blob.size, &mut reader)
                    .map_err(|e| TransferError::from_import(&blob.blake3, e, &format!("GET {url}")))
            }
            s => Err(bad_status("GET", &url, s).into()),
        }
    }

    fn upload(&self, blob: &BlobRef, store: &Store) -> Result<u64, TransferError> {
        let url = self.url("cas", &blob.blake3);
        send_stored(store, blob, |out| {
            let request = self.agent.put(&url);
            let (sent, len) = match out {
                Outgoing::Whole(body) => (request.send(body), body.len() as u64),
                Outgoing::Stream { export, len } => (
                    request
                        .header("content-length", len.to_string())
                        .send(ureq::SendBody::from_reader(export)),
                    len,
                ),
            };
            let resp = sent.map_err(|e| failure(&url, e))?;
            match resp.status() {
                s if s.is_success() => {
                    drain(resp);
                    Ok(len)
                }
                s => Err(bad_status("PUT", &url, s).into()),
            }
        })
    }
}
