//! Raw HTTP/1.1 over loopback TCP, written and read by hand, for tests that must control every byte or see every
//! cancellation: an upstream that resets mid-body, a caller that leaves mid-download.
//!
//! - [`RawServer`] serves each accepted connection with a test's own function.
//! - [`read_head`], [`target`] and [`header`] read a request or response head; [`reset`] closes with a TCP reset.
//! - [`exchange`] sends one request on a fresh connection and reads until the connection ends.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A listener on 127.0.0.1:0 serving each connection with a function on its own task; aborted on drop.
pub(crate) struct RawServer {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

/// What a raw HTTP/1 client read until the connection ended.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
    /// The connection ended (EOF or reset) rather than the read timing out.
    pub(crate) closed: bool,
}

/// Reads an HTTP/1 head (through the blank line); returns it and any body bytes read with it. `None` if the peer
/// closed first.
pub(crate) async fn read_head(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The request target of a head (`GET /x HTTP/1.1` → `/x`).
pub(crate) fn target(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or_default()
}

/// A header's value in a head (case-insensitive name).
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Closes `s` with a TCP reset (SO_LINGER 0) instead of a FIN.
pub(crate) fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

/// Sends `request` on a fresh connection to `addr` and reads until the connection ends (at most `limit`).
pub(crate) async fn exchange(addr: SocketAddr, request: &str, limit: Duration) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = Instant::now() + limit;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(all.len(), |p| p + 4);
    Answer {
        head: String::from_utf8_lossy(&all[..end]).into_owned(),
        body: all[end..].to_vec(),
        closed,
    }
}

// === impl RawServer ===

impl RawServer {
    /// Binds 127.0.0.1:0 and serves every connection (with `TCP_NODELAY`) with `serve`.
    pub(crate) async fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(serve(s));
            }
        });
        Self { addr, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Answer ===

impl Answer {
    /// The status code of the answer (0 if there was none).
    pub(crate) fn status(&self) -> u16 {
        self.head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}
