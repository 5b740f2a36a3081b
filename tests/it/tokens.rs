//! Token acquisition end to end, as a user of the proxy observes it: what is sent to Entra ID, how many token
//! requests a load causes, tokens rotating under load, and every token failure's answer (status, code, Entra
//! ID's details).

// clippy's `allow-*-in-tests` covers `#[test]` functions only, not this module's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed expectation must fail the test loudly"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use aml_auth_proxy::env::MapEnv;
use aml_auth_proxy::token_cache::CachePolicy;

use crate::support::proxy::{CANARY_SECRET, CLIENT_ID, TestProxy, World};
use crate::support::{
    ARM_SCOPE, Behavior, MockAad, Rejection, expect_proxy_error, get, h2_burst, http_client,
    json_body, now_unix, request_via, retry_after_secs, trace_init,
};

/// The credential name the tests configure: error answers must name it.
const CRED: &str = "training-sp";

/// A proxy with one `client_secret` credential [`CRED`] in `tenant` (which picks the mock's behaviour) and
/// one route `arm` on `/` to the upstream.
async fn proxy_for(world: &World, tenant: &str) -> TestProxy {
    TestProxy::start(&world.config(&World::sp(CRED, tenant), &world.route("arm", "/", CRED, "")))
        .await
}

/// Starts a proxy whose token endpoint answers `behavior` and sends one request through it.
async fn answer_for(
    behavior: Behavior,
) -> (World, TestProxy, (StatusCode, HeaderMap, bytes::Bytes)) {
    let world = World::new().await;
    world.aad.set_behavior("refused", behavior);
    let proxy = proxy_for(&world, "refused").await;
    let answer = get(&proxy.url("/subscriptions?api-version=2022-12-01")).await;
    (world, proxy, answer)
}

/// Asserts the error names the configured credential and the `client_secret` source.
fn assert_names_credential(error: &Value) {
    assert_eq!(error["credential"], CRED, "{error}");
    assert_eq!(error["source"], "client_secret", "{error}");
}

/// The `claims="…"` parameter of a `WWW-Authenticate` value.
fn claims_param(challenge: &str) -> Option<&str> {
    let start = challenge.find("claims=\"")? + "claims=\"".len();
    let len = challenge[start..].find('"')?;
    Some(&challenge[start..start + len])
}

/// A loopback port nobody listens on (bound, then released).
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    listener.local_addr().unwrap().port()
}

// === what is sent ===

#[tokio::test]
async fn client_credentials_request_is_exactly_the_v2_form() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy_for(&world, "formcheck").await;
    let (status, _, body) = get(&proxy.url("/subscriptions")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    let requests = world.aad.requests_for("formcheck");
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let sent = &requests[0];
    assert_eq!(sent.method, Method::POST);
    assert_eq!(sent.path, "/formcheck/oauth2/v2.0/token");
    assert_eq!(sent.query, None);
    let content_type = sent
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap());
    assert!(
        content_type.is_some_and(|v| v.split(';').next().is_some_and(|t| t
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded"))),
        "content-type {content_type:?}"
    );
    // The v2 client-credentials form: exactly these fields, in this order; `claims` carries only the CP1 client capability.
    let fields: Vec<(String, String)> = form_urlencoded::parse(&sent.raw_body)
        .into_owned()
        .collect();
    let expected = [
        ("client_id", CLIENT_ID),
        ("client_secret", CANARY_SECRET),
        ("grant_type", "client_credentials"),
        ("scope", ARM_SCOPE),
        (
            "claims",
            r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#,
        ),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(fields, expected, "raw body in order");

    let token = world.upstream.last_request().unwrap().token.unwrap();
    assert_eq!(
        world.aad.registry().get(&token).unwrap().tenant,
        "formcheck"
    );
    proxy.stop().await;

    // `cae: false`: no client capability, so no `claims` at all.
    let yaml = format!(
        "cae: false\n{}",
        world.config(
            &World::sp(CRED, "nocae"),
            &world.route("arm", "/", CRED, "")
        )
    );
    let proxy = TestProxy::start(&yaml).await;
    assert_eq!(get(&proxy.url("/subscriptions")).await.0, StatusCode::OK);
    assert!(
        !world.aad.requests_for("nocae")[0]
            .form
            .contains_key("claims")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn token_responses_with_numbers_as_strings_are_understood() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy_for(&world, "strings").await;
    let (status, _, body) = get(&proxy.url("/subscriptions")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let token = world.upstream.last_request().unwrap().token.unwrap();
    assert!(token.starts_with("at.strings."), "{token}");
    assert_eq!(world.upstream.rejected_count(), 0);
    // `expires_in: "3600"` was read as an hour, not as zero or a parse failure.
    let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    let expires_on = json_body(&body)["routes"][0]["expires_on"]
        .as_u64()
        .unwrap();
    let now = now_unix();
    assert!(
        (now + 3400..=now + 3700).contains(&expires_on),
        "expires_on {expires_on}, now {now}"
    );
    assert_eq!(world.aad.count("strings"), 1);
    proxy.stop().await;
}

// === load: single flight and rotation ===

#[tokio::test(flavor = "multi_thread")]
async fn cold_start_storm_over_http2_makes_exactly_one_token_request() {
    let _trace = trace_init();
    let world = World::new().await;
    // The token takes 300 ms: the storm arrives while the start-up pre-fetch is still in flight.
    let proxy = proxy_for(&world, "slow300").await;
    let storm_start = Instant::now();
    let answers = h2_burst(&proxy.url("/subscriptions"), 20, 100).await;

    assert_eq!(answers.len(), 2000);
    let failures: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status != StatusCode::OK)
        .map(|(status, _, body)| (status, String::from_utf8_lossy(body).into_owned()))
        .take(5)
        .collect();
    assert!(failures.is_empty(), "non-200 answers, e.g. {failures:?}");
    assert_eq!(
        world.aad.count("slow300"),
        1,
        "one token request for 2,000 requests"
    );
    let issued = world.aad.registry().all();
    assert_eq!(issued.len(), 1);
    assert!(
        storm_start < issued[0].issued_instant,
        "the storm must start before the token is issued, or it tests nothing"
    );
    let seen = world.upstream.requests();
    assert_eq!(seen.len(), 2000);
    assert!(
        seen.iter()
            .all(|r| r.token.as_deref() == Some(&*issued[0].token)),
        "every request carried the one token"
    );
    assert_eq!(world.upstream.rejected_count(), 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_rotate_under_load_without_errors_or_expired_tokens() {
    let _trace = trace_init();
    let world = World::new().await;
    // 2 s tokens: usable for 1.8 s, refreshed ahead when about 1 s remains.
    let proxy = proxy_for(&world, "ttl2").await;
    proxy.wait_ready().await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (stop, url) = (stop.clone(), proxy.url(&format!("/loop/{i}")));
        loops.spawn(async move {
            let client = http_client();
            let (mut ok, mut bad) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let (status, _, body) = request_via(&client, Method::GET, &url, &[], "").await;
                if status == StatusCode::OK {
                    ok += 1;
                } else {
                    bad.push((status, String::from_utf8_lossy(&body).into_owned()));
                }
            }
            (ok, bad)
        });
    }
    // Run until Entra ID has issued enough tokens for at least five rotations to be seen upstream.
    let deadline = Instant::now() + Duration::from_secs(13);
    while world.aad.registry().len() < 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut bad) = (0, Vec::new());
    while let Some(result) = loops.join_next().await {
        let (o, b) = result.unwrap();
        ok += o;
        bad.extend(b);
    }

    assert!(
        bad.is_empty(),
        "{} non-200 answers, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let seen = world.upstream.requests();
    assert_eq!(seen.len(), ok);
    assert_eq!(
        world.upstream.rejected_count_for(Rejection::Expired),
        0,
        "an expired token was sent"
    );
    assert_eq!(world.upstream.rejected_count(), 0);
    let distinct: HashSet<&str> = seen.iter().filter_map(|r| r.token.as_deref()).collect();
    assert!(
        distinct.len() >= 6,
        "only {} distinct tokens seen upstream over {ok} requests",
        distinct.len()
    );
    proxy.stop().await;
}

// === failure classification: Entra ID's answer → the proxy's status and code ===

#[tokio::test]
async fn conditional_access_block_is_403_with_the_aad_details() {
    let _trace = trace_init();
    let fixture = "aad_error_53003_blocked_by_conditional_access.json";
    let (world, proxy, answer) =
        answer_for(Behavior::fixture(StatusCode::BAD_REQUEST, fixture)).await;
    let error = expect_proxy_error(&answer, StatusCode::FORBIDDEN, "ConditionalAccessBlocked");
    assert_names_credential(&error);
    let expected: Value = serde_json::from_str(&MockAad::fixture(fixture)).unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS53003"),
        "{error}"
    );
    let aad = &error["aad"];
    assert_eq!(aad["error"], "invalid_grant");
    assert_eq!(aad["error_codes"], serde_json::json!([53003]));
    assert_eq!(aad["suberror"], "message_only");
    for field in [
        "correlation_id",
        "trace_id",
        "timestamp",
        "error_uri",
        "claims",
    ] {
        assert_eq!(aad[field], expected[field], "aad.{field}");
    }
    assert!(aad["claims"].as_str().unwrap().contains("capolids"));
    assert_eq!(world.upstream.count(), 0, "nothing reaches the upstream");
    proxy.stop().await;
}

#[tokio::test]
async fn mfa_enrollment_is_401_with_a_claims_challenge() {
    let _trace = trace_init();
    let fixture = "aad_error_50079_interaction_required_with_claims.json";
    let (_world, proxy, answer) =
        answer_for(Behavior::fixture(StatusCode::BAD_REQUEST, fixture)).await;
    let error = expect_proxy_error(&answer, StatusCode::UNAUTHORIZED, "InteractionRequired");
    assert_names_credential(&error);
    let expected: Value = serde_json::from_str(&MockAad::fixture(fixture)).unwrap();
    let expected_claims = expected["claims"].as_str().unwrap();
    assert_eq!(error["aad"]["error_codes"], serde_json::json!([50079]));
    assert_eq!(error["aad"]["claims"], expected_claims);

    let challenge = answer
        .1
        .get("www-authenticate")
        .expect("WWW-Authenticate")
        .to_str()
        .unwrap();
    assert!(
        challenge.starts_with(r#"Bearer error="interaction_required", error_description=""#),
        "{challenge}"
    );
    assert!(challenge.contains("AADSTS50079"), "{challenge}");
    let claims = claims_param(challenge).unwrap_or_else(|| panic!("no claims in {challenge}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(claims)
        .unwrap_or_else(|e| panic!("claims {claims:?} is not standard base64: {e}"));
    assert_eq!(String::from_utf8(decoded).unwrap(), expected_claims);
    proxy.stop().await;
}

#[tokio::test]
async fn revoked_grant_50173_is_401_interaction_required() {
    let _trace = trace_init();
    let fixture = "aad_error_invalid_grant_50173_revoked_refresh_token.json";
    let (_world, proxy, answer) =
        answer_for(Behavior::fixture(StatusCode::BAD_REQUEST, fixture)).await;
    let error = expect_proxy_error(&answer, StatusCode::UNAUTHORIZED, "InteractionRequired");
    assert_names_credential(&error);
    assert_eq!(error["aad"]["error_codes"], serde_json::json!([50173]));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS50173")
    );
    let challenge = answer.1.get("www-authenticate").unwrap().to_str().unwrap();
    assert!(
        challenge.starts_with(r#"Bearer error="interaction_required""#),
        "{challenge}"
    );
    assert_eq!(
        claims_param(challenge),
        None,
        "the fixture carries no claims"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn invalid_scope_70011_is_502_credential_rejected() {
    let _trace = trace_init();
    let fixture = "aad_error_scope_invalid_70011_documented.json";
    let (_world, proxy, answer) =
        answer_for(Behavior::fixture(StatusCode::BAD_REQUEST, fixture)).await;
    let error = expect_proxy_error(&answer, StatusCode::BAD_GATEWAY, "CredentialRejected");
    assert_names_credential(&error);
    assert_eq!(error["aad"]["error"], "invalid_scope");
    assert_eq!(error["aad"]["error_codes"], serde_json::json!([70011]));
    assert!(answer.1.get("www-authenticate").is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn invalid_client_secret_7000215_is_502_credential_rejected() {
    let _trace = trace_init();
    let body = serde_json::json!({
        "error": "invalid_client",
        "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '11111111-2222-3333-4444-555555555555'.\r\nTrace ID: 2f6d3c1e-0000-4000-8000-000000000001\r\nCorrelation ID: 7a1b2c3d-0000-4000-8000-000000000002\r\nTimestamp: 2025-01-01 00:00:00Z",
        "error_codes": [7000215],
        "timestamp": "2025-01-01 00:00:00Z",
        "trace_id": "2f6d3c1e-0000-4000-8000-000000000001",
        "correlation_id": "7a1b2c3d-0000-4000-8000-000000000002",
        "error_uri": "https://login.microsoftonline.com/error?code=7000215",
    });
    let (_world, proxy, answer) =
        answer_for(Behavior::json(StatusCode::UNAUTHORIZED, body.to_string())).await;
    let error = expect_proxy_error(&answer, StatusCode::BAD_GATEWAY, "CredentialRejected");
    assert_names_credential(&error);
    assert_eq!(error["aad"]["error"], "invalid_client");
    assert_eq!(error["aad"]["error_codes"], serde_json::json!([7000215]));
    assert_eq!(
        error["aad"]["correlation_id"],
        "7a1b2c3d-0000-4000-8000-000000000002"
    );
    assert_eq!(
        error["message"],
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '11111111-2222-3333-4444-555555555555'."
    );
    assert!(!String::from_utf8_lossy(&answer.2).contains(CANARY_SECRET));
    proxy.stop().await;
}

#[tokio::test]
async fn throttling_is_503_with_the_remaining_retry_after() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy_for(&world, "throttle30").await;
    let answer = get(&proxy.url("/subscriptions")).await;
    let error = expect_proxy_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "TokenServiceUnavailable",
    );
    assert_names_credential(&error);
    let retry_after = retry_after_secs(&answer.1);
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    // Entra ID asked for 30 s: the proxy does not ask again meanwhile.
    let again = get(&proxy.url("/subscriptions")).await;
    expect_proxy_error(
        &again,
        StatusCode::SERVICE_UNAVAILABLE,
        "TokenServiceUnavailable",
    );
    assert_eq!(world.aad.count("throttle30"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn token_service_failures_are_503_token_service_unavailable() {
    let _trace = trace_init();
    let world = World::new().await;
    // One route per failure mode: 503, connection closed without an answer, a body that is not JSON.
    let tenants = ["status503", "close", "garbage"];
    let mut credentials = String::new();
    let mut routes = String::new();
    for tenant in tenants {
        credentials.push_str(&World::sp(&format!("{CRED}-{tenant}"), tenant));
        routes.push_str(&world.route(
            tenant,
            &format!("/{tenant}"),
            &format!("{CRED}-{tenant}"),
            "",
        ));
    }
    let proxy = TestProxy::start(&world.config(&credentials, &routes)).await;
    for tenant in tenants {
        let answer = get(&proxy.url(&format!("/{tenant}/subscriptions"))).await;
        let error = expect_proxy_error(
            &answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "TokenServiceUnavailable",
        );
        assert_eq!(
            error["credential"],
            format!("{CRED}-{tenant}"),
            "{tenant}: {error}"
        );
        assert_eq!(error["source"], "client_secret", "{tenant}: {error}");
        let retry_after = retry_after_secs(&answer.1);
        assert!(
            (1..=5).contains(&retry_after),
            "{tenant}: Retry-After {retry_after}"
        );
        assert!(world.aad.count(tenant) >= 1, "{tenant}");
    }
    assert_eq!(world.upstream.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn hanging_token_endpoint_is_503_within_the_request_wait_budget() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy_for(&world, "hang").await;
    let started = Instant::now();
    let answer = get(&proxy.url("/subscriptions")).await;
    let waited = started.elapsed();
    let error = expect_proxy_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "TokenServiceUnavailable",
    );
    assert_names_credential(&error);
    let retry_after = retry_after_secs(&answer.1);
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    // The wait budget is ~5 s; a loose upper bound only.
    assert!(waited < Duration::from_secs(8), "answered after {waited:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn unreachable_authority_is_503_token_service_unavailable() {
    let _trace = trace_init();
    let world = World::new().await;
    let port = closed_port().await;
    let yaml = format!(
        "authority_host: http://127.0.0.1:{port}\ntls:\n  extra_ca_file: {}\ncredentials:\n{}routes:\n{}",
        world.ca_file.display(),
        World::sp(CRED, "ok"),
        world.route("arm", "/", CRED, "")
    );
    let proxy = TestProxy::start(&yaml).await;
    let answer = get(&proxy.url("/subscriptions")).await;
    let error = expect_proxy_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "TokenServiceUnavailable",
    );
    assert_names_credential(&error);
    let retry_after = retry_after_secs(&answer.1);
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    proxy.stop().await;
}

// === failures under load, bounded reads ===

#[tokio::test(flavor = "multi_thread")]
async fn conditional_access_storm_makes_at_most_one_token_request() {
    let _trace = trace_init();
    let world = World::new().await;
    world.aad.set_behavior(
        "blocked",
        Behavior::fixture(
            StatusCode::BAD_REQUEST,
            "aad_error_53003_blocked_by_conditional_access.json",
        ),
    );
    let proxy = proxy_for(&world, "blocked").await;
    let url = proxy.url("/subscriptions");
    let answers = h2_burst(&url, 10, 100).await;
    assert_eq!(answers.len(), 1000);
    for answer in &answers {
        expect_proxy_error(answer, StatusCode::FORBIDDEN, "ConditionalAccessBlocked");
    }
    assert_eq!(
        world.aad.count("blocked"),
        1,
        "one token request for 1,000 requests"
    );

    // More requests soon after: the identical failure is not retried before 5 s.
    let failed_at = world.aad.requests_for("blocked")[0].arrived_at;
    for _ in 0..5 {
        for answer in h2_burst(&url, 2, 20).await {
            expect_proxy_error(&answer, StatusCode::FORBIDDEN, "ConditionalAccessBlocked");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failed_at.elapsed() < Duration::from_secs(5),
        "the follow-up requests must run inside the 5 s damping window to test it"
    );
    assert_eq!(
        world.aad.count("blocked"),
        1,
        "no new token request within 5 s"
    );
    assert_eq!(world.upstream.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_token_response_is_refused_and_the_proxy_stays_healthy() {
    let _trace = trace_init();
    let world = World::new().await;
    let credentials = format!("{}{}", World::sp("huge-sp", "huge"), World::sp(CRED, "ok"));
    let routes = format!(
        "{}{}",
        world.route("huge", "/huge", "huge-sp", ""),
        world.route("arm", "/", CRED, "")
    );
    let proxy = TestProxy::start(&world.config(&credentials, &routes)).await;
    let answer = get(&proxy.url("/huge/subscriptions")).await;
    let error = expect_proxy_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "TokenServiceUnavailable",
    );
    assert_eq!(error["credential"], "huge-sp");
    assert_eq!(error["source"], "client_secret");
    // The 50 MiB "token" never made it anywhere, and the other route still works.
    assert!(answer.2.len() < 64 * 1024);
    let (status, _, body) = get(&proxy.url("/subscriptions")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(get(&proxy.admin_url("/healthz")).await.0, StatusCode::OK);
    assert!(
        world
            .upstream
            .requests()
            .iter()
            .all(|r| r.path == "/subscriptions")
    );
    proxy.stop().await;
}

// === credential chains and the environment source ===

/// A configuration whose credential `default` is `chain: [<sources>]`, plus `extra_credentials`, with one
/// route `arm` on `/` using `default`.
fn chain_config(world: &World, sources: &str, extra_credentials: &str) -> String {
    world.config(
        &format!("  default:\n    chain: [{sources}]\n{extra_credentials}"),
        &world.route("arm", "/", "default", ""),
    )
}

#[tokio::test]
async fn chain_skips_an_empty_environment_and_uses_the_next_source() {
    let _trace = trace_init();
    let world = World::new().await;
    let yaml = chain_config(&world, "environment, sp", &World::sp("sp", "chained"));
    let proxy = TestProxy::start_with(&yaml, MapEnv::new(), CachePolicy::default()).await;
    let (status, _, body) = get(&proxy.url("/subscriptions")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let requests = world.aad.requests_for("chained");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].form["client_secret"], CANARY_SECRET);
    let token = world.upstream.last_request().unwrap().token.unwrap();
    assert!(token.starts_with("at.chained."), "{token}");
    proxy.stop().await;
}

#[tokio::test]
async fn chain_without_a_usable_source_is_503_credential_unavailable_listing_each_source() {
    let _trace = trace_init();
    let world = World::new().await;
    // Should managed identity ever probe IMDS, it must stay on loopback (tests never reach 169.254.169.254).
    let env = MapEnv::new().with(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        format!("http://127.0.0.1:{}", closed_port().await),
    );
    let yaml = chain_config(&world, "environment, managed_identity", "");
    let proxy = TestProxy::start_with(&yaml, env, CachePolicy::default()).await;
    let answer = get(&proxy.url("/subscriptions")).await;
    let error = expect_proxy_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "CredentialUnavailable",
    );
    assert_eq!(error["credential"], "default", "{error}");
    let retry_after = retry_after_secs(&answer.1);
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let details = error["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {error}"));
    let sources: Vec<&str> = details
        .iter()
        .map(|d| d["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["environment", "managed_identity"], "{error}");
    for detail in details {
        assert!(
            detail["message"].as_str().is_some_and(|m| !m.is_empty()),
            "every source says why: {detail}"
        );
    }
    assert!(
        details[0]["message"]
            .as_str()
            .unwrap()
            .contains("AZURE_CLIENT_ID"),
        "the environment source names what is missing: {}",
        details[0]
    );
    assert_eq!(world.aad.total_count(), 0);
    assert_eq!(world.upstream.count(), 0);
    proxy.stop().await;
}

/// Runs `chain: [environment]` with `env` and checks the request the environment credential sent.
async fn environment_credential_sends(env: MapEnv, tenant: &str, client_id: &str, secret: &str) {
    let world = World::new().await;
    let yaml = chain_config(&world, "environment", "");
    let proxy = TestProxy::start_with(&yaml, env, CachePolicy::default()).await;
    let (status, _, body) = get(&proxy.url("/subscriptions")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let requests = world.aad.requests_for(tenant);
    assert_eq!(requests.len(), 1, "{:#?}", world.aad.requests());
    assert_eq!(requests[0].form["client_id"], client_id);
    assert_eq!(requests[0].form["client_secret"], secret);
    assert_eq!(requests[0].form["grant_type"], "client_credentials");
    assert_eq!(requests[0].form["scope"], ARM_SCOPE);
    let token = world.upstream.last_request().unwrap().token.unwrap();
    assert!(token.starts_with(&format!("at.{tenant}.")), "{token}");
    proxy.stop().await;
}

#[tokio::test]
async fn environment_source_uses_the_azure_client_secret_variables() {
    let _trace = trace_init();
    let client_id = "aaaaaaaa-0000-4000-8000-000000000001";
    let env = MapEnv::new()
        .with("AZURE_TENANT_ID", "envtenant")
        .with("AZURE_CLIENT_ID", client_id)
        .with("AZURE_CLIENT_SECRET", "env-secret-AZURE");
    environment_credential_sends(env, "envtenant", client_id, "env-secret-AZURE").await;
}

#[tokio::test]
async fn environment_source_accepts_the_azure_ml_variable_names() {
    let _trace = trace_init();
    let client_id = "bbbbbbbb-0000-4000-8000-000000000002";
    let env = MapEnv::new()
        .with("AML_TENANT_ID", "amltenant")
        .with("AML_PRINCIPAL_ID", client_id)
        .with("AML_PRINCIPAL_PASS", "env-secret-AML");
    environment_credential_sends(env, "amltenant", client_id, "env-secret-AML").await;
}

// === recovery ===

#[tokio::test]
async fn readiness_recovers_without_traffic_after_a_token_endpoint_outage() {
    let _trace = trace_init();
    let world = World::new().await;
    // The start-up fetch fails once; the background keeper retries after its first backoff (~5 s).
    world.aad.script(
        "recovers",
        [Behavior::Status(StatusCode::SERVICE_UNAVAILABLE)],
    );
    let started = Instant::now();
    let proxy = proxy_for(&world, "recovers").await;

    // Not ready while the token is missing, and /readyz says why.
    let mut saw_failure = false;
    while !saw_failure && started.elapsed() < Duration::from_secs(3) {
        let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let missing = &json_body(&body)["missing"][0];
        assert_eq!(missing["route"], "arm");
        saw_failure = missing["code"] == "TokenServiceUnavailable";
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_failure, "/readyz never reported the failed fetch");

    // Then ready, with no client request at all.
    let mut ready = false;
    while !ready && started.elapsed() < Duration::from_secs(9) {
        ready = get(&proxy.admin_url("/readyz")).await.0 == StatusCode::OK;
        if !ready {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(ready, "/readyz still 503 after {:?}", started.elapsed());
    assert_eq!(world.aad.count("recovers"), 2, "one failure, one retry");
    assert_eq!(world.upstream.count(), 0, "no client traffic was needed");
    let (status, _, _) = get(&proxy.url("/subscriptions")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(world.aad.count("recovers"), 2);
    proxy.stop().await;
}
