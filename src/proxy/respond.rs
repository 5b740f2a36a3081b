//! Turns every error of the stack into the proxy's JSON error answer, in one place: `{"error": {"code",
//! "message", …}}` with the status of the error's kind, `Cache-Control: no-store` and the code in
//! [`ERROR_HEADER`].
//!
//! [`rescue`] is pure: it walks the error's cause chain (as linkerd's `HttpRescue` does) and builds the response.
//! The [`Respond`] layer, outside every layer that can fail, calls it, so the services below just return errors.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use base64::Engine;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use serde_json::{Map, Value, json};
use tower::{Layer, Service};

use super::BoxError;
use super::body::ResponseBody;
use super::error::ProxyError;
use super::route::{Route, RouteInfo};
use crate::auth::{TokenError, TokenErrorKind};
use crate::token_cache::TokenUnavailable;

/// The header naming the error code on every proxy-generated answer.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-aml-auth-proxy-error");

/// The `WWW-Authenticate` scheme of a `401 CallerNotAuthenticated`: `AmlAuthProxyKey header="<name>"`.
pub const CALLER_KEY_SCHEME: &str = "AmlAuthProxyKey";

/// An error from inside a route's stack, tagged with the route that produced it.
#[derive(Debug)]
pub struct RoutedError {
    /// The route.
    pub route: Arc<Route>,
    /// The error.
    pub error: BoxError,
}

/// Layer for [`Respond`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RespondLayer;

/// Converts the inner service's errors into responses; its own error type is `Infallible`.
#[derive(Debug, Clone)]
pub struct Respond<S> {
    inner: S,
}

pin_project_lite::pin_project! {
    /// Future of [`Respond`].
    pub struct RespondFuture<F> {
        #[pin]
        inner: F,
    }
}

// === impl RoutedError ===

impl std::fmt::Display for RoutedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for RoutedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

// === impl Respond ===

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;

    fn layer(&self, inner: S) -> Respond<S> {
        Respond { inner }
    }
}

impl<S, Req> Service<Req> for Respond<S>
where
    S: Service<Req, Response = Response<ResponseBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = RespondFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner services are always ready (routing and token waits happen in `call`); an error here would
        // have no request to answer, so it is logged and the service reports ready to let `call` surface it.
        if let Err(e) = ready!(self.inner.poll_ready(cx)) {
            tracing::warn!(error = %e.into(), "service not ready");
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        RespondFuture {
            inner: self.inner.call(req),
        }
    }
}

impl<F, E> Future for RespondFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(match ready!(self.project().inner.poll(cx)) {
            Ok(response) => response,
            Err(e) => rescue(&e.into()),
        }))
    }
}

/// The response for an error, by the first recognised cause in its chain.
pub fn rescue(error: &BoxError) -> Response<ResponseBody> {
    let mut route = None;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(e) = cause {
        if let Some(routed) = e.downcast_ref::<RoutedError>() {
            route = Some(&routed.route);
        } else if let Some(p) = e.downcast_ref::<ProxyError>() {
            return with_route(proxy_error(p), route);
        } else if let Some(t) = e.downcast_ref::<TokenUnavailable>() {
            return with_route(token_error(&t.error, Some(t.retry_after)), route);
        } else if let Some(t) = e.downcast_ref::<TokenError>() {
            return with_route(token_error(t, t.retry_after), route);
        } else if e.is::<tower::timeout::error::Elapsed>() {
            return with_route(
                proxy_error(&ProxyError::UpstreamTimeout(Duration::ZERO)),
                route,
            );
        }
        cause = e.source();
    }
    tracing::warn!(error = %crate::error_chain(error.as_ref()), "unexpected error");
    with_route(
        json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            "internal error",
            Map::new(),
        ),
        route,
    )
}

fn with_route(
    mut response: Response<ResponseBody>,
    route: Option<&Arc<Route>>,
) -> Response<ResponseBody> {
    if let Some(route) = route {
        response.extensions_mut().insert(RouteInfo {
            route: Arc::clone(route),
            upstream: false,
        });
    }
    response
}

/// The answer for a [`ProxyError`].
pub fn proxy_error(e: &ProxyError) -> Response<ResponseBody> {
    let message = match e {
        ProxyError::UpstreamTimeout(d) if d.is_zero() => {
            "the upstream sent no response headers in time".to_owned()
        }
        other => other.to_string(),
    };
    let mut response = json_error(e.status(), e.code(), &message, Map::new());
    let headers = response.headers_mut();
    match e {
        ProxyError::MethodNotAllowed { allowed, .. } if !allowed.is_empty() => {
            let list = allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(v) = HeaderValue::from_str(&list) {
                headers.insert(http::header::ALLOW, v);
            }
        }
        ProxyError::Overloaded(_) => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        ProxyError::CallerNotAuthenticated { header, .. } => {
            let challenge = format!("{CALLER_KEY_SCHEME} header=\"{header}\"");
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                headers.insert(WWW_AUTHENTICATE, v);
            }
        }
        _ => {}
    }
    response
}

/// The answer for a token failure: status by kind, Entra ID's details, `Retry-After` for outages and
/// `WWW-Authenticate` when a person must act.
pub fn token_error(e: &TokenError, retry_after: Option<Duration>) -> Response<ResponseBody> {
    let status = match e.kind {
        TokenErrorKind::ConditionalAccessBlocked => StatusCode::FORBIDDEN,
        TokenErrorKind::InteractionRequired => StatusCode::UNAUTHORIZED,
        TokenErrorKind::CredentialRejected => StatusCode::BAD_GATEWAY,
        TokenErrorKind::AuthorizationFailed => StatusCode::FORBIDDEN,
        TokenErrorKind::ResourceNotFound => StatusCode::NOT_FOUND,
        TokenErrorKind::CredentialUnavailable | TokenErrorKind::TokenServiceUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let mut extra = Map::new();
    if !e.credential.is_empty() {
        extra.insert("credential".into(), Value::String(e.credential.clone()));
    }
    extra.insert("source".into(), Value::String(e.source.clone()));
    if let Some(aad) = &e.aad {
        extra.insert("aad".into(), aad.to_json());
    }
    if !e.attempts.is_empty() {
        let details = e
            .attempts
            .iter()
            .map(|a| json!({"source": a.source, "message": a.reason}))
            .collect();
        extra.insert("details".into(), Value::Array(details));
    }
    let mut response = json_error(status, e.kind.code(), &body_message(e), extra);
    let headers = response.headers_mut();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let secs = retry_after
            .unwrap_or(Duration::from_secs(5))
            .as_secs_f64()
            .ceil()
            .max(1.0) as u64;
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if e.kind == TokenErrorKind::InteractionRequired
        && let Ok(v) = HeaderValue::from_str(&interaction_challenge(e))
    {
        headers.insert(WWW_AUTHENTICATE, v);
    }
    response
}

/// The `message` of a token failure's answer. When no source of a chain could serve, each source's reason is in
/// `details` already, so the message names the sources tried instead of repeating every reason; the error's own
/// message (logs, `aml-auth-proxy token`) keeps the reasons, having no `details` beside it.
fn body_message(e: &TokenError) -> std::borrow::Cow<'_, str> {
    if e.kind != TokenErrorKind::CredentialUnavailable || e.attempts.is_empty() {
        return std::borrow::Cow::Borrowed(&e.message);
    }
    let mut sources: Vec<&str> = Vec::with_capacity(e.attempts.len());
    for attempt in &e.attempts {
        if !sources.contains(&attempt.source.as_str()) {
            sources.push(&attempt.source);
        }
    }
    std::borrow::Cow::Owned(format!(
        "no credential source can provide a token; tried {} (why each could not is in details)",
        sources.join(", ")
    ))
}

/// `Bearer error="interaction_required", error_description="…"[, claims="<base64 claims JSON>"]`.
fn interaction_challenge(e: &TokenError) -> String {
    let description: String = e
        .message
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .collect();
    let mut challenge =
        format!("Bearer error=\"interaction_required\", error_description=\"{description}\"");
    if let Some(claims) = e.aad.as_ref().and_then(|a| a.claims.as_deref()) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(claims.as_bytes());
        challenge.push_str(&format!(", claims=\"{encoded}\""));
    }
    challenge
}

/// `{"error": {"code", "message", …extra}}` with the contract's headers.
pub fn json_error(
    status: StatusCode,
    code: &'static str,
    message: &str,
    extra: Map<String, Value>,
) -> Response<ResponseBody> {
    let mut error = Map::with_capacity(extra.len() + 2);
    error.insert("code".into(), Value::String(code.into()));
    error.insert("message".into(), Value::String(message.into()));
    error.extend(extra);
    let body = serde_json::to_vec(&json!({ "error": error })).unwrap_or_default();
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
    response
}

#[cfg(test)]
mod tests;
