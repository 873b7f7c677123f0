//! REAPI (Bazel Remote Execution API v2) caches, over plain gRPC (tested
//! with BuildGrid; Buildbarn, bazel-remote, BuildBuddy and NativeLink speak
//! the same services). Kiln uses the
//! ContentAddressableStorage, ActionCache, ByteStream and Capabilities
//! services, over gRPC (tonic, with the protos `bazel-remote-apis` ships).
//!
//! The mapping, honestly:
//! - The server names blobs by its own digest function. Kiln asks
//!   `GetCapabilities`; with BLAKE3 announced, blobs keep their store names;
//!   otherwise (BuildGrid announces only SHA256) every blob is addressed by
//!   the sha256 of its content, which the signed entry lists next to its
//!   blake3. The server checks the sha256 on upload; Kiln checks the blake3
//!   (and the signature) on download.
//! - Blobs travel raw (BuildGrid has no compressors), in 1 MiB ByteStream
//!   messages for large blobs, `BatchUpdateBlobs` for small ones.
//! - A Kiln key is not a REAPI Action. Its action digest is the digest of
//!   the text `kiln-action\n<key hex>`; the ActionResult has one output file,
//!   `kiln-entry.json`, whose blob is the signed entry document.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    action_cache_client::ActionCacheClient, batch_update_blobs_request,
    capabilities_client::CapabilitiesClient,
    content_addressable_storage_client::ContentAddressableStorageClient, digest_function,
    ActionResult, BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest as RDigest,
    FindMissingBlobsRequest, GetActionResultRequest, GetCapabilitiesRequest, OutputFile,
    UpdateActionResultRequest,
};
use bazel_remote_apis::google::bytestream::{
    byte_stream_client::ByteStreamClient, ReadRequest, WriteRequest,
};
use sha2::Digest as _;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use kiln_store::Digest;
use kiln_store::Staged;
use kiln_store::Store;

use super::backend::{Addressing, Backend, BackendError, TransferError};
use super::entry::BlobRef;

const ENTRY_FILE: &str = "kiln-entry.json";
/// ByteStream message size: servers refuse messages over 4 MiB.
const CHUNK: usize = 1 << 20;
/// Blobs up to this size go in one `BatchUpdateBlobs`/`BatchReadBlobs`.
const SMALL: u64 = 1 << 20;
const MAX_MESSAGE: usize = 16 << 20;
/// Digests per `FindMissingBlobs` request.
const FIND_BATCH: usize = 2000;

pub struct Reapi {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    endpoint: String,
    instance: String,
    function: digest_function::Value,
    timeout: Duration,
}

fn status_error(what: &str, s: &Status) -> BackendError {
    let msg = format!("{what}: {}: {}", code_name(s.code()), s.message());
    match s.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => BackendError::Unavailable(msg),
        _ => BackendError::Protocol(msg),
    }
}

fn code_name(c: Code) -> String {
    format!("{c:?}")
}

impl Reapi {
    /// Connects and asks the server what it supports.
    pub fn connect(
        endpoint: &str,
        instance: &str,
        timeout: Duration,
    ) -> Result<Box<dyn Backend>, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the gRPC runtime: {e}"))?;
        let ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("{endpoint}: {e}"))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let channel = rt
            .block_on(async { tokio::time::timeout(timeout, ep.connect()).await })
            .map_err(|_| format!("{endpoint}: connecting timed out"))?
            .map_err(|e| format!("{endpoint}: {e}"))?;
        let caps = rt
            .block_on(async {
                let mut c = CapabilitiesClient::new(channel.clone());
                let mut req = tonic::Request::new(GetCapabilitiesRequest {
                    instance_name: instance.to_string(),
                });
                req.set_timeout(timeout);
                c.get_capabilities(req).await
            })
            .map_err(|s| {
                format!(
                    "{endpoint}: GetCapabilities: {:?}: {}",
                    s.code(),
                    s.message()
                )
            })?
            .into_inner();
        let cache = caps.cache_capabilities.unwrap_or_default();
        let has = |f: digest_function::Value| cache.digest_functions.contains(&(f as i32));
        let function = if has(digest_function::Value::Blake3) {
            digest_function::Value::Blake3
        } else if has(digest_function::Value::Sha256) || cache.digest_functions.is_empty() {
            // An empty list means SHA256 in REAPI before 2.3.
            digest_function::Value::Sha256
        } else {
            return Err(format!(
                "{endpoint}: the server announces neither BLAKE3 nor SHA256 digests ({:?})",
                cache.digest_functions
            ));
        };
        Ok(Box::new(Reapi {
            rt,
            channel,
            endpoint: endpoint.to_string(),
            instance: instance.to_string(),
            function,
            timeout,
        }))
    }

    fn prefix(&self) -> String {
        if self.instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.instance)
        }
    }

    fn hash(&self, bytes: &[u8]) -> String {
        match self.function {
            digest_function::Value::Blake3 => blake3::hash(bytes).to_hex().to_string(),
            _ => hex::encode(sha2::Sha256::digest(bytes)),
        }
    }

    fn blob_digest(&self, b: &BlobRef) -> Result<RDigest, BackendError> {
        let hash = match self.function {
            digest_function::Value::Blake3 => b.blake3.to_hex(),
            _ => b.sha256.clone().ok_or_else(|| {
                BackendError::Protocol(format!("blob {} has no sha256 for this server", b.blake3))
            })?,
        };
        Ok(RDigest {
            hash,
            size_bytes: b.size as i64,
        })
    }

    fn action_digest(&self, key: &Digest) -> RDigest {
        let text = format!("kiln-action\n{}", key.to_hex());
        RDigest {
            hash: self.hash(text.as_bytes()),
            size_bytes: text.len() as i64,
        }
    }

    /// A request with a deadline that grows with the bytes it moves (at
    /// least 1 MiB/s), so big blobs are not cut off but a dead server is.
    fn request<T>(&self, msg: T, bytes: u64) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout + Duration::from_secs(bytes >> 20));
        r
    }

    /// Runs a unary call, retrying a few times when the server says it is
    /// busy (BuildGrid answers RESOURCE_EXHAUSTED past its concurrent-RPC
    /// limit): busy is not down.
    fn call<T>(
        &self,
        mut f: impl FnMut() -> Result<tonic::Response<T>, Status>,
    ) -> Result<T, Status> {
        let mut wait = Duration::from_millis(50);
        for _ in 0..5 {
            match f() {
                Err(s) if s.code() == Code::ResourceExhausted => {
                    std::thread::sleep(wait);
                    wait *= 3;
                }
                r => return r.map(tonic::Response::into_inner),
            }
        }
        f().map(tonic::Response::into_inner)
    }

    fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn bytestream(&self) -> ByteStreamClient<Channel> {
        ByteStreamClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn put_small(&self, digest: RDigest, data: Vec<u8>) -> Result<(), BackendError> {
        let what = format!("BatchUpdateBlobs {}", digest.hash);
        let size = data.len() as u64;
        let req = BatchUpdateBlobsRequest {
            instance_name: self.instance.clone(),
            requests: vec![batch_update_blobs_request::Request {
                digest: Some(digest),
                data,
                compressor: 0,
            }],
            digest_function: self.function as i32,
        };
        let resp = self
            .call(|| {
                self.rt.block_on(
                    self.cas()
                        .batch_update_blobs(self.request(req.clone(), size)),
                )
            })
            .map_err(|s| status_error(&what, &s))?;
        for r in resp.responses {
            if let Some(st) = r.status.filter(|s| s.code != 0) {
                return Err(BackendError::Protocol(format!(
                    "{what}: code {}: {}",
                    st.code, st.message
                )));
            }
        }
        Ok(())
    }

    fn get_small(&self, digest: RDigest) -> Result<Option<Vec<u8>>, BackendError> {
        let what = format!("BatchReadBlobs {}", digest.hash);
        let size = digest.size_bytes as u64;
        let req = BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: vec![digest],
            acceptable_compressors: Vec::new(),
            digest_function: self.function as i32,
        };
        let resp = self
            .call(|| {
                self.rt
                    .block_on(self.cas().batch_read_blobs(self.request(req.clone(), size)))
            })
            .map_err(|s| status_error(&what, &s))?;
        let Some(r) = resp.responses.into_iter().next() else {
            return Err(BackendError::Protocol(format!("{what}: empty reply")));
        };
        match r.status.map(|s| (s.code, s.message)) {
            None | Some((0, _)) => Ok(Some(r.data)),
            Some((5, _)) => Ok(None),
            Some((code, msg)) => Err(BackendError::Protocol(format!(
                "{what}: code {code}: {msg}"
            ))),
        }
    }
}

impl Backend for Reapi {
    fn describe(&self) -> String {
        format!("{} (REAPI instance {:?})", self.endpoint, self.instance)
    }

    fn batch_missing(&self) -> bool {
        true
    }

    fn addressing(&self) -> Addressing {
        match self.function {
            digest_function::Value::Blake3 => Addressing::Blake3,
            _ => Addressing::Sha256,
        }
    }

    fn get_entry(&self, key: &Digest) -> Result<Option<Vec<u8>>, BackendError> {
        let req = GetActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(self.action_digest(key)),
            inline_stdout: false,
            inline_stderr: false,
            inline_output_files: vec![ENTRY_FILE.into()],
            digest_function: self.function as i32,
        };
        let mut ac = ActionCacheClient::new(self.channel.clone());
        let result = match self.call(|| {
            self.rt
                .block_on(ac.get_action_result(self.request(req.clone(), 0)))
        }) {
            Ok(r) => r,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(status_error("GetActionResult", &s)),
        };
        let Some(file) = result
            .output_files
            .into_iter()
            .find(|f| f.path == ENTRY_FILE)
        else {
            // Not ours: some other client's action that collides is not an entry.
            return Ok(Some(Vec::new()));
        };
        if !file.contents.is_empty() {
            return Ok(Some(file.contents));
        }
        let Some(digest) = file.digest else {
            return Ok(Some(Vec::new()));
        };
        Ok(Some(self.get_small(digest)?.unwrap_or_default()))
    }

    fn put_entry(&self, key: &Digest, doc: &[u8]) -> Result<(), BackendError> {
        let digest = RDigest {
            hash: self.hash(doc),
            size_bytes: doc.len() as i64,
        };
        self.put_small(digest.clone(), doc.to_vec())?;
        let req = UpdateActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(self.action_digest(key)),
            action_result: Some(ActionResult {
                output_files: vec![OutputFile {
                    path: ENTRY_FILE.into(),
                    digest: Some(digest),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            results_cache_policy: None,
            digest_function: self.function as i32,
        };
        let mut ac = ActionCacheClient::new(self.channel.clone());
        self.call(|| {
            self.rt
                .block_on(ac.update_action_result(self.request(req.clone(), 0)))
        })
        .map_err(|s| status_error("UpdateActionResult", &s))?;
        Ok(())
    }

    fn missing(&self, blobs: &[BlobRef]) -> Result<Vec<BlobRef>, BackendError> {
        let mut missing = Vec::new();
        for batch in blobs.chunks(FIND_BATCH) {
            let digests = batch
                .iter()
                .map(|b| self.blob_digest(b))
                .collect::<Result<Vec<_>, _>>()?;
            let req = FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: digests.clone(),
                digest_function: self.function as i32,
            };
            let resp = self
                .call(|| {
                    self.rt
                        .block_on(self.cas().find_missing_blobs(self.request(req.clone(), 0)))
                })
                .map_err(|s| status_error("FindMissingBlobs", &s))?;
            for (b, d) in batch.iter().zip(&digests) {
                if resp.missing_blob_digests.iter().any(|m| m.hash == d.hash) {
                    missing.push(b.clone());
                }
            }
        }
        Ok(missing)
    }

    fn download(&self, blob: &BlobRef, store: &Store) -> Result<(Staged, u64), TransferError> {
        let digest = self.blob_digest(blob)?;
        let what = format!("{} blob {}", self.endpoint, digest.hash);
        if blob.size <= SMALL {
            let Some(data) = self.get_small(digest)? else {
                return Err(TransferError::Refused {
                    digest: blob.blake3,
                    reason: "the server does not have it".into(),
                });
            };
            return store
                .import_raw(&blob.blake3, blob.size, &mut data.as_slice())
                .map_err(|e| TransferError::from_import(&blob.blake3, e, &what));
        }
        let req = ReadRequest {
            resource_name: format!(
                "{}blobs/{}/{}",
                self.prefix(),
                digest.hash,
                digest.size_bytes
            ),
            read_offset: 0,
            read_limit: 0,
        };
        let stream = match self.call(|| {
            self.rt
                .block_on(self.bytestream().read(self.request(req.clone(), blob.size)))
        }) {
            Ok(s) => s,
            Err(s) if s.code() == Code::NotFound => {
                return Err(TransferError::Refused {
                    digest: blob.blake3,
                    reason: "the server does not have it".into(),
                })
            }
            Err(s) => return Err(status_error("ByteStream.Read", &s).into()),
        };
        let mut reader = StreamReader {
            rt: &self.rt,
            stream,
            buf: Vec::new(),
            at: 0,
        };
        store
            .import_raw(&blob.blake3, blob.size, &mut reader)
            .map_err(|e| TransferError::from_import(&blob.blake3, e, &what))
    }

    fn upload(&self, blob: &BlobRef, store: &Store) -> Result<u64, TransferError> {
        let digest = self.blob_digest(blob)?;
        let mut export = store.export_raw(&blob.blake3)?;
        if blob.size <= SMALL {
            let mut data = Vec::with_capacity(blob.size as usize);
            export
                .read_to_end(&mut data)
                .map_err(|e| local_failure(blob, e))?;
            self.put_small(digest, data)?;
            return Ok(blob.size);
        }
        let resource = format!(
            "{}uploads/{}/blobs/{}/{}",
            self.prefix(),
            upload_id(&blob.blake3),
            digest.hash,
            digest.size_bytes
        );
        let failed: Arc<Mutex<Option<io::Error>>> = Arc::new(Mutex::new(None));
        let size = blob.size;
        let mut offset = 0u64;
        let mut first = true;
        let fail = failed.clone();
        let chunks = std::iter::from_fn(move || {
            if offset >= size && !first {
                return None;
            }
            let want = (size - offset).min(CHUNK as u64) as usize;
            let mut data = vec![0u8; want];
            if let Err(e) = export.read_exact(&mut data) {
                if let Ok(mut f) = fail.lock() {
                    *f = Some(e);
                }
                return None;
            }
            let at = offset;
            offset += want as u64;
            if offset == size {
                // Reading to the end makes the export check the hash.
                let mut rest = [0u8; 1];
                match export.read(&mut rest) {
                    Ok(0) => {}
                    Ok(_) => {
                        if let Ok(mut f) = fail.lock() {
                            *f = Some(io::Error::other("the blob is longer than its size"));
                        }
                        return None;
                    }
                    Err(e) => {
                        if let Ok(mut f) = fail.lock() {
                            *f = Some(e);
                        }
                        return None;
                    }
                }
            }
            let name = if first {
                resource.clone()
            } else {
                String::new()
            };
            first = false;
            Some(WriteRequest {
                resource_name: name,
                write_offset: at as i64,
                finish_write: offset == size,
                data,
            })
        });
        let result = self.rt.block_on(
            self.bytestream()
                .write(self.request(tokio_stream::iter(chunks), size)),
        );
        if let Some(e) = failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(local_failure(blob, e));
        }
        let resp = result.map_err(|s| status_error("ByteStream.Write", &s))?;
        if resp.into_inner().committed_size != size as i64 {
            return Err(BackendError::Protocol(format!(
                "ByteStream.Write {}: the server committed a different size",
                digest.hash
            ))
            .into());
        }
        Ok(size)
    }
}

fn local_failure(blob: &BlobRef, e: io::Error) -> TransferError {
    TransferError::Refused {
        digest: blob.blake3,
        reason: format!("not uploaded: {e}"),
    }
}

/// A UUID-shaped upload id, unique per process and blob.
fn upload_id(d: &Digest) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_nanos())
        .unwrap_or(0);
    let h = blake3::hash(format!("{}-{n}-{nanos}-{d}", std::process::id()).as_bytes());
    let x = h.to_hex();
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// Reads a ByteStream.Read reply as a byte stream, blocking on the runtime.
struct StreamReader<'a> {
    rt: &'a tokio::runtime::Runtime,
    stream: tonic::Streaming<bazel_remote_apis::google::bytestream::ReadResponse>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for StreamReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.buf.len() {
            match self.rt.block_on(self.stream.message()) {
                Ok(Some(m)) => {
                    self.buf = m.data;
                    self.at = 0;
                }
                Ok(None) => return Ok(0),
                Err(s) => {
                    return Err(io::Error::other(format!(
                        "ByteStream.Read: {:?}: {}",
                        s.code(),
                        s.message()
                    )))
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
