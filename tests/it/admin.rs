//! The admin listener as an operator sees it: liveness, readiness that follows the tokens,
//! Prometheus metrics that count requests and token fetches without leaking secrets, and the Host check.

// clippy's `allow-*-in-tests` covers `#[test]` functions only, not this module's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed expectation must fail the test loudly"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use tokio::time::Instant;

use crate::support::metrics::{parse_scrape, value_of};
use crate::support::proxy::{CANARY_SECRET, TestProxy, World};
use crate::support::{Behavior, expect_proxy_error, get, json_body, request, trace_init};

/// `GET /metrics`: checks status and content type, returns the text.
async fn scrape(proxy: &TestProxy) -> String {
    let (status, headers, body) = get(&proxy.admin_url("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let content_type = headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn healthz_answers_at_once_and_readyz_waits_for_the_token() {
    let _trace = trace_init();
    let world = World::new().await;
    // The token takes 1.5 s, so right after start-up it is certainly missing.
    let proxy = world.simple_proxy("slow1500").await;
    let (status, _, _) = get(&proxy.admin_url("/healthz")).await;
    assert_eq!(status, StatusCode::OK);

    let (status, headers, body) = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let ready = json_body(&body);
    assert_eq!(ready["ready"], false, "{ready}");
    let missing = ready["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{ready}");
    assert_eq!(missing[0]["route"], "arm");
    assert_eq!(missing[0]["credential"], "sp");

    proxy.wait_ready().await;
    let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    let ready = json_body(&body);
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["routes"][0]["route"], "arm");
    assert_eq!(
        world.upstream.count(),
        0,
        "readiness needs no client traffic"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn readyz_names_the_route_whose_credential_is_rejected() {
    let _trace = trace_init();
    let world = World::new().await;
    world.aad.set_behavior(
        "badsecret",
        Behavior::json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: 2025-01-01 00:00:00Z",
                "error_codes": [7000215],
            })
            .to_string(),
        ),
    );
    let credentials = format!(
        "{}{}",
        World::sp("good-sp", "ok"),
        World::sp("bad-sp", "badsecret")
    );
    let routes = format!(
        "{}{}",
        world.route("scoring", "/score", "bad-sp", ""),
        world.route("arm", "/", "good-sp", "")
    );
    let proxy = TestProxy::start(&world.config(&credentials, &routes)).await;

    let deadline = Instant::now() + Duration::from_secs(5);
    let report = loop {
        let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let report = json_body(&body);
        let settled = report["missing"][0]["code"].is_string() && report["routes"][0].is_object();
        if settled || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let missing = report["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{report}");
    assert_eq!(missing[0]["route"], "scoring", "{report}");
    assert_eq!(missing[0]["credential"], "bad-sp", "{report}");
    assert_eq!(missing[0]["code"], "CredentialRejected", "{report}");
    let ready = report["routes"].as_array().unwrap();
    assert_eq!(ready.len(), 1, "{report}");
    assert_eq!(ready[0]["route"], "arm", "{report}");
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_expose_the_documented_families_and_count_requests() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("ok").await;
    proxy.wait_ready().await;
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/subscriptions")).await.0, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_eq!(
            get(&proxy.url("/status/404")).await.0,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        get(&proxy.url("/status/503")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // A request is counted when its response body ends: poll briefly for the last one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (text, samples) = loop {
        let text = scrape(&proxy).await;
        let samples = parse_scrape(&text);
        let counted = value_of(
            &samples,
            "aml_auth_proxy_request_duration_seconds_count",
            &[("route", "arm")],
        );
        if counted == Some(6.0) || Instant::now() > deadline {
            break (text, samples);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    for family in [
        "aml_auth_proxy_requests_total",
        "aml_auth_proxy_request_duration_seconds",
        "aml_auth_proxy_upstream_duration_seconds",
        "aml_auth_proxy_token_requests_total",
        "aml_auth_proxy_token_expiry_seconds",
        "aml_auth_proxy_in_flight_requests",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no {family} in\n{text}"
        );
    }
    let requests = |class| {
        value_of(
            &samples,
            "aml_auth_proxy_requests_total",
            &[("route", "arm"), ("status_class", class)],
        )
    };
    assert_eq!(requests("2xx"), Some(3.0), "\n{text}");
    assert_eq!(requests("4xx"), Some(2.0), "\n{text}");
    assert_eq!(requests("5xx"), Some(1.0), "\n{text}");
    assert_eq!(
        value_of(
            &samples,
            "aml_auth_proxy_request_duration_seconds_count",
            &[("route", "arm")]
        ),
        Some(6.0),
        "\n{text}"
    );
    assert_eq!(
        value_of(
            &samples,
            "aml_auth_proxy_upstream_duration_seconds_count",
            &[("route", "arm")]
        ),
        Some(6.0),
        "\n{text}"
    );
    assert_eq!(
        value_of(
            &samples,
            "aml_auth_proxy_token_requests_total",
            &[
                ("credential", "sp"),
                ("source", "client_secret"),
                ("outcome", "success")
            ],
        ),
        Some(1.0),
        "\n{text}"
    );
    let expiry = value_of(
        &samples,
        "aml_auth_proxy_token_expiry_seconds",
        &[
            ("credential", "sp"),
            ("scope", "https://management.azure.com/.default"),
        ],
    )
    .unwrap_or_else(|| panic!("no token expiry in\n{text}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now + 3400.0..=now + 3700.0).contains(&expiry),
        "expiry {expiry}, now {now}"
    );
    assert_eq!(
        value_of(&samples, "aml_auth_proxy_in_flight_requests", &[]),
        Some(0.0),
        "\n{text}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_never_contain_the_secret_or_a_token() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("ok").await;
    for path in ["/subscriptions", "/status/401", "/challenge"] {
        let _ = get(&proxy.url(path)).await;
    }
    let text = scrape(&proxy).await;
    let issued = world.aad.registry().all();
    assert!(!issued.is_empty());
    assert!(
        !text.contains(CANARY_SECRET),
        "the client secret is in the scrape"
    );
    for token in issued {
        assert!(
            !text.contains(&token.token),
            "token {} is in the scrape",
            token.token
        );
    }
    assert!(!text.contains("at.ok."), "a token prefix is in the scrape");
    proxy.stop().await;
}

#[tokio::test]
async fn admin_refuses_a_foreign_host_with_421() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("ok").await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = request(
            Method::GET,
            &proxy.admin_url(path),
            &[("host", "attacker.example:9464")],
            "",
        )
        .await;
        expect_proxy_error(&answer, StatusCode::MISDIRECTED_REQUEST, "HostNotAllowed");
        assert!(
            !String::from_utf8_lossy(&answer.2).contains("aml_auth_proxy_"),
            "{path}: no metrics for a foreign host"
        );
    }
    // An allowed name with any port is fine.
    let answer = request(
        Method::GET,
        &proxy.admin_url("/healthz"),
        &[("host", "localhost:1")],
        "",
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test]
async fn unknown_admin_path_is_404() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("ok").await;
    let answer = get(&proxy.admin_url("/admin/secrets")).await;
    assert_eq!(answer.0, StatusCode::NOT_FOUND);
    // A proxy-generated answer like any other: JSON, with the code in a header too.
    let code = answer
        .1
        .get("x-aml-auth-proxy-error")
        .expect("x-aml-auth-proxy-error")
        .to_str()
        .unwrap()
        .to_owned();
    expect_proxy_error(&answer, StatusCode::NOT_FOUND, &code);
    proxy.stop().await;
}
