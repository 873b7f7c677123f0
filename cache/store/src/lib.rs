//! Kiln's local store: a content-addressed blob store (CAS), an action cache
//! mapping build keys to results, materialized output trees, GC roots and
//! mark-and-sweep garbage collection.
//!
//! The design goal is that the store is always usable, whatever happened to
//! the process that last wrote it: every file is written to `<root>/tmp`,
//! fsynced and renamed into place; blobs are verified on every read;
//! action-cache entries are written only after everything they refer to and
//! count as misses when that is gone. A `kill -9` at any point leaves at worst
//! a temp file that is ignored and later cleaned up.
//!
//! ```no_run
//! # fn main() -> Result<(), kiln_store::StoreError> {
//! use kiln_store::{ActionResult, Digest, Store};
//! let store = Store::open(Store::default_root()?)?;
//! let _build = store.lock_shared()?;
//! let key = Digest::of(b"everything that influences the build");
//! if store.ac_get(&key)?.is_none() {
//!     let manifest = store.ingest_tree("/tmp/sandbox/out".as_ref(), &[])?;
//!     let output = store.put_manifest(&manifest)?;
//!     store.ac_put(&key, &ActionResult { output, log: None })?;
//! }
//! # Ok(()) }
//! ```

mod ac;
mod cas;
mod digest;
mod error;
mod gc;
mod ingest;
mod lock;
mod manifest;
mod manifests;
mod materialize;
mod roots;
mod stamp;
mod store;
mod transfer;

pub use ac::ActionResult;
pub use digest::{Digest, DigestParseError};
pub use error::StoreError;
pub use gc::GcReport;
pub use lock::{LockKind, StoreLock};
pub use manifest::{Entry, EntryKind, Manifest, ManifestError, MetaOverride, CAPABILITY_XATTR};
pub use roots::Root;
pub use store::Store;
pub use transfer::{Export, ImportError, Staged, SEND_WHOLE};
