//! Admission: the Host allowlist (421), browser cross-origin requests (403, no CORS), and a
//! route's least-privilege `allow` policy (405 / 403) — all answered before any token is used or any upstream
//! request is made.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{assert_error, assert_no_cors};
use crate::support::proxy::{TestProxy, World, route_block};
use crate::support::{json_body, raw, request, trace_init};

/// (path, method, extra request headers).
type BrowserRequest<'a> = (&'a str, Method, &'a [(&'a str, &'a str)]);

/// (method, path, extra request headers, expected status, expected error code).
type Refusal<'a> = (
    Method,
    &'a str,
    Vec<(&'a str, &'a str)>,
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn foreign_host_is_421_with_no_token_or_upstream_request() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("hostcheck").await;
    // Pre-fetch has happened; from here on the token count must not move.
    proxy.wait_ready().await;
    let tokens = world.aad.count("hostcheck");
    let port = proxy.addr().port();
    for host in [
        "evil.com".to_owned(),
        format!("evil.com:{port}"),
        "127.0.0.1.nip.io".to_owned(),
        format!("127.0.0.1.nip.io:{port}"),
        "localhost.".to_owned(),
        format!("localhost.:{port}"),
        "0.0.0.0".to_owned(),
        format!("0.0.0.0:{port}"),
        // Nothing listens on [::1] (the proxy is on 127.0.0.1), so it is not a default allowed host.
        format!("[::1]:{port}"),
    ] {
        let answer = request(Method::GET, &proxy.url("/x"), &[("host", &host)], "").await;
        let error = assert_error(&answer, StatusCode::MISDIRECTED_REQUEST, "HostNotAllowed");
        assert!(!error.to_string().contains("at.hostcheck"), "{error}");
    }
    // HTTP/1.0 allows a request without Host; the proxy must not guess one.
    let answer = raw::send(proxy.addr(), "GET /x HTTP/1.0\r\n\r\n").await;
    assert_error(&answer, StatusCode::MISDIRECTED_REQUEST, "HostNotAllowed");
    // An allowed Host followed by a foreign one is not accepted either.
    let head = format!(
        "GET /x HTTP/1.1\r\nHost: localhost:{port}\r\nHost: evil.com\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = raw::send(proxy.addr(), &head).await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::MISDIRECTED_REQUEST,
        "two Host headers: {status} {}",
        String::from_utf8_lossy(&body)
    );

    assert_eq!(
        world.upstream.count(),
        0,
        "no refused request reached the upstream"
    );
    assert_eq!(
        world.aad.count("hostcheck"),
        tokens,
        "no token request for refused requests"
    );

    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
    ] {
        let (status, _, body) =
            request(Method::GET, &proxy.url("/ok"), &[("host", &host)], "").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{host}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(world.upstream.count(), 4);
    assert_eq!(world.upstream.rejected_count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn foreign_authority_over_http2_cleartext_is_421() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("h2host").await;
    proxy.wait_ready().await;
    let tokens = world.aad.count("h2host");
    // One prior-knowledge HTTP/2 connection to the proxy; each request names its own :authority.
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let port = proxy.addr().port();
    for (authority, status) in [
        (format!("evil.com:{port}"), StatusCode::MISDIRECTED_REQUEST),
        (
            "127.0.0.1.nip.io".to_owned(),
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (format!("localhost:{port}"), StatusCode::OK),
    ] {
        let req = http::Request::get(format!("http://{authority}/x"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), status, "{authority}");
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if status != StatusCode::OK {
            assert_error(&(status, headers, body), status, "HostNotAllowed");
        }
    }
    assert_eq!(world.upstream.count(), 1);
    assert_eq!(world.aad.count("h2host"), tokens);
    proxy.stop().await;
}

#[tokio::test]
async fn browser_cross_origin_requests_are_403_unless_the_route_allows_the_origin() {
    let _trace = trace_init();
    let world = World::new().await;
    let up = world.upstream.base_url();
    let routes = [
        route_block("arm", "/", &up, false, "sp", ""),
        route_block(
            "ui",
            "/ui",
            &up,
            true,
            "sp",
            "    allow: { origins: [\"http://localhost:3000\"] }\n",
        ),
    ]
    .concat();
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "origin"), &routes)).await;

    let mut every_answer: Vec<HeaderMap> = Vec::new();
    let refused: [BrowserRequest<'_>; 8] = [
        ("/x", Method::GET, &[("origin", "https://evil.example")]),
        ("/x", Method::POST, &[("origin", "http://localhost:3000")]),
        ("/x", Method::GET, &[("origin", "null")]),
        ("/x", Method::GET, &[("sec-fetch-site", "cross-site")]),
        ("/ui/x", Method::GET, &[("origin", "https://evil.example")]),
        ("/ui/x", Method::GET, &[("origin", "http://localhost:3001")]),
        ("/ui/x", Method::GET, &[("sec-fetch-site", "cross-site")]),
        (
            "/ui/x",
            Method::GET,
            &[
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
    ];
    for (path, method, headers) in refused {
        let answer = request(method.clone(), &proxy.url(path), headers, "").await;
        assert_error(&answer, StatusCode::FORBIDDEN, "OriginNotAllowed");
        every_answer.push(answer.1);
    }
    assert_eq!(
        world.upstream.count(),
        0,
        "refused requests never reach the upstream"
    );

    // Every CORS preflight fails, even from an allowed origin: no CORS, ever.
    for origin in ["https://evil.example", "http://localhost:3000"] {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
        ];
        let answer = request(Method::OPTIONS, &proxy.url("/ui/x"), &headers, "").await;
        assert_error(&answer, StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
        every_answer.push(answer.1);
    }
    assert_eq!(
        world.upstream.count(),
        0,
        "preflights never reach the upstream"
    );

    let accepted: [BrowserRequest<'_>; 4] = [
        ("/ui/x", Method::GET, &[("origin", "http://localhost:3000")]),
        (
            "/ui/x",
            Method::POST,
            &[
                ("origin", "http://localhost:3000"),
                ("sec-fetch-site", "same-site"),
            ],
        ),
        // Not cross-origin: a typed-in URL, and a request with no browser headers at all.
        ("/x", Method::GET, &[("sec-fetch-site", "none")]),
        ("/x", Method::GET, &[]),
    ];
    for (path, method, headers) in accepted {
        let (status, answer_headers, body) =
            request(method.clone(), &proxy.url(path), headers, "").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{method} {path} {headers:?}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(json_body(&body)["method"], method.as_str());
        every_answer.push(answer_headers);
    }
    assert_eq!(world.upstream.count(), 4);
    for headers in &every_answer {
        assert_no_cors(headers);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn allow_policy_refuses_methods_with_405_and_paths_with_403_before_the_upstream() {
    let _trace = trace_init();
    let world = World::new().await;
    let allow =
        "    allow: { methods: [GET, PUT], paths: [\"/subscriptions/*/resourceGroups\"] }\n";
    let routes = world.route("arm", "/", "sp", allow);
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "allow"), &routes)).await;
    let allowed_path = "/subscriptions/s1/resourceGroups/rg";

    for method in [Method::POST, Method::DELETE, Method::PATCH] {
        let answer = request(method.clone(), &proxy.url(allowed_path), &[], "{}").await;
        assert_error(&answer, StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
        let allow = answer.1.get(http::header::ALLOW).expect("Allow header");
        let mut listed: Vec<String> = allow
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, ["GET", "PUT"], "{method}");
    }
    for path in [
        "/subscriptions/s1/providers/Microsoft.Storage",
        "/subscriptions/s1/resourceGroupsX",
        "/subscriptions",
        "/",
    ] {
        let answer = request(Method::GET, &proxy.url(path), &[], "").await;
        assert_error(&answer, StatusCode::FORBIDDEN, "PathNotAllowed");
    }
    assert_eq!(world.upstream.count(), 0);

    for (method, path) in [
        (Method::GET, allowed_path),
        (Method::PUT, allowed_path),
        (Method::GET, "/subscriptions/s2/resourceGroups"),
    ] {
        let (status, _, body) = request(method.clone(), &proxy.url(path), &[], "").await;
        assert_eq!(status, StatusCode::OK, "{method} {path}");
        assert_eq!(json_body(&body)["path"], path);
    }
    assert_eq!(world.upstream.count(), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn refusals_are_answered_without_waiting_for_a_token() {
    let _trace = trace_init();
    let world = World::new().await;
    // Entra ID never answers for this tenant: anything that waited for a token would hang.
    let allow = "    allow: { methods: [GET], paths: [\"/api/ok\"] }\n";
    let routes = route_block(
        "api",
        "/api",
        &world.upstream.base_url(),
        false,
        "sp",
        allow,
    );
    let proxy = TestProxy::start(&world.config(&World::sp("sp", "hang"), &routes)).await;
    let port = proxy.addr().port();
    let bad_path =
        format!("GET /api/../x HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
    let cases: [Refusal<'_>; 5] = [
        (
            Method::GET,
            "/other",
            vec![],
            StatusCode::NOT_FOUND,
            "NoRoute",
        ),
        (
            Method::POST,
            "/api/ok",
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
        ),
        (
            Method::GET,
            "/api/nope",
            vec![],
            StatusCode::FORBIDDEN,
            "PathNotAllowed",
        ),
        (
            Method::GET,
            "/api/ok",
            vec![("host", "evil.com")],
            StatusCode::MISDIRECTED_REQUEST,
            "HostNotAllowed",
        ),
        (
            Method::GET,
            "/api/ok",
            vec![("origin", "https://evil.example")],
            StatusCode::FORBIDDEN,
            "OriginNotAllowed",
        ),
    ];
    let hang_guard = Duration::from_secs(10);
    for (method, path, headers, status, code) in cases {
        let answer =
            tokio::time::timeout(hang_guard, request(method, &proxy.url(path), &headers, ""))
                .await
                .unwrap_or_else(|_| panic!("{code}: the refusal waited for a token"));
        assert_error(&answer, status, code);
    }
    let answer = raw::send(proxy.addr(), &bad_path).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");
    assert_eq!(world.upstream.count(), 0);
    proxy.stop().await;
}
