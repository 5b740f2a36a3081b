//! The token cache driven through its public API on tokio's paused clock, with a scripted credential: hours of
//! refresh schedule, backoff and `Retry-After` pass in milliseconds, and call counts are exact.
//!
//! Paused time cannot be combined with real sockets (timers fire at once while a task waits on I/O), so nothing
//! here opens one.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aml_auth_proxy::auth::{
    AccessToken, BoxFuture, CredentialError, TokenCredential, TokenError, TokenErrorKind,
    TokenRequest,
};
use aml_auth_proxy::metrics::Metrics;
use aml_auth_proxy::secret::Secret;
use aml_auth_proxy::token_cache::{CacheKey, CachePolicy, TokenCache};
use tokio::time::Instant;

use super::ARM_SCOPE;

/// What a scripted credential does on one call.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// A token valid for `ttl` seconds, after `delay_ms`.
    Ok { ttl: u64, delay_ms: u64 },
    /// A failure of `kind`, after `delay_ms`, optionally with the service's `Retry-After`.
    Fail {
        kind: TokenErrorKind,
        retry_after: Option<u64>,
        delay_ms: u64,
    },
}

/// A scripted, call-recording credential (the last step repeats). Tokens are `tok-<call number>`.
#[derive(Debug)]
pub(crate) struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    calls: Mutex<Vec<Instant>>,
}

/// A token valid for `ttl` seconds, at once.
pub(crate) fn ok(ttl: u64) -> Step {
    Step::Ok { ttl, delay_ms: 0 }
}

/// A token valid for `ttl` seconds, after `delay_ms`.
pub(crate) fn slow_ok(ttl: u64, delay_ms: u64) -> Step {
    Step::Ok { ttl, delay_ms }
}

/// What the Entra client reports when the token endpoint refuses connections or answers 5xx.
pub(crate) fn outage() -> Step {
    Step::Fail {
        kind: TokenErrorKind::TokenServiceUnavailable,
        retry_after: None,
        delay_ms: 0,
    }
}

/// What the Entra client reports for a 429 with `Retry-After: retry_after`.
pub(crate) fn throttled(retry_after: u64) -> Step {
    Step::Fail {
        kind: TokenErrorKind::TokenServiceUnavailable,
        retry_after: Some(retry_after),
        delay_ms: 0,
    }
}

/// The cache key of `credential`'s ARM token.
pub(crate) fn cache_key(credential: &str) -> CacheKey {
    CacheKey {
        credential: credential.into(),
        tenant: None,
        scope: ARM_SCOPE.into(),
        claims: None,
    }
}

/// A cache with the production policy, and its metrics.
pub(crate) fn production_cache() -> (TokenCache, Metrics) {
    let metrics = Metrics::new().unwrap();
    (
        TokenCache::new(metrics.tokens.clone(), CachePolicy::default()),
        metrics,
    )
}

/// Lets spawned tasks run (and the keeper's start-up fetch finish) without moving the paused clock noticeably.
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// `Some(output)` when `f` completes without the (paused) clock moving: a cache hit or an immediate answer.
pub(crate) async fn immediate<F: Future>(f: F) -> Option<F::Output> {
    let start = Instant::now();
    let out = f.await;
    (Instant::now() == start).then_some(out)
}

/// An `Authorization` value as text.
pub(crate) fn bearer(v: &http::HeaderValue) -> String {
    v.to_str().unwrap().to_owned()
}

/// Gaps between consecutive instants, in whole seconds (rounded down).
pub(crate) fn gaps_secs(times: &[Instant]) -> Vec<u64> {
    times.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect()
}

// === impl Scripted ===

impl Scripted {
    pub(crate) fn new(steps: impl IntoIterator<Item = Step>) -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::new(steps.into_iter().collect()),
            calls: Mutex::new(Vec::new()),
        })
    }

    /// How many token requests were made.
    pub(crate) fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// When each token request was made (tokio clock).
    pub(crate) fn call_times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }

    /// Replaces the script.
    pub(crate) fn then(&self, steps: impl IntoIterator<Item = Step>) {
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
