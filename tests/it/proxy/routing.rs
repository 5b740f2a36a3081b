//! Routing (`routes`): longest prefix on segment boundaries, `strip_prefix`, `host:` routes,
//! `NoRoute`; path rules that refuse ambiguous targets; and no routing on the Host header or an absolute URI.

use std::net::TcpListener as StdTcpListener;

use http::{Method, StatusCode};

use super::assert_error;
use crate::support::proxy::{TestProxy, World, route_block};
use crate::support::{json_body, raw, request, trace_init};

/// A proxy with routes `/` → `<up>/root`, `/api` → `<up>/r-api`, `/api/v2` → `<up>/r-api-v2`, `/ml` →
/// `<up>` (all but `/` with `strip_prefix`): the upstream path tells which route served a request.
async fn routed_proxy(world: &World) -> TestProxy {
    let up = world.upstream.base_url();
    let routes = [
        route_block("root", "/", &format!("{up}/root"), false, "sp", ""),
        route_block("api", "/api", &format!("{up}/r-api"), true, "sp", ""),
        route_block(
            "api-v2",
            "/api/v2",
            &format!("{up}/r-api-v2"),
            true,
            "sp",
            "",
        ),
        route_block("ml", "/ml", &up, true, "sp", ""),
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
        let echo = json_body(&body);
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
        route_block("any", "/api", &format!("{up}/any"), true, "sp", ""),
        route_block(
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
        ("127.0.0.1".to_owned(), "/any/x"),
    ] {
        let (status, _, body) =
            request(Method::GET, &proxy.url("/api/x"), &[("host", &host)], "").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{host}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(json_body(&body)["path"], upstream_path, "{host}");
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
        let answer = raw::send(proxy.addr(), &head).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");
    }
    assert_eq!(world.upstream.count(), 0);
    // Look-alikes that are not dot segments or encoded separators are fine.
    for (target, upstream_path) in [("/a..b/c.d", "/a..b/c.d"), ("/a%20b", "/a%20b")] {
        let (status, _, body) = request(Method::GET, &proxy.url(target), &[], "").await;
        assert_eq!(status, StatusCode::OK, "{target}");
        assert_eq!(json_body(&body)["path"], upstream_path);
    }
    proxy.stop().await;
}

/// A proxy with one route `/restricted` (prefix kept) whose `allow.paths` admits only `/restricted/public`.
async fn restricted_proxy(world: &World, tenant: &str) -> TestProxy {
    let up = world.upstream.base_url();
    let allow = "    allow: { paths: [/restricted/public] }\n";
    let routes = route_block("restricted", "/restricted", &up, false, "sp", allow);
    TestProxy::start(&world.config(&World::sp("sp", tenant), &routes)).await
}

#[tokio::test]
async fn normalisation_differentials_are_400_and_never_reach_the_upstream() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = restricted_proxy(&world, "differentials").await;
    let port = proxy.addr().port();
    // Each is `/restricted/public/<spelling>/secret` (or `<spelling>secret`): to this proxy's segment match it is
    // under the allowed `/restricted/public`; a server that strips matrix parameters, decodes again, decodes IIS
    // `%u` escapes or overlong UTF-8, or maps Unicode compatibility forms reads `/restricted/secret` (or a new
    // separator) instead.
    let spellings = [
        // Matrix parameters (Tomcat, Jetty, Spring strip `;…` from a segment).
        "..;/",
        "..;jsessionid=x/",
        ".;x/",
        "..;/..;/",
        // Percent-encoding, decoded once more (or twice) by a lenient server; mixed case.
        "%252e%252e/",
        "%252E%252e/",
        ".%252e/",
        "%25252e%25252e/",
        "..%252f",
        "..%255c",
        "%25%32%65%25%32%65/",
        // IIS `%u` escapes.
        "%u002e%u002e/",
        "%U002E%U002E/",
        "..%u002f",
        "..%u005c",
        // Overlong UTF-8.
        "%c0%ae%c0%ae/",
        "%C0%AE./",
        "%e0%80%ae%e0%80%ae/",
        "%f0%80%80%ae%f0%80%80%ae/",
        "..%c0%af",
        "..%c1%9c",
        // Unicode compatibility forms, encoded and raw (NFKC or Windows best-fit map them to ASCII).
        "%ef%bc%8e%ef%bc%8e/",
        "\u{ff0e}\u{ff0e}/",
        "\u{2025}/",
        "%e2%80%a5/",
        "\u{2024}\u{2024}/",
        "\u{fe52}\u{fe52}/",
        "..\u{ff0f}",
        "..%ef%bc%8f",
        "..\u{ff3c}",
        "..\u{2215}",
        "..\u{fe68}",
        "%ef%bc%85%ef%bc%92%ef%bd%85%ef%bc%85%ef%bc%92%ef%bd%85/",
        // Dots with what Windows and `trim()` drop, and what ends a path once decoded.
        "..%20/",
        "..%09/",
        "...%2f",
        ".../",
        "..%3f/",
        "..%3b/",
        "..%23/",
    ];
    for spelling in spellings {
        let target = format!("/restricted/public/{spelling}secret");
        let head =
            format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        let answer = raw::send(proxy.addr(), &head).await;
        let error = assert_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");
        assert!(
            error["message"].as_str().unwrap().contains("path"),
            "{target}: {error}"
        );
    }
    assert_eq!(world.upstream.count(), 0, "an ambiguous path was forwarded");
    // Names that only look alike stay usable.
    for (target, upstream_path) in [
        (
            "/restricted/public/a..b/v1.0",
            "/restricted/public/a..b/v1.0",
        ),
        (
            "/restricted/public/...x/x...",
            "/restricted/public/...x/x...",
        ),
        ("/restricted/public/a;b=c", "/restricted/public/a;b=c"),
        (
            "/restricted/public/caf%C3%A9",
            "/restricted/public/caf%C3%A9",
        ),
        ("/restricted/public/a%2520b", "/restricted/public/a%2520b"),
        ("/restricted/public/x:batch", "/restricted/public/x:batch"),
    ] {
        let (status, _, body) = request(Method::GET, &proxy.url(target), &[], "").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{target}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(json_body(&body)["path"], upstream_path);
    }
    proxy.stop().await;
}

/// Every ARM and Azure ML request path in the recorded fixtures (URLs and resource ids), with its query.
fn recorded_paths() -> Vec<String> {
    let mut paths = Vec::new();
    for name in [
        "aml_online_endpoint_get_and_token_recorded.json",
        "aml_online_endpoint_list_keys_regenerate_documented.txt",
        "aml_workspace_get_discovery_and_config_json.txt",
    ] {
        let file = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&file).unwrap();
        let ends = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ')');
        for (i, _) in text.match_indices("://") {
            let rest = &text[i + 3..];
            let url = &rest[..rest.find(ends).unwrap_or(rest.len())];
            if let Some(slash) = url.find('/') {
                paths.push(url[slash..].to_owned());
            }
        }
        for (i, _) in text.match_indices("\"/subscriptions/") {
            let rest = &text[i + 1..];
            paths.push(rest[..rest.find(ends).unwrap_or(rest.len())].to_owned());
        }
    }
    // Keep what a client could send as is (the fixtures also hold `<sub>`-style placeholders, and `...` segments
    // that elide part of a documented path).
    paths.retain(|p| {
        p.parse::<http::uri::PathAndQuery>().is_ok()
            && p.starts_with('/')
            && !p.split(['/', '?']).any(|s| s == "...")
    });
    paths.sort();
    paths.dedup();
    paths
}

#[tokio::test]
async fn recorded_arm_and_azure_ml_paths_are_forwarded_unchanged() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("recorded").await;
    let mut targets = recorded_paths();
    assert!(targets.len() >= 15, "too few recorded paths: {targets:?}");
    // Shapes the recordings lack: MLflow and data-plane paths, an LRO status id with `:`, listKeys, a batch.
    let ws = "subscriptions/00000000-0000-0000-0000-000000000/resourceGroups/00000/providers/Microsoft.MachineLearningServices/workspaces/00000";
    targets.extend([
        format!("/mlflow/v2.0/{ws}/api/2.0/mlflow/runs/get?run_id=0c4f6a5e-4b8a-4e3f-9d62-2f3c1b7e8a90"),
        format!("/mlflow/v1.0/{ws}/api/2.0/mlflow/experiments/get-by-name?experiment_name=my-exp"),
        format!("/mlflow/v2.0/{ws}/api/2.0/mlflow-artifacts/artifacts/model/MLmodel"),
        format!("/history/v1.0/{ws}/experiments/my-exp/runs/my-run_1700000000_abc.d3"),
        format!("/{ws}/onlineEndpoints/my-endpoint/listKeys?api-version=2024-04-01"),
        format!("/{ws}/onlineEndpoints/my-endpoint/deployments/blue/getLogs?api-version=2024-04-01"),
        "/subscriptions/00000000-0000-0000-0000-000000000/providers/Microsoft.MachineLearningServices/locations/westus/mfeOperationsStatus/oeidp:23329d4e-9b5f-403d-a218-c4e4f8323f5a:aed27aba-8ccf-4ff7-b49c-ed5627669f2e?api-version=2022-02-01-preview".to_owned(),
        "/batch?api-version=2020-06-01".to_owned(),
        "/score".to_owned(),
    ]);
    for target in &targets {
        let (status, _, body) = request(Method::GET, &proxy.url(target), &[], "").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{target}: {}",
            String::from_utf8_lossy(&body)
        );
        let seen = world.upstream.last_request().unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        assert_eq!(seen.path, path);
        assert_eq!(seen.query.as_deref().unwrap_or(""), query);
    }
    assert_eq!(world.upstream.count(), targets.len());
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
        let (status, headers, body) = raw::send(proxy.addr(), &head).await;
        let text = String::from_utf8_lossy(&body);
        if status == StatusCode::OK {
            let seen = world.upstream.requests();
            assert_eq!(seen.len(), 1, "{target}");
            assert_eq!(seen[0].path, "/steal", "{target}");
            assert_eq!(seen[0].query.as_deref(), Some("x=1"), "{target}");
            assert_eq!(json_body(&body)["path"], "/steal");
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
    let answer = raw::send(proxy.addr(), &head).await;
    assert_error(&answer, StatusCode::MISDIRECTED_REQUEST, "HostNotAllowed");
    let head = format!(
        "CONNECT 127.0.0.1:{c} HTTP/1.1\r\nHost: 127.0.0.1:{c}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw::send(proxy.addr(), &head).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");
    assert_eq!(world.upstream.count(), 0);

    assert!(!canary.was_contacted(), "the proxy connected to the canary");
    proxy.stop().await;
}
