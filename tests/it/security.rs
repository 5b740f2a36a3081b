//! Request rules from the threat model (RELIABILITY part b) that are not about routing: spoofable metadata is
//! dropped, `X-Forwarded-For` is set, IMDS's `Metadata` header never travels, underscores and protocol switches
//! are refused, and callers cannot choose the identity.

use http::{Method, StatusCode};
use serde_json::Value;

use crate::support::proxy::World;
use crate::support::{request, trace_init};

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn spoofable_metadata_is_dropped_and_x_forwarded_for_is_the_caller() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("meta").await;
    let headers = [
        ("metadata", "true"),
        ("x-forwarded-for", "10.9.8.7"),
        ("x-forwarded-host", "attacker.example.com://ml.azure.com"),
        ("forwarded", "for=10.9.8.7;host=attacker.example"),
        ("x-original-url", "/admin"),
        ("x-kept", "yes"),
    ];
    let (status, _, body) = request(Method::GET, &proxy.url("/x"), &headers, "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let seen = world.upstream.last_request().unwrap().headers;
    for gone in [
        "metadata",
        "x-forwarded-host",
        "forwarded",
        "x-original-url",
    ] {
        assert!(!seen.contains_key(gone), "{gone} forwarded: {seen:?}");
    }
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "the real caller, not the spoofed value"
    );
    assert_eq!(seen.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(seen["x-kept"], "yes");
    proxy.stop().await;
}

#[tokio::test]
async fn header_names_with_underscores_and_protocol_switches_are_refused() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("rules").await;
    for headers in [
        vec![("x_forwarded_for", "10.0.0.1")],
        vec![("authorization_", "Bearer x")],
        vec![
            ("upgrade", "h2c"),
            ("connection", "upgrade, http2-settings"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ],
        vec![("upgrade", "tls/1.2"), ("connection", "upgrade")],
    ] {
        let (status, answer, body) = request(Method::GET, &proxy.url("/x"), &headers, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert_eq!(answer["x-aml-auth-proxy-error"], "BadRequest");
        assert_eq!(json(&body)["error"]["code"], "BadRequest");
    }
    assert_eq!(world.upstream.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn callers_cannot_choose_the_identity_or_audience() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("fixed").await;
    let query = "/x?client_id=attacker&resource=https://vault.azure.net&scope=https://graph.microsoft.com/.default&tenant=evil";
    let (status, _, body) = request(
        Method::GET,
        &proxy.url(query),
        &[("x-ms-client-id", "attacker")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Forwarded untouched to the upstream, and no effect on the token: one token, for the configured scope.
    assert_eq!(
        json(&body)["query"],
        "client_id=attacker&resource=https://vault.azure.net&scope=https://graph.microsoft.com/.default&tenant=evil"
    );
    let token_requests = world.aad.requests_for("fixed");
    assert_eq!(token_requests.len(), 1);
    assert_eq!(
        token_requests[0].form["scope"],
        "https://management.azure.com/.default"
    );
    assert_eq!(
        token_requests[0].form["client_id"],
        crate::support::proxy::CLIENT_ID
    );
    proxy.stop().await;
}

#[tokio::test]
async fn request_trailers_are_never_forwarded() {
    let _trace = trace_init();
    let world = World::new().await;
    // Over HTTP/2 trailers would travel as a HEADERS frame; over HTTP/1.1 as a chunked trailer section.
    let h1 = crate::support::Upstream::builder()
        .tls(&world.ca)
        .http1_only()
        .validate_tokens(world.aad.registry())
        .start()
        .await;
    for upstream in [&world.upstream, &h1] {
        let route = format!(
            "  - name: up\n    path_prefix: /\n    upstream: {}\n    scope: https://management.azure.com/.default\n    credential: sp\n",
            upstream.base_url()
        );
        let proxy = crate::support::proxy::TestProxy::start(
            &world.config(&World::sp("sp", "trail"), &route),
        )
        .await;
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nTrailer: Authorization, X-Trailer\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nAuthorization: Bearer trailer-token\r\nX-Trailer: yes\r\n\r\n",
            proxy.addr().port()
        );
        let mut conn = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut conn, request.as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut answer)
            .await
            .unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        let seen = upstream.last_request().unwrap();
        assert_eq!(seen.body_len, 5);
        assert_eq!(
            seen.trailers, None,
            "trailers forwarded ({:?}): {:?}",
            seen.version, seen.trailers
        );
        assert!(seen.token.unwrap().starts_with("at.trail."));
        proxy.stop().await;
    }
}
