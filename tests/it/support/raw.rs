//! Raw HTTP/1.1 over loopback TCP, written and read by hand, for tests that must control every byte or see every
//! cancellation: an upstream that resets mid-body, a caller that leaves mid-download.
//!
//! - [`RawServer`] serves each accepted connection with a test's own function.
//! - [`read_head`], [`target`] and [`header`] read a request or response head; [`reset`] closes with a TCP reset.
//! - [`exchange`] sends one request on a fresh connection and reads until the connection ends; [`send`] does the
//!   same and parses the answer with [`parse_response`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

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

/// Sends `head` (a complete HTTP/1.x request head, `\r\n` line ends, blank line included) byte for byte on a
/// fresh TCP connection, reads until the server closes the connection (send `Connection: close` or use
/// HTTP/1.0), and parses the answer. The body is de-chunked and cut at `Content-Length`.
///
/// For requests that a hyper client would normalise (duplicate or hop-by-hop headers, odd request targets).
pub(crate) async fn send(addr: SocketAddr, head: &str) -> (StatusCode, HeaderMap, Bytes) {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(head.as_bytes()).await.expect("write request");
        let mut answer = Vec::new();
        // A reset after the answer was written still leaves the answer readable.
        let _ = tcp.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the raw exchange did not finish within 10 s");
    parse_response(&answer)
}

/// Parses the first HTTP/1.x response in `answer`: status, headers, and the body, de-chunked and cut at
/// `Content-Length`.
pub(crate) fn parse_response(answer: &[u8]) -> (StatusCode, HeaderMap, Bytes) {
    let shown = || String::from_utf8_lossy(answer).into_owned();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {:?}", shown()));
    let head = std::str::from_utf8(&answer[..end]).expect("UTF-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("header line");
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
            HeaderValue::from_str(value.trim()).expect("header value"),
        );
    }
    let mut body = answer[end + 4..].to_vec();
    let chunked = headers
        .get(http::header::TRANSFER_ENCODING)
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if chunked {
        body = dechunk(&body);
    } else if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    (status, headers, Bytes::from(body))
}

/// Decodes a complete chunked body (no trailers expected).
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
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
