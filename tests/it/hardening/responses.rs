//! Response splitting: an upstream that sends header bytes no HTTP parser should take
//! at face value — a bare CR, an obs-fold, NUL or other control bytes inside a `WWW-Authenticate` claims
//! challenge — never makes the client see an injected header; the proxy answers 502 `UpstreamUnavailable`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::send_raw;
use crate::support::proxy::{TestProxy, World, route_block};
use crate::support::{expect_proxy_error, trace_init};

/// A plain-HTTP upstream on 127.0.0.1 that answers every request with exactly `response` (raw bytes, written
/// as they are) and then closes the connection. Counts the requests it read.
pub(super) async fn raw_upstream(response: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let response = Arc::new(response);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (seen, response) = (Arc::clone(&seen), Arc::clone(&response));
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.write_all(&response).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, count)
}

/// A proxy with one route per raw upstream: `/c0` → the first, `/c1` → the second, … (prefix stripped).
/// Returns it with each upstream's request counter.
async fn proxy_to_raw_upstreams(
    world: &World,
    tenant: &str,
    responses: &[&[u8]],
) -> (TestProxy, Vec<Arc<AtomicUsize>>) {
    let mut routes = String::new();
    let mut counts = Vec::new();
    for (i, response) in responses.iter().enumerate() {
        let (addr, count) = raw_upstream(response.to_vec()).await;
        routes.push_str(&route_block(
            &format!("c{i}"),
            &format!("/c{i}"),
            &format!("http://{addr}"),
            true,
            "sp",
            "",
        ));
        counts.push(count);
    }
    let proxy = TestProxy::start(&world.config(&World::sp("sp", tenant), &routes)).await;
    proxy.wait_ready().await;
    (proxy, counts)
}

/// The response head (status line and header lines) of a raw answer.
fn head_of(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    &bytes[..end]
}

/// Asserts a head holds only visible ASCII, spaces and tabs between its CRLF line ends.
#[track_caller]
fn assert_clean_head(head: &[u8]) {
    let text = String::from_utf8_lossy(head);
    let mut rest = head;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(rest.len());
        let line = &rest[..end];
        assert!(
            line.iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)),
            "control byte or bare CR/LF in {text:?}"
        );
        rest = &rest[(end + 2).min(rest.len())..];
    }
}

#[tokio::test]
async fn upstream_header_bytes_that_could_split_the_response_are_502() {
    let _trace = trace_init();
    let world = World::new().await;
    let cases: &[(&str, &[u8])] = &[
        (
            "bare CR inside a value",
            b"HTTP/1.1 200 OK\r\nX-Bad: a\rSet-Cookie: injected\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "obs-fold continuation line",
            b"HTTP/1.1 200 OK\r\nX-Bad: a\r\n Set-Cookie: injected\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "NUL inside a value",
            b"HTTP/1.1 200 OK\r\nX-Bad: a\0Set-Cookie: injected\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "whitespace before the colon",
            b"HTTP/1.1 200 OK\r\nSet-Cookie : injected\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "claims challenge with a control byte, then CRLF and Set-Cookie",
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"insufficient_claims\", \
              claims=\"eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZX19fQ==\x01\r\n\
              Set-Cookie: injected\"\r\nContent-Length: 2\r\n\r\nno",
        ),
        (
            "claims challenge with NUL",
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"insufficient_claims\", \
              claims=\"eyJhY2Nl\0c3NfdG9rZW4iOnt9fQ==\"\r\nContent-Length: 2\r\n\r\nno",
        ),
        (
            "claims challenge with DEL",
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"insufficient_claims\", \
              claims=\"eyJhY2Nl\x7fc3NfdG9rZW4iOnt9fQ==\"\r\nContent-Length: 2\r\n\r\nno",
        ),
    ];
    let responses: Vec<&[u8]> = cases.iter().map(|(_, r)| *r).collect();
    let (proxy, counts) = proxy_to_raw_upstreams(&world, "split", &responses).await;
    for (i, (name, _)) in cases.iter().enumerate() {
        let request =
            format!("GET /c{i}/r HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let wire = send_raw(proxy.addr(), request.as_bytes()).await;
        let answer = wire.response();
        let text = wire.text();
        assert!(
            !text.to_ascii_lowercase().contains("injected"),
            "{name}: injected bytes reached the client: {text:?}"
        );
        assert!(!answer.1.contains_key("set-cookie"), "{name}: {text:?}");
        assert!(
            !answer.1.contains_key("www-authenticate"),
            "{name}: {text:?}"
        );
        assert_clean_head(head_of(&wire.bytes));
        expect_proxy_error(&answer, StatusCode::BAD_GATEWAY, "UpstreamUnavailable");
        assert_eq!(
            counts[i].load(Ordering::SeqCst),
            1,
            "{name}: the upstream was asked once"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn claims_challenge_with_control_characters_in_its_claims_is_never_reflected_raw() {
    let _trace = trace_init();
    // Well-formed header bytes whose base64 claims decode (1) to JSON carrying a NUL, CR and LF, escaped as
    // JSON allows: a claims challenge, answered with one new token and one replay, after which the second 401
    // is passed through; (2) to text with raw control bytes, which is not JSON and so not a claims challenge:
    // passed through at once. Either way the challenge reaches the client exactly as the upstream sent it,
    // still base64, and the client's head holds no control byte.
    use base64::Engine;
    let world = World::new().await;
    let escaped =
        br#"{"access_token":{"nbf":{"essential":true,"value":"1\u0000\r\nSet-Cookie: injected"}}}"#;
    let raw = b"{\"access_token\":{\"nbf\":{\"essential\":true,\"value\":\"1\0\r\nSet-Cookie: injected\"}}}";
    let challenge = |claims: &[u8]| {
        let claims = base64::engine::general_purpose::STANDARD.encode(claims);
        format!("Bearer realm=\"\", error=\"insufficient_claims\", claims=\"{claims}\"")
    };
    let response = |challenge: &str| {
        format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 2\r\n\r\nno")
            .into_bytes()
    };
    let cases = [(challenge(escaped), 2), (challenge(raw), 1)];
    let responses: Vec<Vec<u8>> = cases.iter().map(|(c, _)| response(c)).collect();
    let refs: Vec<&[u8]> = responses.iter().map(Vec::as_slice).collect();
    let (proxy, counts) = proxy_to_raw_upstreams(&world, "ctlclaims", &refs).await;
    for (i, (challenge, asked)) in cases.iter().enumerate() {
        let request =
            format!("GET /c{i}/r HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let wire = send_raw(proxy.addr(), request.as_bytes()).await;
        let (status, headers, _) = wire.response();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", wire.text());
        assert_clean_head(head_of(&wire.bytes));
        assert!(!headers.contains_key("set-cookie"), "{}", wire.text());
        let got: Vec<_> = headers.get_all("www-authenticate").iter().collect();
        assert_eq!(got, [challenge.as_str()], "case {i}");
        assert_eq!(
            counts[i].load(Ordering::SeqCst),
            *asked,
            "case {i}: upstream calls"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
#[ignore = "hyper 1.12's client takes a bare LF as a line end in upstream response heads (RFC 9112 §2.2 MAY); no setting refuses it"]
async fn bare_lf_inside_an_upstream_header_never_becomes_a_header() {
    let _trace = trace_init();
    // Today: 200, and the client gets `x-bad: a` and `set-cookie: injected` as two well-formed header lines.
    let world = World::new().await;
    let response: &[u8] =
        b"HTTP/1.1 200 OK\r\nX-Bad: a\nSet-Cookie: injected\r\nContent-Length: 2\r\n\r\nok";
    let (proxy, _) = proxy_to_raw_upstreams(&world, "barelfresp", &[response]).await;
    let wire = send_raw(
        proxy.addr(),
        b"GET /c0/r HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (_, headers, _) = wire.response();
    assert!(!headers.contains_key("set-cookie"), "{}", wire.text());
    expect_proxy_error(
        &wire.response(),
        StatusCode::BAD_GATEWAY,
        "UpstreamUnavailable",
    );
    proxy.stop().await;
}
