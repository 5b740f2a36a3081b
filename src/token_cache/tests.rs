//! Cache behaviour on tokio's paused clock: no sleeps, exact call counts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::auth::{BoxFuture, CredentialError, Secret};
use crate::metrics::Metrics;

/// What the fake credential does on one call.
#[derive(Debug, Clone)]
enum Step {
    Ok {
        ttl: u64,
        delay_ms: u64,
    },
    OkRefreshIn {
        ttl: u64,
        refresh_in: u64,
    },
    Fail {
        kind: TokenErrorKind,
        retry_after: Option<u64>,
        delay_ms: u64,
    },
    Panic,
}

/// A scripted, call-counting credential. The last step repeats.
#[derive(Debug)]
struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    calls: AtomicU32,
}

impl Scripted {
    fn new(steps: impl IntoIterator<Item = Step>) -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::new(steps.into_iter().collect()),
            calls: AtomicU32::new(0),
        })
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
    fn then(&self, steps: impl IntoIterator<Item = Step>) {
        *self.steps.lock().unwrap() = steps.into_iter().collect();
    }
}

impl TokenCredential for Scripted {
    fn get_token<'a>(
        &'a self,
        _: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let step = {
            let mut steps = self.steps.lock().unwrap();
            if steps.len() > 1 {
                steps.pop_front().unwrap()
            } else {
                steps.front().cloned().unwrap()
            }
        };
        Box::pin(async move {
            let token = |ttl: u64, refresh_in: Option<u64>| AccessToken {
                token: Secret::new(format!("tok-{n}")),
                expires_in: Duration::from_secs(ttl),
                refresh_in: refresh_in.map(Duration::from_secs),
                source: "scripted".into(),
            };
            match step {
                Step::Ok { ttl, delay_ms } => {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    Ok(token(ttl, None))
                }
                Step::OkRefreshIn { ttl, refresh_in } => Ok(token(ttl, Some(refresh_in))),
                Step::Fail {
                    kind,
                    retry_after,
                    delay_ms,
                } => {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    Err(CredentialError::Failed(
                        TokenError::new(kind, "scripted", format!("scripted failure {n}"))
                            .with_retry_after(retry_after.map(Duration::from_secs)),
                    ))
                }
                Step::Panic => panic!("scripted panic"),
            }
        })
    }
    fn kind(&self) -> &'static str {
        "scripted"
    }
}

fn ok(ttl: u64) -> Step {
    Step::Ok { ttl, delay_ms: 0 }
}
fn slow_ok(ttl: u64, delay_ms: u64) -> Step {
    Step::Ok { ttl, delay_ms }
}
fn fail(kind: TokenErrorKind) -> Step {
    Step::Fail {
        kind,
        retry_after: None,
        delay_ms: 0,
    }
}

fn key(credential: &str) -> CacheKey {
    CacheKey {
        credential: credential.into(),
        tenant: None,
        scope: "https://management.azure.com/.default".into(),
        claims: None,
    }
}

fn cache() -> TokenCache {
    TokenCache::new(Metrics::new().unwrap().tokens, CachePolicy::default())
}

/// True when the future completes without the clock moving (a cache hit or an immediate answer).
async fn is_immediate<F: std::future::Future>(f: F) -> Option<F::Output> {
    let start = Instant::now();
    let out = f.await;
    (Instant::now() == start).then_some(out)
}

fn header_text(v: &HeaderValue) -> &str {
    v.to_str().unwrap()
}

#[tokio::test(start_paused = true)]
async fn cold_start_concurrent_requests_share_one_fetch() {
    let cred = Scripted::new([slow_ok(3600, 200)]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), false);
    let tasks: Vec<_> = (0..2000)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { src.header_value().await })
        })
        .collect();
    for t in tasks {
        let v = t.await.unwrap().unwrap();
        assert_eq!(header_text(&v), "Bearer tok-1");
        assert!(v.is_sensitive());
    }
    assert_eq!(cred.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn keeper_prefetches_at_start_and_refreshes_ahead_of_expiry() {
    let cred = Scripted::new([ok(3600)]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), true);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(cred.calls(), 1, "pre-fetched without any request");
    assert!(matches!(src.status(), TokenStatus::Valid { .. }));
    // A 1 h token is refreshed when less than 5 minutes remain (minus up to 30 s of jitter): not before 54:30.
    tokio::time::sleep(Duration::from_secs(54 * 60 + 29)).await;
    assert_eq!(cred.calls(), 1);
    tokio::time::sleep(Duration::from_secs(32)).await;
    assert_eq!(cred.calls(), 2, "refreshed ahead of expiry");
    let v = src.header_value().await.unwrap();
    assert_eq!(header_text(&v), "Bearer tok-2");
    // And so on, once per lifetime, without traffic.
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    assert_eq!(cred.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn requests_never_wait_for_a_refresh_while_the_old_token_is_valid() {
    let cred = Scripted::new([ok(3600), slow_ok(3600, 100_000)]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), true);
    tokio::time::sleep(Duration::from_secs(55 * 60 + 5)).await;
    assert_eq!(cred.calls(), 2, "the slow refresh is running");
    for _ in 0..100 {
        let v = is_immediate(src.header_value())
            .await
            .expect("a hit must not wait")
            .unwrap();
        assert_eq!(header_text(&v), "Bearer tok-1");
    }
    tokio::time::sleep(Duration::from_secs(101)).await;
    assert_eq!(
        header_text(&src.header_value().await.unwrap()),
        "Bearer tok-2"
    );
    assert_eq!(cred.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn short_lived_tokens_refresh_at_half_life_and_never_expire_in_use() {
    let cred = Scripted::new([ok(6)]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), true);
    tokio::time::sleep(Duration::from_millis(1)).await;
    // Over 60 s of 6 s tokens refreshed with 3 s (minus ≤ 0.3 s jitter) left: one fetch every ~2.7-3 s.
    let mut previous = String::new();
    let mut distinct = 0;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v = is_immediate(src.header_value())
            .await
            .expect("never waits")
            .unwrap();
        let text = header_text(&v).to_owned();
        if text != previous {
            distinct += 1;
            previous = text;
        }
    }
    let calls = cred.calls();
    assert!((20..=24).contains(&calls), "{calls} fetches in 60 s");
    assert!(distinct >= 19, "{distinct} distinct tokens used");
}

#[tokio::test(start_paused = true)]
async fn refresh_in_and_long_lifetimes_set_the_schedule() {
    let cred = Scripted::new([
        Step::OkRefreshIn {
            ttl: 3600,
            refresh_in: 600,
        },
        ok(86_400),
    ]);
    let cache = cache();
    let _src = cache.source(key("c"), cred.clone(), true);
    let start = Instant::now();
    let mut fetch_times = Vec::new();
    while fetch_times.len() < 3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if cred.calls() as usize > fetch_times.len() + 1 {
            fetch_times.push((Instant::now() - start).as_secs());
        }
    }
    // Refreshed at refresh_in (600 s, minus ≤ 30 s jitter) ...
    assert!((570..=601).contains(&fetch_times[0]), "{fetch_times:?}");
    // ... then a 24 h token (≥ 2 h) at half its lifetime (minus ≤ 30 s jitter).
    let gap = fetch_times[1] - fetch_times[0];
    assert!(
        (12 * 3600 - 31..=12 * 3600 + 1).contains(&gap),
        "{fetch_times:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_never_served() {
    let cred = Scripted::new([ok(600), fail(TokenErrorKind::TokenServiceUnavailable)]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), true);
    tokio::time::sleep(Duration::from_millis(1)).await;
    // Usable until 600 s minus a 30 s margin; all refreshes fail.
    tokio::time::sleep(Duration::from_secs(569)).await;
    assert!(src.header_value().await.is_ok(), "still valid at 569 s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let e = src.header_value().await.unwrap_err();
    assert_eq!(e.error.kind, TokenErrorKind::TokenServiceUnavailable);
    assert!(matches!(src.status(), TokenStatus::Missing(Some(_))));
}

#[tokio::test(start_paused = true)]
async fn failed_early_refreshes_keep_serving_and_retry_at_least_30s_apart() {
    let cred = Scripted::new([ok(3600), fail(TokenErrorKind::TokenServiceUnavailable)]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), true);
    tokio::time::sleep(Duration::from_secs(54 * 60)).await;
    while cred.calls() < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut last = (Instant::now(), cred.calls());
    let mut gaps = Vec::new();
    for _ in 0..240 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v = src.header_value().await.expect("the old token serves");
        assert_eq!(header_text(&v), "Bearer tok-1");
        if cred.calls() != last.1 {
            gaps.push((Instant::now() - last.0).as_secs());
            last = (Instant::now(), cred.calls());
        }
    }
    assert!(!gaps.is_empty());
    assert!(
        gaps.iter().all(|g| *g >= 29),
        "eager retries too close: {gaps:?}"
    );
    // Recovery: the next attempt succeeds and the new token is used.
    cred.then([ok(3600)]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        header_text(&src.header_value().await.unwrap()),
        format!("Bearer tok-{}", cred.calls())
    );
}

#[tokio::test(start_paused = true)]
async fn failures_are_shared_and_damped_for_5_seconds() {
    let cred = Scripted::new([Step::Fail {
        kind: TokenErrorKind::ConditionalAccessBlocked,
        retry_after: None,
        delay_ms: 100,
    }]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), false);
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { src.header_value().await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.error.kind, TokenErrorKind::ConditionalAccessBlocked);
        assert_eq!(e.error.credential, "c");
    }
    assert_eq!(cred.calls(), 1, "one fetch for 500 waiters");
    // A storm of 10,000 requests within the damping window makes no further token request.
    for _ in 0..10_000 {
        let e = is_immediate(src.header_value())
            .await
            .expect("damped failures answer at once")
            .unwrap_err();
        assert!(e.retry_after <= Duration::from_secs(5) && !e.retry_after.is_zero());
    }
    assert_eq!(cred.calls(), 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(src.header_value().await.is_err());
    assert_eq!(
        cred.calls(),
        2,
        "one new attempt once the window has passed"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let cred = Scripted::new([Step::Fail {
        kind: TokenErrorKind::TokenServiceUnavailable,
        retry_after: Some(30),
        delay_ms: 0,
    }]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), true);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(cred.calls(), 1);
    for _ in 0..29 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let e = src.header_value().await.unwrap_err();
        assert!(e.retry_after <= Duration::from_secs(30));
    }
    assert_eq!(
        cred.calls(),
        1,
        "nothing before Retry-After, neither requests nor the keeper"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = src.header_value().await;
    assert_eq!(cred.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn keeper_never_gives_up_and_backs_off() {
    let cred = Scripted::new([fail(TokenErrorKind::TokenServiceUnavailable)]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), true);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let calls = cred.calls();
    // Backoff 5, 10, 20, 40, then 60 s (±20 %): about 60 attempts an hour, never a tight loop.
    assert!((50..=80).contains(&calls), "{calls} attempts in an hour");
    cred.then([ok(3600)]);
    tokio::time::sleep(Duration::from_secs(75)).await;
    assert!(
        matches!(src.status(), TokenStatus::Valid { .. }),
        "recovered within one backoff interval"
    );
}

#[tokio::test(start_paused = true)]
async fn policy_failures_back_off_further() {
    let cred = Scripted::new([fail(TokenErrorKind::ConditionalAccessBlocked)]);
    let cache = cache();
    let _src = cache.source(key("c"), cred.clone(), true);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let calls = cred.calls();
    assert!((12..=25).contains(&calls), "{calls} attempts in an hour");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_token_service_answers_requests_within_the_wait_budget() {
    let cred = Scripted::new([slow_ok(3600, 60_000)]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), false);
    let start = Instant::now();
    let e = src.header_value().await.unwrap_err();
    assert_eq!(Instant::now() - start, Duration::from_secs(5));
    assert_eq!(e.error.kind, TokenErrorKind::TokenServiceUnavailable);
    // The fetch keeps going and later requests get its token.
    tokio::time::sleep(Duration::from_secs(56)).await;
    assert!(src.header_value().await.is_ok());
    assert_eq!(cred.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_credential_does_not_wedge_the_entry() {
    let cred = Scripted::new([Step::Panic, ok(3600)]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), false);
    let e = src.header_value().await.unwrap_err();
    assert_eq!(e.error.kind, TokenErrorKind::TokenServiceUnavailable);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(src.header_value().await.is_ok());
    assert_eq!(cred.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn entries_are_shared_by_key_and_independent_across_keys() {
    let a = Scripted::new([ok(3600)]);
    let b = Scripted::new([fail(TokenErrorKind::CredentialRejected)]);
    let cache = cache();
    let a1 = cache.source(key("a"), a.clone(), false);
    let a2 = cache.source(key("a"), a.clone(), false);
    let b1 = cache.source(key("b"), b.clone(), false);
    assert!(a1.header_value().await.is_ok());
    assert!(a2.header_value().await.is_ok());
    assert!(b1.header_value().await.is_err());
    assert_eq!((a.calls(), b.calls()), (1, 1));
    let mut claims = key("a");
    claims.claims = Some(r#"{"access_token":{"nbf":{"essential":true}}}"#.into());
    let a3 = cache.source(claims, a.clone(), false);
    assert!(a3.header_value().await.is_ok());
    assert_eq!(a.calls(), 2, "a token with claims is a separate entry");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_cache_stops_the_keepers() {
    let cred = Scripted::new([fail(TokenErrorKind::TokenServiceUnavailable)]);
    let cache = cache();
    let src = cache.source(key("c"), cred.clone(), true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(cache);
    let calls = cred.calls();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(cred.calls(), calls);
    drop(src);
}

#[test]
fn debug_never_shows_the_token() {
    let token = CachedToken::new(
        AccessToken {
            token: Secret::new("canary-token-value"),
            expires_in: Duration::from_secs(60),
            refresh_in: None,
            source: "s".into(),
        },
        Instant::now(),
        SystemTime::now(),
    )
    .unwrap();
    assert!(!format!("{token:?}").contains("canary-token-value"));
    assert_eq!(token.bearer(), "canary-token-value");
}
