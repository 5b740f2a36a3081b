//! The proxy path. [`stack`] is the only place layers are ordered.
//!
//! ```text
//! MarkSensitive                   marks Authorization/Proxy-Authorization/Cookie and the caller-key header
//!  │                              sensitive before anything logs
//!  └ Trace                        the caller's traceparent continued (or a new trace), the proxy's span id sent
//!     │                           on as the upstream's parent
//!     └ Observe                   one access line + metrics (+ span) per request, at body end (499 if the caller
//!        │                        left)
//!        └ Shed                   max_in_flight: a slow upload is evicted first, else 503 at once; a slot lasts
//!                                 until the response body ends
//!           └ Respond             every error below becomes the proxy's JSON error answer
//!              └ Router           admission (every request rule), route match, then the route's own stack; the
//!                                 request body becomes a paced, timed stream
//!                 └ per route (built from its `Arc<Route>`; an Azure ML route's from the route its resolution
//!                   makes, see `azure_ml_route`):
//!                    AnswerChallenge   a refused token (claims challenge, revoked token) is dropped; a kept body
//!                     │                is replayed once with a token that can pass
//!                     └ InjectToken    awaits the route's token, inserts it (sensitive), replacing the caller's
//!                        └ Timeout     upstream_response_timeout, to response headers only
//!                           └ Forward  URI from config + path, Host rewrite, response hop-by-hop strip, URL
//!                                      rewrite; the response body becomes a paced, timed stream
//! ```
//!
//! Bodies ([`body`]) are paced one chunk at a time and end after `stream_idle_timeout` without bytes; callers that
//! stop reading are disconnected by the server (`server::write_stall`).

pub mod admission;
pub mod answer_challenge;
pub mod azure_ml_route;
pub mod body;
pub mod client;
pub mod client_addr;
pub mod error;
pub mod forward;
pub mod headers;
pub mod inject_token;
pub mod observe;
pub mod resolve;
pub mod respond;
pub mod route;
pub mod route_table;
pub mod router;
pub mod sensitive;
pub mod shed;
pub mod trace;
pub mod www_authenticate;

use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use tower::ServiceBuilder;
use tower::timeout::{Timeout, TimeoutLayer};

pub use crate::BoxError;
use crate::config::Limits;
use crate::metrics::ProxyMetrics;
use crate::telemetry::SpanSink;
use crate::token_cache::TokenCache;

use self::admission::Admission;
use self::answer_challenge::{AnswerChallenge, AnswerChallengeLayer};
use self::azure_ml_route::{AzureMlRouteService, RouteService};
use self::body::IdleLimit;
use self::client::UpstreamClient;
use self::forward::Forward;
use self::inject_token::{InjectToken, InjectTokenLayer};
use self::observe::{Observe, ObserveLayer};
use self::respond::{Respond, RespondLayer};
use self::route::{Route, RouteAuth};
use self::route_table::RouteTable;
use self::router::Router;
use self::sensitive::{MarkSensitive, MarkSensitiveLayer};
use self::shed::{Shed, ShedLayer};
use self::trace::{Trace, TraceLayer};

/// A route's own stack.
pub type RouteStack = AnswerChallenge<InjectToken<Timeout<Forward>>>;

/// The whole proxy service, ready for `TowerToHyperService`.
pub type ProxyService = MarkSensitive<Trace<Observe<Shed<Respond<Router>>>>>;

/// What building a route's own stack needs.
pub struct StackParts {
    client: UpstreamClient,
    cache: TokenCache,
    limits: Limits,
    table: Arc<RouteTable>,
    response_idle: IdleLimit,
}

impl StackParts {
    /// The stack of `route`.
    pub fn build(&self, route: &Arc<Route>) -> RouteStack {
        let (scheme, authority) = route.origin();
        ServiceBuilder::new()
            // A refusal of the route's token drops it; a kept body is replayed once (claims, revoked tokens,
            // rotated endpoint keys).
            .layer(AnswerChallengeLayer::new(
                route.auth().clone(),
                self.cache.clone(),
                self.limits.replay_buffer_bytes,
            ))
            // The route's token replaces the caller's Authorization (pass-through routes: only when it has none).
            .layer(InjectTokenLayer::new(route.auth().clone()))
            // Response headers within upstream_response_timeout (a token fetch has its own budget, above).
            .layer(TimeoutLayer::new(self.limits.upstream_response_timeout))
            // To the route's upstream, and the response back for the caller.
            .service(
                Forward::new(
                    self.client.origin(scheme, authority),
                    Arc::clone(route),
                    Arc::clone(&self.table),
                )
                .with_response_idle(self.response_idle.clone()),
            )
    }
}

impl std::fmt::Debug for StackParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackParts").finish_non_exhaustive()
    }
}

/// Builds the proxy service for `routes` (in configuration order), admitting requests with `admission`; `cache`
/// gives tokens with a challenge's claims; request spans go to `spans`, when spans are exported.
pub fn stack(
    routes: Vec<Arc<Route>>,
    admission: Admission,
    client: &UpstreamClient,
    cache: &TokenCache,
    limits: &Limits,
    metrics: &ProxyMetrics,
    spans: Option<&SpanSink>,
) -> ProxyService {
    let table = Arc::new(RouteTable::new(routes));
    let timeouts = &metrics.stream_timeouts;
    let response_idle = IdleLimit::new(limits.stream_idle_timeout, timeouts.response_idle.clone());
    let request_idle = IdleLimit::new(limits.stream_idle_timeout, timeouts.request_idle.clone());
    let parts = Arc::new(StackParts {
        client: client.clone(),
        cache: cache.clone(),
        limits: limits.clone(),
        table: Arc::clone(&table),
        response_idle,
    });
    let stacks = table.map(|route| match route.auth() {
        // Served by the route its resolution makes, built when the resolution is known.
        RouteAuth::AzureMl(target) => RouteService::AzureMl(AzureMlRouteService::new(
            Arc::clone(route),
            target.clone(),
            Arc::clone(&parts),
        )),
        _ => RouteService::Stack(parts.build(route)),
    });
    let mut sensitive = vec![AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE];
    sensitive.extend(admission.caller_key_header().cloned());
    ServiceBuilder::new()
        // Secrets are marked sensitive before anything can log them.
        .layer(MarkSensitiveLayer::new(sensitive))
        // Every request gets its trace context; new traces are sampled when spans are exported.
        .layer(TraceLayer::new(spans.is_some()))
        // Every request, shed ones too, is logged and counted once (and its span sent), when its response body ends.
        .layer(ObserveLayer::new(metrics).with_spans(spans.cloned()))
        // At most max_in_flight requests, slow uploads evicted first.
        .layer(ShedLayer::new(metrics, limits))
        // Errors below become JSON answers.
        .layer(RespondLayer)
        // Admission and the route's own stack.
        .service(Router::new(admission, stacks).with_request_idle(request_idle))
}
