//! Bodies and protocols: large bodies stream intact both ways, SSE flushes as it arrives, HTTP/2
//! cleartext is accepted from callers, and upstreams speaking HTTP/1.1 or h2 both work.

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::h1_upstream;
use crate::support::proxy::{TestProxy, World, route_block};
use crate::support::{
    BoxBody, ChannelBody, Upstream, fnv_hex, fnv1a64, get, json_body, pseudo_random_bytes, request,
    trace_init,
};

const EIGHT_MIB: usize = 8 * 1024 * 1024;

/// A proxy with route `/` → the world's upstream (h2) and `/h1` → `h1` (HTTP/1.1 only).
async fn two_upstream_proxy(world: &World, h1: &Upstream, tenant: &str) -> TestProxy {
    let routes = [
        world.route("h2", "/", "sp", ""),
        route_block("h1", "/h1", &h1.base_url(), true, "sp", ""),
    ]
    .concat();
    TestProxy::start(&world.config(&World::sp("sp", tenant), &routes)).await
}

#[tokio::test]
async fn eight_mib_chunked_upload_arrives_intact_over_h1_and_h2_upstreams() {
    let _trace = trace_init();
    let world = World::new().await;
    let h1 = h1_upstream(&world).await;
    let proxy = two_upstream_proxy(&world, &h1, "upload").await;
    let data = Bytes::from(pseudo_random_bytes(EIGHT_MIB));
    let want = fnv_hex(fnv1a64(&data));
    let client = Client::builder(TokioExecutor::new()).build_http::<BoxBody>();

    for (path, upstream) in [("/upload", &world.upstream), ("/h1/upload", &h1)] {
        // A streamed body of unannounced length: HTTP/1.1 sends it chunked.
        let (tx, body) = ChannelBody::channel(4);
        let chunks = data.clone();
        let feeder = tokio::spawn(async move {
            for start in (0..chunks.len()).step_by(64 * 1024) {
                let end = (start + 64 * 1024).min(chunks.len());
                if tx.send(Ok(chunks.slice(start..end))).await.is_err() {
                    return;
                }
            }
        });
        let req = Request::builder()
            .method(Method::POST)
            .uri(proxy.url(path))
            .header("content-type", "application/octet-stream")
            .body(body)
            .unwrap();
        let resp = client.request(req).await.expect("upload");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        feeder.await.unwrap();
        let echo = json_body(&body);
        assert_eq!(echo["body_len"], EIGHT_MIB, "{path}");
        assert_eq!(echo["body_fnv"], want.as_str(), "{path}");
        let seen = upstream.last_request().unwrap();
        assert_eq!(
            (seen.body_len, fnv_hex(seen.body_fnv)),
            (EIGHT_MIB, want.clone())
        );
        assert_eq!(seen.rejection, None);
        assert_eq!(upstream.count(), 1, "{path}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn eight_mib_download_arrives_intact_over_h1_and_h2_upstreams() {
    let _trace = trace_init();
    let world = World::new().await;
    let h1 = h1_upstream(&world).await;
    let proxy = two_upstream_proxy(&world, &h1, "download").await;
    let want = fnv_hex(fnv1a64(&pseudo_random_bytes(EIGHT_MIB)));
    for path in ["/bytes", "/h1/bytes"] {
        let (status, headers, body) = get(&proxy.url(&format!("{path}?n={EIGHT_MIB}"))).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body.len(), EIGHT_MIB, "{path}");
        assert_eq!(fnv_hex(fnv1a64(&body)), want, "{path}");
        assert_eq!(headers.get("x-body-fnv").unwrap(), want.as_str(), "{path}");
        assert_eq!(
            headers.get(http::header::CONTENT_LENGTH).unwrap(),
            EIGHT_MIB.to_string().as_str(),
            "{path}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn server_sent_events_reach_the_client_as_they_are_produced() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("sse").await;
    let start = Instant::now();
    let req = Request::get(proxy.url("/stream?chunks=5&interval_ms=200"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = crate::support::http_client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get(http::header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    let mut body = resp.into_body();
    let mut received = Vec::new();
    let mut first_chunk_at = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("stream frame").into_data() {
            if !data.is_empty() {
                first_chunk_at.get_or_insert_with(|| start.elapsed());
            }
            received.extend_from_slice(&data);
        }
    }
    let total = start.elapsed();
    let first = first_chunk_at.expect("no data at all");
    assert_eq!(
        String::from_utf8(received).unwrap(),
        "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n"
    );
    // Loose ordering only: the first event was not held back until the stream ended.
    assert!(
        first < total / 2,
        "first chunk after {first:?} of {total:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn http2_cleartext_callers_are_served_and_forwarded() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("h2c").await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = Request::post(proxy.url("/h2c/path?x=1"))
        .header("authorization", "Bearer attacker")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::from_static(b"hello over h2c")))
        .unwrap();
    let resp = client.request(req).await.expect("h2c request");
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo = json_body(&body);
    assert_eq!(echo["path"], "/h2c/path");
    assert_eq!(echo["query"], "x=1");
    let seen = world.upstream.last_request().unwrap();
    assert!(seen.token.as_deref().unwrap().starts_with("at.h2c."));
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(seen.headers.get("x-custom").unwrap(), "kept");
    assert_eq!(seen.body_fnv, fnv1a64(b"hello over h2c"));
    assert_eq!(seen.rejection, None);

    // Proxy errors are answered over h2 too.
    let req = Request::get(proxy.url("/x"))
        .header("origin", "https://evil.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.headers().get(super::ERROR_HEADER).unwrap(),
        "OriginNotAllowed"
    );
    assert_eq!(world.upstream.count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn upstreams_speaking_http1_only_or_h2_both_work() {
    let _trace = trace_init();
    let world = World::new().await;
    let h1 = h1_upstream(&world).await;
    let proxy = two_upstream_proxy(&world, &h1, "versions").await;
    for (path, upstream, version, echoed) in [
        ("/v", &world.upstream, Version::HTTP_2, "HTTP/2.0"),
        ("/h1/v", &h1, Version::HTTP_11, "HTTP/1.1"),
    ] {
        let (status, _, body) = request(Method::POST, &proxy.url(path), &[], "body").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(json_body(&body)["version"], echoed, "{path}");
        let seen = upstream.last_request().unwrap();
        assert_eq!(seen.version, version, "{path}");
        assert_eq!(seen.path, "/v");
        assert_eq!(seen.body_len, 4);
        assert_eq!(seen.rejection, None);
    }
    proxy.stop().await;
}
