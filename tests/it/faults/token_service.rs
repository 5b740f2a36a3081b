//! The token service down (F1), slow or hanging (F2), answering 5xx (F3) or 429 (F4), or answering garbage (F20):
//! while a token is valid, callers see nothing; once there is none, they get a prompt 503 with `Retry-After`, and
//! the token service is not hammered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aml_auth_proxy::auth::{
    ClientSecretCredential, ClientSecretCredentialOptions, CredentialError, HttpClientOptions,
    Secret, TokenCredential, TokenErrorKind, TokenRequest,
};
use aml_auth_proxy::token_cache::TokenStatus;
use bytes::Bytes;
use http::StatusCode;
use tokio::time::Instant;

use crate::support::metrics::{parse_scrape, scrape, sum_of};
use crate::support::process::{ClosedPort, EXIT_TIMEOUT, RunningProxy};
use crate::support::proxy::{TestProxy, World};
use crate::support::scripted::{
    Scripted, bearer, cache_key, gaps_secs, immediate, ok, outage, production_cache, settle,
    slow_ok, throttled,
};
use crate::support::{
    ARM_SCOPE, Behavior, ChannelBody, MockAad, Rejection, ServeOptions, Server, entra_client_with,
    expect_proxy_error, get, h2_burst, json_body, json_response, read_body, retry_after_secs,
    trace_init,
};

/// A proxy configuration whose token endpoint is `authority` (e.g. a closed port), credential `sp` in `tenant`,
/// one route `/` → the world's upstream.
fn config_with_authority(world: &World, authority: &str, tenant: &str) -> String {
    format!(
        "authority_host: {authority}\ntls:\n  extra_ca_file: {}\ncredentials:\n{}routes:\n{}",
        world.ca_file.display(),
        World::sp("sp", tenant),
        world.route("arm", "/", "sp", "")
    )
}

// =====================================================================================================================
// F1 — token endpoint down (ECONNREFUSED) at start-up and in steady state
// =====================================================================================================================

/// F1 at start-up, the real binary: liveness true, readiness false (saying why), every request answered
/// 503 `TokenServiceUnavailable` + `Retry-After` within 1 s, the process stays up (no crash loop), one log line.
#[tokio::test(flavor = "multi_thread")]
async fn f01_startup_endpoint_down_binary_stays_live_not_ready_and_fails_fast() {
    let _trace = trace_init();
    let world = World::new().await;
    let closed = ClosedPort::new();
    let yaml = config_with_authority(&world, &format!("http://{}", closed.addr()), "down");
    let proxy = RunningProxy::start_in(&world.dir, &yaml).await;
    let started = Instant::now();

    // /readyz: 503, naming the route and why (once the start-up fetch has failed).
    let mut why = serde_json::Value::Null;
    while why.is_null() {
        let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let missing = &json_body(&body)["missing"][0];
        assert_eq!(missing["route"], "arm");
        if missing["code"] == "TokenServiceUnavailable" {
            why = missing.clone();
        } else {
            assert!(started.elapsed() < Duration::from_secs(3), "{missing}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        why["message"].as_str().unwrap().contains("unreachable"),
        "{why}"
    );

    // Requests fail fast, with Retry-After, and never reach the upstream.
    for _ in 0..10 {
        let asked = Instant::now();
        let answer = get(&proxy.url("/subscriptions")).await;
        let took = asked.elapsed();
        let error = expect_proxy_error(
            &answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "TokenServiceUnavailable",
        );
        assert_eq!(error["credential"], "sp");
        assert!(took <= Duration::from_secs(1), "answered after {took:?}");
        let retry_after = retry_after_secs(&answer.1);
        assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    }
    assert_eq!(world.upstream.count(), 0);

    // Alive, not restarting: /healthz 200 and the same process, well after the failure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&proxy.admin_url("/healthz")).await.0, StatusCode::OK);
    // The failure is counted (and logged once: repeats go to debug), not once per request.
    let metrics = scrape(&proxy.admin_url("/metrics")).await;
    assert!(
        sum_of(
            &parse_scrape(&metrics),
            "aml_auth_proxy_auth_failures_total",
            &[("credential", "sp"), ("code", "TokenServiceUnavailable")]
        ) >= 1.0,
        "{metrics}"
    );
    let RunningProxy { mut child, .. } = proxy;
    assert!(
        child.try_exit().is_none(),
        "the proxy exited while the token endpoint was down"
    );
    let stderr = child.stderr_so_far();
    let lines = stderr
        .lines()
        .filter(|l| l.contains("token acquisition failed"))
        .count();
    assert_eq!(lines, 1, "{stderr}");
    child.sigterm();
    let out = child.finish(EXIT_TIMEOUT).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

/// F1 in steady state, paused clock: while the cached token is valid every request is served at once (0 errors)
/// although every refresh is refused; after it runs out, requests are answered at once with the failure and a
/// `Retry-After`; the background refresher keeps retrying for (simulated) hours, never in a tight loop; once the
/// endpoint is back the token is recovered within one backoff interval.
#[tokio::test(start_paused = true)]
async fn f01_steady_state_outage_serves_the_valid_token_and_the_refresher_never_exits() {
    let _trace = trace_init();
    let cred = Scripted::new([ok(3600), outage()]);
    let (cache, metrics) = production_cache();
    let src = cache.source(cache_key("sp"), cred.clone(), true);
    settle().await;
    assert_eq!(cred.calls(), 1, "start-up pre-fetch");
    let fetched = cred.call_times()[0];

    // The 1 h token is usable until 3570 s (a tenth of its lifetime, at most 30 s, before it expires).
    let mut served = 0;
    while Instant::now() + Duration::from_secs(1) < fetched + Duration::from_secs(3570) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v = immediate(src.header_value())
            .await
            .expect("a valid token is served without waiting")
            .expect("0 client-visible errors while the token is valid");
        assert_eq!(bearer(&v), "Bearer tok-1");
        served += 1;
    }
    assert!(served > 3500);
    let refreshes_while_valid = cred.calls() - 1;
    assert!(
        refreshes_while_valid >= 5,
        "the refresher kept trying while the token was valid: {refreshes_while_valid}"
    );

    // Expired: requests are answered at once (no hang) with the shared failure and a Retry-After.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..100 {
        let e = immediate(src.header_value())
            .await
            .expect("answered at once")
            .unwrap_err();
        assert_eq!(e.error.kind, TokenErrorKind::TokenServiceUnavailable);
        assert!(!e.retry_after.is_zero() && e.retry_after <= Duration::from_secs(60));
    }
    assert!(matches!(src.status(), TokenStatus::Missing(Some(_))));

    // Hours of outage without traffic: the refresher alone keeps trying, 5 s doubling to 60 s (±20 %) apart.
    let mut per_ten_minutes = Vec::new();
    for _ in 0..36 {
        let before = cred.calls();
        tokio::time::sleep(Duration::from_secs(600)).await;
        per_ten_minutes.push(cred.calls() - before);
    }
    assert!(
        per_ten_minutes.iter().all(|n| (8..=16).contains(n)),
        "attempts per 10 minutes over 6 h: {per_ten_minutes:?}"
    );
    let times = cred.call_times();
    let recent = &times[times.len() - 10..];
    let max_gap = gaps_secs(recent).into_iter().max().unwrap();
    assert!(
        (47..=72).contains(&max_gap),
        "backoff at its cap: {max_gap} s"
    );

    // The endpoint is back: the token is recovered within one backoff interval (≤ 60 s + 20 % jitter).
    cred.then([ok(3600)]);
    let back = Instant::now();
    while !matches!(src.status(), TokenStatus::Valid { .. }) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            back.elapsed() <= Duration::from_secs(73),
            "not recovered {:?} after the endpoint came back",
            back.elapsed()
        );
    }
    let v = immediate(src.header_value()).await.unwrap().unwrap();
    assert_eq!(bearer(&v), format!("Bearer tok-{}", cred.calls()));
    let text = String::from_utf8(metrics.render()).unwrap();
    assert!(
        sum_of(
            &parse_scrape(&text),
            "aml_auth_proxy_auth_failures_total",
            &[("code", "TokenServiceUnavailable")]
        ) >= 300.0,
        "{text}"
    );
}

// =====================================================================================================================
// F2 — token endpoint slow or hanging
// =====================================================================================================================

/// F2: the per-attempt timeout of the token-service client is enforced within ±10 % (a hanging endpoint), and a
/// slow endpoint that answers inside it is not cut. The production value is 10 s.
#[tokio::test]
async fn f02_per_attempt_timeout_is_enforced_within_10_percent() {
    let _trace = trace_init();
    assert_eq!(
        HttpClientOptions::default().attempt_timeout,
        Duration::from_secs(10),
        "production per-attempt timeout"
    );
    let aad = MockAad::start().await;
    let limit = Duration::from_millis(2000);
    let credential = |tenant: &str| {
        let options = ClientSecretCredentialOptions {
            tenant_id: tenant.into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
        };
        let http = HttpClientOptions {
            attempt_timeout: limit,
            ..HttpClientOptions::default()
        };
        ClientSecretCredential::new(options, entra_client_with(&aad.base_url(), &http))
    };
    let request = TokenRequest::new(ARM_SCOPE);
    let (hanging, slow) = (credential("hang"), credential("slow1000"));
    // A hanging endpoint and a slow one (1 s, inside the limit), at the same time.
    let started = Instant::now();
    let (hung, answered) = tokio::join!(
        async {
            let result = hanging.get_token(&request).await;
            (result, started.elapsed())
        },
        slow.get_token(&request)
    );
    let (result, took) = hung;
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert!(e.message.contains("no response within"), "{}", e.message);
    assert!(
        took >= limit.mul_f64(0.9) && took <= limit.mul_f64(1.1),
        "a 2 s attempt timeout fired after {took:?}"
    );
    // Slow but inside the limit: answered.
    assert!(answered.unwrap().token.expose().starts_with("at.slow1000."));
    assert_eq!(aad.count("hang"), 1);
}

/// F2, paused clock: requests waiting on a hanging token request are answered after exactly the 5 s wait budget
/// (all of them, shared), the fetch goes on and later requests get its token; a hanging *refresh* never delays a
/// request while the old token is valid (0 errors), and the fetch safety net (120 s) ends it.
#[tokio::test(start_paused = true)]
async fn f02_hanging_endpoint_bounds_waiters_to_the_wait_budget_and_the_valid_token_keeps_serving()
{
    let _trace = trace_init();
    // Cold: the first token takes 60 s.
    let cred = Scripted::new([slow_ok(3600, 60_000)]);
    let (cache, _metrics) = production_cache();
    let src = cache.source(cache_key("sp"), cred.clone(), true);
    settle().await;
    let started = Instant::now();
    let waiters: Vec<_> = (0..500)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { (src.header_value().await, Instant::now()) })
        })
        .collect();
    for w in waiters {
        let (result, at) = w.await.unwrap();
        let e = result.unwrap_err();
        assert_eq!(e.error.kind, TokenErrorKind::TokenServiceUnavailable);
        assert_eq!(at - started, Duration::from_secs(5), "the wait budget");
        assert_eq!(e.retry_after, Duration::from_secs(5));
    }
    assert_eq!(cred.calls(), 1, "500 waiters, one token request");
    tokio::time::sleep(Duration::from_secs(56)).await;
    let v = immediate(src.header_value()).await.unwrap().unwrap();
    assert_eq!(bearer(&v), "Bearer tok-1");
    assert_eq!(cred.calls(), 1);

    // Warm: every refresh hangs for a day. Requests keep using the valid token without waiting.
    cred.then([slow_ok(3600, 86_400_000)]);
    let mut errors = 0;
    let until = started + Duration::from_secs(3569);
    while Instant::now() + Duration::from_secs(1) < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match immediate(src.header_value()).await {
            Some(Ok(v)) => assert_eq!(bearer(&v), "Bearer tok-1"),
            Some(Err(_)) => errors += 1,
            None => panic!("a request waited for the hanging refresh"),
        }
    }
    assert_eq!(errors, 0);
    // The hanging refreshes were each ended by the 120 s safety net, then retried (≥ 5 s later, sooner than the
    // 30 s eager spacing only when the old token is about to run out).
    let times = cred.call_times();
    assert!(times.len() >= 3, "{} token requests", times.len());
    let gaps = gaps_secs(&times[1..]);
    assert!(gaps[0] >= 150, "{gaps:?}");
    assert!(gaps.iter().all(|g| *g >= 125), "{gaps:?}");
    // Expired with a refresh still hanging: a request waits at most the budget.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = Instant::now();
    let e = src.header_value().await.unwrap_err();
    assert!(
        asked.elapsed() <= Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(e.error.kind, TokenErrorKind::TokenServiceUnavailable);
}

// =====================================================================================================================
// F3 — token endpoint answers 5xx for 5 minutes
// =====================================================================================================================

/// F3, paused clock: five minutes of 5xx starting at the refresh point cost at most ⌈300/30⌉ + 2 token requests
/// (eager retries ≥ 30 s apart, jittered), with constant traffic served from the old token (0 errors).
#[tokio::test(start_paused = true)]
async fn f03_five_minutes_of_5xx_cost_at_most_12_token_requests_and_no_client_error() {
    let _trace = trace_init();
    // A 2 h token: refreshed at half its lifetime (minus ≤ 30 s jitter), usable until 7170 s.
    let cred = Scripted::new([ok(7200), outage()]);
    let (cache, _metrics) = production_cache();
    let src = cache.source(cache_key("sp"), cred.clone(), true);
    settle().await;
    while cred.calls() < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(src.header_value().await.is_ok());
    }
    let outage_start = *cred.call_times().last().unwrap();
    // Five minutes of traffic (10 requests a second) while every refresh gets a 5xx.
    let mut errors = 0;
    while Instant::now() < outage_start + Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match immediate(src.header_value()).await {
            Some(Ok(v)) => assert_eq!(bearer(&v), "Bearer tok-1"),
            Some(Err(_)) => errors += 1,
            None => panic!("a request waited"),
        }
    }
    assert_eq!(errors, 0, "client errors while the old token was valid");
    let during: Vec<Instant> = cred
        .call_times()
        .into_iter()
        .filter(|t| *t >= outage_start && *t < outage_start + Duration::from_secs(300))
        .collect();
    assert!(
        during.len() <= 300usize.div_ceil(30) + 2,
        "{} token requests in 5 minutes of 5xx",
        during.len()
    );
    assert!(during.len() >= 5, "the refresher gave up: {}", during.len());
    assert!(
        gaps_secs(&during).iter().all(|g| *g >= 29),
        "eager retries closer than 30 s: {:?}",
        gaps_secs(&during)
    );
}

/// F3, real sockets: once the token has expired during a 5xx outage, requests get 503 `TokenServiceUnavailable`
/// with `Retry-After` — never a request forwarded without a token.
#[tokio::test]
async fn f03_after_expiry_5xx_is_503_with_retry_after_and_nothing_unauthenticated_is_forwarded() {
    let _trace = trace_init();
    let world = World::new().await;
    // The start-up token lives 2 s (usable for 1.8 s); every later request gets a 503.
    world.aad.script("fivexx", [Behavior::ttl(2)]);
    world
        .aad
        .set_behavior("fivexx", Behavior::Status(StatusCode::SERVICE_UNAVAILABLE));
    let proxy = TestProxy::start(&world.config(
        &World::sp("sp", "fivexx"),
        &world.route("arm", "/", "sp", ""),
    ))
    .await;
    proxy.wait_ready().await;
    assert_eq!(get(&proxy.url("/before")).await.0, StatusCode::OK);
    let issued = world.aad.registry().all()[0].issued_instant;
    // Past the usable end of the token.
    tokio::time::sleep_until(issued + Duration::from_millis(1900)).await;
    for _ in 0..20 {
        let answer = get(&proxy.url("/after")).await;
        expect_proxy_error(
            &answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "TokenServiceUnavailable",
        );
        let retry_after = retry_after_secs(&answer.1);
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert!(!String::from_utf8_lossy(&answer.2).contains("at.fivexx"));
    }
    let seen = world.upstream.requests();
    assert!(seen.iter().all(|r| r.path == "/before"), "{seen:#?}");
    assert_eq!(world.upstream.rejected_count_for(Rejection::Missing), 0);
    assert!(seen.iter().all(|r| r.token.is_some()));
    assert_eq!(get(&proxy.admin_url("/healthz")).await.0, StatusCode::OK);
    proxy.stop().await;
}

// =====================================================================================================================
// F4 — token endpoint answers 429 with Retry-After: 120
// =====================================================================================================================

/// F4, paused clock, with a valid token: after the 429 not one token request for 120 s (±1 s), requests served
/// meanwhile (0 errors), then exactly one.
#[tokio::test(start_paused = true)]
async fn f04_429_retry_after_120_silences_the_endpoint_for_120s_while_the_token_serves() {
    let _trace = trace_init();
    let cred = Scripted::new([ok(3600), throttled(120), ok(3600)]);
    let (cache, _metrics) = production_cache();
    let src = cache.source(cache_key("sp"), cred.clone(), true);
    settle().await;
    while cred.calls() < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let throttled_at = cred.call_times()[1];
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if cred.calls() > 2 {
            break;
        }
        for _ in 0..10 {
            let v = immediate(src.header_value()).await.unwrap().unwrap();
            assert_eq!(bearer(&v), "Bearer tok-1");
        }
        assert!(throttled_at.elapsed() <= Duration::from_secs(122));
    }
    let next = cred.call_times()[2] - throttled_at;
    assert!(
        next >= Duration::from_secs(119) && next <= Duration::from_secs(121),
        "next token request {next:?} after the 429"
    );
    settle().await;
    assert_eq!(bearer(&src.header_value().await.unwrap()), "Bearer tok-3");
}

/// F4, paused clock, without a token: requests get the failure with a `Retry-After` no longer than what remains of
/// the 120 s, however many arrive at once; one token request per window.
#[tokio::test(start_paused = true)]
async fn f04_429_without_a_token_answers_with_the_remaining_wait_and_one_request_per_window() {
    let _trace = trace_init();
    let cred = Scripted::new([throttled(120)]);
    let (cache, _metrics) = production_cache();
    let src = cache.source(cache_key("sp"), cred.clone(), true);
    settle().await;
    assert_eq!(cred.calls(), 1);
    let throttled_at = cred.call_times()[0];
    for step in 0..119 {
        // 1,000 concurrent requests every second.
        let burst: Vec<_> = (0..1000)
            .map(|_| {
                let src = src.clone();
                tokio::spawn(async move { immediate(src.header_value()).await })
            })
            .collect();
        let remaining = Duration::from_secs(120) - throttled_at.elapsed();
        for b in burst {
            let e = b
                .await
                .unwrap()
                .expect("answered at once")
                .expect_err("no token");
            assert!(
                e.retry_after <= remaining && e.retry_after + Duration::from_secs(1) >= remaining,
                "step {step}: Retry-After {:?}, remaining {remaining:?}",
                e.retry_after
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(cred.calls(), 1, "nothing within the Retry-After window");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let burst: Vec<_> = (0..1000)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { src.header_value().await })
        })
        .collect();
    for b in burst {
        assert!(b.await.unwrap().is_err());
    }
    assert_eq!(cred.calls(), 2, "one token request for the next window");
}

/// F4, real sockets: a 429 with `Retry-After: 120` gives callers 503 with a `Retry-After` of at most 120 s, and a
/// storm of 1,000 concurrent requests makes no further token request.
#[tokio::test(flavor = "multi_thread")]
async fn f04_429_through_the_proxy_is_503_with_retry_after_and_one_token_request() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = TestProxy::start(&world.config(
        &World::sp("sp", "throttle120"),
        &world.route("arm", "/", "sp", ""),
    ))
    .await;
    let answers = h2_burst(&proxy.url("/subscriptions"), 10, 100).await;
    assert_eq!(answers.len(), 1000);
    for answer in &answers {
        expect_proxy_error(
            answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "TokenServiceUnavailable",
        );
        let retry_after = retry_after_secs(&answer.1);
        assert!(
            (100..=120).contains(&retry_after),
            "Retry-After {retry_after}"
        );
    }
    assert_eq!(world.aad.count("throttle120"), 1);
    assert_eq!(world.upstream.count(), 0);
    proxy.stop().await;
}

// =====================================================================================================================
// F20 — malformed or huge token responses
// =====================================================================================================================

/// F20: a token response that is not JSON, or lacks any lifetime, is 503 `TokenServiceUnavailable` (nothing of
/// the body echoed), damped like an outage (one token request for a burst), no panic; the proxy stays healthy.
#[tokio::test(flavor = "multi_thread")]
async fn f20_malformed_token_responses_are_503_without_echo_and_damped() {
    let _trace = trace_init();
    let world = World::new().await;
    world.aad.set_behavior(
        "nolife",
        Behavior::json(
            StatusCode::OK,
            r#"{"token_type":"Bearer","access_token":"at.nolife.SECRETISH"}"#,
        ),
    );
    let credentials = format!(
        "{}{}{}",
        World::sp("garbage", "garbage"),
        World::sp("nolife", "nolife"),
        World::sp("fine", "fine")
    );
    let routes = format!(
        "{}{}{}",
        world.route("garbage", "/garbage", "garbage", ""),
        world.route("nolife", "/nolife", "nolife", ""),
        world.route("fine", "/fine", "fine", "")
    );
    let proxy = TestProxy::start(&world.config(&credentials, &routes)).await;
    for (tenant, why) in [
        ("garbage", "not JSON"),
        ("nolife", "neither expires_in nor expires_on"),
    ] {
        let answers = h2_burst(&proxy.url(&format!("/{tenant}/x")), 2, 50).await;
        for answer in &answers {
            let error = expect_proxy_error(
                answer,
                StatusCode::SERVICE_UNAVAILABLE,
                "TokenServiceUnavailable",
            );
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(why), "{tenant}: {message}");
            let body = String::from_utf8_lossy(&answer.2);
            assert!(
                !body.contains("at.garb") && !body.contains("SECRETISH"),
                "echoed: {body}"
            );
            assert!((1..=5).contains(&retry_after_secs(&answer.1)));
        }
        assert_eq!(
            world.aad.count(tenant),
            1,
            "{tenant}: damped, one token request"
        );
    }
    assert_eq!(get(&proxy.url("/fine/x")).await.0, StatusCode::OK);
    assert_eq!(get(&proxy.admin_url("/healthz")).await.0, StatusCode::OK);
    proxy.stop().await;
}

/// F20: a 50 MiB token response is refused after a bounded read (1 MiB): the token service's producer is cut off
/// long before 50 MiB, the caller gets a small 503, and the proxy stays healthy.
#[tokio::test(flavor = "multi_thread")]
async fn f20_a_50_mib_token_response_is_refused_without_reading_it() {
    let _trace = trace_init();
    let world = World::new().await;
    // A token endpoint that streams 50 MiB of valid-looking JSON and counts what it got to send.
    let sent = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let server = Server::bind().await;
    let url = format!("http://{}", server.addr());
    let shutdown = server.shutdown();
    let (sent2, finished2) = (sent.clone(), finished.clone());
    let registry = world.aad.registry();
    let _huge = server.spawn(ServeOptions::default(), move |req| {
        let (sent, finished, shutdown) = (sent2.clone(), finished2.clone(), shutdown.clone());
        let registry = registry.clone();
        async move {
            let fine = req.uri().path().starts_with("/fine/");
            let _ = read_body(req.into_body()).await?;
            if fine {
                let token = registry.mint("fine", Duration::from_secs(3600));
                return Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({"token_type": "Bearer", "expires_in": 3600, "access_token": token}),
                ));
            }
            let (tx, body) = ChannelBody::channel(1);
            shutdown.spawn(async move {
                let chunk = Bytes::from(vec![b'A'; 64 * 1024]);
                let prefix = r#"{"token_type":"Bearer","expires_in":3600,"access_token":""#;
                if tx.send(Ok(Bytes::from_static(prefix.as_bytes()))).await.is_err() {
                    return;
                }
                for _ in 0..(50 << 20) / chunk.len() {
                    if tx.send(Ok(chunk.clone())).await.is_err() {
                        return;
                    }
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                let _ = tx.send(Ok(Bytes::from_static(b"\"}"))).await;
                finished.store(true, Ordering::SeqCst);
            });
            let mut resp = http::Response::new(body);
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
    });
    let credentials = format!("{}{}", World::sp("huge", "huge"), World::sp("fine", "fine"));
    let routes = format!(
        "{}{}",
        world.route("huge", "/huge", "huge", ""),
        world.route("fine", "/fine", "fine", "")
    );
    let yaml = format!(
        "authority_host: {url}\ntls:\n  extra_ca_file: {}\ncredentials:\n{credentials}routes:\n{routes}",
        world.ca_file.display()
    );
    let proxy = TestProxy::start(&yaml).await;
    let answer = get(&proxy.url("/huge/x")).await;
    let error = expect_proxy_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "TokenServiceUnavailable",
    );
    assert!(
        error["message"].as_str().unwrap().contains("larger than"),
        "{error}"
    );
    assert!(answer.2.len() < 4096, "{} bytes", answer.2.len());
    // Give the producer time to notice the proxy hung up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let produced = sent.load(Ordering::SeqCst);
    assert!(!finished.load(Ordering::SeqCst), "all 50 MiB were read");
    assert!(produced < 16 << 20, "{} MiB were read", produced >> 20);
    assert_eq!(get(&proxy.admin_url("/healthz")).await.0, StatusCode::OK);
    assert_eq!(get(&proxy.url("/fine/x")).await.0, StatusCode::OK);
    proxy.stop().await;
}
