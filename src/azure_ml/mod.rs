//! Azure ML routes: online endpoints and workspaces whose upstream and credential come from Resource Manager.
//!
//! A route with `online_endpoint:` or `workspace:` starts unresolved. An [`AzureMlRoute`] resolves it in the
//! background as soon as the configuration is built (again on every reload): for an online endpoint it reads
//! `authMode` and `scoringUri` (`GET …/onlineEndpoints/{name}`) and makes the credential that mode needs — an
//! Entra ID token for Azure ML (`AADToken`), the endpoint's AML token (`AMLToken`) or its key (`Key`), the last two
//! read from Resource Manager ([`secrets`]) and cached like tokens; for a workspace it reads `discoveryUrl` and
//! `mlFlowTrackingUri` (`GET …/workspaces/{name}`) and the discovery document's data-plane origin. Failures are
//! retried with backoff (5 s doubling to 60 s for outages, to 5 minutes for refusals, never sooner than
//! `Retry-After`); until the route is resolved its requests wait a few seconds, then get the failure, and
//! `/readyz` names the endpoint or workspace and why.
//!
//! Dependencies: this module uses `auth` (HTTP client, errors) and `token_cache`; the proxy uses it.

pub mod arm;
mod resolve;
pub mod secrets;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

pub use resolve::{
    Detail, ENDPOINT_READ_ACTION, EndpointMode, ResolveContext, Resolved, WORKSPACE_READ_ACTION,
    describe, resolve, tracking_path, workspace_path,
};

use crate::auth::TokenError;
use crate::config::AzureMlTarget;
use crate::token_cache::{TokenStatus, TokenUnavailable};

/// The shortest wait between resolution attempts.
const MIN_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between attempts after an outage or throttling.
const MAX_RETRY_TRANSIENT: Duration = Duration::from_secs(60);
/// The longest wait between attempts after a refusal (a missing permission, a missing endpoint).
const MAX_RETRY_PERMANENT: Duration = Duration::from_secs(300);

/// One Azure ML route's resolution, shared by its stack and readiness. Dropping the last clone stops resolving.
#[derive(Clone)]
pub struct AzureMlRoute {
    inner: Arc<Inner>,
}

struct Inner {
    /// `online endpoint NAME` / `workspace NAME`.
    what: String,
    state: Arc<watch::Sender<State>>,
    task: AbortHandle,
}

/// Where resolution stands.
#[derive(Clone)]
enum State {
    /// The first attempt has not finished.
    Pending,
    /// Resolved.
    Resolved(Arc<Resolved>),
    /// The last attempt failed; requests get this until one succeeds.
    Failed {
        error: Arc<TokenError>,
        retry_at: Instant,
    },
}

// === impl AzureMlRoute ===

impl AzureMlRoute {
    /// Starts resolving `target` with `ctx`, retrying failures until it succeeds. Must be called inside a tokio
    /// runtime.
    pub fn start(target: AzureMlTarget, ctx: ResolveContext) -> Self {
        let what = describe(&target);
        let state = Arc::new(watch::Sender::new(State::Pending));
        let task = tokio::spawn(run(target, ctx, Arc::clone(&state))).abort_handle();
        Self {
            inner: Arc::new(Inner { what, state, task }),
        }
    }

    /// `online endpoint NAME` or `workspace NAME`.
    pub fn what(&self) -> &str {
        &self.inner.what
    }

    /// The resolution, if it has succeeded.
    pub fn current(&self) -> Option<Arc<Resolved>> {
        match &*self.inner.state.borrow() {
            State::Resolved(r) => Some(Arc::clone(r)),
            _ => None,
        }
    }

    /// The resolution: at once when known, else after waiting at most `wait` for the first attempt. A failed
    /// attempt is answered at once with its error (and how long until the next attempt).
    pub async fn resolved(&self, wait: Duration) -> Result<Arc<Resolved>, TokenUnavailable> {
        let mut rx = self.inner.state.subscribe();
        let deadline = Instant::now() + wait;
        loop {
            match &*rx.borrow_and_update() {
                State::Resolved(r) => return Ok(Arc::clone(r)),
                State::Failed { error, retry_at } => {
                    return Err(TokenUnavailable {
                        error: Arc::clone(error),
                        retry_after: retry_at.saturating_duration_since(Instant::now()),
                    });
                }
                State::Pending => {}
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(TokenUnavailable {
                    error: Arc::new(self.pending_error()),
                    retry_after: MIN_RETRY,
                });
            }
        }
    }

    /// Readiness: the resolved credential's status, or why the route is not resolved (naming the endpoint or
    /// workspace).
    pub fn status(&self) -> TokenStatus {
        let state = self.inner.state.borrow().clone();
        match state {
            State::Resolved(r) => r.tokens.status(),
            State::Failed { error, .. } => TokenStatus::Missing(Some(error)),
            State::Pending => TokenStatus::Missing(Some(Arc::new(self.pending_error()))),
        }
    }

    fn pending_error(&self) -> TokenError {
        TokenError::service_unavailable(
            arm::SOURCE,
            format!(
                "{}: reading it from Resource Manager has not finished",
                self.inner.what
            ),
        )
    }
}

impl std::fmt::Debug for AzureMlRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureMlRoute")
            .field("target", &self.inner.what)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resolves until it succeeds, publishing each outcome.
async fn run(target: AzureMlTarget, ctx: ResolveContext, state: Arc<watch::Sender<State>>) {
    let what = describe(&target);
    let mut failures: u32 = 0;
    loop {
        match resolve(&ctx, &target).await {
            Ok(resolved) => {
                tracing::info!(
                    azure_ml = %what,
                    upstream = %resolved.upstream.origin,
                    detail = ?resolved.detail,
                    "azure ml route resolved"
                );
                state.send_replace(State::Resolved(Arc::new(resolved)));
                return;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let cap = if error.is_transient() {
                    MAX_RETRY_TRANSIENT
                } else {
                    MAX_RETRY_PERMANENT
                };
                let backoff = MIN_RETRY
                    .saturating_mul(1 << failures.saturating_sub(1).min(8))
                    .min(cap)
                    .max(error.retry_after.unwrap_or_default());
                tracing::warn!(
                    azure_ml = %what,
                    code = error.kind.code(),
                    error = %error.message,
                    retry_in_s = backoff.as_secs(),
                    "azure ml route not resolved"
                );
                let retry_at = Instant::now() + backoff;
                state.send_replace(State::Failed {
                    error: Arc::new(error),
                    retry_at,
                });
                tokio::time::sleep_until(retry_at).await;
            }
        }
    }
}
