//! The request path end to end, as a user of the proxy sees it: status, headers, JSON error bodies, bytes
//! delivered, and how many requests reached the upstream and the token endpoint.
//!
//! One submodule per area; the helpers shared by all of them live here.

// clippy's `allow-*-in-tests` covers `#[test]` functions only, not the helpers below.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a broken expectation must fail the test loudly"
)]

mod admission;
mod connections;
mod failures;
mod headers;
mod redirects;
mod routing;
mod streaming;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::proxy::World;
use crate::support::{Upstream, get, json_body, request, trace_init};

/// The header naming the error code on every proxy-generated answer.
const ERROR_HEADER: &str = "x-aml-auth-proxy-error";

/// A TLS upstream trusted by `world`'s proxies, checking `world`'s tokens, speaking HTTP/1.1 only (ALPN
/// `http/1.1`), so hop-by-hop headers really travel on the wire.
async fn h1_upstream(world: &World) -> Upstream {
    Upstream::builder()
        .tls(&world.ca)
        .http1_only()
        .validate_tokens(world.aad.registry())
        .start()
        .await
}

/// Asserts that no `Access-Control-*` header is present: the proxy does no CORS.
#[track_caller]
fn assert_no_cors(headers: &HeaderMap) {
    let cors: Vec<&str> = headers
        .keys()
        .map(HeaderName::as_str)
        .filter(|n| n.starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "CORS headers in a response: {cors:?}");
}

/// Asserts a proxy-generated answer: `status`, `content-type: application/json`,
/// `x-aml-auth-proxy-error: <code>`, and a body `{"error":{"code":<code>,"message":<non-empty string>,…}}`.
/// Returns the `error` object.
#[track_caller]
fn assert_error(
    (status, headers, body): &(StatusCode, HeaderMap, Bytes),
    want_status: StatusCode,
    code: &str,
) -> Value {
    let text = String::from_utf8_lossy(body);
    assert_eq!(*status, want_status, "{code}: {text}");
    assert_eq!(
        headers.get(ERROR_HEADER).map(HeaderValue::as_bytes),
        Some(code.as_bytes()),
        "{ERROR_HEADER} of {text}"
    );
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes);
    assert_eq!(content_type, Some(&b"application/json"[..]), "{text}");
    let error = json_body(body)["error"].clone();
    assert_eq!(error["code"], code, "{text}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message missing: {text}"
    );
    assert_no_cors(headers);
    error
}

/// Sends `head` (a complete HTTP/1.x request head, `\r\n` line ends, blank line included) byte for byte on a
/// fresh TCP connection, reads until the server closes the connection (send `Connection: close` or use
/// HTTP/1.0), and parses the answer. The body is de-chunked and cut at `Content-Length`.
///
/// For requests that a hyper client would normalise (duplicate or hop-by-hop headers, odd request targets).
async fn raw(addr: SocketAddr, head: &str) -> (StatusCode, HeaderMap, Bytes) {
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

/// Parses one HTTP/1.x response.
fn parse_response(answer: &[u8]) -> (StatusCode, HeaderMap, Bytes) {
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

#[tokio::test]
async fn injects_the_token_rewrites_host_and_keeps_path_and_query() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("ok").await;
    let (status, _, body) =
        get(&proxy.url("/subscriptions/abc/resourceGroups?api-version=2024-04-01&$top=5")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let echo = json_body(&body);
    assert_eq!(echo["path"], "/subscriptions/abc/resourceGroups");
    assert_eq!(echo["query"], "api-version=2024-04-01&$top=5");
    let seen = world.upstream.last_request().unwrap();
    assert!(seen.token.as_deref().unwrap().starts_with("at.ok."));
    assert_eq!(seen.rejection, None);
    let host = seen
        .headers
        .get("host")
        .map(|h| h.to_str().unwrap().to_owned());
    let authority = world.upstream.addr().to_string();
    // HTTP/2 upstreams carry the authority in :authority; HTTP/1.1 in Host. Either way it is the upstream's.
    assert!(
        host.as_ref().is_none_or(|h| *h == authority),
        "host header {host:?}"
    );
    assert_eq!(world.aad.count("ok"), 1);
    let _ = request(Method::GET, &proxy.url("/x"), &[], "").await;
    proxy.stop().await;
}
