//! Redirects and long-running operations: returned, never followed; URLs that point at a route's
//! upstream are rewritten to the proxy (keeping a `strip_prefix` route's prefix), others are left untouched.

use http::{HeaderMap, Method, StatusCode};

use super::assert_error;
use crate::support::proxy::{TestProxy, World};
use crate::support::upstream::REDIRECT_AWAY_LOCATION;
use crate::support::{json_body, raw, request, trace_init};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn redirect_to_another_host_is_returned_untouched_and_not_followed() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("redir").await;
    proxy.wait_ready().await;
    let tokens = world.aad.count("redir");
    let (status, headers, _) = request(Method::GET, &proxy.url("/redirect-away"), &[], "").await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(header(&headers, "location"), REDIRECT_AWAY_LOCATION);
    assert_eq!(world.upstream.count(), 1, "the redirect was not followed");
    assert_eq!(
        world.upstream.last_request().unwrap().path,
        "/redirect-away"
    );
    assert_eq!(
        world.aad.count("redir"),
        tokens,
        "no token was fetched for the SAS host"
    );
    proxy.stop().await;
}

/// Asserts the three LRO headers of the upstream's `/lro` answer point at `base` (the proxy plus any prefix).
#[track_caller]
fn assert_lro_headers(headers: &HeaderMap, base: &str) {
    assert_eq!(
        header(headers, "location"),
        format!("{base}/operations/1/result?api-version=2024-04-01")
    );
    assert_eq!(
        header(headers, "azure-asyncoperation"),
        format!("{base}/operations/1?api-version=2024-04-01")
    );
    assert_eq!(
        header(headers, "operation-location"),
        format!("{base}/operations/1/status?api-version=2024-04-01")
    );
    assert_eq!(header(headers, "retry-after"), "1");
}

#[tokio::test]
async fn long_running_operation_urls_are_rewritten_to_the_proxy_and_polling_works() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("lro").await;
    let (status, headers, body) = request(Method::PUT, &proxy.url("/lro"), &[], "{}").await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let base = format!("http://127.0.0.1:{}", proxy.addr().port());
    assert_lro_headers(&headers, &base);
    assert_eq!(world.upstream.count(), 1);

    // Polling the rewritten URL goes through the proxy, with a token, to the upstream's path.
    let poll = header(&headers, "azure-asyncoperation").to_owned();
    let (status, _, body) = request(Method::GET, &poll, &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let echo = json_body(&body);
    assert_eq!(echo["path"], "/operations/1");
    assert_eq!(echo["query"], "api-version=2024-04-01");
    let seen = world.upstream.last_request().unwrap();
    assert!(seen.token.as_deref().unwrap().starts_with("at.lro."));
    assert_eq!(world.upstream.count(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn relative_location_is_rewritten_to_the_proxy() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("rel").await;
    let (status, headers, body) =
        request(Method::POST, &proxy.url("/relative-location"), &[], "").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        header(&headers, "location"),
        format!("http://127.0.0.1:{}/things/42", proxy.addr().port())
    );
    assert_eq!(json_body(&body)["id"], 42);
    proxy.stop().await;
}

#[tokio::test]
async fn rewritten_urls_keep_a_strip_prefix_routes_prefix() {
    let _trace = trace_init();
    let world = World::new().await;
    let routes = world.route("ml", "/ml", "sp", "");
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "mlpre"), &routes)).await;
    let port = proxy.addr().port();

    let (status, headers, _) = request(Method::PUT, &proxy.url("/ml/lro"), &[], "{}").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_lro_headers(&headers, &format!("http://127.0.0.1:{port}/ml"));
    assert_eq!(world.upstream.last_request().unwrap().path, "/lro");

    let (status, headers, _) =
        request(Method::POST, &proxy.url("/ml/relative-location"), &[], "").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        header(&headers, "location"),
        format!("http://127.0.0.1:{port}/ml/things/42")
    );

    let (status, _, body) = request(Method::GET, header(&headers, "location"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_body(&body)["path"], "/things/42");
    proxy.stop().await;
}

#[tokio::test]
async fn a_host_with_an_invalid_port_is_400_and_never_reaches_a_rewritten_location() {
    let _trace = trace_init();
    let world = World::new().await;
    // `[::1]` is allowed explicitly: by default only what the proxy listens on (127.0.0.1) is.
    let proxy = TestProxy::start(&format!(
        "allowed_hosts: [localhost, 127.0.0.1, \"[::1]\"]\n{}",
        world.config(
            &World::sp("sp", "ports"),
            &world.route("arm", "/", "sp", "")
        )
    ))
    .await;
    let lro = |host: &str| {
        format!(
            "PUT /lro HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
    };
    for host in [
        "localhost:99999",
        "localhost:65536",
        "localhost:0",
        "localhost:00",
        "localhost:080",
        "localhost:+80",
        "localhost:-1",
        "localhost:8080:80",
        "127.0.0.1:4294967377",
        "[::1]:99999",
        "[::1]:0",
    ] {
        let answer = raw::send(proxy.addr(), &lro(host)).await;
        let error = assert_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");
        assert!(
            error["message"].as_str().unwrap().contains("Host"),
            "{host}: {error}"
        );
        assert!(answer.1.get("location").is_none(), "{host}");
    }
    assert_eq!(world.upstream.count(), 0);
    // Valid ports, the extremes included, are copied as sent.
    for host in ["localhost:1", "localhost:65535", "localhost", "[::1]:8080"] {
        let (status, headers, body) = raw::send(proxy.addr(), &lro(host)).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{host}: {}",
            String::from_utf8_lossy(&body)
        );
        let location = header(&headers, "location");
        assert_eq!(
            location,
            format!("http://{host}/operations/1/result?api-version=2024-04-01")
        );
        let authority = location.parse::<http::Uri>().unwrap();
        let authority = authority.authority().unwrap();
        assert!(authority.port().is_none() || authority.port_u16().is_some_and(|p| p > 0));
    }
    proxy.stop().await;
}
