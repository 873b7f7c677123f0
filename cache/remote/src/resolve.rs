//! The HTTP cache's server addresses, looked up once a minute for both of
//! its ways to talk to it (ureq, and the pipelined HEADs).
//!
//! ureq resolves the host before every request, pooled connection or not,
//! and with a resolve timeout it does so on a new thread: two threads per
//! blob (HEAD, PUT), which cost more than the transfers of small blobs.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a looked-up address is reused.
const TTL: Duration = Duration::from_secs(60);

/// When a host and port were looked up, and what they gave.
type Known = HashMap<(String, u16), (Instant, Vec<SocketAddr>)>;

#[derive(Debug, Default)]
pub struct Addresses {
    known: Mutex<Known>,
}

impl Addresses {
    /// `host`'s addresses. A lookup runs on a thread, so that a resolver
    /// that hangs can't hang a build past `timeout`.
    pub fn lookup(&self, host: &str, port: u16, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
        let key = (host.to_string(), port);
        if let Ok(known) = self.known.lock() {
            if let Some((at, addrs)) = known.get(&key) {
                if at.elapsed() < TTL {
                    return Ok(addrs.clone());
                }
            }
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let target = key.clone();
        std::thread::spawn(move || {
            let _ = tx.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        });
        let addrs = match rx.recv_timeout(timeout) {
            Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
            Ok(Ok(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} has no address"),
                ))
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("looking up {host}: no answer in {timeout:?}"),
                ))
            }
        };
        if let Ok(mut known) = self.known.lock() {
            known.insert(key, (Instant::now(), addrs.clone()));
        }
        Ok(addrs)
    }
}

/// ureq's resolver, answering from [`Addresses`].
#[derive(Debug)]
pub struct CachingResolver(pub Arc<Addresses>);

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (Some(host), Some(port)) = (
            uri.host(),
            uri.port_u16().or(match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            }),
        ) else {
            return Err(ureq::Error::HostNotFound);
        };
        let host = host.trim_matches(['[', ']']);
        let addrs = self
            .0
            .lookup(host, port, *timeout.after)
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => ureq::Error::Timeout(timeout.reason),
                io::ErrorKind::NotFound => ureq::Error::HostNotFound,
                _ => ureq::Error::Io(e),
            })?;
        let mut out = self.empty();
        for a in addrs {
            if out.try_push(a).is_err() {
                break; // ureq keeps 16; more add nothing
            }
        }
        Ok(out)
    }
}
