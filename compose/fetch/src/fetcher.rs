//! Getting a remote source into the store: the local index, each mirror,
//! then upstream, every download hashed as it streams and only verified
//! bytes stored.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use kiln_model::SourceHash;
use kiln_store::{Digest, Store};

use crate::error::Attempt;
use crate::place::{Expected, Place};
use crate::{Failure, FetchError, Mirror};

/// How one attempt went wrong: the place's fault (try the next one) or ours
/// (the store or the temporary file; no other place will do better).
enum Tried {
    Failed(Failure),
    Fatal(FetchError),
}

/// HTTP timeouts. There is no overall limit, because a kernel tarball on a
/// slow link legitimately takes minutes; instead every phase and every single
/// read has one, so a dead or stalled server fails the attempt instead of
/// hanging the build.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    connect: Duration,
    read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
        }
    }
}

/// Fetches remote sources into the store, verifying them against their
/// declared hashes.
pub struct Fetcher<'s> {
    store: &'s Store,
    mirrors: Vec<Mirror>,
    offline: bool,
    agent: ureq::Agent,
}

impl<'s> Fetcher<'s> {
    /// `offline` means: never contact a source's own URL, only the local index
    /// and the mirrors (which may themselves be remote).
    pub fn new(store: &'s Store, mirrors: Vec<Mirror>, offline: bool) -> Fetcher<'s> {
        Fetcher::with_timeouts(store, mirrors, offline, Timeouts::default())
    }

    fn with_timeouts(
        store: &'s Store,
        mirrors: Vec<Mirror>,
        offline: bool,
        t: Timeouts,
    ) -> Fetcher<'s> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            // We hash the bytes as sent; ask servers not to re-encode them.
            .accept_encoding("identity")
            .timeout_resolve(Some(t.connect))
            .timeout_connect(Some(t.connect))
            .timeout_send_request(Some(t.connect))
            .timeout_recv_response(Some(t.read))
            .timeout_per_read(Some(t.read))
            .build()
            .into();
        Fetcher {
            store,
            mirrors,
            offline,
            agent,
        }
    }

    pub fn mirrors(&self) -> &[Mirror] {
        &self.mirrors
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    /// Makes sure the bytes with `hash` are in the store and returns their
    /// store digest (blake3).
    ///
    /// Tries, in order: the local index (no I/O beyond one small file and an
    /// existence check when the source was fetched before), every mirror (by
    /// hash, then by the URL's file name), then `url` itself unless offline.
    pub fn fetch(&self, url: &str, hash: &SourceHash) -> Result<Digest, FetchError> {
        let want = Expected::new(url, hash)?;
        if let Some(digest) = self.lookup(&want) {
            return Ok(digest);
        }

        let mut attempts = Vec::new();
        let mut places: Vec<Place> = self
            .mirrors
            .iter()
            .flat_map(|m| m.places(url, &want))
            .collect();
        if self.offline {
            attempts.push(Attempt {
                place: url.to_owned(),
                failure: Failure::SkippedOffline,
            });
        } else {
            match Place::for_url(url) {
                Ok(place) => places.push(place),
                Err(failure) => attempts.push(Attempt {
                    place: url.to_owned(),
                    failure,
                }),
            }
        }

        let mut tried = Vec::new();
        for place in places {
            match self.try_place(&place, &want) {
                Ok(digest) => return Ok(digest),
                Err(Tried::Fatal(err)) => return Err(err),
                Err(Tried::Failed(failure)) => tried.push(Attempt {
                    place: place.to_string(),
                    failure,
                }),
            }
        }
        // Report in the order things were tried: places first, then why
        // upstream itself was not.
        tried.extend(attempts);
        Err(FetchError::Unavailable {
            url: url.to_owned(),
            hash: hash.clone(),
            attempts: tried,
            offline: self.offline,
        })
    }

    fn index_path(&self, want: &Expected) -> PathBuf {
        self.store
            .root()
            .join("sources")
            .join(format!("{}-{}", want.algo, want.hex))
    }

    /// The digest recorded for `want` by an earlier fetch, if its blob is
    /// still in the store. The index is only a cache: anything unreadable in
    /// it just means fetching again.
    fn lookup(&self, want: &Expected) -> Option<Digest> {
        let text = fs::read_to_string(self.index_path(want)).ok()?;
        let digest = Digest::from_hex(text.trim()).ok()?;
        self.store.has(&digest).then_some(digest)
    }

    fn try_place(&self, place: &Place, want: &Expected) -> Result<Digest, Tried> {
        match place {
            Place::File(path) => {
                let mut file = File::open(path).map_err(|e| {
                    Tried::Failed(match e.kind() {
                        io::ErrorKind::NotFound => Failure::NotFound,
                        _ => Failure::Read(e.to_string()),
                    })
                })?;
                self.receive(&mut file, want, None)
            }
            Place::Http(url) => {
                let response = self
                    .agent
                    .get(url)
                    .call()
                    .map_err(|e| Tried::Failed(ureq_failure(e)))?;
                let status = response.status();
                if status.as_u16() == 404 || status.as_u16() == 410 {
                    return Err(Tried::Failed(Failure::NotFound));
                }
                if !status.is_success() {
                    return Err(Tried::Failed(Failure::Http {
                        status: status.as_u16(),
                        reason: status.canonical_reason().unwrap_or("").to_owned(),
                    }));
                }
                // ureq transparently decodes a Content-Encoding; if a server
                // sets one on a tarball the hash will not match, and this
                // says why.
                let note = response
                    .headers()
                    .get("content-encoding")
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.eq_ignore_ascii_case("identity"))
                    .map(|v| format!("the server sent Content-Encoding: {v}"));
                let mut body = response.into_body().into_reader();
                self.receive(&mut body, want, note)
            }
        }
    }

    /// Streams `reader` to a temporary file while hashing it, and puts it in
    /// the store only if the hash is the declared one.
    fn receive(
        &self,
        reader: &mut dyn Read,
        want: &Expected,
        note: Option<String>,
    ) -> Result<Digest, Tried> {
        // The store's temp directory: same file system as the blobs, and
        // swept by the store if we are killed mid-download.
        let mut tmp = self.store.scratch_file(".fetch-").map_err(|source| {
            Tried::Fatal(FetchError::Store {
                what: "creating a download file".into(),
                source,
            })
        })?;
        let mut hasher = want.hasher();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Tried::Failed(Failure::Read(e.to_string()))),
            };
            hasher.update(&buf[..n]);
            tmp.file_mut().write_all(&buf[..n]).map_err(|source| {
                Tried::Fatal(FetchError::Io {
                    path: tmp.path().to_path_buf(),
                    source,
                })
            })?;
        }
        let actual = hasher.finish_hex();
        if actual != want.hex {
            return Err(Tried::Failed(Failure::Mismatch {
                expected: want.to_string(),
                actual: format!("{}:{actual}", want.algo),
                note,
            }));
        }
        let (digest, _size) = self.store.put_file(tmp.path()).map_err(|source| {
            Tried::Fatal(FetchError::Store {
                what: format!("storing {want}"),
                source,
            })
        })?;
        let index = self.index_path(want);
        self.store
            .write_atomic(&index, digest.to_hex().as_bytes())
            .map_err(|source| {
                Tried::Fatal(FetchError::Store {
                    what: format!("writing {}", index.display()),
                    source,
                })
            })?;
        Ok(digest)
    }
}

fn ureq_failure(err: ureq::Error) -> Failure {
    match err {
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Failure::Unreachable("connection refused".into())
        }
        ureq::Error::Io(e) => Failure::Unreachable(e.to_string()),
        ureq::Error::Timeout(which) => Failure::Unreachable(format!("timed out ({which})")),
        ureq::Error::HostNotFound => Failure::Unreachable("host not found".into()),
        ureq::Error::StatusCode(status) => Failure::Http {
            status,
            reason: String::new(),
        },
        other => Failure::Unreachable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts and then says nothing must fail the attempt
    /// after the read timeout, not hang.
    #[test]
    fn stalled_server_times_out() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let hold = std::thread::spawn(move || {
            let conn = listener.accept();
            let _ = wait.recv_timeout(Duration::from_secs(10));
            drop(conn);
        });
        let mirror = Mirror::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let fetcher = Fetcher::with_timeouts(
            &store,
            vec![mirror],
            true,
            Timeouts {
                connect: Duration::from_secs(1),
                read: Duration::from_millis(300),
            },
        );
        let start = std::time::Instant::now();
        let err = fetcher
            .fetch(
                "https://x.invalid/a.tar",
                &SourceHash::Sha256("0".repeat(64)),
            )
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(err.to_string().contains("timed out"), "{err}");
        done.send(()).unwrap();
        hold.join().unwrap();
    }
}
