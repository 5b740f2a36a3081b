//! Inserts the route's bearer token into the request, replacing any inbound `Authorization` (on a
//! `pass_through_authorization` route, only into requests that carry none).
//!
//! Like tower-http's `AddAuthorization`, with a token that may have to be fetched: the future awaits the header
//! value (ready at once on a cache hit), inserts it (marked sensitive), and calls the inner service. Token failures
//! become errors that [`super::respond::rescue`] answers. Two small hand-offs serve the claims-challenge layer
//! outside this one ([`super::answer_challenge`]): a replayed request may bring the token it must carry
//! ([`ReplayToken`]), and a `401` response carries the token that was refused ([`RefusedToken`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};

use super::BoxError;
use super::route::RouteAuth;

/// Layer for [`InjectToken`].
#[derive(Debug, Clone)]
pub struct InjectTokenLayer {
    auth: RouteAuth,
}

/// Awaits the route's token, inserts it as a sensitive `Authorization` header, then calls the inner service.
#[derive(Debug, Clone)]
pub struct InjectToken<S> {
    inner: S,
    auth: RouteAuth,
}

/// Request extension: the token a replayed request carries instead of the route's current one (a token with a
/// challenge's claims, or the fresh token after a refused one).
#[derive(Clone)]
pub struct ReplayToken(pub HeaderValue);

/// Response extension on a `401`: the token the request carried.
#[derive(Clone)]
pub struct RefusedToken(pub HeaderValue);

/// Future of [`InjectToken`].
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'static>>;

// === impl InjectTokenLayer ===

impl InjectTokenLayer {
    /// Inserts tokens as `auth` says.
    pub fn new(auth: RouteAuth) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for InjectTokenLayer {
    type Service = InjectToken<S>;

    fn layer(&self, inner: S) -> InjectToken<S> {
        InjectToken {
            inner,
            auth: self.auth.clone(),
        }
    }
}

// === impl InjectToken ===

impl<S, B, R> Service<Request<B>> for InjectToken<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    R: 'static,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<Response<R>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Move the readied service into the future and leave a fresh clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let Some(tokens) = self.auth.tokens_for(req.headers()) else {
            // A pass-through route and a caller with its own token (or none and no credential): as sent.
            return Box::pin(async move { inner.oneshot(req).await.map_err(Into::into) });
        };
        let tokens = tokens.clone();
        let replay = req.extensions_mut().remove::<ReplayToken>();
        Box::pin(async move {
            let token = match replay {
                Some(ReplayToken(token)) => token,
                None => tokens.header_value().await?,
            };
            req.headers_mut().insert(AUTHORIZATION, token.clone());
            let mut response = inner.oneshot(req).await.map_err(Into::into)?;
            if response.status() == StatusCode::UNAUTHORIZED {
                response.extensions_mut().insert(RefusedToken(token));
            }
            Ok(response)
        })
    }
}

// === impl ReplayToken, RefusedToken ===

impl fmt::Debug for ReplayToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplayToken(<redacted>)")
    }
}

impl fmt::Debug for RefusedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefusedToken(<redacted>)")
    }
}
