//! Upstream connections, as the upstream sees them: a keep-alive caller's requests share one upstream
//! connection; callers that connect per request still reuse pooled ones; HTTP/2 upstreams multiplex; a
//! connection the upstream closed is never used again; a burst against an unreachable upstream fails fast; one
//! connection carries the proxy's own exchanges and hyper's in turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::proxy::{TestProxy, World, route_block};
use crate::support::{Upstream, get, h2_burst, http_client, request_via, trace_init};

/// A proxy whose only route `/` goes to `upstream`.
async fn proxy_to(world: &World, upstream: &str, tenant: &str) -> TestProxy {
    let routes = route_block("up", "/", upstream, false, "sp", "");
    TestProxy::start(&world.config(&World::sp("sp", tenant), &routes)).await
}

/// An HTTP/1.1-only TLS upstream checking `world`'s tokens.
async fn h1_upstream(world: &World, keep_alive: bool) -> Upstream {
    let builder = Upstream::builder()
        .tls(&world.ca)
        .http1_only()
        .validate_tokens(world.aad.registry());
    let builder = if keep_alive {
        builder
    } else {
        builder.no_keep_alive()
    };
    builder.start().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_caller_uses_one_upstream_connection() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_upstream(&world, true).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "affinity").await;
    // One caller connection, used sequentially.
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut caller, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);

    for i in 0..50 {
        caller.ready().await.unwrap();
        let req = Request::get(format!("/item/{i}"))
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = caller.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        resp.into_body().collect().await.unwrap();
    }

    assert_eq!(upstream.count(), 50);
    assert_eq!(upstream.rejected_count(), 0);
    assert_eq!(
        upstream.connections(),
        1,
        "50 sequential requests on one caller connection"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_callers_do_not_each_pin_an_upstream_connection() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_upstream(&world, true).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "manyidle").await;
    let callers_n = aml_auth_proxy::proxy::client::MAX_HELD_PER_ORIGIN + 72;
    // Each caller connection makes one request, one caller at a time, and stays open (idle) afterwards.
    let mut callers = Vec::new();
    for i in 0..callers_n {
        let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut caller, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("/item/{i}"))
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = caller.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "caller {i}");
        resp.into_body().collect().await.unwrap();
        callers.push(caller);
    }
    assert_eq!(upstream.count(), callers_n);
    assert_eq!(upstream.rejected_count(), 0);
    // The first MAX_HELD callers keep theirs; later ones hand theirs back after each exchange, so the next
    // caller reuses it (a caller that is quicker than the hand-back opens one more: allow a few).
    assert!(
        upstream.connections() <= aml_auth_proxy::proxy::client::MAX_HELD_PER_ORIGIN + 8,
        "{} upstream connections for {callers_n} idle callers",
        upstream.connections()
    );
    // Every caller can still use its connection.
    for (i, caller) in callers.iter_mut().enumerate().step_by(37) {
        caller.ready().await.unwrap();
        let req = Request::get(format!("/again/{i}"))
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = caller.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "caller {i} again");
        resp.into_body().collect().await.unwrap();
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_that_connect_per_request_still_reuse_upstream_connections() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_upstream(&world, true).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "pooled").await;

    for i in 0..20 {
        // A fresh client each time: a new caller connection, closed when the client goes.
        let (status, _, _) = get(&proxy.url(&format!("/item/{i}"))).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
    }

    assert_eq!(upstream.count(), 20);
    // The upstream connection goes back to the pool when its caller connection closes, which can race the next
    // caller's first request; most requests must still have reused a connection.
    assert!(
        upstream.connections() <= 5,
        "20 caller connections made {} upstream connections",
        upstream.connections()
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_closes_each_connection_gets_a_new_one_every_time() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_upstream(&world, false).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "closing").await;
    let client = http_client();

    for i in 0..10 {
        let url = proxy.url(&format!("/item/{i}"));
        let (status, _, body) = request_via(&client, Method::GET, &url, &[], Bytes::new()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    assert_eq!(upstream.count(), 10);
    assert_eq!(upstream.connections(), 10);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_upstream_carries_a_burst_on_one_connection() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("multiplex").await;

    let answers = h2_burst(&proxy.url("/subscriptions"), 4, 50).await;

    assert_eq!(answers.len(), 200);
    assert!(
        answers
            .iter()
            .all(|(status, _, _)| *status == StatusCode::OK)
    );
    assert_eq!(world.upstream.count(), 200);
    assert_eq!(
        world.upstream.connections(),
        1,
        "200 concurrent requests to an h2 upstream share one connection"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_against_an_unreachable_upstream_fails_fast_with_502() {
    let _trace = trace_init();
    let world = World::new().await;
    // A port nothing listens on: bind, note the port, close.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = proxy_to(&world, &format!("https://127.0.0.1:{port}"), "unreachable").await;

    let url = proxy.url("/x");
    let answers = tokio::time::timeout(Duration::from_secs(20), h2_burst(&url, 2, 50))
        .await
        .expect("every request of the burst was answered");

    assert_eq!(answers.len(), 100);
    for (status, headers, body) in &answers {
        assert_eq!(
            *status,
            StatusCode::BAD_GATEWAY,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(headers["x-aml-auth-proxy-error"], "UpstreamUnavailable");
    }
    proxy.stop().await;
}

/// A plain-HTTP upstream written by hand, so that the answer's framing is chosen per request: `/chunked` is
/// answered chunked (with a trailer, which ends the body), everything else with a length (echoing the request body's size). It counts
/// connections, and closes a connection when told to by `/close-later` (after answering it).
async fn raw_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some((target, body_len)) = read_request(&mut tcp, &mut buf).await else {
                        return;
                    };
                    let answer = if target == "/chunked" {
                        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-done\r\n\r\n\
                         5\r\nhello\r\n6\r\n world\r\n0\r\nx-done: yes\r\n\r\n"
                            .to_owned()
                    } else {
                        let body = format!("{target} {body_len}");
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    tcp.write_all(answer.as_bytes()).await.unwrap();
                    if target == "/close-later" {
                        return;
                    }
                }
            });
        }
    });
    (url, connections)
}

/// Reads one request head and its `Content-Length` body; its target and body size, or `None` at the end.
async fn read_request(
    tcp: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, usize)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let target = head.split(' ').nth(1)?.to_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + len {
                let mut more = [0u8; 65536];
                let n = tcp.read(&mut more).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&more[..n]);
            }
            buf.drain(..end + 4 + len);
            return Some((target, len));
        }
        let mut more = [0u8; 65536];
        let n = tcp.read(&mut more).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&more[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_upstream_connection_carries_plain_chunked_and_streamed_exchanges_in_turn() {
    let _trace = trace_init();
    let world = World::new().await;
    let (upstream, connections) = raw_upstream().await;
    let proxy = proxy_to(&world, &upstream, "mixed").await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut caller, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut send = async |method: Method, path: &str, body: Vec<u8>| {
        caller.ready().await.unwrap();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = caller.send_request(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    };

    // The proxy's own exchange, then hyper's for a chunked answer, then for a body too large to be read whole
    // first, then the proxy's own again: all on the one upstream connection.
    let (status, body) = send(Method::GET, "/first", Vec::new()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"/first 0"[..]));
    let (status, body) = send(Method::GET, "/chunked", Vec::new()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello world"[..]));
    let (status, body) = send(Method::POST, "/upload", vec![b'x'; 40_000]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"/upload 40000"[..]));
    let (status, body) = send(Method::POST, "/small", vec![b'x'; 300]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"/small 300"[..]));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );

    // The upstream closes the connection after this answer; the next request finds it closed while idle and
    // takes a new one instead of failing.
    let (status, _) = send(Method::GET, "/close-later", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = send(Method::GET, "/after", Vec::new()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"/after 0"[..]));
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    proxy.stop().await;
}
