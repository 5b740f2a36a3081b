//! The emulator's failure switches driven through the proxy: each produces the error code the proxy documents
//! (`ConditionalAccessBlocked`, `InteractionRequired`, `TokenServiceUnavailable`, `UpstreamTimeout`), a claims
//! challenge is answered by re-acquisition and replay, and short-lived tokens are refreshed without an error.
//! Switches are set the way a user's CI would: `POST /__control/faults` with a spec.

use std::time::Duration;

use aml_auth_proxy::emulator::Emulator;
use base64::Engine as _;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{APP, counts, start};
use crate::support::proxy::TestProxy;
use crate::support::{expect_proxy_error, get, json_body, request, retry_after_secs, trace_init};

/// Adds a rule through the control API.
async fn switch(emulator: &Emulator, spec: &str) -> u64 {
    let url = format!("{}/faults", emulator.urls().control);
    let (status, _, body) = request(Method::POST, &url, &[], spec.to_owned()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    json_body(&body)["id"].as_u64().unwrap()
}

/// A proxy whose one route `/` goes to the emulator's upstream with a client-secret credential in `tenant`.
async fn proxy(emulator: &Emulator, tenant: &str, extra: &str) -> TestProxy {
    let urls = emulator.urls();
    let yaml = format!(
        "authority_host: {authority}\n{extra}credentials:\n  sp:\n    client_secret: {{ tenant_id: {tenant}, client_id: {APP}, client_secret: emulator-test-secret }}\nroutes:\n  - name: upstream\n    path_prefix: /\n    upstream: {upstream}\n    scope: https://ml.azure.com/.default\n    credential: sp\n",
        authority = urls.authority_host,
        upstream = urls.upstream,
    );
    TestProxy::start(&yaml).await
}

/// The token claims the upstream echoed.
fn echoed_claims(body: &[u8]) -> Value {
    json_body(body)["authorization"]["claims"].clone()
}

#[tokio::test]
async fn conditional_access_is_403_conditional_access_blocked_with_entra_details() {
    let _trace = trace_init();
    let emulator = start().await;
    switch(&emulator, "conditional-access,tenant=blocked").await;
    let proxy = proxy(&emulator, "blocked", "").await;
    let answer = get(&proxy.url("/echo/x")).await;
    let error = expect_proxy_error(&answer, StatusCode::FORBIDDEN, "ConditionalAccessBlocked");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS53003: Access has been blocked by Conditional Access policies."),
        "{error}"
    );
    let aad = &error["aad"];
    assert_eq!(aad["error"], "invalid_grant");
    assert_eq!(aad["error_codes"], json!([53003]));
    assert_eq!(aad["suberror"], "message_only");
    assert!(
        aad["claims"].as_str().unwrap().contains("capolids"),
        "{aad}"
    );
    assert!(aad["trace_id"].is_string() && aad["correlation_id"].is_string());
    assert_eq!(error["credential"], "sp");
    // No request reached the upstream.
    assert_eq!(emulator.stats()["upstream_requests"]["total"], 0);
    proxy.stop().await;
}

#[tokio::test]
async fn mfa_is_401_interaction_required_carrying_the_claims() {
    let _trace = trace_init();
    let emulator = start().await;
    switch(&emulator, "mfa").await;
    let proxy = proxy(&emulator, "contoso", "").await;
    let answer = get(&proxy.url("/echo/x")).await;
    let error = expect_proxy_error(&answer, StatusCode::UNAUTHORIZED, "InteractionRequired");
    assert_eq!(error["aad"]["error_codes"], json!([50079]));
    let challenge = answer.1["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"interaction_required\""),
        "{challenge}"
    );
    let encoded = challenge
        .split("claims=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    assert!(
        claims["access_token"]["polids"]["values"][0].is_string(),
        "the claims Entra ID sent: {claims}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_cae_challenge_is_answered_by_reacquisition_and_replay() {
    let _trace = trace_init();
    let emulator = start().await;
    let proxy = proxy(&emulator, "contoso", "").await;
    proxy.wait_ready().await;
    let (status, _, first) = get(&proxy.url("/echo/before")).await;
    assert_eq!(status, StatusCode::OK);
    let first = echoed_claims(&first);
    assert_eq!(first["xms_cc"], json!(["CP1"]), "the proxy advertises CP1");

    // The session is revoked: tokens issued before now are challenged.
    let rule = switch(&emulator, "cae").await;
    emulator.reset_stats();
    let body = r#"{"input_data": [[1, 2, 3]]}"#;
    let (status, _, answer) = request(
        Method::POST,
        &proxy.url("/echo/after"),
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let echo = json_body(&answer);
    assert_eq!(
        echo["body"], body,
        "the replayed request carried the same body"
    );
    let replayed = &echo["authorization"]["claims"];
    assert_ne!(replayed["uti"], first["uti"], "a new token");
    assert!(replayed["nbf"].as_i64().unwrap() > first["nbf"].as_i64().unwrap());
    assert_eq!(replayed["xms_cc"], json!(["CP1"]), "claims merged with CP1");
    // The upstream saw the challenge, then the replay; Entra ID one token request for the claims token.
    let by_status = counts(&emulator, "upstream_requests", "status");
    assert_eq!(
        (by_status["401"], by_status["200"]),
        (1, 1),
        "{by_status:?}"
    );
    assert!(counts(&emulator, "token_requests", "outcome")["issued"] >= 1);
    let rules = emulator.stats()["faults"].clone();
    assert_eq!(
        rules
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == rule)
            .unwrap()["applied"],
        1
    );
    proxy.stop().await;
}

#[tokio::test]
async fn throttling_and_outages_are_503_token_service_unavailable_with_retry_after() {
    let _trace = trace_init();
    let emulator = start().await;
    switch(&emulator, "throttle=30,tenant=busy").await;
    switch(&emulator, "status=503,tenant=down").await;
    switch(&emulator, "status=500,tenant=broken").await;

    let busy = proxy(&emulator, "busy", "").await;
    let answer = get(&busy.url("/echo/x")).await;
    let error = expect_proxy_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "TokenServiceUnavailable",
    );
    let wait = retry_after_secs(&answer.1);
    assert!(
        (20..=30).contains(&wait),
        "Retry-After {wait}: Entra ID asked for 30 s; {error}"
    );

    for tenant in ["down", "broken"] {
        let proxy = proxy(&emulator, tenant, "").await;
        let answer = get(&proxy.url("/echo/x")).await;
        expect_proxy_error(
            &answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "TokenServiceUnavailable",
        );
        assert!(retry_after_secs(&answer.1) >= 1, "{tenant}");
        proxy.stop().await;
    }
    let outcomes = counts(&emulator, "token_requests", "outcome");
    assert!(
        outcomes["throttled"] >= 1 && outcomes["status_503"] >= 1 && outcomes["status_500"] >= 1
    );
    assert_eq!(emulator.stats()["upstream_requests"]["total"], 0);
    busy.stop().await;
}

#[tokio::test]
async fn a_slow_upstream_is_504_upstream_timeout() {
    let _trace = trace_init();
    let emulator = start().await;
    switch(&emulator, "latency=3s,on=upstream,path=/slow").await;
    let proxy = proxy(
        &emulator,
        "contoso",
        "limits:\n  upstream_response_timeout: 1s\n",
    )
    .await;
    let answer = get(&proxy.url("/slow/report")).await;
    expect_proxy_error(&answer, StatusCode::GATEWAY_TIMEOUT, "UpstreamTimeout");
    // Other paths are not slowed.
    assert_eq!(get(&proxy.url("/fast")).await.0, StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_without_errors() {
    let _trace = trace_init();
    let emulator = start().await;
    switch(&emulator, "lifetime=3s").await;
    let proxy = proxy(&emulator, "contoso", "").await;
    proxy.wait_ready().await;
    let mut tokens = std::collections::BTreeSet::new();
    // Eight seconds of requests: nearly three token lifetimes.
    for _ in 0..32 {
        let (status, _, body) = get(&proxy.url("/echo/tick")).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let claims = echoed_claims(&body);
        assert!(
            (3..=4).contains(&(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()))
        );
        tokens.insert(claims["uti"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(tokens.len() >= 3, "refreshed {} times", tokens.len());
    let issued = counts(&emulator, "token_requests", "outcome")["issued"];
    assert!(issued >= 3, "{issued} token requests");
    // Every request was accepted by the upstream: no expired token was ever sent.
    assert_eq!(
        counts(&emulator, "upstream_requests", "status"),
        [("200".to_owned(), 32)].into()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn managed_identity_through_the_emulators_imds() {
    let _trace = trace_init();
    let emulator = start().await;
    let urls = emulator.urls();
    let yaml = format!(
        "credentials:\n  vm:\n    managed_identity: {{ client_id: cccccccc-0000-0000-0000-000000000003, endpoint: {imds}/metadata/identity/oauth2/token }}\nroutes:\n  - name: upstream\n    path_prefix: /\n    upstream: {upstream}\n    scope: https://ml.azure.com/.default\n    credential: vm\n",
        imds = urls.managed_identity.imds,
        upstream = urls.upstream,
    );
    let proxy = TestProxy::start(&yaml).await;
    let (status, _, body) = get(&proxy.url("/echo/mi")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let claims = echoed_claims(&body);
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["appid"], "cccccccc-0000-0000-0000-000000000003");
    assert_eq!(claims["aud"], "https://ml.azure.com");
    assert!(claims["xms_mirid"].is_string());
    assert_eq!(
        counts(&emulator, "managed_identity_requests", "outcome")["user_assigned"],
        1
    );
    proxy.stop().await;
}
