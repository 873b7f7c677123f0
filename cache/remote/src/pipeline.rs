//! Many HEAD requests on one plain-HTTP connection, pipelined (RFC 9112,
//! section 9.3.2): written at once and answered in order. Asking a WebDAV
//! cache which of a closure's few hundred blobs it lacks then costs a few
//! round trips, not one per blob; one HEAD per blob cost a push more than
//! its uploads of small blobs. ureq does not pipeline, and HEAD answers
//! carry no body, so reading them needs only each header block's end.
//!
//! Servers may close a pipelined connection at any point (nginx does after
//! `keepalive_requests`); what was not answered is asked again on a new
//! connection. A server that answers nothing, or not in HTTP, is
//! `Unsupported`, and the caller asks blob by blob instead.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use super::resolve::Addresses;

/// Requests per connection: their bytes (about 100 each) and their answers'
/// (about 250) stay well inside the socket buffers, so writing them all
/// before reading can't deadlock, and under nginx's default of 1000
/// requests per connection.
const PER_CONNECTION: usize = 64;
/// An answer's header block bigger than this is not a cache's HEAD answer.
const MAX_HEADERS: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Connecting, writing or reading failed or timed out: the server is
    /// not usable now.
    #[error("{0}")]
    Unavailable(String),
    /// The server answered, but not as pipelining needs.
    #[error("{0}")]
    Unsupported(String),
}

pub struct Pipeline {
    /// `host:port` as the URL has it, for the Host header.
    authority: String,
    host: String,
    port: u16,
    timeout: Duration,
    user_agent: String,
    /// Shared with the ureq agent's resolver.
    addresses: Arc<Addresses>,
}

impl Pipeline {
    /// A pipeline to `base`'s server, for plain `http://` URLs without
    /// credentials in them; `None` for others (TLS and authentication are
    /// ureq's business, and they get one HEAD per blob).
    pub fn for_base(
        base: &str,
        timeout: Duration,
        user_agent: &str,
        addresses: Arc<Addresses>,
    ) -> Option<Pipeline> {
        let uri: ureq::http::Uri = base.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        Some(Pipeline {
            authority: authority.as_str().to_string(),
            host: authority.host().trim_matches(['[', ']']).to_string(),
            port: authority.port_u16().unwrap_or(80),
            timeout,
            user_agent: user_agent.to_string(),
            addresses,
        })
    }

    /// The status of `HEAD <path>` for each of `paths` (absolute, already
    /// escaped), in order, over up to `connections` connections at once.
    pub fn head_all(
        &self,
        paths: &[String],
        connections: usize,
    ) -> Result<Vec<u16>, PipelineError> {
        let chunks: Vec<&[String]> = paths.chunks(PER_CONNECTION).collect();
        let mut statuses = Vec::with_capacity(paths.len());
        for r in super::parallel(&chunks, connections, |chunk| self.head_chunk(chunk)) {
            statuses.extend(r?);
        }
        Ok(statuses)
    }

    fn head_chunk(&self, paths: &[String]) -> Result<Vec<u16>, PipelineError> {
        let mut statuses = Vec::with_capacity(paths.len());
        while statuses.len() < paths.len() {
            let rest = &paths[statuses.len()..];
            let answered = self.head_on_one_connection(rest)?;
            if answered.is_empty() {
                return Err(PipelineError::Unsupported(format!(
                    "{} closed a connection without answering a pipelined HEAD",
                    self.authority
                )));
            }
            statuses.extend(answered);
        }
        Ok(statuses)
    }

    /// Sends every request in `paths`, then reads answers until all came
    /// or the server closed the connection: the statuses of those answered.
    fn head_on_one_connection(&self, paths: &[String]) -> Result<Vec<u16>, PipelineError> {
        let unavailable = |what: &str, e: io::Error| {
            PipelineError::Unavailable(format!("{what} {}: {e}", self.authority))
        };
        let mut stream = self.connect()?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| unavailable("setting up a connection to", e))?;
        let mut requests = String::with_capacity(paths.len() * 128);
        for path in paths {
            requests.push_str(&format!(
                "HEAD {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\n\r\n",
                self.authority, self.user_agent
            ));
        }
        stream
            .write_all(requests.as_bytes())
            .map_err(|e| unavailable("writing to", e))?;
        let mut statuses = Vec::with_capacity(paths.len());
        let mut buf: Vec<u8> = Vec::with_capacity(paths.len() * 256);
        let mut start = 0;
        let mut chunk = vec![0u8; 64 << 10];
        let mut closing = false;
        while statuses.len() < paths.len() && !closing {
            // Every complete header block in what has arrived.
            while let Some(end) = find(&buf[start..], b"\r\n\r\n") {
                let block = &buf[start..start + end];
                start += end + 4;
                let (status, close) = parse_head(block).ok_or_else(|| {
                    PipelineError::Unsupported(format!(
                        "{} answered a HEAD with something that is not HTTP/1.1",
                        self.authority
                    ))
                })?;
                if (100..200).contains(&status) {
                    continue;
                }
                statuses.push(status);
                if close || statuses.len() == paths.len() {
                    closing = close;
                    break;
                }
            }
            if statuses.len() == paths.len() || closing {
                break;
            }
            if buf.len() - start > MAX_HEADERS {
                return Err(PipelineError::Unsupported(format!(
                    "{} sent an answer with over {MAX_HEADERS} bytes of headers",
                    self.authority
                )));
            }
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A reset after some answers: the server gave up on the
                // rest (like a close); they are asked again.
                Err(e) if !statuses.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => 0,
                // Silence after some answers: a server that answers the
                // first request and ignores the pipelined rest.
                Err(e)
                    if !statuses.is_empty()
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                {
                    return Err(PipelineError::Unsupported(format!(
                        "{} stopped answering pipelined HEADs after {}",
                        self.authority,
                        statuses.len()
                    )))
                }
                Err(e) => return Err(unavailable("reading from", e)),
            };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(statuses)
    }

    fn connect(&self) -> Result<TcpStream, PipelineError> {
        let unavailable = |e: io::Error| {
            PipelineError::Unavailable(format!("connecting to {}: {e}", self.authority))
        };
        let addrs = self
            .addresses
            .lookup(&self.host, self.port, self.timeout)
            .map_err(unavailable)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(unavailable(last))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status of an answer's header block, and whether the server will
/// close the connection after it.
fn parse_head(block: &[u8]) -> Option<(u16, bool)> {
    let text = std::str::from_utf8(block).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            close = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    Some((status, close))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    /// A server that answers each HEAD for `/have/...` with 200 and others
    /// with 404, in order; `per_connection` answers, then it closes (with
    /// `Connection: close` on the last when `say_close`), or, when
    /// `then_silent`, it holds the connection without a word.
    fn server(per_connection: usize, say_close: bool, then_silent: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut answered = 0;
                    let mut buf = [0u8; 4096];
                    while answered < per_connection {
                        let Ok(n) = conn.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = find(&seen, b"\r\n\r\n") {
                            let request = String::from_utf8_lossy(&seen[..end]).to_string();
                            seen.drain(..end + 4);
                            answered += 1;
                            let status = if request.contains(" /have/") {
                                "200 OK"
                            } else {
                                "404 Not Found"
                            };
                            let close = if say_close && answered == per_connection {
                                "Connection: close\r\n"
                            } else {
                                ""
                            };
                            let answer =
                                format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n{close}\r\n");
                            let _ = conn.write_all(answer.as_bytes());
                            if answered == per_connection {
                                break;
                            }
                        }
                    }
                    if then_silent {
                        std::thread::sleep(Duration::from_secs(5));
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn paths(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    format!("/have/{i}")
                } else {
                    format!("/lack/{i}")
                }
            })
            .collect()
    }

    fn expected(n: usize) -> Vec<u16> {
        (0..n).map(|i| if i % 3 == 0 { 200 } else { 404 }).collect()
    }

    fn pipeline(url: &str) -> Pipeline {
        Pipeline::for_base(url, Duration::from_millis(500), "kiln-test", Arc::default())
            .expect("plain http")
    }

    #[test]
    fn many_heads_are_answered_in_order_across_connections() {
        // Closing after 5 answers, with or without saying so: what was not
        // answered is asked again on a new connection.
        for say_close in [true, false] {
            let p = pipeline(&server(5, say_close, false));
            assert_eq!(p.head_all(&paths(150), 3).expect("answered"), expected(150));
        }
        let p = pipeline(&server(usize::MAX, false, false));
        assert_eq!(p.head_all(&paths(300), 2).expect("answered"), expected(300));
    }

    #[test]
    fn a_server_that_does_not_pipeline_is_unsupported_not_down() {
        let p = pipeline(&server(1, false, true));
        let t = Instant::now();
        match p.head_all(&paths(10), 1) {
            Err(PipelineError::Unsupported(why)) => assert!(why.contains("after 1"), "{why}"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn no_server_is_unavailable() {
        let free = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", free.local_addr().expect("addr"));
        drop(free);
        assert!(matches!(
            pipeline(&url).head_all(&paths(3), 1),
            Err(PipelineError::Unavailable(_))
        ));
    }

    #[test]
    fn only_plain_http_without_credentials_is_pipelined() {
        let t = Duration::from_secs(1);
        assert!(Pipeline::for_base("https://cache.example/kiln", t, "k", Arc::default()).is_none());
        assert!(
            Pipeline::for_base("http://me:pw@cache.example/kiln", t, "k", Arc::default()).is_none()
        );
        let p = Pipeline::for_base("http://[::1]:8080/kiln", t, "k", Arc::default()).expect("http");
        assert_eq!(
            (p.host.as_str(), p.port, p.authority.as_str()),
            ("::1", 8080, "[::1]:8080")
        );
    }

    #[test]
    fn reads_status_and_close() {
        assert_eq!(
            parse_head(b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Length: 153"),
            Some((404, false))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nConnection: close"),
            Some((200, true))
        );
        assert_eq!(parse_head(b"HTTP/1.0 200 OK"), Some((200, true)));
        assert_eq!(
            parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive"),
            Some((200, false))
        );
        assert_eq!(parse_head(b"<html>"), None);
        assert_eq!(parse_head(b"HTTP/1.1 abc OK"), None);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nno colon"), None);
    }
}
