//! Hardening against hostile bytes on the wire (SECURITY.md threats 6–10): request smuggling and parsing
//! (HTTP/1.1 over raw TCP, the way hyper's own `tests/server.rs` does it), header limits, slowloris and idle
//! connections, HTTP/2 stream and header-list limits, response splitting by an upstream, and hop-by-hop headers
//! between HTTP/1.1 and HTTP/2.
//!
//! Every test states what a client sees (status, bytes, whether the connection closed and when) and what the
//! upstream saw (every request it received is recorded). All listeners are on 127.0.0.1:0; timing assertions
//! use real time with generous slack.
//!
//! One submodule per area; the raw-socket helpers shared by all of them live here.

// clippy's `allow-*-in-tests` covers `#[test]` functions only, not the helpers below.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a broken expectation must fail the test loudly"
)]

mod framing;
mod hop_by_hop;
mod http2;
mod limits;
mod responses;
mod smuggling;
mod stalls;
mod timeouts;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::proxy::{TestProxy, World, route_to};
use crate::support::{Upstream, raw};

/// How long a raw exchange waits for the proxy to close the connection after the last byte was sent.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// A plain-HTTP/1.1 upstream on loopback that checks `world`'s tokens: nothing between the proxy and it
/// normalises the request, and every request on the wire is recorded separately.
async fn h1_plain_upstream(world: &World) -> Upstream {
    Upstream::builder()
        .http1_only()
        .validate_tokens(world.aad.registry())
        .start()
        .await
}

/// A proxy with one route `/` → `upstream` (credential `sp` in `tenant`) and the extra top-level `limits`
/// block (`""` or `"limits:\n  key: value\n"`).
async fn proxy_to(world: &World, upstream: &str, tenant: &str, limits: &str) -> TestProxy {
    let config = format!(
        "{limits}{}",
        world.config(&World::sp("sp", tenant), &route_to("up", "/", upstream))
    );
    let proxy = TestProxy::start(&config).await;
    proxy.wait_ready().await;
    proxy
}

/// What a raw HTTP/1.x client saw on one connection.
#[derive(Debug)]
struct Wire {
    /// Every byte the proxy sent.
    bytes: Vec<u8>,
    /// The proxy closed the connection (EOF or reset) before the client gave up waiting.
    closed: bool,
    /// From connect to the close (or to giving up).
    elapsed: Duration,
    /// How many of the bytes meant to be sent were written before the proxy closed the connection.
    sent: usize,
}

impl Wire {
    /// The answer as text (lossy), for messages.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status codes of every response on the connection, in order (`HTTP/1.x NNN` status lines).
    fn statuses(&self) -> Vec<u16> {
        let b = &self.bytes;
        (0..(b.len() + 1).saturating_sub(12))
            .filter(|&i| {
                b[i..].starts_with(b"HTTP/1.")
                    && b[i + 8] == b' '
                    && b[i + 9..i + 12].iter().all(u8::is_ascii_digit)
                    && (i == 0 || b[i - 1] != b'"')
            })
            .filter_map(|i| std::str::from_utf8(&b[i + 9..i + 12]).ok()?.parse().ok())
            .collect()
    }

    /// The status of the first response, if there was one.
    fn status(&self) -> Option<u16> {
        self.statuses().first().copied()
    }

    /// The first response parsed: status, headers, body (de-chunked, cut at `Content-Length`).
    fn response(&self) -> (StatusCode, HeaderMap, bytes::Bytes) {
        raw::parse_response(&self.bytes)
    }
}

/// Connects to `addr`, writes `writes` one after the other (`gap` between them; a write the proxy refuses
/// because it already closed ends the sending), then reads until the proxy closes the connection or `wait`
/// has passed since the last write.
async fn exchange(addr: SocketAddr, writes: &[&[u8]], gap: Duration, wait: Duration) -> Wire {
    let start = Instant::now();
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let (mut rd, mut wr) = tcp.into_split();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                // EOF, or a reset (the proxy closed with unread bytes from us): both are a close.
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    });
    let mut sent = 0;
    for (i, chunk) in writes.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        if reader.is_finished() || wr.write_all(chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let abort = reader.abort_handle();
    let closed_after = tokio::time::timeout(wait, reader).await;
    abort.abort();
    let bytes = std::mem::take(&mut *received.lock().unwrap());
    match closed_after {
        Ok(elapsed) => Wire {
            bytes,
            closed: true,
            elapsed: elapsed.expect("reader task"),
            sent,
        },
        Err(_) => Wire {
            bytes,
            closed: false,
            elapsed: start.elapsed(),
            sent,
        },
    }
}

/// Sends `request` in one write and reads until the proxy closes the connection (at most [`CLOSE_WAIT`]).
async fn send_raw(addr: SocketAddr, request: &[u8]) -> Wire {
    exchange(addr, &[request], Duration::ZERO, CLOSE_WAIT).await
}

/// Waits a little for requests still on their way to the upstream, then returns every path it saw.
async fn upstream_paths(upstream: &Upstream) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    upstream.requests().into_iter().map(|r| r.path).collect()
}
