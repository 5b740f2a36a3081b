//! Request rules from the threat model (SECURITY.md) that are not about routing: spoofable metadata is
//! dropped, `X-Forwarded-For` is set, IMDS's `Metadata` header never travels, underscores and protocol switches
//! are refused, and callers cannot choose the identity.

use http::{Method, StatusCode};

use crate::support::proxy::{TestProxy, World};
use crate::support::{json_body, request, trace_init};

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

/// Override and client-identity headers a caller may not set on a forwarded request by default, with a value
/// each (the documented list in docs/configuration.md, "Headers dropped unless a route forwards them").
const DROPPED_BY_DEFAULT: &[(&str, &str)] = &[
    ("x-http-method-override", "DELETE"),
    ("x-http-method", "DELETE"),
    ("x-method-override", "DELETE"),
    ("x-rewrite-url", "/admin"),
    ("x-override-url", "/admin"),
    ("x-waws-unencoded-url", "/admin"),
    ("x-host", "attacker.example"),
    ("x-http-host-override", "attacker.example"),
    ("x-real-ip", "10.9.8.7"),
    ("true-client-ip", "10.9.8.7"),
    ("x-client-ip", "10.9.8.7"),
    ("client-ip", "10.9.8.7"),
    ("x-cluster-client-ip", "10.9.8.7"),
    ("x-originating-ip", "10.9.8.7"),
    ("x-remote-ip", "10.9.8.7"),
    ("x-remote-addr", "10.9.8.7"),
    ("x-proxyuser-ip", "10.9.8.7"),
    ("proxy-client-ip", "10.9.8.7"),
    ("wl-proxy-client-ip", "10.9.8.7"),
    ("x-ms-forwarded-client-ip", "10.9.8.7"),
    ("x-azure-clientip", "10.9.8.7"),
    ("x-azure-socketip", "10.9.8.7"),
    ("x-azure-fdid", "00000000-0000-0000-0000-000000000000"),
    ("cf-connecting-ip", "10.9.8.7"),
    ("cf-connecting-ipv6", "::1"),
    ("fastly-client-ip", "10.9.8.7"),
    ("x-appengine-user-ip", "10.9.8.7"),
    ("x-envoy-original-path", "/admin"),
    ("x-envoy-internal", "true"),
    ("x-ms-client-principal", "e30="),
    ("x-ms-client-principal-name", "admin@contoso.com"),
    ("x-ms-token-aad-access-token", "caller-chosen"),
    ("x-forwarded-server", "attacker.example"),
];

#[tokio::test]
async fn override_and_client_identity_headers_are_dropped_by_default() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("overrides").await;
    let mut headers = DROPPED_BY_DEFAULT.to_vec();
    headers.push(("x-kept", "yes"));
    headers.push(("x-ms-client-request-id", "kept-too"));
    let (status, _, body) = request(Method::GET, &proxy.url("/x"), &headers, "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let seen = world.upstream.last_request().unwrap();
    for (name, _) in DROPPED_BY_DEFAULT {
        assert!(!seen.headers.contains_key(*name), "{name} forwarded");
    }
    assert_eq!(seen.headers["x-kept"], "yes");
    assert_eq!(seen.headers["x-ms-client-request-id"], "kept-too");
    assert_eq!(seen.method, Method::GET);
    assert!(seen.token.is_some());
    proxy.stop().await;
}

#[tokio::test]
async fn a_route_may_forward_chosen_override_headers() {
    let _trace = trace_init();
    let world = World::new().await;
    let forward =
        "    forward_headers: [X-Real-IP, x-envoy-original-path, x-http-method-override]\n";
    let routes = [
        world.route("opt", "/opt", "sp", forward),
        world.route("plain", "/", "sp", ""),
    ]
    .concat();
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "optin"), &routes)).await;
    let (status, _, _) = request(Method::GET, &proxy.url("/opt/x"), DROPPED_BY_DEFAULT, "").await;
    assert_eq!(status, StatusCode::OK);
    let seen = world.upstream.last_request().unwrap().headers;
    for (name, value) in DROPPED_BY_DEFAULT {
        let forwarded = [
            "x-real-ip",
            "x-envoy-original-path",
            "x-http-method-override",
        ];
        match seen.get(*name) {
            Some(v) => assert!(forwarded.contains(name) && v == value, "{name} forwarded"),
            None => assert!(!forwarded.contains(name), "{name} dropped"),
        }
    }
    // Another route does not inherit the choice.
    let (status, _, _) = request(Method::GET, &proxy.url("/y"), DROPPED_BY_DEFAULT, "").await;
    assert_eq!(status, StatusCode::OK);
    let seen = world.upstream.last_request().unwrap().headers;
    assert!(!seen.contains_key("x-real-ip") && !seen.contains_key("x-http-method-override"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_forwarded_method_override_is_held_to_the_routes_allowed_methods() {
    let _trace = trace_init();
    let world = World::new().await;
    let routes = [
        world.route(
            "read-only",
            "/ro",
            "sp",
            "    allow: { methods: [GET, POST] }\n    forward_headers: [x-http-method-override, x-method-override]\n",
        ),
        world.route("read-only-plain", "/plain", "sp", "    allow: { methods: [GET] }\n"),
    ]
    .concat();
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "effective"), &routes)).await;
    proxy.wait_ready().await;
    for headers in [
        vec![("x-http-method-override", "DELETE")],
        vec![("x-http-method-override", "delete")],
        vec![("x-method-override", "PUT")],
        vec![
            ("x-http-method-override", "GET"),
            ("x-method-override", "PATCH"),
        ],
        vec![("x-http-method-override", "TRACE")],
    ] {
        let answer = request(Method::POST, &proxy.url("/ro/x"), &headers, "{}").await;
        let (status, _, body) = &answer;
        assert_eq!(
            *status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{headers:?}: {}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(answer.1["x-aml-auth-proxy-error"], "MethodNotAllowed");
        assert_eq!(answer.1["allow"], "GET, POST");
    }
    for headers in [
        vec![("x-http-method-override", "DE LETE")],
        vec![("x-http-method-override", "")],
        vec![("x-http-method-override", "GET, DELETE")],
    ] {
        let (status, answer, _) = request(Method::POST, &proxy.url("/ro/x"), &headers, "{}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert_eq!(answer["x-aml-auth-proxy-error"], "BadRequest");
    }
    assert_eq!(
        world.upstream.count(),
        0,
        "a refused override reached the upstream"
    );
    // An allowed effective method goes through, override header and all.
    let headers = [("x-http-method-override", "get")];
    let (status, _, _) = request(Method::POST, &proxy.url("/ro/x"), &headers, "{}").await;
    assert_eq!(status, StatusCode::OK);
    let seen = world.upstream.last_request().unwrap();
    assert_eq!(seen.headers["x-http-method-override"], "get");
    // Without the opt-in the header never travels, so it cannot change the method the upstream acts on.
    let headers = [("x-http-method-override", "DELETE")];
    let (status, _, _) = request(Method::GET, &proxy.url("/plain/x"), &headers, "").await;
    assert_eq!(status, StatusCode::OK);
    let seen = world.upstream.last_request().unwrap();
    assert!(!seen.headers.contains_key("x-http-method-override"));
    proxy.stop().await;
}

#[tokio::test]
async fn trace_track_and_debug_are_refused_unless_the_route_lists_them() {
    let _trace = trace_init();
    let world = World::new().await;
    let routes = [
        world.route("any", "/", "sp", ""),
        world.route(
            "diag",
            "/diag",
            "sp",
            "    allow: { methods: [GET, TRACE] }\n",
        ),
    ]
    .concat();
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "trace"), &routes)).await;
    proxy.wait_ready().await;
    for method in ["TRACE", "TRACK", "DEBUG"] {
        for path in ["/x", "/diag/x"] {
            if method == "TRACE" && path == "/diag/x" {
                continue;
            }
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, answer, body) = request(method.clone(), &proxy.url(path), &[], "").await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(answer["x-aml-auth-proxy-error"], "MethodNotAllowed");
            assert_eq!(json_body(&body)["error"]["code"], "MethodNotAllowed");
        }
    }
    assert_eq!(world.upstream.count(), 0);
    // A route that names TRACE gets it.
    let (status, _, _) = request(Method::TRACE, &proxy.url("/diag/x"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(world.upstream.last_request().unwrap().method, Method::TRACE);
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
        assert_eq!(json_body(&body)["error"]["code"], "BadRequest");
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
        json_body(&body)["query"],
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
