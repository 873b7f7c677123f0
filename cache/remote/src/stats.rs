//! What a process did with the remote, for `kiln cache stat`: each command
//! appends one line of these counters to `<store>/logs/remote.jsonl`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
pub struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    blobs_down: AtomicU64,
    bytes_down: AtomicU64,
    blobs_up: AtomicU64,
    bytes_up: AtomicU64,
    micros_lookup: AtomicU64,
    micros_down: AtomicU64,
    micros_up: AtomicU64,
}

/// A plain copy of the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub hits: u64,
    pub misses: u64,
    pub refused: u64,
    pub errors: u64,
    pub blobs_down: u64,
    pub bytes_down: u64,
    pub blobs_up: u64,
    pub bytes_up: u64,
    pub micros_lookup: u64,
    pub micros_down: u64,
    pub micros_up: u64,
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Stats {
    /// A lookup that found nothing.
    pub(crate) fn add_miss(&self, took: Duration) {
        add(&self.misses, 1);
        add(&self.micros_lookup, micros(took));
    }
    /// A lookup that found an entry (which may still be refused later).
    pub(crate) fn add_lookup_time(&self, took: Duration) {
        add(&self.micros_lookup, micros(took));
    }
    /// An entry whose closure checked out and is now in the store.
    pub(crate) fn add_hit(&self) {
        add(&self.hits, 1);
    }
    pub(crate) fn add_refused(&self) {
        add(&self.refused, 1);
    }
    pub(crate) fn add_error(&self) {
        add(&self.errors, 1);
    }
    pub(crate) fn add_download(&self, blobs: usize, bytes: u64, took: Duration) {
        add(&self.blobs_down, blobs as u64);
        add(&self.bytes_down, bytes);
        add(&self.micros_down, micros(took));
    }
    pub(crate) fn add_upload(&self, blobs: usize, bytes: u64, took: Duration) {
        add(&self.blobs_up, blobs as u64);
        add(&self.bytes_up, bytes);
        add(&self.micros_up, micros(took));
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            hits: g(&self.hits),
            misses: g(&self.misses),
            refused: g(&self.refused),
            errors: g(&self.errors),
            blobs_down: g(&self.blobs_down),
            bytes_down: g(&self.bytes_down),
            blobs_up: g(&self.blobs_up),
            bytes_up: g(&self.bytes_up),
            micros_lookup: g(&self.micros_lookup),
            micros_down: g(&self.micros_down),
            micros_up: g(&self.micros_up),
        }
    }
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        *self == Snapshot::default()
    }

    pub fn add(&mut self, o: &Snapshot) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.refused += o.refused;
        self.errors += o.errors;
        self.blobs_down += o.blobs_down;
        self.bytes_down += o.bytes_down;
        self.blobs_up += o.blobs_up;
        self.bytes_up += o.bytes_up;
        self.micros_lookup += o.micros_lookup;
        self.micros_down += o.micros_down;
        self.micros_up += o.micros_up;
    }
}
