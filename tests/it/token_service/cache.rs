//! The token service answers through the proxy's token cache: a burst costs one token request, the entry is the
//! proxy path's own, Conditional Access refusals are shared and damped, and `/readyz` covers the entries in use.

use std::time::Duration;

use aml_auth_proxy::env::MapEnv;
use aml_auth_proxy::token_cache::CachePolicy;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::{ARM, SECRET, UAMI, app_service, config, expect_flat_error, start, url};
use crate::support::proxy::{TestProxy, World};
use crate::support::{
    Behavior, MockAad, get, h2_client, json_body, request, request_via, trace_init,
};

const BLOCKED: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const CA_FIXTURE: &str = "aad_error_53003_blocked_by_conditional_access.json";

/// `connections × streams` concurrent App Service requests over HTTP/2 for `resource` (plus `extra` query text).
async fn burst(
    proxy: &TestProxy,
    resource: &str,
    extra: &str,
    connections: usize,
    streams: usize,
) -> Vec<(StatusCode, HeaderMap, Bytes)> {
    let target = url(
        proxy,
        &format!("/msi/token?api-version=2019-08-01&resource={resource}{extra}"),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let client = h2_client();
        for _ in 0..streams {
            let (client, target) = (client.clone(), target.clone());
            tasks.spawn(async move {
                request_via(
                    &client,
                    Method::GET,
                    &target,
                    &[("x-identity-header", SECRET)],
                    "",
                )
                .await
            });
        }
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_requests_costs_one_token_request() {
    let _t = trace_init();
    let world = World::new().await;
    // The token endpoint takes 300 ms, so the whole burst arrives while the one fetch is in flight.
    let proxy = start(&world, "slow300", false).await;
    let answers = burst(&proxy, "https://ml.azure.com", "", 10, 100).await;
    assert_eq!(answers.len(), 1000);
    let tokens: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, _, body)| {
            assert_eq!(*status, StatusCode::OK, "{body:?}");
            json_body(body)["access_token"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "one token for everyone");
    let ml_requests = world
        .aad
        .requests_for("slow300")
        .into_iter()
        .filter(|r| r.form["scope"] == "https://ml.azure.com/.default")
        .count();
    assert_eq!(
        ml_requests, 1,
        "exactly one token-endpoint call for the burst"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_proxy_path_and_the_token_service_share_one_entry_and_readyz_covers_it() {
    let _t = trace_init();
    let world = World::new().await;
    let proxy = start(&world, "ts-shared", false).await;
    proxy.wait_ready().await;
    // Before any caller: readiness is the route's, and the token service lists nothing in use.
    let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_body(&body)["token_service"], serde_json::json!([]));
    // The route pre-fetched the ARM token; the token service hands out that same token.
    let (status, _, body) = app_service(&proxy, "https://management.azure.com/.default", "").await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let token = json_body(&body)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(world.aad.count("ts-shared"), 1, "no second token request");
    assert_eq!(
        world
            .aad
            .registry()
            .all()
            .iter()
            .filter(|t| t.tenant == "ts-shared")
            .count(),
        1
    );
    assert!(world.aad.registry().is_valid(&token));
    let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    let ready = json_body(&body);
    assert_eq!(ready["token_service"][0]["identity"], "default");
    assert_eq!(ready["token_service"][0]["credential"], "sp");
    assert_eq!(ready["token_service"][0]["resource"], ARM);
    assert!(ready["token_service"][0]["expires_on"].as_u64().is_some());
    proxy.stop().await;
}

/// A proxy whose identity [`BLOCKED`] maps to a credential Entra ID refuses with AADSTS53003; refusals are
/// damped for `min_retry`.
async fn blocked_proxy(world: &World, min_retry: Duration) -> TestProxy {
    world.aad.set_behavior(
        "ts-blocked",
        Behavior::fixture(StatusCode::BAD_REQUEST, CA_FIXTURE),
    );
    let credentials = format!(
        "{}{}",
        World::sp("sp", "ts-good"),
        World::sp("blocked", "ts-blocked")
    );
    let identities = format!("    default: sp\n    \"{BLOCKED}\": blocked\n");
    let policy = CachePolicy {
        min_retry,
        ..CachePolicy::default()
    };
    TestProxy::start_with(
        &config(world, &credentials, &identities, false),
        MapEnv::new(),
        policy,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_access_is_403_with_entra_ids_details_and_1000_requests_cost_no_more_token_requests()
 {
    let _t = trace_init();
    let world = World::new().await;
    let proxy = blocked_proxy(&world, Duration::from_secs(60)).await;
    let answer = app_service(&proxy, ARM, &format!("&client_id={BLOCKED}")).await;
    let j = expect_flat_error(&answer, StatusCode::FORBIDDEN, "ConditionalAccessBlocked");
    let fixture: serde_json::Value = serde_json::from_str(&MockAad::fixture(CA_FIXTURE)).unwrap();
    assert_eq!(j["error"], "invalid_grant");
    assert_eq!(j["aad"]["error_codes"], serde_json::json!([53003]));
    assert_eq!(j["aad"]["correlation_id"], fixture["correlation_id"]);
    for field in ["error_description", "message"] {
        let text = j[field].as_str().unwrap();
        assert!(text.starts_with("AADSTS53003"), "{text}");
        assert!(
            text.contains(fixture["trace_id"].as_str().unwrap()),
            "{field}: {text}"
        );
        assert!(
            text.contains(fixture["correlation_id"].as_str().unwrap()),
            "{field}: {text}"
        );
    }
    assert_eq!(j["credential"], "blocked");
    assert_eq!(world.aad.count("ts-blocked"), 1);

    // Inside the damping window, a thousand more callers get the same answer without a token request.
    let answers = burst(&proxy, ARM, &format!("&client_id={BLOCKED}"), 10, 100).await;
    assert!(answers.iter().all(|a| a.0 == StatusCode::FORBIDDEN));
    assert_eq!(
        world.aad.count("ts-blocked"),
        1,
        "damped: no further token request"
    );

    // /readyz names the identity whose token is refused.
    let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let missing = &json_body(&body)["missing"][0];
    assert_eq!(missing["token_service"], true);
    assert_eq!(missing["identity"], BLOCKED);
    assert_eq!(missing["credential"], "blocked");
    assert_eq!(missing["code"], "ConditionalAccessBlocked");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_damping_window_one_more_token_request_serves_a_new_burst() {
    let _t = trace_init();
    let world = World::new().await;
    let window = Duration::from_millis(1500);
    let proxy = blocked_proxy(&world, window).await;
    let answer = app_service(&proxy, ARM, &format!("&client_id={BLOCKED}")).await;
    expect_flat_error(&answer, StatusCode::FORBIDDEN, "ConditionalAccessBlocked");
    let first = world.aad.count("ts-blocked");
    // Real time (a real socket server): wait past the window, then a burst of 200.
    tokio::time::sleep(window + Duration::from_millis(300)).await;
    let before = world.aad.count("ts-blocked");
    let answers = burst(&proxy, ARM, &format!("&client_id={BLOCKED}"), 2, 100).await;
    assert!(answers.iter().all(|a| a.0 == StatusCode::FORBIDDEN));
    let cost = world.aad.count("ts-blocked") - before;
    assert!(
        cost <= 1,
        "a burst after the window costs at most one token request, got {cost}"
    );
    assert!(world.aad.count("ts-blocked") >= first);
    let (status, _, _) = request(
        Method::GET,
        &url(
            &proxy,
            "/msi/token?api-version=2019-08-01&resource=https://ml.azure.com",
        ),
        &[("x-identity-header", SECRET)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "other identities are unaffected");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_first_token_request_is_pending_is_listed_but_does_not_make_readyz_fail() {
    let _t = trace_init();
    let world = World::new().await;
    world.aad.set_behavior("uami-tenant", Behavior::Hang);
    let proxy = start(&world, "ts-pending", false).await;
    proxy.wait_ready().await;
    let waiting = {
        let target = url(
            &proxy,
            &format!("/msi/token?api-version=2019-08-01&resource={ARM}&client_id={UAMI}"),
        );
        tokio::spawn(async move {
            request(Method::GET, &target, &[("x-identity-header", SECRET)], "").await
        })
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while world.aad.count("uami-tenant") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the token request for the user-assigned identity starts");
    // A caller's first request for an entry cannot take the pod out of service while Entra ID answers.
    let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
    let ready = json_body(&body);
    assert_eq!(status, StatusCode::OK, "{ready}");
    let pending = &ready["token_service"][0];
    assert_eq!(pending["identity"], UAMI);
    assert_eq!(pending["pending"], true, "{ready}");
    assert!(ready.get("missing").is_none(), "{ready}");
    waiting.abort();
    proxy.stop().await;
}
