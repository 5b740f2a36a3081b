//! Routing (DESIGN §4 `routes`, §5): longest prefix on segment boundaries, `strip_prefix`, `host:` routes,
//! `NoRoute`; path rules that refuse ambiguous targets; and no routing on the Host header or an absolute URI.

use std::net::TcpListener as StdTcpListener;

use http::{Method, StatusCode};

use super::{assert_error, json, raw, route_to};
use crate::support::proxy::{TestProxy, World};
use crate::support::{request, trace_init};

/// A proxy with routes `/` → `<up>/root`, `/api` → `<up>/r-api`, `/api/v2` → `<up>/r-api-v2`, `/ml` →
/// `<up>` (all but `/` with `strip_prefix`): the upstream path tells which route served a request.
async fn routed_proxy(world: &World) -> TestProxy {
    let up = world.upstream.base_url();
    let routes = [
        route_to("root", "/", &format!("{up}/root"), false, "sp", ""),
        route_to("api", "/api", &format!("{up}/r-api"), true, "sp", ""),
        route_to(
            "api-v2",
            "/api/v2",
            &format!("{up}/r-api-v2"),
            true,
            "sp",
            "",
        ),
        route_to("ml", "/ml", &up, true, "sp", ""),
    ]
    .concat();
    TestProxy::start(&world.config(&World::sp("sp", "routes"), &routes)).await
}

#[tokio::test]
async fn longest_prefix_wins_on_segment_boundaries_and_strip_prefix_removes_it() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = routed_proxy(&world).await;
    // (proxy path, upstream path)
    for (path, upstream_path) in [
        ("/subscriptions/x", "/root/subscriptions/x"),
        ("/api", "/r-api"),
        ("/api/", "/r-api/"),
        ("/api/items/1", "/r-api/items/1"),
        ("/api/v2", "/r-api-v2"),
        ("/api/v2/items", "/r-api-v2/items"),
        ("/api/v2x", "/r-api/v2x"),
        ("/apix", "/root/apix"),
        ("/apix/y", "/root/apix/y"),
        ("/ml", "/"),
        ("/ml/workspaces/w1", "/workspaces/w1"),
        ("/mlx", "/root/mlx"),
    ] {
        let (status, _, body) =
            request(Method::GET, &proxy.url(&format!("{path}?q=1")), &[], "").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
        let echo = json(&body);
        assert_eq!(echo["path"], upstream_path, "{path}");
        assert_eq!(echo["query"], "q=1", "{path}");
        assert_eq!(world.upstream.last_request().unwrap().path, upstream_path);
    }
    assert_eq!(world.upstream.count(), 12);
    assert_eq!(world.upstream.rejected_count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn no_matching_route_is_404_no_route_without_any_upstream_request() {
    let _trace = trace_init();
    let world = World::new().await;
    let routes = world.route("api", "/api", "sp", "");
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "noroute"), &routes)).await;
    for path in ["/", "/other", "/apix", "/ap"] {
        let answer = request(Method::GET, &proxy.url(path), &[], "").await;
        assert_error(&answer, StatusCode::NOT_FOUND, "NoRoute");
    }
    assert_eq!(world.upstream.count(), 0);
    let (status, _, _) = request(Method::GET, &proxy.url("/api/ok"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(world.upstream.last_request().unwrap().path, "/ok");
    proxy.stop().await;
}

#[tokio::test]
async fn host_specific_routes_match_the_host_header() {
    let _trace = trace_init();
    let world = World::new().await;
    let up = world.upstream.base_url();
    let routes = [
        route_to("any", "/api", &format!("{up}/any"), true, "sp", ""),
        route_to(
            "local",
            "/api",
            &format!("{up}/by-host"),
            true,
            "sp",
            "    host: localhost\n",
        ),
    ]
    .concat();
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "hosts"), &routes)).await;
    let port = proxy.addr().port();
    for (host, upstream_path) in [
        (format!("localhost:{port}"), "/by-host/x"),
        (format!("LOCALHOST:{port}"), "/by-host/x"),
        (format!("127.0.0.1:{port}"), "/any/x"),
        (format!("[::1]:{port}"), "/any/x"),
    ] {
        let (status, _, body) =
            request(Method::GET, &proxy.url("/api/x"), &[("host", &host)], "").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{host}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(json(&body)["path"], upstream_path, "{host}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn ambiguous_paths_are_400_bad_request_and_never_forwarded() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("paths").await;
    let port = proxy.addr().port();
    for target in [
        "/a/../b",
        "/a/./b",
        "/..",
        "/a%2fb",
        "/a%2Fb",
        "/a%2e%2e/b",
        "/%2E%2E/x",
        "/a%5cb",
        "/a%00b",
        "/a\\b",
        "//evil.com/x",
    ] {
        let head =
            format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        let answer = raw(proxy.addr(), &head).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");
    }
    assert_eq!(world.upstream.count(), 0);
    // Look-alikes that are not dot segments or encoded separators are fine.
    for (target, upstream_path) in [("/a..b/c.d", "/a..b/c.d"), ("/a%20b", "/a%20b")] {
        let (status, _, body) = request(Method::GET, &proxy.url(target), &[], "").await;
        assert_eq!(status, StatusCode::OK, "{target}");
        assert_eq!(json(&body)["path"], upstream_path);
    }
    proxy.stop().await;
}

/// A listener that must never be connected to; checked without accepting (non-blocking).
struct Canary(StdTcpListener);

impl Canary {
    fn bind() -> Self {
        let listener = StdTcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Self(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    /// True if any connection reached the listener (a completed connect sits in the accept queue).
    fn was_contacted(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("canary accept: {e}"),
        }
    }
}

#[tokio::test]
async fn absolute_form_and_connect_targets_never_reach_another_host() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("ssrf").await;
    let canary = Canary::bind();
    let c = canary.port();
    let p = proxy.addr().port();

    // Absolute-form targets naming the canary, with an allowed Host: the proxy may answer from its own
    // upstream (on the path only) or refuse with a 4xx, but it never connects to the canary.
    for (target, host) in [
        (
            format!("http://127.0.0.1:{c}/steal?x=1"),
            format!("127.0.0.1:{c}"),
        ),
        (
            format!("http://127.0.0.1:{c}/steal?x=1"),
            format!("localhost:{p}"),
        ),
        (
            format!("https://localhost:{c}/steal?x=1"),
            format!("localhost:{c}"),
        ),
    ] {
        world.upstream.reset();
        let head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (status, headers, body) = raw(proxy.addr(), &head).await;
        let text = String::from_utf8_lossy(&body);
        if status == StatusCode::OK {
            let seen = world.upstream.requests();
            assert_eq!(seen.len(), 1, "{target}");
            assert_eq!(seen[0].path, "/steal", "{target}");
            assert_eq!(seen[0].query.as_deref(), Some("x=1"), "{target}");
            assert_eq!(json(&body)["path"], "/steal");
        } else {
            assert!(status.is_client_error(), "{target}: {status} {text}");
            assert!(
                headers.contains_key(super::ERROR_HEADER),
                "{target}: {text}"
            );
            assert_eq!(world.upstream.count(), 0, "{target}");
        }
    }

    // Absolute-form naming a host that is not allowed, and CONNECT: refused outright.
    world.upstream.reset();
    let head = format!(
        "GET http://attacker.example/steal HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw(proxy.addr(), &head).await;
    assert_error(&answer, StatusCode::MISDIRECTED_REQUEST, "HostNotAllowed");
    let head = format!(
        "CONNECT 127.0.0.1:{c} HTTP/1.1\r\nHost: 127.0.0.1:{c}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw(proxy.addr(), &head).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");
    assert_eq!(world.upstream.count(), 0);

    assert!(!canary.was_contacted(), "the proxy connected to the canary");
    proxy.stop().await;
}
