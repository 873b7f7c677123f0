//! Getting remote sources into the store, and out of it into a build tree.
//!
//! A remote source is identified by the hash its recipe declares, never by its
//! URL. That is what lets the fetcher take the bytes from anywhere — a local
//! index, a mirror, upstream — while trusting none of them: every download is
//! hashed as it streams to a temporary file and only verified bytes reach the
//! content-addressed store.

mod error;
mod fetcher;
mod mirror;
mod place;
mod unpack;

pub use error::{Attempt, Failure, FetchError};
pub use fetcher::Fetcher;
pub use mirror::Mirror;
pub use unpack::{copy_file, unpack, unpack_deb};
