//! The fault suite (RELIABILITY part (c), F1–F20): one or more tests per fault, named `fNN_…`, each asserting that
//! fault's pass criteria (or stricter). F21, the leak soak, is a script: `benches/soak/run.sh`.
//!
//! Three kinds of test live here:
//! * **Paused clock.** Where time is the subject (refresh schedules, backoff, Retry-After, wait budgets), the token
//!   cache is driven through its public API on tokio's paused clock with a scripted credential: hours pass in
//!   milliseconds and call counts are exact. Paused time cannot be combined with real sockets (timers fire at once
//!   while a task waits on I/O), so these tests use no sockets.
//! * **In process, real sockets.** The proxy ([`TestProxy`]) against the in-process mocks of `it/support`, or
//!   against small raw-TCP servers written here when a fault needs byte-level control (a reset mid-body, a
//!   cancelled download). Lifetimes are short so that real time stays within a few seconds.
//! * **The real binary** ([`RunningProxy`]) where the process itself is the subject: signals, a crash loop, RSS and
//!   file descriptors.
//!
//! Everything listens on 127.0.0.1:0; nothing leaves loopback.

// clippy's `allow-*-in-tests` covers `#[test]` functions only, not the helpers of an integration-test crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "fault tests: a failed expectation must fail the test loudly"
)]

#[path = "it/support/mod.rs"]
mod support;

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aml_auth_proxy::auth::{
    AccessToken, BoxFuture, CredentialError, Secret, TokenCredential, TokenError, TokenErrorKind,
    TokenRequest,
};
use aml_auth_proxy::metrics::Metrics;
use aml_auth_proxy::token_cache::{CacheKey, CachePolicy, TokenCache, TokenSource, TokenStatus};
use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use support::h2_frames;
use support::process::{ClosedPort, RunningProxy};
use support::proxy::{TempDir, TestProxy, World};
use support::{
    Behavior, MockAad, Rejection, TestCa, expect_proxy_error, get, h2_burst, http_client,
    json_body, request, request_via, retry_after_secs, trace_init,
};

// =====================================================================================================================
// Shared helpers
// =====================================================================================================================

const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// What a scripted credential does on one call.
#[derive(Debug, Clone)]
enum Step {
    /// A token valid for `ttl` seconds, after `delay_ms`.
    Ok { ttl: u64, delay_ms: u64 },
    /// A failure of `kind`, after `delay_ms`, optionally with the service's `Retry-After`.
    Fail {
        kind: TokenErrorKind,
        retry_after: Option<u64>,
        delay_ms: u64,
    },
}

fn ok(ttl: u64) -> Step {
    Step::Ok { ttl, delay_ms: 0 }
}

fn slow_ok(ttl: u64, delay_ms: u64) -> Step {
    Step::Ok { ttl, delay_ms }
}

/// What the Entra client reports when the token endpoint refuses connections (F1) or answers 5xx (F3).
fn outage() -> Step {
    Step::Fail {
        kind: TokenErrorKind::TokenServiceUnavailable,
        retry_after: None,
        delay_ms: 0,
    }
}

fn throttled(retry_after: u64) -> Step {
    Step::Fail {
        kind: TokenErrorKind::TokenServiceUnavailable,
        retry_after: Some(retry_after),
        delay_ms: 0,
    }
}

/// A scripted, call-recording credential (the last step repeats). Tokens are `tok-<call number>`.
#[derive(Debug)]
struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    calls: Mutex<Vec<Instant>>,
}

impl Scripted {
    fn new(steps: impl IntoIterator<Item = Step>) -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::new(steps.into_iter().collect()),
            calls: Mutex::new(Vec::new()),
        })
    }

    /// How many token requests were made.
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// When each token request was made (tokio clock).
    fn call_times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }

    /// Replaces the script.
    fn then(&self, steps: impl IntoIterator<Item = Step>) {
        *self.steps.lock().unwrap() = steps.into_iter().collect();
    }
}

impl TokenCredential for Scripted {
    fn get_token<'a>(
        &'a self,
        _: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Instant::now());
            calls.len()
        };
        let step = {
            let mut steps = self.steps.lock().unwrap();
            if steps.len() > 1 {
                steps.pop_front().unwrap()
            } else {
                steps.front().cloned().unwrap()
            }
        };
        Box::pin(async move {
            match step {
                Step::Ok { ttl, delay_ms } => {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    Ok(AccessToken {
                        token: Secret::new(format!("tok-{n}")),
                        expires_in: Duration::from_secs(ttl),
                        refresh_in: None,
                        source: "client_secret".into(),
                    })
                }
                Step::Fail {
                    kind,
                    retry_after,
                    delay_ms,
                } => {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    Err(CredentialError::Failed(
                        TokenError::new(
                            kind,
                            "client_secret",
                            format!("token service 127.0.0.1:9 unreachable: scripted failure {n}"),
                        )
                        .with_retry_after(retry_after.map(Duration::from_secs)),
                    ))
                }
            }
        })
    }

    fn kind(&self) -> &'static str {
        "client_secret"
    }
}

fn cache_key(credential: &str) -> CacheKey {
    CacheKey {
        credential: credential.into(),
        tenant: None,
        scope: ARM_SCOPE.into(),
        claims: None,
    }
}

/// A cache with the production policy, and its metrics.
fn production_cache() -> (TokenCache, Metrics) {
    let metrics = Metrics::new().unwrap();
    (
        TokenCache::new(metrics.tokens.clone(), CachePolicy::default()),
        metrics,
    )
}

/// Lets spawned tasks run (and the keeper's start-up fetch finish) without moving the paused clock noticeably.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// `Some(output)` when `f` completes without the (paused) clock moving: a cache hit or an immediate answer.
async fn immediate<F: Future>(f: F) -> Option<F::Output> {
    let start = Instant::now();
    let out = f.await;
    (Instant::now() == start).then_some(out)
}

fn bearer(v: &http::HeaderValue) -> String {
    v.to_str().unwrap().to_owned()
}

/// Gaps between consecutive instants, in whole seconds (rounded down).
fn gaps_secs(times: &[Instant]) -> Vec<u64> {
    times.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect()
}

/// The value of the sample `name{labels}` (exact text before the value) in a Prometheus exposition.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum of every sample of family `name` whose label set contains all of `labels` (`k="v"` pieces).
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            if labels.iter().all(|want| rest.contains(want)) {
                value.parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Polls `check` every 20 ms until it is true or `limit` passes; returns how long it took.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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
    let imds = ClosedPort::new();
    let yaml = config_with_authority(&world, &format!("http://{}", closed.addr()), "down");
    let proxy = RunningProxy::start(&world.dir, &imds, &yaml, &[], &[]).await;
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
    let metrics = String::from_utf8(get(&proxy.admin_url("/metrics")).await.2.to_vec()).unwrap();
    assert!(
        metric_sum(
            &metrics,
            "aml_auth_proxy_auth_failures_total",
            &["credential=\"sp\"", "code=\"TokenServiceUnavailable\""]
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
    let out = child.finish(support::process::EXIT_TIMEOUT).await;
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
        metric_sum(
            &text,
            "aml_auth_proxy_auth_failures_total",
            &["code=\"TokenServiceUnavailable\""]
        ) >= 300.0,
        "{text}"
    );
}

// =====================================================================================================================
// F2 — token endpoint slow or hanging
// =====================================================================================================================

/// An Entra ID client of `aad` whose requests time out after `attempt_timeout`.
fn entra_client(aad: &MockAad, attempt_timeout: Duration) -> aml_auth_proxy::auth::EntraClient {
    use aml_auth_proxy::auth::{EntraClient, HttpClientOptions, TokenHttpClient};
    let tls = aml_auth_proxy::tls::client_config(&[]).unwrap();
    let options = HttpClientOptions {
        attempt_timeout,
        ..HttpClientOptions::default()
    };
    let http = TokenHttpClient::new(Arc::new(tls), &options);
    let origin = aml_auth_proxy::origin::authority_origin(&aad.base_url()).unwrap();
    EntraClient::new(http, origin)
}

/// F2: the per-attempt timeout of the token-service client is enforced within ±10 % (a hanging endpoint), and a
/// slow endpoint that answers inside it is not cut. The production value is 10 s.
#[tokio::test]
async fn f02_per_attempt_timeout_is_enforced_within_10_percent() {
    let _trace = trace_init();
    assert_eq!(
        aml_auth_proxy::auth::HttpClientOptions::default().attempt_timeout,
        Duration::from_secs(10),
        "production per-attempt timeout"
    );
    let aad = MockAad::start().await;
    let limit = Duration::from_millis(2000);
    let credential = |tenant: &str| {
        let options = aml_auth_proxy::auth::ClientSecretCredentialOptions {
            tenant_id: tenant.into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
        };
        aml_auth_proxy::auth::ClientSecretCredential::new(options, entra_client(&aad, limit))
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
// F5 — IMDS unavailable, 404, 410, 429
// =====================================================================================================================

mod imds {
    //! Managed-identity helpers: every credential built here points at 127.0.0.1, never at 169.254.169.254.

    use super::*;
    use aml_auth_proxy::auth::{
        HttpClientOptions, ImdsRetry, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
        TokenHttpClient, UserAssignedId,
    };
    use aml_auth_proxy::env::MapEnv;

    /// The production schedule scaled down 100× (0.8 s → 8 ms, 2.5 s → 25 ms, 60 s → 600 ms).
    pub(super) fn scaled_retry() -> ImdsRetry {
        let production = ImdsRetry::default();
        ImdsRetry {
            max_retries: production.max_retries,
            backoff: production.backoff / 100,
            gone_backoff: production.gone_backoff / 100,
            max_delay: production.max_delay / 100,
        }
    }

    /// A managed-identity credential for IMDS at `base` (via `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
    pub(super) fn credential(
        base: &str,
        client_id: Option<&str>,
        in_chain: bool,
        retry: ImdsRetry,
    ) -> ManagedIdentityCredential {
        let tls = aml_auth_proxy::tls::client_config(&[]).unwrap();
        let http = TokenHttpClient::new(Arc::new(tls), &HttpClientOptions::default());
        let env = MapEnv::new().with("AZURE_POD_IDENTITY_AUTHORITY_HOST", base);
        let options = ManagedIdentityCredentialOptions {
            user_assigned: client_id.map(|c| UserAssignedId::ClientId(c.into())),
            in_chain,
            retry,
            ..ManagedIdentityCredentialOptions::default()
        };
        let cred = ManagedIdentityCredential::new(options, &env, http);
        assert_eq!(cred.endpoint().and_then(|u| u.host()), Some("127.0.0.1"));
        cred
    }

    /// Every request carried `Metadata: true` and nothing that names a forwarding hop.
    pub(super) fn assert_metadata_and_no_forwarding(requests: &[support::IdentityRequest]) {
        assert!(!requests.is_empty());
        for r in requests {
            assert_eq!(r.header("metadata"), Some("true"), "{r:?}");
            for absent in ["x-forwarded-for", "forwarded", "x-forwarded-host", "via"] {
                assert!(r.header(absent).is_none(), "{absent} sent: {r:?}");
            }
        }
    }
}

/// F5: IMDS refusing connections makes the managed-identity source unavailable at once, and a silent IMDS after
/// the 1 s probe (inside a chain, where the probe runs).
#[tokio::test]
async fn f05_imds_refused_or_silent_is_unavailable_within_the_1s_probe() {
    let _trace = trace_init();
    let closed = ClosedPort::new();
    let retry = aml_auth_proxy::auth::ImdsRetry::default();
    let cred = imds::credential(
        &format!("http://{}", closed.addr()),
        None,
        true,
        retry.clone(),
    );
    let started = Instant::now();
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let Err(CredentialError::Unavailable(attempts)) = result else {
        panic!("expected unavailable, got {result:?}");
    };
    assert!(
        attempts[0].reason.contains("no response from IMDS"),
        "{attempts:?}"
    );

    // Accepts, never answers.
    let silent = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let cred = imds::credential(&format!("http://{addr}"), None, true, retry);
    let started = Instant::now();
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(CredentialError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1500),
        "the probe gave up after {took:?}"
    );
    held.abort();
}

/// F5: 410 ("IMDS is being updated, back within 70 s") is retried for at least 70 s in total. The production
/// schedule's delays are checked exactly; the same schedule scaled down 100× then runs against a mock IMDS that
/// answers 410 for "60 s" and recovers, and against one that never recovers. Every request carries
/// `Metadata: true` and no forwarding header.
#[tokio::test]
async fn f05_imds_410_is_retried_for_at_least_70s_with_metadata_on_every_request() {
    let _trace = trace_init();
    let production = aml_auth_proxy::auth::ImdsRetry::default();
    let gone_total: Duration = (1..=production.max_retries)
        .map(|n| production.delay(n, true))
        .sum();
    assert_eq!(
        (1..=production.max_retries)
            .map(|n| production.delay(n, true).as_secs())
            .collect::<Vec<_>>(),
        [0, 5, 10, 20, 40]
    );
    assert!(
        gone_total >= Duration::from_secs(70),
        "410 retried for {gone_total:?}"
    );
    let ordinary: Duration = (1..=production.max_retries)
        .map(|n| production.delay(n, false))
        .sum();
    assert!(
        ordinary < gone_total,
        "410 waits longer than other statuses"
    );

    // Scaled 100×: 410 for "60 s" (600 ms), then a token.
    let first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = first.clone();
    let mock = support::MockIdentity::start_with(Arc::new(move |req, issuer| {
        let start = *seen.lock().unwrap().get_or_insert_with(Instant::now);
        if start.elapsed() < Duration::from_millis(600) {
            return support::Reply::error(410, "gone", "IMDS is going through updates");
        }
        support::MockIdentity::imds_like(req, issuer)
    }))
    .await;
    let cred = imds::credential(&mock.base(), None, false, imds::scaled_retry());
    let started = Instant::now();
    let token = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(token.token.expose().starts_with("mi."));
    // 410s until the window closed (how many depends on how late the timers fire), then the token; never more
    // than the schedule allows.
    assert!(
        (3..=6).contains(&mock.count()),
        "{} requests for one token",
        mock.count()
    );
    imds::assert_metadata_and_no_forwarding(&mock.requests());

    // 410 for ever: the retries span ≥ 70 s (scaled: 700 ms), then a bounded failure.
    let mock = support::MockIdentity::start_with(Arc::new(|_, _| {
        support::Reply::error(410, "gone", "IMDS is going through updates")
    }))
    .await;
    let cred = imds::credential(&mock.base(), None, false, imds::scaled_retry());
    let started = Instant::now();
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    assert!(started.elapsed() >= Duration::from_millis(700));
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert!(e.message.contains("HTTP 410"), "{}", e.message);
    assert_eq!(mock.count(), 6);
    imds::assert_metadata_and_no_forwarding(&mock.requests());
}

/// IMDS's answer for a user-assigned identity that is not (yet) assigned here: 404 `Identity not found`.
fn identity_not_found() -> support::Reply {
    support::Reply::error(404, "invalid_request", "Identity not found")
}

const MI_CLIENT_ID: &str = "7e3c1a2b-0000-4000-8000-0000000000c1";

/// F5: 404 is a clear error after a bounded number of retries (never an endless loop); 429 is retried and
/// recovers. Every request carries `Metadata: true`.
#[tokio::test]
async fn f05_imds_404_is_a_clear_bounded_error_and_429_recovers() {
    let _trace = trace_init();
    let mock = support::MockIdentity::start_with(Arc::new(|_, _| identity_not_found())).await;
    let cred = imds::credential(
        &mock.base(),
        Some(MI_CLIENT_ID),
        false,
        imds::scaled_retry(),
    );
    for round in 1..=2 {
        let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
        let Err(CredentialError::Failed(e)) = result else {
            panic!("expected a failure, got {result:?}");
        };
        assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
        assert!(
            e.message.contains("HTTP 404") && e.message.contains("Identity not found"),
            "{}",
            e.message
        );
        assert_eq!(mock.count(), 6 * round, "1 attempt + 5 retries per call");
    }
    let requests = mock.requests();
    imds::assert_metadata_and_no_forwarding(&requests);
    assert!(
        requests
            .iter()
            .all(|r| r.query.get("client_id").map(String::as_str) == Some(MI_CLIENT_ID))
    );

    let mock = support::MockIdentity::start().await;
    mock.script([
        support::Reply::error(429, "throttled", "too many requests"),
        support::Reply::error(429, "throttled", "too many requests"),
    ]);
    let cred = imds::credential(&mock.base(), None, false, imds::scaled_retry());
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert_eq!(mock.count(), 3);
    imds::assert_metadata_and_no_forwarding(&mock.requests());
}

/// F5 (stricter reading of RELIABILITY): the 404 error names the client id that IMDS did not find.
#[tokio::test]
async fn f05_imds_404_error_names_the_client_id() {
    let _trace = trace_init();
    let mock = support::MockIdentity::start_with(Arc::new(|_, _| identity_not_found())).await;
    let cred = imds::credential(
        &mock.base(),
        Some(MI_CLIENT_ID),
        false,
        imds::scaled_retry(),
    );
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert!(e.message.contains(MI_CLIENT_ID), "{}", e.message);
}

// =====================================================================================================================
// F6 — federated token file rotated, missing, unreadable; assertion expired
// =====================================================================================================================

mod federated {
    //! A fake Entra ID for workload identity that accepts a client assertion only if it equals the *current*
    //! content of the tenant's federated token file (anything else gets AADSTS700024, "assertion expired"), and a
    //! federated token file laid out as the kubelet does it (`token → ..data/token`, `..data → ..<timestamp>`).

    use super::*;
    use aml_auth_proxy::auth::WorkloadIdentityCredentialOptions;
    use aml_auth_proxy::auth::{EntraClient, WorkloadIdentityCredential};
    use aml_auth_proxy::env::MapEnv;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    pub(super) const EXPIRED: &str = r#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range.\r\nTrace ID: t\r\nCorrelation ID: c","error_codes":[700024]}"#;

    /// The fake token endpoint.
    pub(super) struct Sts {
        pub(super) url: String,
        /// Every (tenant, client_assertion) received.
        pub(super) seen: Arc<Mutex<Vec<(String, String)>>>,
        _server: support::ServerHandle,
    }

    impl Sts {
        /// Tokens live `ttl` seconds; `files` maps a tenant to its federated token file.
        pub(super) async fn start(ttl: u64, files: HashMap<String, PathBuf>) -> Self {
            let server = support::Server::bind().await;
            let url = format!("http://{}", server.addr());
            let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
            let files = Arc::new(files);
            let record = seen.clone();
            let count = Arc::new(AtomicU64::new(0));
            let handle = server.spawn(support::ServeOptions::default(), move |req| {
                let (files, record, count) = (files.clone(), record.clone(), count.clone());
                async move {
                    let tenant = req
                        .uri()
                        .path()
                        .trim_start_matches('/')
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let (body, _) = support::read_body(req.into_body()).await?;
                    let assertion = form_urlencoded::parse(&body)
                        .find(|(k, _)| k == "client_assertion")
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default();
                    record
                        .lock()
                        .unwrap()
                        .push((tenant.clone(), assertion.clone()));
                    let current = files
                        .get(&tenant)
                        .and_then(|p| std::fs::read_to_string(p).ok())
                        .map(|t| t.trim().to_owned());
                    if current.as_deref() != Some(assertion.as_str()) {
                        return Ok(support::json_response(
                            StatusCode::BAD_REQUEST,
                            &serde_json::from_str(EXPIRED).unwrap(),
                        ));
                    }
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    Ok(support::json_response(
                        StatusCode::OK,
                        &serde_json::json!({"token_type": "Bearer", "expires_in": ttl,
                            "access_token": format!("wi.{tenant}.{n}")}),
                    ))
                }
            });
            Self {
                url,
                seen,
                _server: handle,
            }
        }

        pub(super) fn assertions(&self, tenant: &str) -> Vec<String> {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _)| t == tenant)
                .map(|(_, a)| a.clone())
                .collect()
        }
    }

    /// A credential for `tenant` reading `file`, exchanging at `sts`.
    pub(super) fn credential(sts: &Sts, tenant: &str, file: &Path) -> WorkloadIdentityCredential {
        let tls = aml_auth_proxy::tls::client_config(&[]).unwrap();
        let http = aml_auth_proxy::auth::TokenHttpClient::new(
            Arc::new(tls),
            &aml_auth_proxy::auth::HttpClientOptions::default(),
        );
        let entra = EntraClient::new(
            http,
            aml_auth_proxy::origin::authority_origin(&sts.url).unwrap(),
        );
        let options = WorkloadIdentityCredentialOptions {
            tenant_id: Some(tenant.into()),
            client_id: Some("22222222-0000-0000-0000-000000000002".into()),
            token_file: Some(file.to_path_buf()),
        };
        WorkloadIdentityCredential::new(options, &MapEnv::new(), entra)
    }

    /// A projected service-account token volume, kubelet style.
    pub(super) struct Projected {
        pub(super) dir: PathBuf,
        generation: u32,
    }

    impl Projected {
        pub(super) fn new(dir: &Path, content: &str) -> Self {
            let mut p = Self {
                dir: dir.to_path_buf(),
                generation: 0,
            };
            std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
            p.rotate(content);
            p
        }

        /// The path the credential is configured with.
        pub(super) fn token(&self) -> PathBuf {
            self.dir.join("token")
        }

        /// Atomically swaps in a new generation holding `content` (`..data` is renamed over).
        pub(super) fn rotate(&mut self, content: &str) {
            self.generation += 1;
            let name = format!(
                "..2026_01_01_00_00_{:02}.{}",
                self.generation, self.generation
            );
            let gen_dir = self.dir.join(&name);
            std::fs::create_dir(&gen_dir).unwrap();
            std::fs::write(gen_dir.join("token"), content).unwrap();
            self.point_at(&name);
        }

        /// `..data` points at a generation whose `token` is a directory: the file exists but cannot be read.
        pub(super) fn make_unreadable(&mut self) {
            self.generation += 1;
            let name = format!("..broken.{}", self.generation);
            std::fs::create_dir_all(self.dir.join(&name).join("token")).unwrap();
            self.point_at(&name);
        }

        /// `..data` is gone: `token` dangles, as between two steps of a non-atomic update.
        pub(super) fn remove(&self) {
            std::fs::remove_file(self.dir.join("..data")).unwrap();
        }

        fn point_at(&self, name: &str) {
            let tmp = self.dir.join("..data_tmp");
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(name, &tmp).unwrap();
            std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        }
    }
}

/// F6: a rotated file (kubelet's atomic `..data` swap) is what the next exchange sends, once the copy in memory is
/// due for a re-read (5 min in production, 200 ms here); the fake STS accepts only the current file's content.
#[tokio::test]
async fn f06_a_rotated_federated_token_is_used_by_the_next_exchange() {
    let _trace = trace_init();
    let dir = TempDir::new();
    let mut file = federated::Projected::new(dir.path(), "assertion-1\n");
    let sts = federated::Sts::start(
        3600,
        [("wi".to_owned(), file.token())].into_iter().collect(),
    )
    .await;
    let cred = federated::credential(&sts, "wi", &file.token())
        .with_reread_after(Duration::from_millis(200));
    let request = TokenRequest::new(ARM_SCOPE);
    cred.get_token(&request).await.unwrap();
    for n in 2..=4 {
        file.rotate(&format!("assertion-{n}"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let token = cred.get_token(&request).await.unwrap();
        assert!(token.token.expose().starts_with("wi.wi."));
    }
    assert_eq!(
        sts.assertions("wi"),
        ["assertion-1", "assertion-2", "assertion-3", "assertion-4"],
        "one exchange per rotation, each with the current file"
    );
}

/// F6: with the production re-read interval, a rotation the credential has not noticed yet is caught by the STS
/// saying the assertion expired (AADSTS700024): the file is re-read once, at once, and the exchange retried —
/// exactly one extra STS call. If the re-read gives nothing new there is no loop: the error is returned.
#[tokio::test]
async fn f06_assertion_expired_700024_rereads_the_file_once_immediately() {
    let _trace = trace_init();
    let dir = TempDir::new();
    let mut file = federated::Projected::new(dir.path(), "assertion-1");
    let sts = federated::Sts::start(
        3600,
        [("wi".to_owned(), file.token())].into_iter().collect(),
    )
    .await;
    let cred = federated::credential(&sts, "wi", &file.token());
    let request = TokenRequest::new(ARM_SCOPE);
    cred.get_token(&request).await.unwrap();
    file.rotate("assertion-2");
    cred.get_token(&request).await.unwrap();
    assert_eq!(
        sts.assertions("wi"),
        ["assertion-1", "assertion-1", "assertion-2"],
        "the cached assertion, refused, then the re-read file"
    );

    // The STS refuses the current file too (clock trouble on its side): one re-read, nothing new, no loop.
    let refuse_all = federated::Sts::start(3600, Default::default()).await;
    let cred = federated::credential(&refuse_all, "wi", &file.token());
    let result = cred.get_token(&request).await;
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert!(e.message.starts_with("AADSTS700024"), "{}", e.message);
    assert_eq!(refuse_all.assertions("wi"), ["assertion-2"]);
}

/// F6, through the token cache (real time, short tokens): while the federated token file is missing (a dangling
/// `..data`) or unreadable (a directory), refreshes fail as transient outages and the cached token keeps serving
/// with 0 errors; when the file is back the next retry exchanges the new content.
#[tokio::test]
async fn f06_missing_or_unreadable_file_keeps_the_cached_token_serving() {
    let _trace = trace_init();
    let dir_missing = TempDir::new();
    let dir_unreadable = TempDir::new();
    let mut missing = federated::Projected::new(dir_missing.path(), "m-1");
    let mut unreadable = federated::Projected::new(dir_unreadable.path(), "u-1");
    // 3 s tokens: refreshed at ~1.5 s, usable until 2.7 s.
    let sts = federated::Sts::start(
        3,
        [
            ("missing".to_owned(), missing.token()),
            ("unreadable".to_owned(), unreadable.token()),
        ]
        .into_iter()
        .collect(),
    )
    .await;
    let policy = CachePolicy {
        min_retry: Duration::from_millis(200),
        eager_retry: Duration::from_millis(200),
        max_backoff_transient: Duration::from_millis(400),
        ..CachePolicy::default()
    };
    let metrics = Metrics::new().unwrap();
    let cache = TokenCache::new(metrics.tokens.clone(), policy);
    let sources: Vec<TokenSource> = ["missing", "unreadable"]
        .iter()
        .map(|tenant| {
            let file = if *tenant == "missing" {
                missing.token()
            } else {
                unreadable.token()
            };
            let cred = federated::credential(&sts, tenant, &file).with_reread_after(Duration::ZERO);
            cache.source(cache_key(tenant), Arc::new(cred), true)
        })
        .collect();
    for src in &sources {
        src.token().await.unwrap();
    }
    let start = Instant::now();
    missing.remove();
    unreadable.make_unreadable();
    let mut served = 0;
    let mut restored = false;
    while start.elapsed() < Duration::from_millis(3200) {
        if !restored && start.elapsed() >= Duration::from_millis(2000) {
            missing.rotate("m-2");
            unreadable.rotate("u-2");
            restored = true;
        }
        for src in &sources {
            let v = src
                .header_value()
                .await
                .unwrap_or_else(|e| panic!("a client error at {:?}: {e}", start.elapsed()));
            assert!(bearer(&v).starts_with("Bearer wi."));
            served += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served > 200);
    for (tenant, fresh) in [("missing", "m-2"), ("unreadable", "u-2")] {
        let seen = sts.assertions(tenant);
        assert_eq!(seen.last().map(String::as_str), Some(fresh), "{seen:?}");
    }
    let text = String::from_utf8(metrics.render()).unwrap();
    for credential in ["missing", "unreadable"] {
        let failures = metric_sum(
            &text,
            "aml_auth_proxy_auth_failures_total",
            &[&format!("credential=\"{credential}\"")],
        );
        assert!(
            failures >= 1.0,
            "{credential}: the file was really missing during refreshes: {text}"
        );
    }
}

// =====================================================================================================================
// F7 — clock skew and jumps
// =====================================================================================================================

/// F7, paused clock: the refresh schedule runs on the monotonic clock. An hour of tokio time passes while the wall
/// clock stands (almost) still — as if it had jumped back an hour — and 10-minute tokens are refreshed exactly as
/// their lifetimes say: every 270–300 s (5 min before expiry, minus ≤ 30 s jitter), no storm, never expired.
#[tokio::test(start_paused = true)]
async fn f07_refresh_schedule_follows_the_monotonic_clock_not_the_wall_clock() {
    let _trace = trace_init();
    let wall_start = SystemTime::now();
    let cred = Scripted::new([ok(600)]);
    let (cache, _metrics) = production_cache();
    let src = cache.source(cache_key("sp"), cred.clone(), true);
    settle().await;
    let start = Instant::now();
    let mut expired = 0;
    while start.elapsed() < Duration::from_secs(3600) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        match immediate(src.header_value()).await {
            Some(Ok(_)) => {}
            _ => expired += 1,
        }
    }
    assert_eq!(expired, 0);
    let gaps = gaps_secs(&cred.call_times());
    assert!(
        gaps.iter().all(|g| (270..=300).contains(g)),
        "refresh gaps {gaps:?}"
    );
    let calls = cred.calls();
    assert!(
        (1 + 3600 / 300..=1 + 3600 / 270).contains(&calls),
        "{calls} token requests in an hour of 10-minute tokens"
    );
    // The wall clock moved by (much) less than the simulated hour: it did not drive anything.
    let wall = SystemTime::now().duration_since(wall_start).unwrap();
    assert!(wall < Duration::from_secs(60), "{wall:?}");
}

/// F7, real sockets: a token response whose `expires_on` disagrees with `expires_in` (a skewed token service clock:
/// already in the past, or years ahead) is scheduled by `expires_in`: the token is used, not refetched in a storm,
/// and `/readyz` reports an expiry `expires_in` from now. The upstream checks every token (0 expired).
#[tokio::test]
async fn f07_expires_in_wins_over_a_disagreeing_expires_on() {
    let _trace = trace_init();
    let world = World::new().await;
    let now = unix_now();
    let registry = world.aad.registry();
    for (tenant, ttl, expires_on) in [
        ("skewpast", 3600, now - 7200),
        ("skewfuture", 120, now + 10 * 365 * 86_400),
    ] {
        let token = registry.mint(tenant, Duration::from_secs(ttl));
        let body = serde_json::json!({"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl,
            "expires_on": expires_on, "access_token": token});
        world
            .aad
            .set_behavior(tenant, Behavior::json(StatusCode::OK, body.to_string()));
    }
    let credentials = format!(
        "{}{}",
        World::sp("past", "skewpast"),
        World::sp("future", "skewfuture")
    );
    let routes = format!(
        "{}{}",
        world.route("past", "/past", "past", ""),
        world.route("future", "/future", "future", "")
    );
    let proxy = TestProxy::start(&world.config(&credentials, &routes)).await;
    proxy.wait_ready().await;
    for _ in 0..25 {
        for route in ["/past/x", "/future/x"] {
            let (status, _, body) = get(&proxy.url(route)).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(world.upstream.rejected_count(), 0);
    assert_eq!(world.aad.count("skewpast"), 1, "no refresh storm");
    assert_eq!(world.aad.count("skewfuture"), 1, "no refresh storm");
    let ready = json_body(&get(&proxy.admin_url("/readyz")).await.2);
    for (route, ttl) in [("past", 3600), ("future", 120)] {
        let entry = ready["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == route)
            .unwrap_or_else(|| panic!("{ready}"));
        let expires_on = entry["expires_on"].as_u64().unwrap();
        assert!(
            expires_on.abs_diff(now + ttl) <= 5,
            "{route}: expires_on {expires_on}, expected about {}",
            now + ttl
        );
    }
    proxy.stop().await;
}

// =====================================================================================================================
// F8 — token revoked mid-life (plain 401 from the upstream)
// =====================================================================================================================

/// F8: the upstream refuses the cached token (`401 error="invalid_token"`): the token is dropped and refreshed at
/// most once per 5 s however many requests see the 401 at once; an idempotent request is sent once more with the
/// fresh token; a POST is never replayed.
#[tokio::test(flavor = "multi_thread")]
async fn f08_revoked_token_at_most_one_forced_refresh_per_5s_and_post_not_replayed() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("revoked").await;
    proxy.wait_ready().await;
    assert_eq!(world.aad.count("revoked"), 1);
    let revoked_at = Instant::now();
    world.aad.registry().expire_all();

    // A storm of 20 concurrent GETs that all see the 401: one forced refresh.
    let client = http_client();
    let storm: Vec<_> = (0..20)
        .map(|i| {
            let (client, url) = (client.clone(), proxy.url(&format!("/storm/{i}")));
            tokio::spawn(async move { request_via(&client, Method::GET, &url, &[], "").await })
        })
        .collect();
    let mut statuses = Vec::new();
    for s in storm {
        let (status, headers, _) = s.await.unwrap();
        assert!(
            !headers.contains_key("x-aml-auth-proxy-error"),
            "the upstream's answer, not the proxy's"
        );
        statuses.push(status);
    }
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(
        world.aad.count("revoked"),
        2,
        "exactly one forced refresh for the storm"
    );

    // Within 5 s the fresh token is refused too: no second forced refresh; the POST gets the 401, sent once.
    world.aad.registry().expire_all();
    let (status, headers, _) = request(Method::POST, &proxy.url("/create"), &[], "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let (status, _, _) = request(Method::GET, &proxy.url("/again"), &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        revoked_at.elapsed() < Duration::from_secs(5),
        "too slow to test the window"
    );
    assert_eq!(
        world.aad.count("revoked"),
        2,
        "no second refresh within 5 s"
    );
    let posts = world
        .upstream
        .requests()
        .iter()
        .filter(|r| r.path == "/create")
        .count();
    assert_eq!(posts, 1, "the POST was not replayed");
    proxy.stop().await;
}

/// F8: a POST refused for a revoked token is not replayed, and the token is dropped so the caller's retry works.
#[tokio::test]
async fn f08_revoked_token_on_a_post_drops_the_token_but_never_replays() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("revokedpost").await;
    proxy.wait_ready().await;
    world.aad.registry().expire_all();
    let (status, _, _) = request(Method::POST, &proxy.url("/jobs"), &[], r#"{"a":1}"#).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "not idempotent: the caller decides"
    );
    let posts = || {
        world
            .upstream
            .requests()
            .iter()
            .filter(|r| r.path == "/jobs")
            .count()
    };
    assert_eq!(posts(), 1);
    let (status, _, _) = request(Method::POST, &proxy.url("/jobs"), &[], r#"{"a":1}"#).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the caller's own retry gets a fresh token"
    );
    assert_eq!(posts(), 2);
    assert_eq!(world.aad.count("revokedpost"), 2);
    proxy.stop().await;
}

// =====================================================================================================================
// Raw loopback upstreams (F9, F11, F12): plain HTTP/1.1 written by hand, so that a test controls every byte and
// sees every cancellation. Routes may use `http://` upstreams on loopback.
// =====================================================================================================================

mod raw {
    use super::*;

    /// Reads an HTTP/1 request head (through the blank line); returns it and any body bytes read with it.
    /// `None` if the peer closed first.
    pub(super) async fn read_head(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                return Some((head, buf[end + 4..].to_vec()));
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The request target of a head (`GET /x HTTP/1.1` → `/x`).
    pub(super) fn target(head: &str) -> &str {
        head.split_whitespace().nth(1).unwrap_or_default()
    }

    /// A header's value in a head (case-insensitive name).
    pub(super) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Closes `s` with a TCP reset (SO_LINGER 0) instead of a FIN.
    pub(super) fn reset(s: TcpStream) {
        let _ = s.set_zero_linger();
        drop(s);
    }

    /// A listener on 127.0.0.1:0 serving each connection with `serve` on its own task; aborted on drop.
    pub(super) struct RawServer {
        pub(super) addr: SocketAddr,
        task: tokio::task::JoinHandle<()>,
    }

    impl RawServer {
        pub(super) async fn start<F, Fut>(serve: F) -> Self
        where
            F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = ()> + Send + 'static,
        {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move {
                while let Ok((s, _)) = listener.accept().await {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve(s));
                }
            });
            Self { addr, task }
        }

        pub(super) fn url(&self) -> String {
            format!("http://{}", self.addr)
        }
    }

    impl Drop for RawServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// What a raw HTTP/1 client read until the connection ended.
    #[derive(Debug)]
    pub(super) struct Answer {
        pub(super) head: String,
        pub(super) body: Vec<u8>,
        /// The connection ended (EOF or reset) rather than the read timing out.
        pub(super) closed: bool,
    }

    impl Answer {
        pub(super) fn status(&self) -> u16 {
            self.head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        }
    }

    /// Sends `request` on a fresh connection to `addr` and reads until the connection ends (at most `limit`).
    pub(super) async fn exchange(addr: SocketAddr, request: &str, limit: Duration) -> Answer {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let mut chunk = [0u8; 65536];
        let deadline = Instant::now() + limit;
        let closed = loop {
            match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
                Err(_) => break false,
            }
        };
        let end = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(all.len(), |p| p + 4);
        Answer {
            head: String::from_utf8_lossy(&all[..end]).into_owned(),
            body: all[end..].to_vec(),
            closed,
        }
    }
}

/// A route block `name` on `prefix` → `upstream` (the prefix is not stripped), credential `sp`.
fn raw_route(name: &str, prefix: &str, upstream: &str) -> String {
    format!(
        "  - name: {name}\n    path_prefix: {prefix}\n    strip_prefix: false\n    upstream: {upstream}\n    scope: {ARM_SCOPE}\n    credential: sp\n"
    )
}

// =====================================================================================================================
// F9 — upstream resets mid-stream
// =====================================================================================================================

/// The F9 upstream: `/cut-length` (Content-Length 100000, 1000 bytes, reset), `/cut-chunked` (one chunk, reset, no
/// last chunk), `/post-cut` (reads the head and some body, resets; counted), anything else `200 ok` (keep-alive).
async fn resetting_upstream(post_heads: Arc<AtomicUsize>) -> raw::RawServer {
    raw::RawServer::start(move |mut s| {
        let post_heads = post_heads.clone();
        async move {
            while let Some((head, _)) = raw::read_head(&mut s).await {
                match raw::target(&head) {
                    "/cut-length" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n")
                            .await;
                        let _ = s.write_all(&[b'x'; 1000]).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return raw::reset(s);
                    }
                    "/cut-chunked" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n")
                            .await;
                        let _ = s.write_all(&[b'y'; 1000]).await;
                        let _ = s.write_all(b"\r\n").await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return raw::reset(s);
                    }
                    "/post-cut" => {
                        post_heads.fetch_add(1, Ordering::SeqCst);
                        let mut chunk = [0u8; 1024];
                        let _ = s.read(&mut chunk).await;
                        return raw::reset(s);
                    }
                    _ => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            }
        }
    })
    .await
}

/// F9, HTTP/1 callers: an upstream reset mid-body is an abort — the connection closes short of the announced
/// Content-Length, or without the last chunk — never a clean end; the proxy keeps serving.
#[tokio::test]
async fn f09_upstream_reset_mid_body_is_an_abort_for_http1_callers() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = resetting_upstream(Arc::default()).await;
    let proxy = TestProxy::start(&world.config(
        &World::sp("sp", "reset1"),
        &raw_route("raw", "/", &upstream.url()),
    ))
    .await;
    proxy.wait_ready().await;
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");

    let cut = raw::exchange(
        proxy.addr(),
        &request("/cut-length"),
        Duration::from_secs(5),
    )
    .await;
    assert!(cut.closed, "the connection was left open: {cut:?}");
    assert_eq!(cut.status(), 200, "{}", cut.head);
    let announced: usize = raw::header(&cut.head, "content-length")
        .expect("Content-Length passed on")
        .parse()
        .unwrap();
    assert_eq!(announced, 100_000);
    assert!(
        cut.body.len() < announced,
        "{} of {announced} bytes: a clean end",
        cut.body.len()
    );

    let cut = raw::exchange(
        proxy.addr(),
        &request("/cut-chunked"),
        Duration::from_secs(5),
    )
    .await;
    assert!(cut.closed, "the connection was left open: {cut:?}");
    assert_eq!(cut.status(), 200, "{}", cut.head);
    assert!(
        raw::header(&cut.head, "transfer-encoding").is_some_and(|v| v.contains("chunked")),
        "{}",
        cut.head
    );
    assert!(
        !cut.body.ends_with(b"0\r\n\r\n"),
        "the last chunk was sent: a truncated stream looks complete"
    );

    // No panic, nothing wedged: the next request works.
    let next = raw::exchange(
        proxy.addr(),
        "GET /next HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(next.status(), 200);
    assert_eq!(next.body, b"ok");
    proxy.stop().await;
}

/// F9, HTTP/2 callers: the stream is reset (`RST_STREAM`), never ended with END_STREAM; the connection and the
/// proxy keep serving (the next stream on the same connection succeeds).
#[tokio::test]
async fn f09_upstream_reset_mid_body_is_rst_stream_for_http2_callers() {
    use h2_frames::{DATA, END_STREAM, GOAWAY, H2Conn, HEADERS, RST_STREAM};
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = resetting_upstream(Arc::default()).await;
    let proxy = TestProxy::start(&world.config(
        &World::sp("sp", "reset2"),
        &raw_route("raw", "/", &upstream.url()),
    ))
    .await;
    proxy.wait_ready().await;
    let authority = format!("127.0.0.1:{}", proxy.addr().port());
    let mut conn = H2Conn::connect(proxy.addr()).await;
    conn.send(&h2_frames::get(1, &authority, "/cut-length", &[]))
        .await;
    let (mut data, mut headers, mut reset) = (0usize, false, false);
    while let Some(f) = conn.next(Duration::from_secs(5)).await {
        if f.stream != 1 {
            assert_ne!(f.kind, GOAWAY, "the whole connection was torn down");
            continue;
        }
        assert_eq!(f.flags & END_STREAM, 0, "stream 1 ended cleanly: {f:?}");
        match f.kind {
            HEADERS => headers = true,
            DATA => data += f.payload.len(),
            RST_STREAM => {
                reset = true;
                break;
            }
            _ => {}
        }
    }
    assert!(headers && reset, "headers {headers}, reset {reset}");
    assert!(data < 100_000, "{data} bytes");

    // The same connection serves the next stream.
    conn.send(&h2_frames::get(3, &authority, "/next", &[]))
        .await;
    let mut ended = false;
    while let Some(f) = conn.next(Duration::from_secs(5)).await {
        if f.stream == 3 && f.flags & END_STREAM != 0 {
            ended = true;
            break;
        }
        assert!(!(f.stream == 3 && f.kind == RST_STREAM), "{f:?}");
    }
    assert!(ended, "stream 3 did not complete");
    // An open HTTP/2 connection would hold the graceful stop until its deadline.
    drop(conn);
    proxy.stop().await;
}

/// F9: a POST whose upstream connection is reset after the request bytes went out is not retried (not even on a
/// reused pooled connection); the caller gets 502 `UpstreamUnavailable`.
#[tokio::test]
async fn f09_a_post_is_never_retried_once_bytes_were_sent() {
    let _trace = trace_init();
    let world = World::new().await;
    let post_heads = Arc::new(AtomicUsize::new(0));
    let upstream = resetting_upstream(post_heads.clone()).await;
    let proxy = TestProxy::start(&world.config(
        &World::sp("sp", "reset3"),
        &raw_route("raw", "/", &upstream.url()),
    ))
    .await;
    proxy.wait_ready().await;
    // Warm the pool: the POST goes out on a reused keep-alive connection.
    assert_eq!(get(&proxy.url("/warm")).await.0, StatusCode::OK);
    let body = vec![b'p'; 200_000];
    let answer = request(Method::POST, &proxy.url("/post-cut"), &[], body).await;
    expect_proxy_error(&answer, StatusCode::BAD_GATEWAY, "UpstreamUnavailable");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        post_heads.load(Ordering::SeqCst),
        1,
        "the POST was sent again"
    );
    assert_eq!(get(&proxy.url("/after")).await.0, StatusCode::OK);
    proxy.stop().await;
}

// =====================================================================================================================
// F10 — slow upstream
// =====================================================================================================================

/// F10: no response headers within `upstream_response_timeout` → 504 `UpstreamTimeout` generated by the proxy
/// (fixed JSON body, no token), at the timeout, sent once; a slow but progressing body that outlasts the timeout
/// four times over is not cut.
#[tokio::test]
async fn f10_slow_headers_are_504_and_a_slow_progressing_body_is_not_cut() {
    let _trace = trace_init();
    let world = World::new().await;
    let config = format!(
        "limits:\n  upstream_response_timeout: 300ms\n{}",
        world.config(
            &World::sp("sp", "slowup"),
            &world.route("arm", "/", "sp", "")
        )
    );
    let proxy = TestProxy::start(&config).await;
    proxy.wait_ready().await;
    let asked = Instant::now();
    let answer = get(&proxy.url("/slow-headers?ms=3000")).await;
    let took = asked.elapsed();
    let error = expect_proxy_error(&answer, StatusCode::GATEWAY_TIMEOUT, "UpstreamTimeout");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "504 after {took:?}"
    );
    assert!(!error.to_string().contains("at.slowup"), "{error}");
    assert!(!String::from_utf8_lossy(&answer.2).contains("Bearer"));
    assert_eq!(world.upstream.count(), 1, "sent once, not retried");

    // 12 events 100 ms apart: 1.1 s of body after a prompt head.
    let asked = Instant::now();
    let (status, _, body) = get(&proxy.url("/stream?chunks=12&interval_ms=100")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(asked.elapsed() >= Duration::from_millis(1100));
    let expected: String = (0..12).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&body), expected);
    proxy.stop().await;
}

// =====================================================================================================================
// Helpers for tests against the real binary
// =====================================================================================================================

/// The number of open file descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb * 1024
}

/// The proxy's `aml_auth_proxy_in_flight_requests` gauge.
async fn in_flight(proxy: &RunningProxy) -> f64 {
    let text = String::from_utf8(get(&proxy.admin_url("/metrics")).await.2.to_vec()).unwrap();
    metric(&text, "aml_auth_proxy_in_flight_requests").expect("in-flight gauge")
}

/// Polls until the in-flight gauge reads `want` (at most `limit`); returns how long it took.
async fn in_flight_reaches(proxy: &RunningProxy, want: f64, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = in_flight(proxy).await;
        if now == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() <= limit,
            "in-flight gauge still {now} after {limit:?} (want {want})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// =====================================================================================================================
// F11 — the client disconnects mid-download or mid-upload
// =====================================================================================================================

/// When the upstream saw the proxy cancel each kind of request.
#[derive(Default)]
struct Cancellations {
    download: Mutex<Option<Instant>>,
    upload: Mutex<Option<Instant>>,
    upload_bytes: AtomicU64,
}

/// The F11 upstream: `/download` streams chunks until the proxy goes away; `/upload` reads the body and never
/// answers; anything else is `200 ok`. Each records when it saw the cancellation (EOF, reset or a failed write).
async fn cancellation_upstream(seen: Arc<Cancellations>) -> raw::RawServer {
    raw::RawServer::start(move |mut s| {
        let seen = seen.clone();
        async move {
            while let Some((head, early)) = raw::read_head(&mut s).await {
                match raw::target(&head) {
                    "/download" => {
                        let (mut rd, mut wr) = s.into_split();
                        let chunk = [b"10000\r\n".as_slice(), &[b'd'; 0x10000], b"\r\n"].concat();
                        let write = async move {
                            let _ = wr
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
                                .await;
                            while wr.write_all(&chunk).await.is_ok() {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        };
                        let read = async move {
                            let mut b = [0u8; 1024];
                            while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
                        };
                        tokio::select! { () = write => {}, () = read => {} }
                        *seen.download.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                    "/upload" => {
                        seen.upload_bytes
                            .fetch_add(early.len() as u64, Ordering::SeqCst);
                        let mut b = vec![0u8; 65536];
                        while let Ok(n) = s.read(&mut b).await {
                            if n == 0 {
                                break;
                            }
                            seen.upload_bytes.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        *seen.upload.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                    _ => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            }
        }
    })
    .await
}

/// Polls until `slot` is set (at most 5 s) and returns the instant it holds.
async fn wait_for(slot: &Mutex<Option<Instant>>) -> Instant {
    let start = Instant::now();
    loop {
        if let Some(t) = *slot.lock().unwrap() {
            return t;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// F11, the real binary: a caller that goes away mid-download or mid-upload makes the proxy cancel the upstream
/// request within 1 s (the upstream sees its connection end); the in-flight gauge is back to 0 and the process's
/// file descriptors back to their baseline within 2 s; the route keeps working (no half-used pooled connection).
/// F11's criteria once a caller left at `closed`: the upstream saw its exchange (`what`) end within 1 s of that
/// (`cancelled`), and the in-flight gauge and the proxy's open file descriptors are back to their baseline within 2 s.
async fn assert_released(
    proxy: &RunningProxy,
    what: &str,
    closed: Instant,
    cancelled: Instant,
    baseline: usize,
) {
    let after = cancelled.saturating_duration_since(closed);
    eprintln!("F11: {what} cancelled upstream {after:?} after the caller left");
    assert!(
        after <= Duration::from_secs(1),
        "the upstream {what} was cancelled {after:?} after the caller left"
    );
    in_flight_reaches(
        proxy,
        0.0,
        Duration::from_secs(2).saturating_sub(closed.elapsed()),
    )
    .await;
    let pid = proxy.child.pid();
    assert!(
        eventually(
            Duration::from_secs(2).saturating_sub(closed.elapsed()),
            || fd_count(pid) <= baseline
        )
        .await
        .is_some(),
        "fds {} > baseline {baseline}",
        fd_count(pid)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn f11_client_disconnect_cancels_the_upstream_request_within_1s() {
    let _trace = trace_init();
    let world = World::new().await;
    let seen = Arc::new(Cancellations::default());
    let upstream = cancellation_upstream(seen.clone()).await;
    let imds = ClosedPort::new();
    let yaml = world.config(
        &World::sp("sp", "cancel"),
        &raw_route("raw", "/", &upstream.url()),
    );
    let proxy = RunningProxy::start(&world.dir, &imds, &yaml, &[], &[]).await;
    let pid = proxy.child.pid();
    let ok = "GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    assert_eq!(
        raw::exchange(proxy.listen, ok, Duration::from_secs(5))
            .await
            .status(),
        200
    );
    in_flight_reaches(&proxy, 0.0, Duration::from_secs(2)).await;
    let baseline = fd_count(pid);

    // Download: read 1 MiB, then close.
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    caller
        .write_all(b"GET /download HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    while got < 1 << 20 {
        let n = caller.read(&mut buf).await.unwrap();
        assert!(n > 0, "the download ended early");
        got += n;
    }
    assert_eq!(in_flight(&proxy).await, 1.0);
    let closed = Instant::now();
    drop(caller);
    let cancelled = wait_for(&seen.download).await;
    assert_released(&proxy, "download", closed, cancelled, baseline).await;

    // Upload: announce 1 GiB, send 4 MiB, then reset the connection.
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    caller
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 1073741824\r\n\r\n",
        )
        .await
        .unwrap();
    let piece = vec![b'u'; 65536];
    while seen.upload_bytes.load(Ordering::SeqCst) < 4 << 20 {
        caller.write_all(&piece).await.unwrap();
    }
    assert_eq!(in_flight(&proxy).await, 1.0);
    let closed = Instant::now();
    raw::reset(caller);
    let cancelled = wait_for(&seen.upload).await;
    assert_released(&proxy, "upload", closed, cancelled, baseline).await;

    // The route still works.
    assert_eq!(
        raw::exchange(proxy.listen, ok, Duration::from_secs(5))
            .await
            .status(),
        200
    );
    let out = proxy.stop().await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

/// F11: a caller that goes away while the proxy is still waiting for the upstream's response head (a slow upstream)
/// must not stay counted as in flight: the gauge is back to 0 within 2 s, and the `max_in_flight` admission count
/// behind it too — with `max_in_flight: 5`, five abandoned requests must not make the proxy shed every later request.
#[tokio::test]

async fn f11_client_disconnect_before_the_response_head_releases_its_in_flight_slot() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = TestProxy::start(&format!(
        "limits:\n  max_in_flight: 5\n{}",
        world.config(
            &World::sp("sp", "gonebefore"),
            &world.route("arm", "/", "sp", "")
        )
    ))
    .await;
    proxy.wait_ready().await;
    let gauge = || async {
        let text = String::from_utf8(get(&proxy.admin_url("/metrics")).await.2.to_vec()).unwrap();
        metric(&text, "aml_auth_proxy_in_flight_requests").unwrap()
    };
    for _ in 0..5 {
        let mut caller = TcpStream::connect(proxy.addr()).await.unwrap();
        caller
            .write_all(b"GET /slow-headers?ms=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let before = world.upstream.count();
        assert!(
            eventually(Duration::from_secs(2), || world.upstream.count() > before)
                .await
                .is_some()
        );
        assert!(gauge().await >= 1.0);
        drop(caller);
    }
    let left = Instant::now();
    loop {
        let now = gauge().await;
        if now == 0.0 {
            break;
        }
        assert!(
            left.elapsed() <= Duration::from_secs(2),
            "in-flight gauge still {now} {:?} after the callers left",
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, body) = get(&proxy.url("/after")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    proxy.stop().await;
}

// =====================================================================================================================
// F12 — large uploads and downloads stream with bounded memory
// =====================================================================================================================

mod bulk {
    //! Deterministic bulk data and a cheap running hash for it.
    //!
    //! Block `i` (1 MiB) is a fixed pseudo-random block with its first 8 bytes XOR-ed with `i`, so no two blocks
    //! are alike and reordering, loss or duplication changes the hash. The hash is FNV-1a (64-bit) over the
    //! little-endian 8-byte words of the stream: the same construction as the support code's byte-wise FNV-1a,
    //! eight times cheaper in an unoptimised test build.

    use super::*;

    pub(super) const BLOCK: usize = 1 << 20;

    /// Word-wise FNV-1a over a byte stream cut anywhere.
    #[derive(Clone)]
    pub(super) struct WordFnv {
        hash: u64,
        pending: Vec<u8>,
        pub(super) len: u64,
    }

    impl WordFnv {
        pub(super) fn new() -> Self {
            Self {
                hash: 0xcbf2_9ce4_8422_2325,
                pending: Vec::with_capacity(8),
                len: 0,
            }
        }

        fn word(&mut self, w: &[u8]) {
            let v = u64::from_le_bytes(w.try_into().unwrap());
            self.hash = (self.hash ^ v).wrapping_mul(0x0000_0100_0000_01b3);
        }

        pub(super) fn update(&mut self, mut bytes: &[u8]) {
            self.len += bytes.len() as u64;
            if !self.pending.is_empty() {
                let take = (8 - self.pending.len()).min(bytes.len());
                self.pending.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.pending.len() == 8 {
                    let p = std::mem::take(&mut self.pending);
                    self.word(&p);
                }
            }
            let mut words = bytes.chunks_exact(8);
            for w in &mut words {
                self.word(w);
            }
            self.pending.extend_from_slice(words.remainder());
        }

        pub(super) fn finish(&self) -> u64 {
            let mut h = self.clone();
            if !h.pending.is_empty() {
                let mut last = h.pending.clone();
                last.resize(8, 0);
                h.word(&last);
            }
            h.hash
        }
    }

    /// Produces the stream block by block.
    pub(super) struct Blocks {
        base: Arc<Vec<u8>>,
        buf: Vec<u8>,
        next: u64,
    }

    impl Blocks {
        pub(super) fn new(base: Arc<Vec<u8>>) -> Self {
            Self {
                buf: vec![0; BLOCK],
                base,
                next: 0,
            }
        }

        pub(super) fn next_block(&mut self) -> &[u8] {
            self.buf.copy_from_slice(&self.base);
            let mark = u64::from_le_bytes(self.base[..8].try_into().unwrap()) ^ self.next;
            self.buf[..8].copy_from_slice(&mark.to_le_bytes());
            self.next += 1;
            &self.buf
        }
    }

    /// The hash of the first `len` bytes of the stream (len a multiple of [`BLOCK`]).
    pub(super) fn expected(base: &Arc<Vec<u8>>, len: u64) -> u64 {
        let mut blocks = Blocks::new(base.clone());
        let mut h = WordFnv::new();
        for _ in 0..len / BLOCK as u64 {
            h.update(blocks.next_block());
        }
        h.finish()
    }
}

/// The F12 upstream: `GET /download?n=N` streams N bytes of the bulk stream (Content-Length); `POST /upload`
/// reads the body and answers `<length> <hash>`.
async fn bulk_upstream(base: Arc<Vec<u8>>) -> raw::RawServer {
    raw::RawServer::start(move |mut s| {
        let base = base.clone();
        async move {
            let Some((head, early)) = raw::read_head(&mut s).await else {
                return;
            };
            let target = raw::target(&head).to_owned();
            if let Some(n) = target.strip_prefix("/download?n=") {
                let n: u64 = n.parse().unwrap();
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    )
                    .await;
                let mut blocks = bulk::Blocks::new(base);
                for _ in 0..n / bulk::BLOCK as u64 {
                    if s.write_all(blocks.next_block()).await.is_err() {
                        return;
                    }
                }
            } else if target == "/upload" {
                let len: u64 = raw::header(&head, "content-length").unwrap().parse().unwrap();
                let mut h = bulk::WordFnv::new();
                h.update(&early);
                let mut buf = vec![0u8; 256 * 1024];
                while h.len < len {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => h.update(&buf[..n]),
                    }
                }
                let body = format!("{} {:016x}", h.len, h.finish());
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            } else {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                    .await;
            }
        }
    })
    .await
}

/// Downloads `len` bytes through the proxy at `addr`; returns (bytes, hash).
async fn bulk_download(addr: SocketAddr, len: u64) -> (u64, u64) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /download?n={len} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let (head, early) = raw::read_head(&mut s).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut h = bulk::WordFnv::new();
    h.update(&early);
    let mut buf = vec![0u8; 256 * 1024];
    while h.len < len {
        match s.read(&mut buf).await.unwrap() {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    (h.len, h.finish())
}

/// Uploads `len` bytes through the proxy at `addr`; returns what the upstream says it received.
async fn bulk_upload(addr: SocketAddr, base: Arc<Vec<u8>>, len: u64) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut blocks = bulk::Blocks::new(base);
    for _ in 0..len / bulk::BLOCK as u64 {
        s.write_all(blocks.next_block()).await.unwrap();
    }
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// F12, the real binary: two uploads and two downloads of 256 MiB each, at once, stream through the proxy with its
/// peak RSS less than 64 MiB above its idle baseline, every byte intact (length and hash compared end to end).
#[tokio::test(flavor = "multi_thread")]
async fn f12_large_streams_keep_peak_rss_within_64_mib_and_arrive_intact() {
    let _trace = trace_init();
    const LEN: u64 = 256 << 20;
    let world = World::new().await;
    let base = Arc::new(support::pseudo_random_bytes(bulk::BLOCK));
    let upstream = bulk_upstream(base.clone()).await;
    let imds = ClosedPort::new();
    let yaml = world.config(
        &World::sp("sp", "bulk"),
        &raw_route("raw", "/", &upstream.url()),
    );
    let proxy = RunningProxy::start(&world.dir, &imds, &yaml, &[], &[]).await;
    let pid = proxy.child.pid();
    // Warm up (token, pools, buffers), then take the idle baseline and reset the peak.
    for _ in 0..3 {
        let (n, _) = bulk_download(proxy.listen, 4 * bulk::BLOCK as u64).await;
        assert_eq!(n, 4 * bulk::BLOCK as u64);
    }
    let baseline = proc_status_bytes(pid, "VmRSS");
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let expected = tokio::task::spawn_blocking({
        let base = base.clone();
        move || bulk::expected(&base, LEN)
    });

    let started = Instant::now();
    let downloads: Vec<_> = (0..2)
        .map(|_| tokio::spawn(bulk_download(proxy.listen, LEN)))
        .collect();
    let uploads: Vec<_> = (0..2)
        .map(|_| tokio::spawn(bulk_upload(proxy.listen, base.clone(), LEN)))
        .collect();
    let expected = expected.await.unwrap();
    for d in downloads {
        assert_eq!(d.await.unwrap(), (LEN, expected), "download damaged");
    }
    for u in uploads {
        assert_eq!(
            u.await.unwrap(),
            format!("{LEN} {expected:016x}"),
            "upload damaged"
        );
    }
    let took = started.elapsed();
    let peak = proc_status_bytes(pid, "VmHWM");
    let delta = peak.saturating_sub(baseline);
    assert!(
        delta <= 64 << 20,
        "peak RSS {} MiB, {} MiB above the idle baseline of {} MiB",
        peak >> 20,
        delta >> 20,
        baseline >> 20
    );
    eprintln!(
        "F12: 1 GiB through the proxy in {took:?}; RSS baseline {} MiB, peak {} MiB (+{} MiB)",
        baseline >> 20,
        peak >> 20,
        delta >> 20
    );
    let out = proxy.stop().await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

// =====================================================================================================================
// F13 — thundering herd at expiry and at cold start
// =====================================================================================================================

/// F13, real sockets: 2,000 concurrent requests (20 HTTP/2 connections × 100 streams) arriving at cold start, while
/// the only token request is still in flight (300 ms), cost exactly one token request and all succeed with it.
#[tokio::test(flavor = "multi_thread")]
async fn f13_cold_start_2000_concurrent_requests_make_exactly_one_token_request() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("slow300").await;
    let storm = Instant::now();
    let answers = h2_burst(&proxy.url("/subscriptions"), 20, 100).await;
    assert_eq!(answers.len(), 2000);
    let bad: Vec<_> = answers
        .iter()
        .filter(|a| a.0 != StatusCode::OK)
        .map(|a| (a.0, String::from_utf8_lossy(&a.2).into_owned()))
        .take(3)
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(world.aad.count("slow300"), 1);
    let issued = world.aad.registry().all();
    assert_eq!(issued.len(), 1);
    assert!(
        storm < issued[0].issued_instant,
        "the storm came after the token"
    );
    assert!(
        world
            .upstream
            .requests()
            .iter()
            .all(|r| r.token.as_deref() == Some(issued[0].token.as_str()))
    );
    proxy.stop().await;
}

/// F13, paused clock: a refresh that takes 100 s blocks nobody — 2,000 concurrent requests during it complete
/// without the clock moving (0 added latency), with the old token — and costs exactly one token request.
#[tokio::test(start_paused = true)]
async fn f13_warm_refresh_blocks_no_request_and_makes_one_token_request() {
    let _trace = trace_init();
    let cred = Scripted::new([ok(3600), slow_ok(3600, 100_000)]);
    let (cache, _metrics) = production_cache();
    let src = cache.source(cache_key("sp"), cred.clone(), true);
    settle().await;
    while cred.calls() < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let refresh_started = cred.call_times()[1];
    for _ in 0..3 {
        let herd: Vec<_> = (0..2000)
            .map(|_| {
                let src = src.clone();
                tokio::spawn(async move { immediate(src.header_value()).await })
            })
            .collect();
        for h in herd {
            let v = h
                .await
                .unwrap()
                .expect("a request waited for the refresh")
                .expect("0 errors during the refresh");
            assert_eq!(bearer(&v), "Bearer tok-1");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    assert!(
        refresh_started.elapsed() < Duration::from_secs(100),
        "still refreshing"
    );
    assert_eq!(cred.calls(), 2, "one token request for the refresh");
    tokio::time::sleep(Duration::from_secs(75)).await;
    let v = immediate(src.header_value()).await.unwrap().unwrap();
    assert_eq!(bearer(&v), "Bearer tok-2");
    assert_eq!(cred.calls(), 2);
}

// =====================================================================================================================
// F14 — zero dropped requests across token rotations
// =====================================================================================================================

/// F14: continuous load (6 keep-alive HTTP/1 loops and one HTTP/2 loop) across ≥ 10 rotations of 2 s tokens
/// (refreshed about every second): 0 non-2xx answers, 0 expired tokens at the upstream (it checks every token), every
/// forwarded token with at least half the refresh margin left on arrival, and token requests = rotations ± 1.
///
/// 2 s rather than 1 s tokens: the proxy keeps a tenth of the lifetime as margin, and 1 s tokens (100 ms of margin,
/// 400 ms for the refresh to land) were seen to expire in transit once on this 2-CPU machine under a load average
/// of 10 from other work.
#[tokio::test(flavor = "multi_thread")]
async fn f14_load_across_ten_rotations_drops_nothing_and_sends_no_expired_token() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("ttl2").await;
    proxy.wait_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = tokio::task::JoinSet::new();
    for i in 0..7 {
        let (stop, url) = (stop.clone(), proxy.url(&format!("/load/{i}")));
        loops.spawn(async move {
            let client = if i == 6 {
                support::h2_client()
            } else {
                http_client()
            };
            let (mut ok, mut bad) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let (status, _, body) = request_via(&client, Method::GET, &url, &[], "").await;
                if status.is_success() {
                    ok += 1;
                } else {
                    bad.push((status, String::from_utf8_lossy(&body).into_owned()));
                }
            }
            (ok, bad)
        });
    }
    let deadline = Instant::now() + Duration::from_secs(25);
    while world.aad.registry().len() < 11 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut bad) = (0, Vec::new());
    while let Some(r) = loops.join_next().await {
        let (o, b) = r.unwrap();
        ok += o;
        bad.extend(b);
    }
    assert!(
        bad.is_empty(),
        "{} non-2xx, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    let seen = world.upstream.requests();
    assert_eq!(seen.len(), ok);
    assert_eq!(world.upstream.rejected_count_for(Rejection::Expired), 0);
    assert_eq!(world.upstream.rejected_count(), 0);
    let issued = world.aad.registry().all();
    let distinct: HashSet<&str> = seen.iter().filter_map(|r| r.token.as_deref()).collect();
    let rotations = distinct.len() - 1;
    assert!(
        rotations >= 9,
        "only {rotations} rotations seen over {ok} requests"
    );
    assert!(
        issued.len().abs_diff(distinct.len()) <= 1,
        "{} token requests for {} tokens in use",
        issued.len(),
        distinct.len()
    );
    // Time left on each token when it reached the upstream: at least half the margin (a tenth of the lifetime, 200 ms).
    let least = seen
        .iter()
        .map(|r| {
            let t = issued
                .iter()
                .find(|t| Some(t.token.as_str()) == r.token.as_deref())
                .unwrap();
            (t.issued_instant + t.ttl).saturating_duration_since(r.arrived_at)
        })
        .min()
        .unwrap();
    eprintln!(
        "F14: {ok} requests, {rotations} rotations, {} token requests, least time left on arrival {least:?}",
        issued.len()
    );
    assert!(
        least >= Duration::from_millis(100),
        "a token arrived with {least:?} left"
    );
    proxy.stop().await;
}

// =====================================================================================================================
// F15 — configuration reload with a bad file, then a good one (the binary, SIGHUP)
// =====================================================================================================================

fn signal(child: &support::process::ChildProc, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// A metric of the running binary (0 if absent).
async fn binary_metric(proxy: &RunningProxy, series: &str) -> f64 {
    let text = String::from_utf8(get(&proxy.admin_url("/metrics")).await.2.to_vec()).unwrap();
    metric(&text, series).unwrap_or(0.0)
}

/// F15: under concurrent load, three bad files (invalid YAML, a plain-HTTP non-loopback upstream, a world-readable
/// secret file) are each refused with one error line and `aml_auth_proxy_config_reload_failures_total` +1 while
/// the running configuration serves with 0 failed requests; then a good file takes effect within 1 s, a request
/// in flight on the old configuration finishes whole, and the removed credential stops refreshing.
#[tokio::test(flavor = "multi_thread")]
async fn f15_sighup_bad_files_keep_serving_and_a_good_one_applies_within_1s() {
    let _trace = trace_init();
    let world = World::new().await;
    let imds = ClosedPort::new();
    // The old credential's 2 s tokens are refreshed about every second.
    let old = world.config(
        &World::sp("old", "ttl2"),
        &world.route("one", "/one", "old", ""),
    );
    let proxy = RunningProxy::start(&world.dir, &imds, &old, &[], &[]).await;
    let file = proxy.config.clone().unwrap();
    let listen: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    let secret = world.dir.file("secret", "s3cret-value", 0o644);
    let bad_files = [
        "routes: [ this is not valid\n".to_owned(),
        world.config(
            &World::sp("old", "ttl2"),
            &raw_route("one", "/one", "http://example.com"),
        ),
        world.config(
            &format!(
                "  old:\n    client_secret: {{ tenant_id: ttl2, client_id: {}, client_secret_file: {} }}\n",
                support::proxy::CLIENT_ID,
                secret.display()
            ),
            &world.route("one", "/one", "old", ""),
        ),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), proxy.url("/one/x"));
        load.spawn(async move {
            let client = http_client();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push(request_via(&client, Method::GET, &url, &[], "").await.0);
            }
            statuses
        });
    }
    for (n, bad) in bad_files.iter().enumerate() {
        std::fs::write(&file, format!("{listen}{bad}")).unwrap();
        signal(&proxy.child, "HUP");
        let want = (n + 1) as f64;
        let start = Instant::now();
        while binary_metric(&proxy, "aml_auth_proxy_config_reload_failures_total").await < want {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "bad file {n} not refused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    while let Some(r) = load.join_next().await {
        statuses.extend(r.unwrap());
    }
    assert!(statuses.len() > 20, "{} requests", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "failed requests during bad reloads: {:?}",
        statuses
            .iter()
            .filter(|s| **s != StatusCode::OK)
            .collect::<Vec<_>>()
    );
    let stderr = proxy.child.stderr_so_far();
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("configuration reload refused"))
        .collect();
    assert_eq!(refused.len(), 3, "one error line per bad file:\n{stderr}");
    assert!(refused[1].contains("routes[0].upstream"), "{}", refused[1]);
    assert!(refused[2].contains("secret"), "{}", refused[2]);
    assert!(!stderr.contains("s3cret-value"));
    assert_eq!(
        binary_metric(&proxy, "aml_auth_proxy_config_reloads_total").await,
        0.0
    );

    // A request in flight on the old configuration: a 2 s stream.
    let stream_url = proxy.url("/one/stream?chunks=20&interval_ms=100");
    let in_flight = tokio::spawn(async move { get(&stream_url).await });
    tokio::time::sleep(Duration::from_millis(150)).await;

    let new = world.config(
        &World::sp("new", "hupnew"),
        &world.route("two", "/two", "new", ""),
    );
    std::fs::write(&file, format!("{listen}{new}")).unwrap();
    let sent = Instant::now();
    signal(&proxy.child, "HUP");
    while get(&proxy.url("/two/x")).await.0 != StatusCode::OK {
        assert!(
            sent.elapsed() <= Duration::from_secs(1),
            "the good file took longer than 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let effective = sent.elapsed();
    assert!(effective <= Duration::from_secs(1), "{effective:?}");
    eprintln!("F15: the good file took effect {effective:?} after SIGHUP");
    assert_eq!(get(&proxy.url("/one/x")).await.0, StatusCode::NOT_FOUND);
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body).matches("data:").count(),
        20,
        "cut short"
    );
    assert_eq!(
        binary_metric(&proxy, "aml_auth_proxy_config_reloads_total").await,
        1.0
    );

    // The removed credential's refresher is gone once the last request on the old configuration has finished.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = world.aad.count("ttl2");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        world.aad.count("ttl2"),
        before,
        "the removed credential kept refreshing"
    );
    let out = proxy.stop().await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

// =====================================================================================================================
// F16 — SIGTERM drain (the binary)
// =====================================================================================================================

/// Reads an HTTP/1 response with a Content-Length body from `s`; returns (head, body).
async fn read_h1_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let (head, mut body) = raw::read_head(s).await.expect("a response");
    let len: usize = raw::header(&head, "content-length")
        .expect("content-length")
        .parse()
        .unwrap();
    let mut chunk = [0u8; 8192];
    while body.len() < len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

/// True if the peer closes `s` within `limit` (EOF or reset); data still arriving on the way is read and dropped.
async fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// F16: on SIGTERM the proxy stops accepting connections, reports not ready, closes idle keep-alive connections
/// at once, finishes the in-flight HTTP/1 request with its full body and `Connection: close`, sends the HTTP/2
/// connection a GOAWAY and completes its in-flight stream, then exits 0 well before `drain_timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn f16_sigterm_drains_http1_and_http2_in_flight_requests_and_exits_0() {
    use h2_frames::{DATA, END_STREAM, GOAWAY, H2Conn, HEADERS, RST_STREAM};
    let _trace = trace_init();
    let world = World::new().await;
    let imds = ClosedPort::new();
    let yaml = format!(
        "limits:\n  drain_timeout: 10s\n{}",
        world.config(
            &World::sp("sp", "drain"),
            &world.route("arm", "/", "sp", "")
        )
    );
    let proxy = RunningProxy::start(&world.dir, &imds, &yaml, &[], &[]).await;
    let addr = proxy.listen;

    // An idle keep-alive connection (one exchange done).
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /idle HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_h1_response(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // An HTTP/1 request whose answer takes 1.5 s.
    let mut h1 = TcpStream::connect(addr).await.unwrap();
    h1.write_all(b"GET /slow-headers?ms=1500 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    // An HTTP/2 stream of 10 events over ~1 s.
    let mut h2 = H2Conn::connect(addr).await;
    let authority = format!("127.0.0.1:{}", addr.port());
    h2.send(&h2_frames::get(
        1,
        &authority,
        "/stream?chunks=10&interval_ms=100",
        &[],
    ))
    .await;
    let mut h2_body = Vec::new();
    loop {
        let f = h2
            .next(Duration::from_secs(5))
            .await
            .expect("stream 1 answered");
        if f.stream == 1 && f.kind == HEADERS {
            break;
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || world
            .upstream
            .requests()
            .iter()
            .any(|r| r.path == "/slow-headers"))
        .await
        .is_some()
    );

    let RunningProxy {
        mut child, admin, ..
    } = proxy;
    child.sigterm();
    let signalled = Instant::now();
    // No new connections; not ready; the idle connection is closed promptly.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !support::process::refuses_connections(addr).await {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, body) = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        closes_within(&mut idle, Duration::from_secs(1)).await,
        "idle connection kept open"
    );

    // HTTP/2: GOAWAY, and stream 1 completes.
    let (mut goaway, mut ended) = (false, false);
    while let Some(f) = h2.next(Duration::from_secs(5)).await {
        match (f.kind, f.stream) {
            (GOAWAY, 0) => goaway = true,
            (DATA, 1) => {
                h2_body.extend_from_slice(&f.payload);
                ended |= f.flags & END_STREAM != 0;
            }
            (RST_STREAM, 1) => panic!("stream 1 was reset"),
            _ => {}
        }
        if goaway && ended {
            break;
        }
    }
    assert!(goaway, "no GOAWAY");
    assert!(ended, "stream 1 did not complete");
    let expected: String = (0..10).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&h2_body), expected);

    // HTTP/1: the full answer with Connection: close, then the connection closes.
    let (head, body) = read_h1_response(&mut h1).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        raw::header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "{head}"
    );
    assert_eq!(json_body(&body)["path"], "/slow-headers");
    assert!(closes_within(&mut h1, Duration::from_secs(2)).await);
    drop(h2);

    let status = child
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exited");
    assert_eq!(status.code(), Some(0));
    eprintln!("F16: exit 0 {:?} after SIGTERM", signalled.elapsed());
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "exit {:?} after SIGTERM",
        signalled.elapsed()
    );
}

/// F16: a second SIGTERM ends a long drain at once (exit 0), cutting the stream that would have run for 100 s.
#[tokio::test(flavor = "multi_thread")]
async fn f16_a_second_signal_stops_at_once() {
    let _trace = trace_init();
    let world = World::new().await;
    let imds = ClosedPort::new();
    let yaml = format!(
        "limits:\n  drain_timeout: 30s\n{}",
        world.config(
            &World::sp("sp", "drain2"),
            &world.route("arm", "/", "sp", "")
        )
    );
    let proxy = RunningProxy::start(&world.dir, &imds, &yaml, &[], &[]).await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(b"GET /stream?chunks=1000&interval_ms=100 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let _ = raw::read_head(&mut s).await.expect("the stream started");
    let RunningProxy {
        mut child, listen, ..
    } = proxy;
    child.sigterm();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !support::process::refuses_connections(listen).await {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        child.try_exit().is_none(),
        "exited on the first signal with a stream in flight"
    );
    child.sigterm();
    let second = Instant::now();
    let status = child
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("still draining after the second signal");
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    assert!(closes_within(&mut s, Duration::from_secs(2)).await);
}

// =====================================================================================================================
// F17 — overload
// =====================================================================================================================

/// F17: beyond `max_in_flight`, requests are shed at once with 503 `Overloaded` + `Retry-After` — while the only
/// token request (cold start, 3 s) is still running, so shed requests neither wait for a token nor start one —
/// and the admitted ones complete.
#[tokio::test(flavor = "multi_thread")]
async fn f17_overload_is_shed_at_once_without_touching_the_token_service() {
    let _trace = trace_init();
    let world = World::new().await;
    let config = format!(
        "limits:\n  max_in_flight: 4\n{}",
        world.config(
            &World::sp("sp", "slow3000"),
            &world.route("arm", "/", "sp", "")
        )
    );
    let proxy = TestProxy::start(&config).await;
    let client = http_client();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (client, url) = (client.clone(), proxy.url(&format!("/r/{i}")));
        tasks.spawn(async move {
            let answer = request_via(&client, Method::GET, &url, &[], "").await;
            (answer, Instant::now())
        });
    }
    let (mut admitted, mut shed) = (0, 0);
    let mut latest_shed = started;
    while let Some(r) = tasks.join_next().await {
        let (answer, at) = r.unwrap();
        if answer.0 == StatusCode::OK {
            admitted += 1;
            continue;
        }
        let error = expect_proxy_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "Overloaded");
        assert!(!error.to_string().contains("at.slow3000"));
        assert!(retry_after_secs(&answer.1) >= 1);
        shed += 1;
        latest_shed = latest_shed.max(at);
    }
    assert_eq!(admitted + shed, 100);
    assert!(shed >= 90, "only {shed} shed");
    assert!((1..=4).contains(&admitted), "{admitted} admitted");
    let token_issued = world.aad.registry().all()[0].issued_instant;
    assert!(
        latest_shed < token_issued,
        "a shed request was answered only after the token arrived (it waited)"
    );
    assert_eq!(
        world.aad.count("slow3000"),
        1,
        "shed requests started no token request"
    );
    assert_eq!(
        world.upstream.count(),
        admitted,
        "shed requests never reached the upstream"
    );
    proxy.stop().await;
}

// =====================================================================================================================
// F18 — upstream TLS failure
// =====================================================================================================================

mod tls_sniff {
    //! An HTTPS upstream that records the first bytes of every connection (a TLS ClientHello, or plaintext?), the
    //! outcome of each handshake, and the `Authorization` of any request that gets through.

    use super::*;

    #[derive(Default)]
    pub(super) struct Seen {
        pub(super) first_bytes: Mutex<Vec<Vec<u8>>>,
        pub(super) handshake_failures: AtomicUsize,
        pub(super) authorizations: Mutex<Vec<Option<String>>>,
    }

    pub(super) struct Sniffer {
        pub(super) addr: SocketAddr,
        pub(super) seen: Arc<Seen>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Sniffer {
        pub(super) async fn start(config: Arc<rustls::ServerConfig>) -> Self {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Seen::default());
            let shared = seen.clone();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let task = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (seen, acceptor) = (shared.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        let mut first = [0u8; 5];
                        let n = tcp.peek(&mut first).await.unwrap_or(0);
                        seen.first_bytes.lock().unwrap().push(first[..n].to_vec());
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            seen.handshake_failures.fetch_add(1, Ordering::SeqCst);
                            return;
                        };
                        let record = seen.clone();
                        let service = hyper::service::service_fn(
                            move |req: http::Request<hyper::body::Incoming>| {
                                let auth = req
                                    .headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                record.authorizations.lock().unwrap().push(auth);
                                async {
                                    Ok::<_, std::convert::Infallible>(http::Response::new(
                                        support::full("secure"),
                                    ))
                                }
                            },
                        );
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                    });
                }
            });
            Self { addr, seen, task }
        }

        pub(super) fn url(&self) -> String {
            format!("https://{}", self.addr)
        }

        /// Every connection opened with a TLS handshake record (0x16 0x03 …), never plaintext HTTP.
        pub(super) fn only_tls(&self) -> bool {
            let first = self.seen.first_bytes.lock().unwrap();
            !first.is_empty() && first.iter().all(|b| b.starts_with(&[0x16, 0x03]))
        }
    }

    impl Drop for Sniffer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}

/// F18: an upstream whose certificate is not trusted, and one whose certificate names another host (trusted CA),
/// both give 502 `UpstreamUnavailable` with the fixed JSON body; the upstream never sees a request (so never an
/// `Authorization`), and the proxy never falls back to plaintext. A trusted, matching certificate is the control.
#[tokio::test]
async fn f18_untrusted_or_mismatched_certificates_are_502_and_no_token_is_sent() {
    let _trace = trace_init();
    let world = World::new().await;
    let untrusted = TestCa::untrusted();
    let mismatch_ca = TestCa::with_sans(&["aml.example.invalid"]);
    let alpn: &[&[u8]] = &[b"h2", b"http/1.1"];
    let bad_cert = tls_sniff::Sniffer::start(untrusted.server_config(alpn)).await;
    let wrong_name = tls_sniff::Sniffer::start(mismatch_ca.server_config(alpn)).await;
    let good = tls_sniff::Sniffer::start(world.ca.server_config(alpn)).await;
    // Trust the world's CA and the mismatch CA (so that only the name is wrong).
    let dir = TempDir::new();
    let bundle = dir.file(
        "bundle.pem",
        &format!("{}{}", world.ca.ca_pem(), mismatch_ca.ca_pem()),
        0o600,
    );
    let routes = format!(
        "{}{}{}",
        raw_route("untrusted", "/untrusted", &bad_cert.url()),
        raw_route("mismatch", "/mismatch", &wrong_name.url()),
        raw_route("good", "/good", &good.url())
    );
    let yaml = format!(
        "authority_host: {}\ntls:\n  extra_ca_file: {}\ncredentials:\n{}routes:\n{}",
        world.aad.base_url(),
        bundle.display(),
        World::sp("sp", "tlsfail"),
        routes
    );
    let proxy = TestProxy::start(&yaml).await;
    proxy.wait_ready().await;
    for (path, sniffer) in [("/untrusted/x", &bad_cert), ("/mismatch/x", &wrong_name)] {
        for method in [Method::GET, Method::POST] {
            let answer = request(method, &proxy.url(path), &[], "payload").await;
            let error = expect_proxy_error(&answer, StatusCode::BAD_GATEWAY, "UpstreamUnavailable");
            let text = error.to_string();
            assert!(text.contains("127.0.0.1"), "names the upstream: {text}");
            assert!(
                !text.contains("at.tlsfail"),
                "no token in the answer: {text}"
            );
            let keys: Vec<&String> = error.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["code", "message"], "a fixed body: {text}");
        }
        assert!(
            sniffer.seen.authorizations.lock().unwrap().is_empty(),
            "{path}: a request got through"
        );
        assert!(sniffer.seen.handshake_failures.load(Ordering::SeqCst) >= 1);
        assert!(
            sniffer.only_tls(),
            "{path}: plaintext seen: {:?}",
            sniffer.seen.first_bytes.lock().unwrap()
        );
    }
    // The control: the same sniffer with a good certificate sees the request and its token.
    assert_eq!(get(&proxy.url("/good/x")).await.0, StatusCode::OK);
    let auth = good.seen.authorizations.lock().unwrap().clone();
    assert_eq!(auth.len(), 1);
    assert!(
        auth[0]
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer at.tlsfail."))
    );
    assert!(good.only_tls());
    proxy.stop().await;
}

/// F18: TLS verification cannot be switched off: every spelling of "insecure" is an unknown key, refused with its
/// key path (only `tls.extra_ca_file` exists); `check-config` exits 64 on it.
#[tokio::test]
async fn f18_no_configuration_disables_certificate_verification() {
    let _trace = trace_init();
    let world = World::new().await;
    // A valid configuration without any `tls` block; each attempt adds one.
    let base = format!(
        "authority_host: {}\ncredentials:\n{}routes:\n{}",
        world.aad.base_url(),
        World::sp("sp", "x"),
        world.route("arm", "/", "sp", "")
    );
    let parse = |text: &str| {
        aml_auth_proxy::config::from_yaml_str(
            text,
            &aml_auth_proxy::env::MapEnv::new(),
            aml_auth_proxy::config::ConfigOrigin::BuiltIn,
            std::path::Path::new("/"),
        )
    };
    assert!(parse(&base).is_ok(), "the base configuration is valid");
    let attempts = [
        ("tls:\n  insecure: true\n", "tls.insecure"),
        ("tls:\n  verify: false\n", "tls.verify"),
        (
            "tls:\n  danger_accept_invalid_certs: true\n",
            "tls.danger_accept_invalid_certs",
        ),
        ("insecure_skip_verify: true\n", "insecure_skip_verify"),
    ];
    for (extra, key) in attempts {
        let e = parse(&format!("{extra}{base}")).expect_err(key).to_string();
        assert!(e.contains(key) && e.contains("unknown key"), "{key}: {e}");
    }
    // A route-level switch does not exist either.
    let text = base.replace(
        "    credential: sp\n",
        "    credential: sp\n    tls: { insecure: true }\n",
    );
    let e = parse(&text).expect_err("route tls").to_string();
    assert!(e.contains("unknown key"), "{e}");

    // The binary says so too.
    let dir = TempDir::new();
    let file = dir.file(
        "insecure.yaml",
        &format!("tls:\n  insecure: true\n{base}"),
        0o600,
    );
    let imds = ClosedPort::new();
    let mut cmd = support::process::command(dir.path(), &imds);
    cmd.arg("check-config").arg("--config").arg(&file);
    let out = support::process::run_to_end(cmd).await;
    assert_eq!(out.code(), Some(64), "{out:#?}");
    assert!(out.stderr.contains("tls.insecure"), "{}", out.stderr);
}

// =====================================================================================================================
// F19 — Azure CLI hangs, is absent, or prints garbage
// =====================================================================================================================

mod fake_az {
    use super::*;
    use aml_auth_proxy::auth::AzureCliCredential;
    use aml_auth_proxy::auth::AzureCliCredentialOptions;
    use aml_auth_proxy::env::MapEnv;

    /// A fake `az` (a shell script recording its pid) found through `PATH=<dir>:/usr/bin:/bin`.
    pub(super) struct FakeAz {
        pub(super) dir: TempDir,
    }

    impl FakeAz {
        pub(super) fn new(body: &str) -> Self {
            let dir = TempDir::new();
            dir.file(
                "az",
                &format!("#!/bin/sh\nd=$(dirname \"$0\")\necho $$ > \"$d/pid\"\n{body}\n"),
                0o755,
            );
            Self { dir }
        }

        pub(super) fn credential(&self, timeout: Duration) -> AzureCliCredential {
            let options = AzureCliCredentialOptions {
                timeout,
                ..AzureCliCredentialOptions::default()
            };
            let env = MapEnv::new().with(
                "PATH",
                format!("{}:/usr/bin:/bin", self.dir.path().display()),
            );
            AzureCliCredential::new(options, &env)
        }

        pub(super) fn pid(&self, name: &str) -> u32 {
            std::fs::read_to_string(self.dir.path().join(name))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        }
    }

    /// The state letter of process `pid` (`Z` for a zombie), `None` once it is gone (killed and reaped).
    pub(super) fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// The parent pid of `pid`, if it exists.
    pub(super) fn parent(pid: u32) -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

/// F19: an `az` that hangs is killed at the timeout and reaped (no zombie, not even briefly after the answer);
/// the error says what happened.
#[tokio::test]
async fn f19_hanging_az_is_killed_at_the_timeout_and_reaped() {
    let _trace = trace_init();
    let az = fake_az::FakeAz::new("exec sleep 60");
    let cred = az.credential(Duration::from_millis(500));
    let started = Instant::now();
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    let took = started.elapsed();
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert_eq!(e.message, "az did not answer within 500ms");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let pid = az.pid("pid");
    assert_eq!(
        fake_az::state(pid),
        None,
        "az (pid {pid}) is still there: {:?}",
        fake_az::state(pid)
    );
}

/// F19 (stricter): an `az` wrapper that does not `exec` its interpreter (the hung work runs in a child process)
/// leaves nothing running either: `az` runs in its own process group and the timeout kills the group.
#[tokio::test]
async fn f19_hanging_az_wrapper_leaves_no_process_behind() {
    let _trace = trace_init();
    let az = fake_az::FakeAz::new("sleep 60 &\necho $! > \"$d/child\"\nwait");
    let cred = az.credential(Duration::from_millis(500));
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    assert!(
        matches!(result, Err(CredentialError::Failed(_))),
        "{result:?}"
    );
    let (pid, child) = (az.pid("pid"), az.pid("child"));
    // The wrapper is reaped by the proxy. Its child, orphaned, belongs to the nearest reaper (init here): killed
    // means gone or a zombie that is not ours to reap — it runs no more and holds nothing but its pid.
    let ours = std::process::id();
    let gone = eventually(Duration::from_secs(1), || {
        fake_az::state(pid).is_none()
            && match fake_az::state(child) {
                None => true,
                Some('Z') => fake_az::parent(child).is_some_and(|p| p != ours),
                Some(_) => false,
            }
    })
    .await;
    let states = (fake_az::state(pid), fake_az::state(child));
    // Do not leave the sleeper behind whatever the outcome.
    let _ = std::process::Command::new("kill")
        .arg(child.to_string())
        .status();
    assert!(
        gone.is_some(),
        "az {pid} / its child {child} still there: {states:?}"
    );
}

/// F19: an absent `az`, an `az` that fails, and one that prints malformed JSON each give a clear error (no token or
/// output echoed) without hanging; nothing is left running.
#[tokio::test]
async fn f19_absent_failing_or_malformed_az_gives_a_clear_error() {
    let _trace = trace_init();
    let request = TokenRequest::new(ARM_SCOPE);
    let empty = fake_az::FakeAz::new("exit 0");
    std::fs::remove_file(empty.dir.path().join("az")).unwrap();
    let result = empty
        .credential(Duration::from_secs(10))
        .get_token(&request)
        .await;
    let Err(CredentialError::Unavailable(attempts)) = result else {
        panic!("expected unavailable, got {result:?}");
    };
    assert!(
        attempts[0]
            .reason
            .starts_with("Azure CLI not found on PATH"),
        "{attempts:?}"
    );

    let failing =
        fake_az::FakeAz::new("echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1");
    let result = failing
        .credential(Duration::from_secs(10))
        .get_token(&request)
        .await;
    let Err(CredentialError::Unavailable(attempts)) = result else {
        panic!("expected unavailable, got {result:?}");
    };
    assert!(attempts[0].reason.contains("az login"), "{attempts:?}");

    let malformed = fake_az::FakeAz::new(
        "printf '{\"accessToken\": \"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.CANARY.sig\", \"expires_on\": '",
    );
    let started = Instant::now();
    let result = malformed
        .credential(Duration::from_secs(10))
        .get_token(&request)
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert!(
        e.message.starts_with("az returned unusable output"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("CANARY"), "{}", e.message);
    for az in [&failing, &malformed] {
        let pid = az.pid("pid");
        assert!(
            eventually(Duration::from_secs(1), || fake_az::state(pid).is_none())
                .await
                .is_some(),
            "az {pid} left behind: {:?}",
            fake_az::state(pid)
        );
    }
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
    let server = support::Server::bind().await;
    let url = format!("http://{}", server.addr());
    let shutdown = server.shutdown();
    let (sent2, finished2) = (sent.clone(), finished.clone());
    let registry = world.aad.registry();
    let _huge = server.spawn(support::ServeOptions::default(), move |req| {
        let (sent, finished, shutdown) = (sent2.clone(), finished2.clone(), shutdown.clone());
        let registry = registry.clone();
        async move {
            let fine = req.uri().path().starts_with("/fine/");
            let _ = support::read_body(req.into_body()).await?;
            if fine {
                let token = registry.mint("fine", Duration::from_secs(3600));
                return Ok(support::json_response(
                    StatusCode::OK,
                    &serde_json::json!({"token_type": "Bearer", "expires_in": 3600, "access_token": token}),
                ));
            }
            let (tx, body) = support::ChannelBody::channel(1);
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
