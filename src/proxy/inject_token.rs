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
use std::task::{Context, Poll, ready};

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};

use super::BoxError;
use super::error::ProxyError;
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

/// A boxed future of [`InjectToken`]: one that waits for the token (or fails at once).
type Waiting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'static>>;

pin_project_lite::pin_project! {
    /// Future of [`InjectToken`]: the inner service's own future when the request could be sent at once (the token
    /// was cached or came with a replay, or the request goes as it is), else a boxed one that waits for the token.
    pub struct ResponseFuture<F, T> {
        #[pin]
        sent: Option<F>,
        waiting: Option<Waiting<T>>,
        // The token the sent request carries, for a `401`'s `RefusedToken`.
        token: Option<HeaderValue>,
    }
}

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
    type Future = ResponseFuture<S::Future, Response<R>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let RouteAuth::AzureMl(target) = &self.auth {
            // Not resolved, so not known where it may go: never forwarded (the resolved route serves it).
            let error =
                ProxyError::UpstreamUnavailable(format!("{} is not resolved yet", target.what()));
            return ResponseFuture::waiting(Box::pin(async move { Err(error.into()) }));
        }
        let Some(tokens) = self.auth.tokens_for(req.headers()) else {
            // A pass-through route and a caller with its own token (or none and no credential): as sent, by the
            // service readied for this call.
            return ResponseFuture::sent(self.inner.call(req), None);
        };
        let token = match req.extensions_mut().remove::<ReplayToken>() {
            Some(ReplayToken(token)) => Some(token),
            None => tokens.cached_header_value(),
        };
        if let Some(token) = token {
            // At hand (a cache hit, or a replay's own token): sent now.
            req.headers_mut().insert(AUTHORIZATION, token.clone());
            return ResponseFuture::sent(self.inner.call(req), Some(token));
        }
        // The token has to be waited for: move the readied service into the future and leave a fresh clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let tokens = tokens.clone();
        ResponseFuture::waiting(Box::pin(async move {
            let token = tokens.header_value().await?;
            req.headers_mut().insert(AUTHORIZATION, token.clone());
            let mut response = inner.oneshot(req).await.map_err(Into::into)?;
            if response.status() == StatusCode::UNAUTHORIZED {
                response.extensions_mut().insert(RefusedToken(token));
            }
            Ok(response)
        }))
    }
}

// === impl ResponseFuture ===

impl<F, T> ResponseFuture<F, T> {
    /// The inner service's future for a request sent carrying `token` (`None`: as the caller sent it).
    fn sent(future: F, token: Option<HeaderValue>) -> Self {
        Self {
            sent: Some(future),
            waiting: None,
            token,
        }
    }

    fn waiting(future: Waiting<T>) -> Self {
        Self {
            sent: None,
            waiting: Some(future),
            token: None,
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F, Response<R>>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(waiting) = this.waiting.as_mut() {
            return waiting.as_mut().poll(cx);
        }
        let Some(sent) = this.sent.as_pin_mut() else {
            return Poll::Ready(Err("polled after completion".into()));
        };
        let mut response = ready!(sent.poll(cx)).map_err(Into::into)?;
        if let Some(token) = this.token.take()
            && response.status() == StatusCode::UNAUTHORIZED
        {
            response.extensions_mut().insert(RefusedToken(token));
        }
        Poll::Ready(Ok(response))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tower::ServiceBuilder;

    use super::*;
    use crate::auth::{
        AccessToken, BoxFuture, CredentialError, Secret, TokenCredential, TokenRequest,
    };
    use crate::metrics::Metrics;
    use crate::token_cache::{CacheKey, CachePolicy, TokenCache, TokenSource};

    /// A credential that always issues the token `minted`.
    #[derive(Debug)]
    struct Minted;

    impl TokenCredential for Minted {
        fn get_token<'a>(
            &'a self,
            _: &'a TokenRequest,
        ) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
            Box::pin(async {
                Ok(AccessToken {
                    token: Secret::new("minted"),
                    expires_in: Duration::from_secs(3600),
                    refresh_in: None,
                    source: "minted".into(),
                })
            })
        }

        fn kind(&self) -> &'static str {
            "minted"
        }
    }

    fn tokens(cache: &TokenCache) -> TokenSource {
        let key = CacheKey {
            credential: "c".into(),
            tenant: None,
            scope: "s/.default".into(),
            claims: None,
        };
        cache.source(key, Arc::new(Minted), false)
    }

    /// What the inner service saw as `Authorization` (and whether it was sensitive), answered with `status`.
    async fn sent(
        auth: RouteAuth,
        caller: Option<&str>,
        replay: Option<&str>,
        status: StatusCode,
    ) -> (Option<(String, bool)>, Response<()>) {
        let service = ServiceBuilder::new()
            .layer(InjectTokenLayer::new(auth))
            .service_fn(move |req: Request<()>| async move {
                let seen = req
                    .headers()
                    .get(AUTHORIZATION)
                    .map(|v| (v.to_str().unwrap().to_owned(), v.is_sensitive()));
                let mut response = Response::new(());
                *response.status_mut() = status;
                response.extensions_mut().insert(seen);
                Ok::<_, BoxError>(response)
            });
        let mut req = Request::new(());
        if let Some(caller) = caller {
            req.headers_mut()
                .insert(AUTHORIZATION, HeaderValue::from_str(caller).unwrap());
        }
        if let Some(token) = replay {
            req.extensions_mut()
                .insert(ReplayToken(HeaderValue::from_str(token).unwrap()));
        }
        let mut response = service.oneshot(req).await.unwrap();
        let seen = response
            .extensions_mut()
            .remove::<Option<(String, bool)>>()
            .unwrap();
        (seen, response)
    }

    #[tokio::test]
    async fn the_route_token_replaces_the_callers_and_is_sensitive() {
        let cache = TokenCache::new(Metrics::new().unwrap().tokens, CachePolicy::default());
        let inject = RouteAuth::Inject(tokens(&cache));
        let minted = Some(("Bearer minted".to_owned(), true));
        let ok = StatusCode::OK;
        assert_eq!(sent(inject.clone(), None, None, ok).await.0, minted);
        assert_eq!(
            sent(inject.clone(), Some("Bearer callers"), None, ok)
                .await
                .0,
            minted
        );
        // A replay carries the token it was given.
        let (seen, _) = sent(inject, Some("Bearer callers"), Some("Bearer claims"), ok).await;
        assert_eq!(seen.unwrap().0, "Bearer claims");
    }

    #[tokio::test]
    async fn pass_through_keeps_the_callers_token_and_fills_in_only_when_there_is_none() {
        let cache = TokenCache::new(Metrics::new().unwrap().tokens, CachePolicy::default());
        let ok = StatusCode::OK;
        let with_credential = RouteAuth::PassThrough(Some(tokens(&cache)));
        let (seen, _) = sent(with_credential.clone(), Some("Bearer callers"), None, ok).await;
        assert_eq!(seen.unwrap().0, "Bearer callers");
        let (seen, _) = sent(with_credential, None, None, ok).await;
        assert_eq!(seen, Some(("Bearer minted".to_owned(), true)));
        let without = RouteAuth::PassThrough(None);
        let (seen, _) = sent(without.clone(), Some("Bearer callers"), None, ok).await;
        assert_eq!(seen.unwrap().0, "Bearer callers");
        assert_eq!(sent(without, None, None, ok).await.0, None);
    }

    #[tokio::test]
    async fn a_401_names_the_token_it_refused_and_nothing_else_does() {
        let cache = TokenCache::new(Metrics::new().unwrap().tokens, CachePolicy::default());
        let inject = RouteAuth::Inject(tokens(&cache));
        let (_, refused) = sent(inject.clone(), None, None, StatusCode::UNAUTHORIZED).await;
        let RefusedToken(token) = refused.extensions().get::<RefusedToken>().unwrap();
        assert_eq!(token, "Bearer minted");
        assert_eq!(
            format!("{:?}", RefusedToken(token.clone())),
            "RefusedToken(<redacted>)"
        );
        let (_, forbidden) = sent(inject, None, None, StatusCode::FORBIDDEN).await;
        assert!(forbidden.extensions().get::<RefusedToken>().is_none());
        let (_, callers) = sent(
            RouteAuth::PassThrough(None),
            Some("Bearer callers"),
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert!(
            callers.extensions().get::<RefusedToken>().is_none(),
            "a caller's own token is not the route's to drop"
        );
    }
}
