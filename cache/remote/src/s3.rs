//! S3 (and S3-compatible stores: MinIO, Ceph RGW, Garage, R2) as a cache,
//! through opendal, in the HTTP cache's layout under the URL's prefix:
//! `<prefix>/ac/<key>` for entry documents, `<prefix>/cas/<blake3>` for
//! blobs in the store's zstd form.
//!
//! `s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]`. Credentials come
//! from where AWS tools look (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
//! `~/.aws`), never from kiln.toml: the bucket's own access control decides
//! who may write, and signatures decide what is trusted. Objects are
//! written whole (small blobs in one PUT, big ones in 8 MiB multipart
//! parts), so a reader sees an object completely or not at all, and an
//! upload that fails is aborted, never completed.

use std::io::{self, Read};
use std::time::Duration;

use opendal::{blocking, ErrorKind};

use kiln_store::Digest;
use kiln_store::Store;
use kiln_store::{ImportError, Staged};

use super::backend::{send_stored, Backend, BackendError, Outgoing, TransferError};
use super::entry::BlobRef;

/// Multipart part size (S3 wants at least 5 MiB but for the last part).
const PART: usize = 8 << 20;
/// An entry document is small; anything bigger is not one.
const MAX_ENTRY: u64 = 64 << 20;

/// Where an S3 cache is, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
    /// The service's URL; `None` for AWS's own.
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

impl S3Location {
    /// Parses what follows `s3://`.
    pub fn parse(url: &str, rest: &str) -> Result<S3Location, String> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(format!("cache URL {url:?}: no bucket after s3://"));
        }
        let mut loc = S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            region: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("endpoint", v)) if !v.is_empty() => loc.endpoint = Some(v.to_string()),
                Some(("region", v)) if !v.is_empty() => loc.region = Some(v.to_string()),
                _ => {
                    return Err(format!(
                        "cache URL {url:?}: unknown or empty setting {pair:?}; expected endpoint=URL or region=REGION"
                    ))
                }
            }
        }
        Ok(loc)
    }
}

pub struct S3 {
    /// The runtime both operators run their requests on.
    rt: tokio::runtime::Runtime,
    op: blocking::Operator,
    /// For streamed uploads, which must be abortable.
    op_async: opendal::Operator,
    describe: String,
}

/// Not found is an answer; a refusal of access or a bad setting means the
/// bucket is not a cache we can use; anything else means "not now".
fn failure(what: &str, e: &opendal::Error) -> BackendError {
    let text = e.to_string();
    let msg = if text.contains("LoadCredential") {
        format!(
            "{what}: no AWS credentials were found to sign with (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use ~/.aws/credentials or an instance role): {text}"
        )
    } else {
        format!("{what}: {text}")
    };
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ConfigInvalid | ErrorKind::Unsupported => {
            BackendError::Protocol(msg)
        }
        _ => BackendError::Unavailable(msg),
    }
}

impl S3 {
    pub fn new(loc: &S3Location, timeout: Duration) -> Result<S3, String> {
        let describe = format!(
            "s3://{}/{}{}",
            loc.bucket,
            loc.prefix,
            loc.endpoint
                .as_ref()
                .map(|e| format!(" at {e}"))
                .unwrap_or_default()
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("{describe}: cannot start the S3 runtime: {e}"))?;
        let region = loc
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_string());
        let mut builder = opendal::services::S3::default()
            .bucket(&loc.bucket)
            .root(&format!("/{}", loc.prefix))
            .region(&region);
        if let Some(endpoint) = &loc.endpoint {
            builder = builder.endpoint(endpoint);
        }
        let op = opendal::Operator::new(builder)
            .map_err(|e| format!("{describe}: {e}"))?
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(timeout)
                    .with_io_timeout(timeout),
            )
            .finish();
        let blocking_op = {
            let _guard = rt.enter();
            blocking::Operator::new(op.clone()).map_err(|e| format!("{describe}: {e}"))?
        };
        Ok(S3 {
            rt,
            op: blocking_op,
            op_async: op,
            describe,
        })
    }

    fn blob(d: &Digest) -> String {
        format!("cas/{}", d.to_hex())
    }

    /// Writes `path` from `src` in parts, aborting the upload if reading
    /// fails (a damaged blob's export fails before its last byte): the
    /// object is never completed.
    fn write_streamed(&self, path: &str, src: &mut dyn Read) -> io::Result<u64> {
        self.rt.block_on(async {
            let mut w = self
                .op_async
                .writer_with(path)
                .chunk(PART)
                .await
                .map_err(io::Error::other)?;
            let mut sent = 0u64;
            loop {
                let mut part = Vec::with_capacity(PART);
                if let Err(e) = (&mut *src).take(PART as u64).read_to_end(&mut part) {
                    let _ = w.abort().await;
                    return Err(e);
                }
                if part.is_empty() {
                    break;
                }
                sent += part.len() as u64;
                if let Err(e) = w.write(part).await {
                    let _ = w.abort().await;
                    return Err(io::Error::other(e));
                }
            }
            w.close().await.map_err(io::Error::other)?;
            Ok(sent)
        })
    }
}

impl Backend for S3 {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn get_entry(&self, key: &Digest) -> Result<Option<Vec<u8>>, BackendError> {
        let path = format!("ac/{}", key.to_hex());
        match self.op.stat(&path) {
            Ok(m) if m.content_length() > MAX_ENTRY => {
                return Err(BackendError::Protocol(format!(
                    "{path}: {} bytes is not an entry document",
                    m.content_length()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failure(&format!("stat {path}"), &e)),
        }
        match self.op.read(&path) {
            Ok(buf) => Ok(Some(buf.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failure(&format!("read {path}"), &e)),
        }
    }

    fn put_entry(&self, key: &Digest, doc: &[u8]) -> Result<(), BackendError> {
        let path = format!("ac/{}", key.to_hex());
        self.op
            .write(&path, doc.to_vec())
            .map(|_| ())
            .map_err(|e| failure(&format!("write {path}"), &e))
    }

    /// One HEAD per blob, right before its upload, in the transfer pool.
    fn missing(&self, blobs: &[BlobRef]) -> Result<Vec<BlobRef>, BackendError> {
        let mut missing = Vec::new();
        for b in blobs {
            let path = S3::blob(&b.blake3);
            match self.op.stat(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => missing.push(b.clone()),
                Err(e) => return Err(failure(&format!("stat {path}"), &e)),
            }
        }
        Ok(missing)
    }

    fn download(&self, blob: &BlobRef, store: &Store) -> Result<(Staged, u64), TransferError> {
        let path = S3::blob(&blob.blake3);
        let not_there = || TransferError::Refused {
            digest: blob.blake3,
            reason: "the bucket does not have it".into(),
        };
        let reader = match self.op.reader(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_there()),
            Err(e) => return Err(failure(&format!("read {path}"), &e).into()),
        };
        let mut src = reader
            .into_std_read(..)
            .map_err(|e| failure(&format!("read {path}"), &e))?;
        match store.import_compressed(&blob.blake3, blob.size, &mut src) {
            Err(ImportError::Source(e)) if e.kind() == io::ErrorKind::NotFound => Err(not_there()),
            r => {
                r.map_err(|e| TransferError::from_import(&blob.blake3, e, &format!("read {path}")))
            }
        }
    }

    fn upload(&self, blob: &BlobRef, store: &Store) -> Result<u64, TransferError> {
        let path = S3::blob(&blob.blake3);
        send_stored(store, blob, |out| match out {
            Outgoing::Whole(body) => self
                .op
                .write(&path, body.to_vec())
                .map(|_| body.len() as u64)
                .map_err(|e| failure(&format!("write {path}"), &e).into()),
            Outgoing::Stream { export, .. } => self
                .write_streamed(&path, export)
                .map_err(|e| BackendError::Unavailable(format!("write {path}: {e}")).into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let loc = |u: &str| S3Location::parse(u, u.trim_start_matches("s3://"));
        assert_eq!(
            loc("s3://team-cache/kiln/boards?endpoint=http://minio:9000&region=eu-west-1"),
            Ok(S3Location {
                bucket: "team-cache".into(),
                prefix: "kiln/boards".into(),
                endpoint: Some("http://minio:9000".into()),
                region: Some("eu-west-1".into()),
            })
        );
        assert_eq!(
            loc("s3://b"),
            Ok(S3Location {
                bucket: "b".into(),
                prefix: String::new(),
                endpoint: None,
                region: None,
            })
        );
        assert!(loc("s3:///x").unwrap_err().contains("no bucket"));
        assert!(loc("s3://b?secret=x").unwrap_err().contains("endpoint=URL"));
        assert!(loc("s3://b?endpoint=").is_err());
    }
}
