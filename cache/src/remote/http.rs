//! HTTP/WebDAV caches in the bazel-remote layout: `GET/PUT/HEAD
//! <base>/ac/<key>` for entry documents and `<base>/cas/<blake3>` for blobs.
//!
//! Blobs travel in the store's zstd form, so uploads stream the stored file
//! as it is and downloads are written as they arrive (decoded on the fly
//! only to check them). Any server that stores PUT bodies and serves them
//! back works: nginx's dav module, Apache mod_dav, bazel-remote.

use std::io::Read;
use std::time::Duration;

use ureq::http::StatusCode;

use crate::digest::Digest;
use crate::store::Store;
use crate::transfer::Staged;

use super::backend::{Backend, BackendError, TransferError};
use super::entry::BlobRef;

/// An entry document is small; anything bigger is not one.
const MAX_ENTRY: u64 = 64 << 20;
/// Blobs (as stored) up to this size are uploaded from memory.
const SMALL_UPLOAD: u64 = 4 << 20;

pub struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    pub fn new(base: &str, timeout: Duration) -> Http {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
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
            .build()
            .into();
        Http {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    fn url(&self, kind: &str, d: &Digest) -> String {
        format!("{}/{kind}/{}", self.base, d.to_hex())
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

    /// One HEAD per blob: the caller asks right before each upload, from
    /// its transfer pool (see `Backend::batch_missing`).
    fn missing(&self, blobs: &[BlobRef]) -> Result<Vec<BlobRef>, BackendError> {
        let mut missing = Vec::new();
        for b in blobs {
            let url = self.url("cas", &b.blake3);
            let resp = self.agent.head(&url).call().map_err(|e| failure(&url, e))?;
            match resp.status() {
                StatusCode::NOT_FOUND => missing.push(b.clone()),
                s if s.is_success() => {}
                s => return Err(bad_status("HEAD", &url, s)),
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
        let len = store.stored_size(&blob.blake3)?;
        let mut export = store.export_compressed(&blob.blake3)?;
        let request = self.agent.put(&url);
        let sent = if len <= SMALL_UPLOAD {
            // Read (and so verify) it whole, then send it in one go: most
            // blobs are small, and a streamed body costs more per blob.
            let mut body = Vec::with_capacity(len as usize);
            export
                .read_to_end(&mut body)
                .map_err(|e| TransferError::Refused {
                    digest: blob.blake3,
                    reason: e.to_string(),
                })?;
            request.send(&body[..])
        } else {
            request
                .header("content-length", len.to_string())
                .send(ureq::SendBody::from_reader(&mut export))
        };
        let resp = sent.map_err(|e| failure(&url, e))?;
        match resp.status() {
            s if s.is_success() => {
                drain(resp);
                Ok(len)
            }
            s => Err(bad_status("PUT", &url, s).into()),
        }
    }
}
