//! The admin listener: `/healthz`, `/readyz`, `/metrics`, with the same Host checks as the proxy.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::UNIX_EPOCH;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::azure_ml::AzureMlRoute;
use crate::metrics::Metrics;
use crate::proxy::admission::HostAllowlist;
use crate::proxy::body::ResponseBody;
use crate::proxy::respond::{json_error, proxy_error};
use crate::token_cache::{TokenSource, TokenStatus};
use crate::token_service::TokenService;

/// What readiness looks at: each route's token.
#[derive(Debug, Clone)]
pub struct RouteReadiness {
    /// Route name.
    pub route: String,
    /// Credential name.
    pub credential: String,
    /// The route's cache entry (for an Azure ML route: its Resource Manager token).
    pub tokens: TokenSource,
    /// For an Azure ML route, its resolution: ready once resolved and its credential is held; until then the
    /// reason names the endpoint or workspace.
    pub azure_ml: Option<AzureMlRoute>,
}

/// The admin service.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<AdminInner>,
}

struct AdminInner {
    hosts: HostAllowlist,
    metrics: Metrics,
    routes: ArcSwap<Vec<RouteReadiness>>,
    token_service: ArcSwapOption<TokenService>,
    draining: AtomicBool,
}

// === impl Admin ===

impl Admin {
    /// An admin service.
    pub fn new(hosts: HostAllowlist, metrics: Metrics, routes: Vec<RouteReadiness>) -> Self {
        Self {
            inner: Arc::new(AdminInner {
                hosts,
                metrics,
                routes: ArcSwap::from_pointee(routes),
                token_service: ArcSwapOption::empty(),
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Replaces what readiness looks at (after a configuration reload).
    pub fn set_routes(&self, routes: Vec<RouteReadiness>) {
        self.inner.routes.store(Arc::new(routes));
    }

    /// Sets the token service whose entries in use readiness also covers (after start-up and each reload).
    pub fn set_token_service(&self, service: Option<TokenService>) {
        self.inner.token_service.store(service.map(Arc::new));
    }

    /// From now on `/readyz` answers 503 (the process is shutting down).
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    fn respond<B>(&self, req: &Request<B>) -> Response<ResponseBody> {
        if let Err(e) = self.inner.hosts.check(req) {
            return proxy_error(&e);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the admin endpoints answer GET",
                Default::default(),
            );
        }
        match req.uri().path() {
            "/healthz" | "/livez" => json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" => self.readiness(),
            "/metrics" => {
                let mut r = Response::new(ResponseBody::full(self.inner.metrics.render()));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            _ => json_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "admin endpoints: /healthz, /readyz, /metrics",
                Default::default(),
            ),
        }
    }

    fn readiness(&self) -> Response<ResponseBody> {
        let inner = &*self.inner;
        if inner.draining.load(Ordering::Acquire) {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "reason": "shutting down"}),
            );
        }
        let mut missing = Vec::new();
        let mut ready = Vec::new();
        let routes = inner.routes.load();
        for r in routes.iter() {
            match r.status() {
                TokenStatus::Valid { expires_on } => ready.push(json!({
                    "route": r.route,
                    "credential": r.credential,
                    "expires_on": expires_on.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
                })),
                TokenStatus::Missing(error) => {
                    let mut m = json!({"route": r.route, "credential": r.credential});
                    if let (Some(e), Value::Object(obj)) = (error, &mut m) {
                        obj.insert("code".into(), Value::String(e.kind.code().into()));
                        obj.insert("message".into(), Value::String(e.message.clone()));
                    } else if let Value::Object(obj) = &mut m {
                        obj.insert("message".into(), Value::String("the first token request has not finished".into()));
                    }
                    missing.push(m);
                }
            }
        }
        // The token service's entries, once a caller has used them: an identity whose token request failed, or
        // whose token is gone, is missing.
        let mut token_service = Vec::new();
        if let Some(service) = &*inner.token_service.load() {
            for used in service.in_use() {
                let mut entry = json!({
                    "token_service": true,
                    "identity": used.identity,
                    "credential": used.credential,
                    "resource": used.resource,
                });
                let Value::Object(obj) = &mut entry else {
                    continue;
                };
                match used.tokens.status() {
                    TokenStatus::Valid { expires_on } => {
                        obj.insert(
                            "expires_on".into(),
                            Value::from(
                                expires_on
                                    .duration_since(UNIX_EPOCH)
                                    .unwrap_or_default()
                                    .as_secs(),
                            ),
                        );
                        token_service.push(entry);
                    }
                    TokenStatus::Missing(Some(e)) => {
                        obj.insert("code".into(), Value::String(e.kind.code().into()));
                        obj.insert("message".into(), Value::String(e.message.clone()));
                        missing.push(entry);
                    }
                    // A caller's first request for this entry is still waiting for its token: listed, but it does
                    // not make the process unready (any caller could otherwise cause a 503 at will).
                    TokenStatus::Missing(None) => {
                        obj.insert("pending".into(), Value::Bool(true));
                        token_service.push(entry);
                    }
                }
            }
        }
        let mut body = if missing.is_empty() {
            json!({"ready": true, "routes": ready})
        } else {
            json!({"ready": false, "missing": missing, "routes": ready})
        };
        if inner.token_service.load().is_some()
            && let Value::Object(obj) = &mut body
        {
            obj.insert("token_service".into(), Value::Array(token_service));
        }
        let status = if is_ready(&body) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &body)
    }
}

// === impl RouteReadiness ===

impl RouteReadiness {
    /// The route's readiness: its token's status, or, for an Azure ML route, its resolution's.
    pub fn status(&self) -> TokenStatus {
        match &self.azure_ml {
            Some(target) => target.status(),
            None => self.tokens.status(),
        }
    }
}

/// True when the readiness body says ready.
fn is_ready(body: &Value) -> bool {
    body.get("ready").and_then(Value::as_bool).unwrap_or(false)
}

fn json_response(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(
        serde_json::to_vec(value).unwrap_or_default(),
    ));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

impl<B> tower::Service<Request<B>> for Admin {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let response = self.respond(&req);
        Box::pin(std::future::ready(Ok(response)))
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("routes", &self.inner.routes.load().len())
            .finish_non_exhaustive()
    }
}
