//! What a remote cache server must do for Kiln, whatever its protocol:
//! store entry documents by key and blobs by digest, say which blobs it
//! lacks, and move blobs in and out of the local store.

use kiln_store::Digest;
use kiln_store::Store;
use kiln_store::{Export, ImportError, Staged, SEND_WHOLE};

use super::entry::BlobRef;

/// A failure talking to the server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The server can't be used right now: refused, timed out, 5xx. The
    /// build goes on without it.
    #[error("{0}")]
    Unavailable(String),
    /// The server answered, but not as a cache should (4xx, bad reply).
    #[error("{0}")]
    Protocol(String),
}

/// Why moving one blob failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The bytes are not the blob (refused, never installed).
    #[error("blob {digest}: {reason}")]
    Refused { digest: Digest, reason: String },
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
}

impl TransferError {
    /// Maps an import failure of blob `d`: a read error is the server's or
    /// the network's, a mismatch is the blob's.
    pub fn from_import(d: &Digest, e: ImportError, what: &str) -> TransferError {
        match e {
            ImportError::Source(e) => {
                TransferError::Backend(BackendError::Unavailable(format!("{what}: {e}")))
            }
            ImportError::Mismatch(reason) => TransferError::Refused { digest: *d, reason },
            ImportError::Store(e) => TransferError::Store(e),
        }
    }
}

/// A blob's stored (zstd) form on its way to a server that keeps it as it
/// is (HTTP, directory, S3); see [`send_stored`].
pub enum Outgoing<'a> {
    /// Read and checked whole: most blobs are small, and streaming costs
    /// more per blob.
    Whole(&'a [u8]),
    /// Streamed, `len` bytes, checked before the last of them is read.
    Stream { export: &'a mut Export, len: u64 },
}

/// Hands `send` blob `blob`'s stored form, whole or streamed by its size.
/// A send that failed because the blob turned out damaged (and is now
/// removed) is the blob's fault, `Refused`, whatever the transport made of
/// its short body: the server must not be taken for down.
pub fn send_stored(
    store: &Store,
    blob: &BlobRef,
    send: impl FnOnce(Outgoing) -> Result<u64, TransferError>,
) -> Result<u64, TransferError> {
    let len = store.stored_size(&blob.blake3)?;
    if len <= SEND_WHOLE {
        return store
            .with_compressed(&blob.blake3, blob.size, |body| send(Outgoing::Whole(body)))?;
    }
    let mut export = store.export_compressed(&blob.blake3)?;
    let sent = send(Outgoing::Stream {
        export: &mut export,
        len,
    });
    match (sent, export.damage()) {
        (Err(_), Some(why)) => Err(TransferError::Refused {
            digest: blob.blake3,
            reason: why.to_string(),
        }),
        (sent, _) => sent,
    }
}

/// How blobs are addressed on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// By blake3, the store's own name.
    Blake3,
    /// By sha256 of the content: entries must carry each blob's sha256.
    Sha256,
}

pub trait Backend: Send + Sync {
    /// The server, for messages.
    fn describe(&self) -> String;

    fn addressing(&self) -> Addressing {
        Addressing::Blake3
    }

    /// The entry document for `key`, if the server has one.
    fn get_entry(&self, key: &Digest) -> Result<Option<Vec<u8>>, BackendError>;

    /// Stores the entry document for `key`, replacing any.
    fn put_entry(&self, key: &Digest, doc: &[u8]) -> Result<(), BackendError>;

    /// Whether asking about many blobs at once is much cheaper than one at
    /// a time (REAPI's FindMissingBlobs). Otherwise (HTTP HEAD) each blob
    /// is asked about right before its upload, overlapping both.
    fn batch_missing(&self) -> bool {
        false
    }

    /// Which of `blobs` the server does not have.
    fn missing(&self, blobs: &[BlobRef]) -> Result<Vec<BlobRef>, BackendError>;

    /// Fetches `blob` for `store`, verified and staged (installed by the
    /// caller, a batch at a time). Returns it with the bytes moved.
    fn download(&self, blob: &BlobRef, store: &Store) -> Result<(Staged, u64), TransferError>;

    /// Sends `blob` from `store`. Returns bytes moved.
    fn upload(&self, blob: &BlobRef, store: &Store) -> Result<u64, TransferError>;
}
