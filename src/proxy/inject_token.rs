//! Inserts the route's bearer token into the request, replacing any inbound `Authorization`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use http::header::AUTHORIZATION;
use tower::{Layer, Service};

use super::BoxError;
use crate::token_cache::TokenSource;

/// Layer for [`InjectToken`].
#[derive(Debug, Clone)]
pub struct InjectTokenLayer {
    tokens: Option<TokenSource>,
    keep_caller_token: bool,
}

/// Awaits the route's token (ready at once on a cache hit), inserts it as a sensitive `Authorization` header,
/// then calls the inner service. Token failures become errors that [`super::respond::rescue`] answers.
#[derive(Debug, Clone)]
pub struct InjectToken<S> {
    inner: S,
    tokens: Option<TokenSource>,
    keep_caller_token: bool,
}

/// Future of [`InjectToken`].
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'static>>;

// === impl InjectTokenLayer ===

impl InjectTokenLayer {
    /// Inserts tokens from `tokens`, overriding any inbound `Authorization`.
    pub fn new(tokens: TokenSource) -> Self {
        Self {
            tokens: Some(tokens),
            keep_caller_token: false,
        }
    }

    /// A route with `pass_through_authorization: true`: a caller's own `Authorization` is forwarded; the
    /// route's token (if it has a credential) is inserted only when the caller sent none.
    pub fn pass_through(tokens: Option<TokenSource>) -> Self {
        Self {
            tokens,
            keep_caller_token: true,
        }
    }
}

impl<S> Layer<S> for InjectTokenLayer {
    type Service = InjectToken<S>;

    fn layer(&self, inner: S) -> InjectToken<S> {
        InjectToken {
            inner,
            tokens: self.tokens.clone(),
            keep_caller_token: self.keep_caller_token,
        }
    }
}

// === impl InjectToken ===

impl<S, B> Service<Request<B>> for InjectToken<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Move the readied service into the future and leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tokens = self.tokens.clone();
        let keep_caller_token = self.keep_caller_token;
        Box::pin(async move {
            let caller_has_token = req.headers().contains_key(AUTHORIZATION);
            match tokens {
                Some(tokens) if !(keep_caller_token && caller_has_token) => {
                    let value = tokens.header_value().await?;
                    req.headers_mut().insert(AUTHORIZATION, value);
                }
                None if !keep_caller_token => {
                    req.headers_mut().remove(AUTHORIZATION);
                }
                _ => {}
            }
            inner.call(req).await.map_err(Into::into)
        })
    }
}
