//! Upstream claims challenges (CAE) end to end: the challenged token is dropped, a token is acquired once with
//! the challenge's claims merged with CP1, and the request is replayed once when its body fit the replay buffer.

use http::{Method, StatusCode};
use serde_json::Value;

use crate::support::proxy::{TestProxy, World};
use crate::support::upstream::CAE_CHALLENGE;
use crate::support::{request, trace_init};

/// A proxy for `world` with one client-secret route on `tenant`, and `limits`.
async fn proxy(world: &World, tenant: &str, limits: &str) -> TestProxy {
    let yaml = format!(
        "{limits}{}",
        world.config(&World::sp("sp", tenant), &world.route("arm", "/", "sp", ""))
    );
    let proxy = TestProxy::start(&yaml).await;
    proxy.wait_ready().await;
    proxy
}

fn claims_of(world: &World, tenant: &str) -> Vec<Value> {
    world
        .aad
        .requests_for(tenant)
        .iter()
        .map(|r| serde_json::from_str(r.form.get("claims").map_or("null", String::as_str)).unwrap())
        .collect()
}

#[tokio::test]
async fn a_challenge_is_answered_with_the_claims_and_the_request_replayed_once() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy(&world, "cae", "").await;
    let body = r#"{"input_data": [1, 2, 3]}"#;
    let (status, _, answer) = request(
        Method::POST,
        &proxy.url("/challenge-until-claims"),
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
    // The upstream saw the request twice: challenged, then replayed with the same body and a new token.
    let seen = world.upstream.requests();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].body_fnv, seen[1].body_fnv);
    assert_eq!(seen[1].body_len, body.len());
    assert_ne!(seen[0].token, seen[1].token);
    // One token request carried the challenge's claims merged with CP1.
    // Token requests: the start-up token, the claims token, and the keeper's fresh ordinary token replacing the
    // dropped one (the last two in either order: the keeper runs beside the proxy thread that replays).
    let claims = claims_of(&world, "cae");
    assert_eq!(claims.len(), 3, "{claims:?}");
    let (challenged, ordinary): (Vec<&Value>, Vec<&Value>) = claims
        .iter()
        .partition(|c| c["access_token"].get("nbf").is_some());
    assert_eq!((challenged.len(), ordinary.len()), (1, 2), "{claims:?}");
    assert!(claims[0]["access_token"].get("nbf").is_none(), "{claims:?}");
    for ordinary in ordinary {
        assert_eq!(ordinary["access_token"]["xms_cc"]["values"][0], "CP1");
    }
    let challenged = &challenged[0]["access_token"];
    assert_eq!(challenged["nbf"]["value"], "1726077595");
    assert_eq!(challenged["xms_caeerror"]["value"], "10012");
    assert_eq!(challenged["xms_cc"]["values"][0], "CP1");
    proxy.stop().await;
}

#[tokio::test]
async fn the_claims_token_serves_only_challenged_requests_and_the_plain_token_is_refreshed() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy(&world, "split", "").await;
    assert_eq!(
        request(Method::GET, &proxy.url("/challenge-until-claims"), &[], "")
            .await
            .0,
        StatusCode::OK
    );
    // The challenged token was dropped: an ordinary request gets a fresh ordinary token, never the claims one.
    let (status, _, _) = request(Method::GET, &proxy.url("/plain"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let plain = world.upstream.last_request().unwrap().token.unwrap();
    let claims = world.aad.registry().claims_of(&plain).unwrap();
    assert!(
        !claims.contains("nbf"),
        "an ordinary request got a claims token: {claims}"
    );
    assert_eq!(
        world.aad.count("split"),
        3,
        "start-up, claims, then a fresh ordinary token"
    );
    // A second challenged request reuses the cached claims token: no new token request carries claims.
    assert_eq!(
        request(Method::GET, &proxy.url("/challenge-until-claims"), &[], "")
            .await
            .0,
        StatusCode::OK
    );
    let with_nbf = claims_of(&world, "split")
        .iter()
        .filter(|c| c["access_token"].get("nbf").is_some())
        .count();
    assert_eq!(with_nbf, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_replay_challenged_again_returns_that_401_unchanged_no_loop() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy(&world, "loop", "").await;
    let (status, headers, body) = request(Method::GET, &proxy.url("/challenge"), &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers["www-authenticate"], CAE_CHALLENGE,
        "the upstream's challenge, byte for byte"
    );
    assert!(
        !headers.contains_key("x-aml-auth-proxy-error"),
        "the upstream's answer, not the proxy's"
    );
    assert!(!body.is_empty());
    assert_eq!(world.upstream.count(), 2, "sent once, replayed once");
    let with_nbf = claims_of(&world, "loop")
        .iter()
        .filter(|c| c["access_token"].get("nbf").is_some())
        .count();
    assert_eq!(with_nbf, 1, "one re-acquisition with the claims");
    proxy.stop().await;
}

#[tokio::test]
async fn a_body_larger_than_the_replay_buffer_gets_the_401_and_drops_the_token() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy(&world, "big", "limits:\n  replay_buffer_bytes: 1024\n").await;
    let big = "x".repeat(20_000);
    let (status, headers, _) = request(
        Method::POST,
        &proxy.url("/challenge-until-claims"),
        &[],
        big,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], CAE_CHALLENGE);
    assert_eq!(world.upstream.count(), 1, "not replayed");
    assert_eq!(
        world.upstream.requests()[0].body_len,
        20_000,
        "streamed whole"
    );
    // The challenged token was dropped anyway: the next request uses a new one.
    let first = world.upstream.requests()[0].token.clone();
    assert_eq!(
        request(Method::GET, &proxy.url("/plain"), &[], "").await.0,
        StatusCode::OK
    );
    assert_ne!(world.upstream.last_request().unwrap().token, first);
    proxy.stop().await;
}

#[tokio::test]
async fn replay_buffer_zero_never_replays() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy(&world, "zero", "limits:\n  replay_buffer_bytes: 0\n").await;
    let (status, _, _) = request(Method::GET, &proxy.url("/challenge-until-claims"), &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(world.upstream.count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_credential_that_cannot_get_the_claims_answers_with_the_entra_error() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy(&world, "mfa", "").await;
    // From now on Entra ID demands MFA (the 50079 fixture): the claims token cannot be had.
    world.aad.set_behavior(
        "mfa",
        crate::support::Behavior::fixture(
            StatusCode::BAD_REQUEST,
            "aad_error_50079_interaction_required_with_claims.json",
        ),
    );
    let (status, headers, body) = request(Method::GET, &proxy.url("/challenge"), &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["x-aml-auth-proxy-error"], "InteractionRequired");
    let www = headers["www-authenticate"].to_str().unwrap();
    assert!(
        www.starts_with("Bearer error=\"interaction_required\""),
        "{www}"
    );
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"]["aad"]["error_codes"][0], 50079);
    assert_eq!(world.upstream.count(), 1, "no replay without a token");
    proxy.stop().await;
}

/// A token revoked mid-life (fault F8). The upstream's plain `invalid_token` 401 drops the cached token
/// (at most once per 5 s); an idempotent request is sent once more with a fresh token, anything else gets the 401.
#[tokio::test]
async fn a_token_revoked_mid_life_is_dropped_and_idempotent_requests_retried_once() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy(&world, "revoked", "").await;
    assert_eq!(
        request(Method::GET, &proxy.url("/a"), &[], "").await.0,
        StatusCode::OK
    );
    let first = world.upstream.last_request().unwrap().token.unwrap();
    world.aad.registry().expire(&first);

    // GET: refused, token dropped, replayed once with a fresh token.
    let (status, _, _) = request(Method::GET, &proxy.url("/b"), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let seen: Vec<_> = world
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.path == "/b")
        .collect();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].token.as_deref(), Some(first.as_str()));
    assert_ne!(seen[1].token.as_deref(), Some(first.as_str()));
    assert_eq!(world.aad.count("revoked"), 2);

    // Within 5 s a second revocation does not drop the token again: no token storm from a refusing upstream.
    let second = seen[1].token.clone().unwrap();
    world.aad.registry().expire(&second);
    let (status, headers, _) = request(Method::GET, &proxy.url("/c"), &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(world.aad.count("revoked"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn a_revoked_token_on_a_post_is_dropped_but_the_post_is_not_replayed() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy(&world, "revokedpost", "").await;
    proxy.wait_ready().await;
    let token = world.aad.registry().all().pop().unwrap().token;
    world.aad.registry().expire(&token);
    let (status, _, _) = request(Method::POST, &proxy.url("/create"), &[], "{}").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "not idempotent: the caller decides"
    );
    assert_eq!(
        world
            .upstream
            .requests()
            .iter()
            .filter(|r| r.path == "/create")
            .count(),
        1
    );
    // The token was dropped: the next request uses a fresh one.
    assert_eq!(
        request(Method::POST, &proxy.url("/create"), &[], "{}")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(world.aad.count("revokedpost"), 2);
    proxy.stop().await;
}
