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

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::Value;

use crate::support::proxy::World;
use crate::support::{Upstream, expect_proxy_error, get, json_body, request, trace_init};

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

/// Asserts a proxy-generated answer as [`expect_proxy_error`] does, with a `content-type` of exactly
/// `application/json` and no CORS header. Returns the `error` object.
#[track_caller]
fn assert_error(
    answer: &(StatusCode, HeaderMap, Bytes),
    want_status: StatusCode,
    code: &str,
) -> Value {
    let error = expect_proxy_error(answer, want_status, code);
    let (_, headers, body) = answer;
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes);
    assert_eq!(
        content_type,
        Some(&b"application/json"[..]),
        "{}",
        String::from_utf8_lossy(body)
    );
    assert_no_cors(headers);
    error
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
