//! The token cache: one entry per (credential, tenant, scope, claims), refreshed ahead of expiry.
//!
//! * **Hot path**: a cache hit is one atomic load (`ArcSwap`) and a clock read; no lock is shared between
//!   entries, and a hit never waits.
//! * **Refresh ahead**: at `refresh_in` when Entra ID sends it, else at half the lifetime for tokens
//!   living ≥ 2 h, else when less than min(5 min, half the lifetime) remains, minus a little jitter. A *keeper*
//!   task per route entry does this in the background, so tokens are fresh and `/readyz` is true even without
//!   traffic. Every other request keeps using the still-valid token (stale-while-valid).
//! * **Single flight**: at most one fetch per entry at a time, run in its own task so that a caller that goes
//!   away does not cancel it; everyone who needs a token waits on that fetch.
//! * **Shared, damped failures**: a failure is shared by every waiter; requests do not start another fetch before
//!   `Retry-After` (or 5 s) has passed; the keeper retries with jittered exponential backoff (≥ 30 s apart while
//!   the old token is still valid), forever.
//! * **Never an expired token**: a token is used only until shortly before it expires (a tenth of its lifetime,
//!   at most 30 s), measured on the monotonic tokio clock from the moment the token request was sent.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::auth::{AccessToken, TokenCredential, TokenError, TokenErrorKind, TokenRequest};
use crate::lock;
use crate::metrics::TokenMetrics;
use crate::telemetry::{Span, SpanKind, SpanSink, TraceContext};

/// Timing policy of the cache. [`Default`] is the production policy.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// How long a request waits for an in-flight fetch before it is answered `TokenServiceUnavailable`.
    pub request_wait: Duration,
    /// The shortest damping after a failure (used when the service sent no `Retry-After`).
    pub min_retry: Duration,
    /// The shortest gap between background refresh attempts while the old token is still valid.
    pub eager_retry: Duration,
    /// Backoff cap for transient failures (outages, throttling).
    pub max_backoff_transient: Duration,
    /// Backoff cap for policy and configuration failures (Conditional Access, rejected credential).
    pub max_backoff_permanent: Duration,
    /// Safety net around one fetch (credentials have their own, shorter, per-attempt timeouts).
    pub fetch_timeout: Duration,
    /// Advertise the `CP1` client capability on every token request (config `cae`).
    pub client_capabilities: bool,
    /// Where each token acquisition is reported as a span, when spans are exported (`telemetry.otlp`).
    pub spans: Option<SpanSink>,
}

/// Identifies a cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The configured credential name.
    pub credential: Arc<str>,
    /// The credential's tenant, where configured.
    pub tenant: Option<Arc<str>>,
    /// The scope.
    pub scope: Arc<str>,
    /// Claims the token was requested with (claims challenges); `None` for ordinary tokens.
    pub claims: Option<Arc<str>>,
}

/// The token cache. Cheap to clone; dropping the last clone stops every background refresher.
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    entries: Mutex<HashMap<CacheKey, Arc<Entry>>>,
    keepers: Mutex<Vec<AbortHandle>>,
    metrics: TokenMetrics,
    policy: CachePolicy,
}

/// A handle on one cache entry, used by the request path (Debug never shows the token).
#[derive(Clone)]
pub struct TokenSource {
    entry: Arc<Entry>,
}

/// A token in the cache, with its schedule.
pub struct CachedToken {
    header: HeaderValue,
    source: Arc<str>,
    usable_until: Instant,
    refresh_at: Instant,
    expires_on: SystemTime,
}

/// Why a request got no token: the shared error, and how long until a new attempt may be made.
#[derive(Debug, Clone)]
pub struct TokenUnavailable {
    /// The failure.
    pub error: Arc<TokenError>,
    /// How long until the next attempt (for `Retry-After`).
    pub retry_after: Duration,
}

/// What `/readyz` reports for one entry.
#[derive(Debug, Clone)]
pub enum TokenStatus {
    /// A usable token is cached.
    Valid {
        /// When it expires (wall clock).
        expires_on: SystemTime,
    },
    /// No usable token: the last failure, if any fetch has finished.
    Missing(Option<Arc<TokenError>>),
}

struct Entry {
    key: CacheKey,
    credential: Arc<dyn TokenCredential>,
    current: ArcSwapOption<CachedToken>,
    state: Mutex<State>,
    /// Bumped after every fetch; waiters subscribe under the state lock.
    done: watch::Sender<u64>,
    /// Wakes the keeper early (e.g. after an invalidation).
    wake: Notify,
    metrics: TokenMetrics,
    policy: CachePolicy,
}

#[derive(Default)]
struct State {
    fetching: bool,
    failure: Option<Failure>,
    consecutive_failures: u32,
    /// The keeper's next attempt is not before this (backoff after failures).
    next_attempt: Option<Instant>,
    /// When an upstream's rejection last dropped the token (rejections drop it at most once per `min_retry`).
    dropped_at: Option<Instant>,
}

struct Failure {
    error: Arc<TokenError>,
    /// Requests do not start another fetch before this (Retry-After, or `min_retry`).
    retry_at: Instant,
}

// === impl CachePolicy ===

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            request_wait: Duration::from_secs(5),
            min_retry: Duration::from_secs(5),
            eager_retry: Duration::from_secs(30),
            max_backoff_transient: Duration::from_secs(60),
            max_backoff_permanent: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(120),
            client_capabilities: true,
            spans: None,
        }
    }
}

// === impl TokenCache ===

impl TokenCache {
    /// An empty cache.
    pub fn new(metrics: TokenMetrics, policy: CachePolicy) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                entries: Mutex::default(),
                keepers: Mutex::default(),
                metrics,
                policy,
            }),
        }
    }

    /// The entry for `key`, created on first use. With `keep_fresh`, a background keeper fetches the token at
    /// once (start-up pre-fetch) and refreshes it ahead of expiry for as long as the cache lives.
    ///
    /// Must be called inside a tokio runtime.
    pub fn source(
        &self,
        key: CacheKey,
        credential: Arc<dyn TokenCredential>,
        keep_fresh: bool,
    ) -> TokenSource {
        let mut entries = lock(&self.inner.entries);
        if let Some(entry) = entries.get(&key) {
            return TokenSource {
                entry: Arc::clone(entry),
            };
        }
        let entry = Arc::new(Entry {
            key: key.clone(),
            credential,
            current: ArcSwapOption::empty(),
            state: Mutex::default(),
            done: watch::Sender::new(0),
            wake: Notify::new(),
            metrics: self.inner.metrics.clone(),
            policy: self.inner.policy.clone(),
        });
        entries.insert(key, Arc::clone(&entry));
        drop(entries);
        if keep_fresh {
            let handle = tokio::spawn(Arc::clone(&entry).keep_fresh());
            lock(&self.inner.keepers).push(handle.abort_handle());
        }
        TokenSource { entry }
    }
}

/// At most this many claims-challenge entries are kept; tokens obtained with claims are short-term replays.
const MAX_CLAIMS_ENTRIES: usize = 64;

impl TokenCache {
    /// The entry for `base`'s credential and scope with `claims` (from a claims challenge). Such entries have no
    /// keeper and serve only the requests that were challenged; old ones are pruned.
    pub fn claims_source(&self, base: &TokenSource, claims: Arc<str>) -> TokenSource {
        let mut key = base.entry.key.clone();
        key.claims = Some(claims);
        {
            let mut entries = lock(&self.inner.entries);
            let count = entries.keys().filter(|k| k.claims.is_some()).count();
            if count >= MAX_CLAIMS_ENTRIES && !entries.contains_key(&key) {
                let now = Instant::now();
                entries.retain(|k, e| {
                    k.claims.is_none() || (e.usable(now).is_some() || lock(&e.state).fetching)
                });
                let mut excess = entries
                    .keys()
                    .filter(|k| k.claims.is_some())
                    .count()
                    .saturating_sub(MAX_CLAIMS_ENTRIES - 1);
                entries.retain(|k, _| {
                    if k.claims.is_some() && excess > 0 {
                        excess -= 1;
                        return false;
                    }
                    true
                });
            }
        }
        self.source(key, Arc::clone(&base.entry.credential), false)
    }
}

impl Drop for CacheInner {
    fn drop(&mut self) {
        for keeper in lock(&self.keepers).drain(..) {
            keeper.abort();
        }
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = lock(&self.inner.entries).len();
        f.debug_struct("TokenCache")
            .field("entries", &entries)
            .finish()
    }
}

// === impl TokenSource ===

impl TokenSource {
    /// The `Authorization` value (`Bearer …`, marked sensitive). On a cache hit the future is ready at once.
    pub async fn header_value(&self) -> Result<HeaderValue, TokenUnavailable> {
        if let Some(header) = self.cached_header_value() {
            return Ok(header);
        }
        self.entry.acquire().await.map(|t| t.header.clone())
    }

    /// The `Authorization` value on a cache hit (starting an early refresh when one is due, as
    /// [`Self::header_value`] does), without a future; `None` when the token has to be waited for.
    pub fn cached_header_value(&self) -> Option<HeaderValue> {
        let now = Instant::now();
        let token = self.entry.usable(now)?;
        if now >= token.refresh_at {
            self.entry.refresh_soon(now);
        }
        Some(token.header.clone())
    }

    /// The cached token (waiting for a fetch if needed), for the `token` command and tests.
    pub async fn token(&self) -> Result<Arc<CachedToken>, TokenUnavailable> {
        self.entry.acquire().await
    }

    /// Drops the cached token if it is still `rejected` (an upstream refused it: a claims challenge, a revoked
    /// token), so the next request gets a fresh one; the keeper fetches it at once. A newer token is left alone,
    /// and rejections drop a token at most once per `min_retry` (5 s), so an upstream that refuses every token
    /// cannot make the proxy hammer the token service. Returns whether the token was dropped.
    pub fn invalidate(&self, rejected: &HeaderValue, why: &'static str) -> bool {
        let entry = &self.entry;
        let now = Instant::now();
        let mut state = lock(&entry.state);
        if state
            .dropped_at
            .is_some_and(|t| now.saturating_duration_since(t) < entry.policy.min_retry)
        {
            return false;
        }
        let current = entry.current.load();
        if current.as_ref().is_none_or(|t| t.header != *rejected) {
            return false;
        }
        entry.current.compare_and_swap(&current, None);
        state.dropped_at = Some(now);
        drop(state);
        tracing::info!(credential = %entry.key.credential, scope = %entry.key.scope, reason = why, "cached token dropped: the upstream refused it");
        entry.wake.notify_one();
        true
    }

    /// The entry's key.
    pub fn key(&self) -> &CacheKey {
        &self.entry.key
    }

    /// Readiness of this entry.
    pub fn status(&self) -> TokenStatus {
        let now = Instant::now();
        if let Some(token) = self.entry.usable(now) {
            return TokenStatus::Valid {
                expires_on: token.expires_on,
            };
        }
        TokenStatus::Missing(
            lock(&self.entry.state)
                .failure
                .as_ref()
                .map(|f| Arc::clone(&f.error)),
        )
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("key", &self.entry.key)
            .finish_non_exhaustive()
    }
}

// === impl CachedToken ===

impl CachedToken {
    /// Schedules a freshly acquired token. `sent` is when the token request was sent (lifetimes count from then).
    fn new(token: AccessToken, sent: Instant, sent_wall: SystemTime) -> Result<Self, TokenError> {
        let mut header = HeaderValue::try_from(format!("Bearer {}", token.token.expose()))
            .map_err(|_| {
                TokenError::service_unavailable(
                    &*token.source,
                    "the token contains characters that cannot be sent in a header",
                )
            })?;
        header.set_sensitive(true);
        let lifetime = token.expires_in;
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        let refresh_after = match token.refresh_in {
            Some(r) if !r.is_zero() && r < lifetime => r,
            _ if lifetime >= Duration::from_secs(2 * 3600) => lifetime / 2,
            _ => lifetime - (lifetime / 2).min(Duration::from_secs(300)),
        };
        let max_jitter = (lifetime / 20).min(Duration::from_secs(30));
        let jitter = max_jitter.mul_f64(fastrand::f64());
        let usable_until = sent + (lifetime - margin);
        let refresh_at = (sent + refresh_after.saturating_sub(jitter)).min(usable_until);
        Ok(Self {
            header,
            source: token.source,
            usable_until,
            refresh_at,
            expires_on: sent_wall + lifetime,
        })
    }

    /// The bearer token itself (for `token --show-token`).
    pub fn bearer(&self) -> &str {
        self.header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
    }

    /// The source that produced it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// When it expires (wall clock).
    pub fn expires_on(&self) -> SystemTime {
        self.expires_on
    }
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("source", &self.source)
            .field("expires_on", &unix_seconds(self.expires_on))
            .finish_non_exhaustive()
    }
}

// === impl TokenUnavailable ===

impl fmt::Display for TokenUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for TokenUnavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

// === impl Entry ===

impl Entry {
    /// The cached token if it may still be sent at `now`. Lock-free.
    fn usable(&self, now: Instant) -> Option<Arc<CachedToken>> {
        match &*self.current.load() {
            Some(token) if now < token.usable_until => Some(Arc::clone(token)),
            _ => None,
        }
    }

    /// Starts an early refresh if none is running and backoff allows. The request that notices goes on with the
    /// still-valid token; entries without a keeper are refreshed this way.
    fn refresh_soon(self: &Arc<Self>, now: Instant) {
        let mut state = lock(&self.state);
        if !state.fetching && state.next_attempt.is_none_or(|t| now >= t) {
            drop(self.start_fetch(&mut state));
        }
    }

    /// Waits (bounded) for a usable token: joins the in-flight fetch or starts one, unless a recent failure is
    /// still being damped, in which case that failure is returned at once.
    async fn acquire(self: &Arc<Self>) -> Result<Arc<CachedToken>, TokenUnavailable> {
        let deadline = Instant::now() + self.policy.request_wait;
        loop {
            let mut done = {
                let mut state = lock(&self.state);
                let now = Instant::now();
                if let Some(token) = self.usable(now) {
                    return Ok(token);
                }
                if let Some(failure) = &state.failure
                    && now < failure.retry_at
                {
                    return Err(TokenUnavailable {
                        error: Arc::clone(&failure.error),
                        retry_after: failure.retry_at - now,
                    });
                }
                self.start_fetch(&mut state)
            };
            match tokio::time::timeout_at(deadline, done.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(self.still_waiting()),
            }
        }
    }

    /// The answer for a request whose wait budget ran out while a fetch is still running.
    fn still_waiting(&self) -> TokenUnavailable {
        let error = TokenError::service_unavailable(
            self.credential.kind(),
            format!(
                "no token within {}s; the token request is still running",
                self.policy.request_wait.as_secs()
            ),
        )
        .with_credential(&self.key.credential);
        TokenUnavailable {
            error: Arc::new(error),
            retry_after: self.policy.min_retry,
        }
    }

    /// Marks a fetch as running (spawning it unless one already is) and returns a receiver that sees its end.
    /// Called with the state lock held, so a waiter cannot miss the completion.
    fn start_fetch(self: &Arc<Self>, state: &mut State) -> watch::Receiver<u64> {
        let done = self.done.subscribe();
        if !state.fetching {
            state.fetching = true;
            tokio::spawn(Arc::clone(self).fetch());
        }
        done
    }

    /// One fetch. Runs in its own task; a guard guarantees `fetching` is cleared and waiters are woken even if
    /// the credential panics.
    async fn fetch(self: Arc<Self>) {
        let mut guard = FetchGuard {
            entry: &self,
            finished: false,
        };
        let request = TokenRequest {
            scope: Arc::clone(&self.key.scope),
            claims: self.key.claims.clone(),
            client_capabilities: self.policy.client_capabilities,
        };
        let sent = Instant::now();
        let sent_wall = SystemTime::now();
        let result = match tokio::time::timeout(
            self.policy.fetch_timeout,
            self.credential.get_token(&request),
        )
        .await
        {
            Ok(Ok(token)) => CachedToken::new(token, sent, sent_wall),
            Ok(Err(e)) => Err(e.into_token_error()),
            Err(_) => Err(TokenError::service_unavailable(
                self.credential.kind(),
                format!("no token within {}s", self.policy.fetch_timeout.as_secs()),
            )),
        };
        let result = result.map_err(|e| e.with_credential(&self.key.credential));
        if let Some(spans) = &self.policy.spans {
            spans.record(self.span(&result, sent_wall, sent.elapsed()));
        }
        self.complete(result);
        guard.finished = true;
    }

    /// The span of one fetch: a trace of its own (a fetch serves every request waiting for the token, and the
    /// background refresh serves none), named `token acquisition`, with the credential, source, scope and
    /// outcome. Never the token, the claims or a message.
    fn span(
        &self,
        result: &Result<CachedToken, TokenError>,
        start: SystemTime,
        elapsed: Duration,
    ) -> Span {
        let (source, outcome) = match result {
            Ok(token) => (token.source.to_string(), "success"),
            Err(e) => (e.source.clone(), e.kind.code()),
        };
        let mut attributes = vec![
            ("aml_auth_proxy.credential", (*self.key.credential).into()),
            ("aml_auth_proxy.source", source.into()),
            ("aml_auth_proxy.scope", (*self.key.scope).into()),
            ("aml_auth_proxy.outcome", outcome.into()),
        ];
        if self.key.claims.is_some() {
            attributes.push(("aml_auth_proxy.claims_challenge", "true".into()));
        }
        Span {
            context: TraceContext::root(true),
            name: "token acquisition".to_owned(),
            kind: SpanKind::Client,
            start,
            end: start + elapsed,
            attributes,
            error: result.as_ref().err().map(|e| e.kind.code().to_owned()),
        }
    }

    /// Publishes a fetch result: stores the token or the failure, schedules the next attempt, wakes waiters.
    fn complete(&self, result: Result<CachedToken, TokenError>) {
        let now = Instant::now();
        let credential = &*self.key.credential;
        let mut state = lock(&self.state);
        match result {
            Ok(token) => {
                self.metrics
                    .acquisition(credential, &token.source, "success");
                self.metrics.expiry(
                    credential,
                    &self.key.scope,
                    unix_seconds(token.expires_on) as f64,
                );
                let recovered = state.failure.is_some();
                tracing::info!(
                    credential,
                    source = %token.source,
                    scope = %self.key.scope,
                    expires_on = unix_seconds(token.expires_on),
                    expires_in_s = token.usable_until.saturating_duration_since(now).as_secs(),
                    refresh_in_s = token.refresh_at.saturating_duration_since(now).as_secs(),
                    recovered,
                    "token acquired"
                );
                self.current.store(Some(Arc::new(token)));
                state.failure = None;
                state.consecutive_failures = 0;
                state.next_attempt = None;
            }
            Err(error) => {
                // `token_requests_total` counts calls to token services; "no source here" made none.
                if error.kind != TokenErrorKind::CredentialUnavailable {
                    self.metrics
                        .acquisition(credential, &error.source, error.kind.code());
                }
                self.metrics.failure(credential, error.kind.code());
                let repeated = state.failure.as_ref().is_some_and(|f| {
                    f.error.kind == error.kind && f.error.message == error.message
                });
                log_failure(&error, &self.key, repeated);
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let damping = error
                    .retry_after
                    .unwrap_or_default()
                    .max(self.policy.min_retry);
                let valid_left = self
                    .current
                    .load()
                    .as_ref()
                    .map(|t| t.usable_until.saturating_duration_since(now));
                let delay = self.backoff(&error, state.consecutive_failures, damping, valid_left);
                state.next_attempt = Some(now + delay);
                state.failure = Some(Failure {
                    error: Arc::new(error),
                    retry_at: now + damping,
                });
            }
        }
        state.fetching = false;
        drop(state);
        self.done
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// The keeper's delay before its next attempt after `failures` consecutive failures.
    fn backoff(
        &self,
        error: &TokenError,
        failures: u32,
        damping: Duration,
        valid_left: Option<Duration>,
    ) -> Duration {
        let cap = if error.is_transient() {
            self.policy.max_backoff_transient
        } else {
            self.policy.max_backoff_permanent
        };
        let exponent = failures.saturating_sub(1).min(16);
        let base = self.policy.min_retry.saturating_mul(1 << exponent).min(cap);
        let jittered = base.mul_f64(0.8 + 0.4 * fastrand::f64());
        let mut delay = jittered.max(damping);
        if let Some(left) = valid_left.filter(|l| !l.is_zero()) {
            // The old token still serves: retry no faster than `eager_retry`, but try again before it runs out.
            delay = delay
                .max(self.policy.eager_retry)
                .min((left / 2).max(self.policy.min_retry))
                .max(damping);
        }
        delay
    }

    /// Background refresher of a route's entry: pre-fetches at once, then refreshes ahead of expiry and retries
    /// failures with backoff, for as long as the cache lives. It has no exit path besides being aborted.
    async fn keep_fresh(self: Arc<Self>) {
        loop {
            let due = self.next_due();
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = self.wake.notified() => {}
            }
            let now = Instant::now();
            let mut done = {
                let mut state = lock(&self.state);
                if state.next_attempt.is_some_and(|t| now < t) {
                    continue;
                }
                if let Some(token) = &*self.current.load()
                    && now < token.refresh_at
                    && now < token.usable_until
                {
                    continue;
                }
                self.start_fetch(&mut state)
            };
            // The fetch runs in its own task and always completes (it has a timeout and a drop guard).
            let _ = done.changed().await;
        }
    }

    /// When the keeper should next look at this entry.
    fn next_due(&self) -> Instant {
        let now = Instant::now();
        let state = lock(&self.state);
        let after_backoff = state.next_attempt.unwrap_or(now);
        match &*self.current.load() {
            Some(token) if now < token.usable_until => token.refresh_at.max(after_backoff),
            _ => after_backoff,
        }
    }
}

/// Clears `fetching` and wakes waiters if a fetch task ends without completing (panic or abort).
struct FetchGuard<'a> {
    entry: &'a Entry,
    finished: bool,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let error = TokenError::service_unavailable(
                self.entry.credential.kind(),
                "the token request ended unexpectedly",
            )
            .with_credential(&self.entry.key.credential);
            self.entry.complete(Err(error));
        }
    }
}

/// One log line per distinct failure (repeats of the same failure go to debug).
fn log_failure(error: &TokenError, key: &CacheKey, repeated: bool) {
    let aad = error.aad.as_ref();
    let code = aad.and_then(|a| a.first_code()).unwrap_or_default();
    let trace_id = aad.and_then(|a| a.trace_id.as_deref()).unwrap_or_default();
    let correlation_id = aad
        .and_then(|a| a.correlation_id.as_deref())
        .unwrap_or_default();
    if repeated {
        tracing::debug!(credential = %key.credential, source = %error.source, kind = %error.kind, "token acquisition failed again");
    } else if error.kind == TokenErrorKind::TokenServiceUnavailable {
        tracing::warn!(credential = %key.credential, source = %error.source, scope = %key.scope, kind = %error.kind,
            aadsts = code, trace_id, correlation_id, error = %error.message, "token acquisition failed; retrying");
    } else {
        tracing::error!(credential = %key.credential, source = %error.source, scope = %key.scope, kind = %error.kind,
            aadsts = code, trace_id, correlation_id, error = %error.message, "token acquisition failed");
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests;
