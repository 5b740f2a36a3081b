//! Header rules: the caller's `Authorization` is replaced by the minted token, hop-by-hop headers
//! are dropped in both directions (before the token is inserted), everything else is forwarded; a
//! `pass_through_authorization` route forwards the caller's own token.

use std::time::Duration;

use http::{Method, StatusCode};

use super::h1_upstream;
use crate::support::proxy::{TestProxy, World, route_block};
use crate::support::upstream::INVALID_TOKEN_CHALLENGE;
use crate::support::{Rejection, json_body, raw, request, trace_init};

#[tokio::test]
async fn caller_authorization_is_replaced_and_hop_by_hop_request_headers_are_not_forwarded() {
    let _trace = trace_init();
    let world = World::new().await;
    // HTTP/1.1 to the upstream, so nothing on the way normalises the headers the proxy sends.
    let upstream = h1_upstream(&world).await;
    let routes = route_block("arm", "/", &upstream.base_url(), false, "sp", "");
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "hdr"), &routes)).await;
    let port = proxy.addr().port();
    // Raw bytes: two caller Authorization headers, a Connection header that names `authorization` (trying
    // to strip the injected token) and a private header, and every fixed hop-by-hop header.
    let head = format!(
        "GET /subscriptions/s1?api-version=1 HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         Authorization: Bearer attacker\r\n\
         Authorization: Bearer attacker-two\r\n\
         Connection: authorization, x-private-hop, close\r\n\
         X-Private-Hop: secret-for-the-next-hop\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         TE: trailers\r\n\
         User-Agent: legacy-tool/1.0\r\n\
         Accept: application/json\r\n\
         X-Custom: kept\r\n\
         X-Ms-Client-Request-Id: 4f1c\r\n\
         \r\n"
    );
    let (status, _, body) = raw::send(proxy.addr(), &head).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    assert_eq!(upstream.count(), 1);
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.rejection, None, "the upstream accepted the token");
    let auth: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(
        auth.len(),
        1,
        "exactly one Authorization upstream: {auth:?}"
    );
    let token = seen.token.as_deref().unwrap();
    assert!(
        token.starts_with("at.hdr."),
        "minted token expected, got {token}"
    );
    assert_eq!(
        world.aad.registry().get(token).map(|t| t.tenant),
        Some("hdr".to_owned()),
        "the token is one Entra ID issued for the route's credential"
    );
    for dropped in [
        "connection",
        "x-private-hop",
        "proxy-authorization",
        "keep-alive",
        "proxy-connection",
        "te",
    ] {
        assert!(
            !seen.headers.contains_key(dropped),
            "{dropped} was forwarded: {:?}",
            seen.headers
        );
    }
    for (name, value) in [
        ("user-agent", "legacy-tool/1.0"),
        ("accept", "application/json"),
        ("x-custom", "kept"),
        ("x-ms-client-request-id", "4f1c"),
    ] {
        assert_eq!(
            seen.headers.get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name}"
        );
    }
    // The caller's view agrees: the echo shows the minted token, not the attacker's.
    assert_eq!(json_body(&body)["token"], token);
    proxy.stop().await;
}

#[tokio::test]
async fn connection_header_naming_authorization_cannot_strip_the_token_over_h2_either() {
    let _trace = trace_init();
    let world = World::new().await;
    // The default upstream negotiates h2: the same guarantee must hold there.
    let proxy = world.simple_proxy("hdr2").await;
    let port = proxy.addr().port();
    let head = format!(
        "POST /x HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: Authorization\r\nConnection: close\r\n\
         Content-Length: 2\r\n\r\nhi"
    );
    let (status, _, body) = raw::send(proxy.addr(), &head).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let seen = world.upstream.last_request().unwrap();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert!(seen.token.as_deref().unwrap().starts_with("at.hdr2."));
    assert_eq!(seen.rejection, None);
    assert_eq!(seen.body_len, 2);
    proxy.stop().await;
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    let _trace = trace_init();
    let world = World::new().await;
    // Over HTTP/1.1 the upstream really sends Connection, Keep-Alive, Proxy-Authenticate and a header that
    // Connection names.
    let upstream = h1_upstream(&world).await;
    let routes = route_block("arm", "/", &upstream.base_url(), false, "sp", "");
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "hop"), &routes)).await;
    let (status, headers, body) = request(Method::GET, &proxy.url("/hop-by-hop"), &[], "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["hop_by_hop"], true);
    for dropped in ["x-upstream-private", "keep-alive", "proxy-authenticate"] {
        assert!(!headers.contains_key(dropped), "{dropped}: {headers:?}");
    }
    // The proxy's own connection to the caller may carry its own Connection header, but never the
    // upstream's list.
    for value in headers.get_all("connection") {
        let value = value.to_str().unwrap().to_ascii_lowercase();
        assert!(!value.contains("x-upstream-private"), "{value}");
    }
    assert_eq!(headers.get("x-kept").unwrap(), "yes");
    assert_eq!(upstream.count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn pass_through_route_forwards_the_callers_token_and_injects_when_there_is_none() {
    let _trace = trace_init();
    let world = World::new().await;
    let routes = world.route("own", "/", "sp", "    pass_through_authorization: true\n");
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "pass"), &routes)).await;
    // A token the caller obtained itself (the upstream accepts it: the same Entra ID issued it).
    let own = world
        .aad
        .registry()
        .mint("caller", Duration::from_secs(3600));

    let bearer = format!("Bearer {own}");
    let (status, _, body) = request(
        Method::GET,
        &proxy.url("/mine"),
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let seen = world.upstream.last_request().unwrap();
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(seen.headers.get("authorization").unwrap(), bearer.as_str());
    assert_eq!(seen.rejection, None);

    let (status, _, body) = request(Method::GET, &proxy.url("/injected"), &[], "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let seen = world.upstream.last_request().unwrap();
    assert_eq!(seen.path, "/injected");
    let token = seen.token.as_deref().unwrap();
    assert!(
        token.starts_with("at.pass."),
        "proxy token expected, got {token}"
    );
    assert_ne!(token, own);
    assert_eq!(seen.rejection, None);

    // A caller token the upstream refuses: the upstream's 401 comes back unchanged, and is not retried
    // with the proxy's token.
    let (status, headers, body) = request(
        Method::GET,
        &proxy.url("/mine"),
        &[("authorization", "Bearer not-issued-by-entra")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers.get(http::header::WWW_AUTHENTICATE).unwrap(),
        INVALID_TOKEN_CHALLENGE
    );
    assert!(!headers.contains_key(super::ERROR_HEADER));
    assert_eq!(
        json_body(&body)["error"]["code"],
        "InvalidAuthenticationToken"
    );
    assert_eq!(world.upstream.rejected_count_for(Rejection::Unknown), 1);
    assert_eq!(world.upstream.count(), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn websocket_upgrade_request_reaches_the_upstream_as_an_upgrade() {
    let _trace = trace_init();
    let world = World::new().await;
    // HTTP/1.1 upstream: the only protocol an Upgrade can travel on.
    let upstream = h1_upstream(&world).await;
    let routes = route_block("ws", "/", &upstream.base_url(), false, "sp", "");
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "ws"), &routes)).await;
    let port = proxy.addr().port();
    // The mock answers the echo (not 101); what matters here is what the upstream was asked for.
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let _ = raw::send(proxy.addr(), &head).await;
    let seen = upstream
        .last_request()
        .expect("the upgrade request reached the upstream");
    assert!(seen.token.as_deref().unwrap().starts_with("at.ws."));
    assert_eq!(
        seen.headers.get("upgrade").map(|v| v.to_str().unwrap()),
        Some("websocket"),
        "{:?}",
        seen.headers
    );
    let connection = seen
        .headers
        .get("connection")
        .map(|v| v.to_str().unwrap().to_ascii_lowercase());
    assert!(
        connection.is_some_and(|c| c.contains("upgrade")),
        "{:?}",
        seen.headers
    );
    assert_eq!(
        seen.headers.get("sec-websocket-key").unwrap(),
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    proxy.stop().await;
}
