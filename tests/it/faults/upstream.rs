//! The upstream misbehaves: it refuses a token it issued a moment ago (F8), resets mid-stream (F9), or is slow
//! (F10). Raw upstreams ([`crate::support::raw`]) control every byte; routes may use `http://` upstreams on
//! loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::support::h2_frames::{self, DATA, END_STREAM, GOAWAY, H2Conn, HEADERS, RST_STREAM};
use crate::support::proxy::{TestProxy, World, route_to};
use crate::support::raw;
use crate::support::{expect_proxy_error, get, http_client, request, request_via, trace_init};

// =====================================================================================================================
// F8 — token revoked mid-life (plain 401 from the upstream)
// =====================================================================================================================

/// F8: the upstream refuses the cached token (`401 error="invalid_token"`): the token is dropped and refreshed at
/// most once per 5 s however many requests see the 401 at once; an idempotent request is sent once more with the
/// fresh token; a POST is never replayed.
#[tokio::test(flavor = "multi_thread")]
async fn f08_revoked_token_at_most_one_forced_refresh_per_5s_and_post_not_replayed() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("revoked").await;
    proxy.wait_ready().await;
    assert_eq!(world.aad.count("revoked"), 1);
    let revoked_at = Instant::now();
    world.aad.registry().expire_all();

    // A storm of 20 concurrent GETs that all see the 401: one forced refresh.
    let client = http_client();
    let storm: Vec<_> = (0..20)
        .map(|i| {
            let (client, url) = (client.clone(), proxy.url(&format!("/storm/{i}")));
            tokio::spawn(async move { request_via(&client, Method::GET, &url, &[], "").await })
        })
        .collect();
    let mut statuses = Vec::new();
    for s in storm {
        let (status, headers, _) = s.await.unwrap();
        assert!(
            !headers.contains_key("x-aml-auth-proxy-error"),
            "the upstream's answer, not the proxy's"
        );
        statuses.push(status);
    }
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(
        world.aad.count("revoked"),
        2,
        "exactly one forced refresh for the storm"
    );

    // Within 5 s the fresh token is refused too: no second forced refresh; the POST gets the 401, sent once.
    world.aad.registry().expire_all();
    let (status, headers, _) = request(Method::POST, &proxy.url("/create"), &[], "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let (status, _, _) = request(Method::GET, &proxy.url("/again"), &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        revoked_at.elapsed() < Duration::from_secs(5),
        "too slow to test the window"
    );
    assert_eq!(
        world.aad.count("revoked"),
        2,
        "no second refresh within 5 s"
    );
    let posts = world
        .upstream
        .requests()
        .iter()
        .filter(|r| r.path == "/create")
        .count();
    assert_eq!(posts, 1, "the POST was not replayed");
    proxy.stop().await;
}

/// F8: a POST refused for a revoked token is not replayed, and the token is dropped so the caller's retry works.
#[tokio::test]
async fn f08_revoked_token_on_a_post_drops_the_token_but_never_replays() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("revokedpost").await;
    proxy.wait_ready().await;
    world.aad.registry().expire_all();
    let (status, _, _) = request(Method::POST, &proxy.url("/jobs"), &[], r#"{"a":1}"#).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "not idempotent: the caller decides"
    );
    let posts = || {
        world
            .upstream
            .requests()
            .iter()
            .filter(|r| r.path == "/jobs")
            .count()
    };
    assert_eq!(posts(), 1);
    let (status, _, _) = request(Method::POST, &proxy.url("/jobs"), &[], r#"{"a":1}"#).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the caller's own retry gets a fresh token"
    );
    assert_eq!(posts(), 2);
    assert_eq!(world.aad.count("revokedpost"), 2);
    proxy.stop().await;
}

// =====================================================================================================================
// F9 — upstream resets mid-stream
// =====================================================================================================================

/// The F9 upstream: `/cut-length` (Content-Length 100000, 1000 bytes, reset), `/cut-chunked` (one chunk, reset, no
/// last chunk), `/post-cut` (reads the head and some body, resets; counted), anything else `200 ok` (keep-alive).
async fn resetting_upstream(post_heads: Arc<AtomicUsize>) -> raw::RawServer {
    raw::RawServer::start(move |mut s| {
        let post_heads = post_heads.clone();
        async move {
            while let Some((head, _)) = raw::read_head(&mut s).await {
                match raw::target(&head) {
                    "/cut-length" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n")
                            .await;
                        let _ = s.write_all(&[b'x'; 1000]).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return raw::reset(s);
                    }
                    "/cut-chunked" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n")
                            .await;
                        let _ = s.write_all(&[b'y'; 1000]).await;
                        let _ = s.write_all(b"\r\n").await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return raw::reset(s);
                    }
                    "/post-cut" => {
                        post_heads.fetch_add(1, Ordering::SeqCst);
                        let mut chunk = [0u8; 1024];
                        let _ = s.read(&mut chunk).await;
                        return raw::reset(s);
                    }
                    _ => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            }
        }
    })
    .await
}

/// F9, HTTP/1 callers: an upstream reset mid-body is an abort — the connection closes short of the announced
/// Content-Length, or without the last chunk — never a clean end; the proxy keeps serving.
#[tokio::test]
async fn f09_upstream_reset_mid_body_is_an_abort_for_http1_callers() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = resetting_upstream(Arc::default()).await;
    let proxy = TestProxy::start(&world.config(
        &World::sp("sp", "reset1"),
        &route_to("raw", "/", &upstream.url()),
    ))
    .await;
    proxy.wait_ready().await;
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");

    let cut = raw::exchange(
        proxy.addr(),
        &request("/cut-length"),
        Duration::from_secs(5),
    )
    .await;
    assert!(cut.closed, "the connection was left open: {cut:?}");
    assert_eq!(cut.status(), 200, "{}", cut.head);
    let announced: usize = raw::header(&cut.head, "content-length")
        .expect("Content-Length passed on")
        .parse()
        .unwrap();
    assert_eq!(announced, 100_000);
    assert!(
        cut.body.len() < announced,
        "{} of {announced} bytes: a clean end",
        cut.body.len()
    );

    let cut = raw::exchange(
        proxy.addr(),
        &request("/cut-chunked"),
        Duration::from_secs(5),
    )
    .await;
    assert!(cut.closed, "the connection was left open: {cut:?}");
    assert_eq!(cut.status(), 200, "{}", cut.head);
    assert!(
        raw::header(&cut.head, "transfer-encoding").is_some_and(|v| v.contains("chunked")),
        "{}",
        cut.head
    );
    assert!(
        !cut.body.ends_with(b"0\r\n\r\n"),
        "the last chunk was sent: a truncated stream looks complete"
    );

    // No panic, nothing wedged: the next request works.
    let next = raw::exchange(
        proxy.addr(),
        "GET /next HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(next.status(), 200);
    assert_eq!(next.body, b"ok");
    proxy.stop().await;
}

/// F9, HTTP/2 callers: the stream is reset (`RST_STREAM`), never ended with END_STREAM; the connection and the
/// proxy keep serving (the next stream on the same connection succeeds).
#[tokio::test]
async fn f09_upstream_reset_mid_body_is_rst_stream_for_http2_callers() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = resetting_upstream(Arc::default()).await;
    let proxy = TestProxy::start(&world.config(
        &World::sp("sp", "reset2"),
        &route_to("raw", "/", &upstream.url()),
    ))
    .await;
    proxy.wait_ready().await;
    let authority = format!("127.0.0.1:{}", proxy.addr().port());
    let mut conn = H2Conn::connect(proxy.addr()).await;
    conn.send(&h2_frames::get(1, &authority, "/cut-length", &[]))
        .await;
    let (mut data, mut headers, mut reset) = (0usize, false, false);
    while let Some(f) = conn.next(Duration::from_secs(5)).await {
        if f.stream != 1 {
            assert_ne!(f.kind, GOAWAY, "the whole connection was torn down");
            continue;
        }
        assert_eq!(f.flags & END_STREAM, 0, "stream 1 ended cleanly: {f:?}");
        match f.kind {
            HEADERS => headers = true,
            DATA => data += f.payload.len(),
            RST_STREAM => {
                reset = true;
                break;
            }
            _ => {}
        }
    }
    assert!(headers && reset, "headers {headers}, reset {reset}");
    assert!(data < 100_000, "{data} bytes");

    // The same connection serves the next stream.
    conn.send(&h2_frames::get(3, &authority, "/next", &[]))
        .await;
    let mut ended = false;
    while let Some(f) = conn.next(Duration::from_secs(5)).await {
        if f.stream == 3 && f.flags & END_STREAM != 0 {
            ended = true;
            break;
        }
        assert!(!(f.stream == 3 && f.kind == RST_STREAM), "{f:?}");
    }
    assert!(ended, "stream 3 did not complete");
    // An open HTTP/2 connection would hold the graceful stop until its deadline.
    drop(conn);
    proxy.stop().await;
}

/// F9: a POST whose upstream connection is reset after the request bytes went out is not retried (not even on a
/// reused pooled connection); the caller gets 502 `UpstreamUnavailable`.
#[tokio::test]
async fn f09_a_post_is_never_retried_once_bytes_were_sent() {
    let _trace = trace_init();
    let world = World::new().await;
    let post_heads = Arc::new(AtomicUsize::new(0));
    let upstream = resetting_upstream(post_heads.clone()).await;
    let proxy = TestProxy::start(&world.config(
        &World::sp("sp", "reset3"),
        &route_to("raw", "/", &upstream.url()),
    ))
    .await;
    proxy.wait_ready().await;
    // Warm the pool: the POST goes out on a reused keep-alive connection.
    assert_eq!(get(&proxy.url("/warm")).await.0, StatusCode::OK);
    let body = vec![b'p'; 200_000];
    let answer = request(Method::POST, &proxy.url("/post-cut"), &[], body).await;
    expect_proxy_error(&answer, StatusCode::BAD_GATEWAY, "UpstreamUnavailable");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        post_heads.load(Ordering::SeqCst),
        1,
        "the POST was sent again"
    );
    assert_eq!(get(&proxy.url("/after")).await.0, StatusCode::OK);
    proxy.stop().await;
}

// =====================================================================================================================
// F10 — slow upstream
// =====================================================================================================================

/// F10: no response headers within `upstream_response_timeout` → 504 `UpstreamTimeout` generated by the proxy
/// (fixed JSON body, no token), at the timeout, sent once; a slow but progressing body that outlasts the timeout
/// four times over is not cut.
#[tokio::test]
async fn f10_slow_headers_are_504_and_a_slow_progressing_body_is_not_cut() {
    let _trace = trace_init();
    let world = World::new().await;
    let config = format!(
        "limits:\n  upstream_response_timeout: 300ms\n{}",
        world.config(
            &World::sp("sp", "slowup"),
            &world.route("arm", "/", "sp", "")
        )
    );
    let proxy = TestProxy::start(&config).await;
    proxy.wait_ready().await;
    let asked = Instant::now();
    let answer = get(&proxy.url("/slow-headers?ms=3000")).await;
    let took = asked.elapsed();
    let error = expect_proxy_error(&answer, StatusCode::GATEWAY_TIMEOUT, "UpstreamTimeout");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "504 after {took:?}"
    );
    assert!(!error.to_string().contains("at.slowup"), "{error}");
    assert!(!String::from_utf8_lossy(&answer.2).contains("Bearer"));
    assert_eq!(world.upstream.count(), 1, "sent once, not retried");

    // 12 events 100 ms apart: 1.1 s of body after a prompt head.
    let asked = Instant::now();
    let (status, _, body) = get(&proxy.url("/stream?chunks=12&interval_ms=100")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(asked.elapsed() >= Duration::from_millis(1100));
    let expected: String = (0..12).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&body), expected);
    proxy.stop().await;
}
