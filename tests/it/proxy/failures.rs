//! Upstream failures and overload: 502 `UpstreamUnavailable` (closed port, untrusted
//! certificate), 504 `UpstreamTimeout`, a body cut mid-way is never passed off as complete, and 503
//! `Overloaded` beyond `max_in_flight`.

use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};

use super::{assert_error, h1_upstream};
use crate::support::proxy::{TestProxy, World, route_block};
use crate::support::{TestCa, Upstream, http_client, json_body, request, trace_init};

#[tokio::test]
async fn upstream_error_statuses_are_passed_through_not_replaced() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("passthru").await;
    for code in [400_u16, 403, 404, 409, 429, 500, 502, 503, 504] {
        let (status, headers, body) =
            request(Method::GET, &proxy.url(&format!("/status/{code}")), &[], "").await;
        assert_eq!(status.as_u16(), code);
        assert!(
            !headers.contains_key(super::ERROR_HEADER),
            "{code}: {headers:?}"
        );
        assert_eq!(json_body(&body), serde_json::json!({"status": code}));
    }
    assert_eq!(
        world.upstream.count(),
        9,
        "each request reached the upstream once"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn closed_upstream_port_is_502_upstream_unavailable() {
    let _trace = trace_init();
    let world = World::new().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let routes = route_block("gone", "/", &format!("https://{closed}"), false, "sp", "");
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "closed"), &routes)).await;
    for method in [Method::GET, Method::POST] {
        let answer = request(method, &proxy.url("/x"), &[], "payload").await;
        let error = assert_error(&answer, StatusCode::BAD_GATEWAY, "UpstreamUnavailable");
        assert!(
            !error.to_string().contains("at.closed"),
            "no token in the error: {error}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_502_and_gets_no_request() {
    let _trace = trace_init();
    let world = World::new().await;
    let untrusted = TestCa::untrusted();
    let upstream = Upstream::builder()
        .tls(&untrusted)
        .validate_tokens(world.aad.registry())
        .start()
        .await;
    let routes = route_block("mitm", "/", &upstream.base_url(), false, "sp", "");
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "untrusted"), &routes)).await;
    let answer = request(Method::GET, &proxy.url("/secret"), &[], "").await;
    assert_error(&answer, StatusCode::BAD_GATEWAY, "UpstreamUnavailable");
    assert_eq!(
        upstream.count(),
        0,
        "no request (and so no token) reached the upstream"
    );
    // The server side records the refused handshake once it has read the client's alert.
    for _ in 0..500 {
        if upstream.tls_failures() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(upstream.tls_failures() > 0, "the proxy never tried TLS");
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_without_response_headers_in_time_is_504_upstream_timeout() {
    let _trace = trace_init();
    let world = World::new().await;
    let config = format!(
        "limits:\n  upstream_response_timeout: 300ms\n{}",
        world.config(&World::sp("sp", "slow"), &world.route("arm", "/", "sp", ""))
    );
    let proxy = TestProxy::start(&config).await;
    let answer = request(Method::GET, &proxy.url("/slow-headers?ms=2000"), &[], "").await;
    assert_error(&answer, StatusCode::GATEWAY_TIMEOUT, "UpstreamTimeout");
    assert_eq!(world.upstream.count(), 1);
    // A prompt upstream on the same route is unaffected.
    let (status, _, _) = request(Method::GET, &proxy.url("/slow-headers?ms=0"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    // The limit is on response headers only: a body may stream for longer (4 events over ~450 ms).
    let (status, _, body) = request(
        Method::GET,
        &proxy.url("/stream?chunks=4&interval_ms=150"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n");
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_connection_cut_mid_body_never_looks_like_a_complete_response() {
    let _trace = trace_init();
    let world = World::new().await;
    let h1 = h1_upstream(&world).await;
    let routes = [
        world.route("h2", "/", "sp", ""),
        route_block("h1", "/h1", &h1.base_url(), true, "sp", ""),
    ]
    .concat();
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "reset"), &routes)).await;
    for path in ["/reset-mid-body", "/h1/reset-mid-body"] {
        let req = http::Request::get(proxy.url(path))
            .body(Full::new(bytes::Bytes::new()))
            .unwrap();
        // The proxy may already have sent the head (then the body must break off) or not (then the
        // exchange fails outright); either way the caller sees an error.
        let resp = match http_client().request(req).await {
            Ok(resp) => resp,
            Err(_) => continue,
        };
        let status = resp.status();
        match resp.into_body().collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                assert!(
                    status.is_server_error(),
                    "{path}: a clean {status} with {} bytes",
                    body.len()
                );
            }
            Err(_) => assert_eq!(status, StatusCode::OK, "{path}"),
        }
    }
    proxy.stop().await;
}

#[tokio::test]
async fn beyond_max_in_flight_requests_get_503_overloaded_at_once() {
    let _trace = trace_init();
    let world = World::new().await;
    let config = format!(
        "limits:\n  max_in_flight: 1\n{}",
        world.config(&World::sp("sp", "busy"), &world.route("arm", "/", "sp", ""))
    );
    let proxy = TestProxy::start(&config).await;
    proxy.wait_ready().await;
    let slow_url = proxy.url("/slow-headers?ms=1500");
    let slow = tokio::spawn(async move { request(Method::GET, &slow_url, &[], "").await });
    // Let the slow request get in flight: the upstream records it before it starts waiting.
    for _ in 0..200 {
        if world.upstream.count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        world.upstream.count(),
        1,
        "the slow request never reached the upstream"
    );

    let answer = request(Method::GET, &proxy.url("/fast"), &[], "").await;
    assert!(
        !slow.is_finished(),
        "the refusal came while the slow request was still in flight"
    );
    assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "Overloaded");
    let retry_after = answer
        .1
        .get(http::header::RETRY_AFTER)
        .expect("Retry-After");
    assert!(
        retry_after
            .to_str()
            .unwrap()
            .parse::<u64>()
            .is_ok_and(|s| s >= 1),
        "{retry_after:?}"
    );
    assert_eq!(
        world.upstream.count(),
        1,
        "the shed request never reached the upstream"
    );

    let (status, _, _) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // Capacity is back once the slow request has finished.
    let (status, _, _) = request(Method::GET, &proxy.url("/after"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(world.upstream.count(), 2);
    proxy.stop().await;
}
