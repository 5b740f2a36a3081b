//! Inserts the route's bearer token into the request, replacing any inbound `Authorization`, and answers an
//! upstream claims challenge (DESIGN §6): the challenged token is dropped from the cache; when the request body
//! fit `limits.replay_buffer_bytes`, a token is acquired once with the challenge's claims (merged with the `CP1`
//! capability by the credential) and the request is replayed once with it. Whatever the replay answers — even
//! another challenge — goes back to the caller unchanged, so a challenge loop is impossible. A plain
//! `error="invalid_token"` 401 (a token revoked mid-life) also drops the token — at most once per 5 s — and an
//! idempotent request is sent once more with the fresh token (RELIABILITY F8).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

use super::BoxError;
use super::body::ProxyBody;
use super::challenge::{challenges, claims_challenge};
use super::client_addr::ClientAddr;
use super::error::ProxyError;
use super::headers::is_websocket_upgrade;
use crate::token_cache::{TokenCache, TokenSource};

/// Layer for [`InjectToken`].
#[derive(Debug, Clone)]
pub struct InjectTokenLayer {
    tokens: Option<TokenSource>,
    keep_caller_token: bool,
    replay: Option<Arc<Replay>>,
}

/// Awaits the route's token (ready at once on a cache hit), inserts it as a sensitive `Authorization` header,
/// then calls the inner service; answers claims challenges as the module describes. Token failures become errors
/// that [`super::respond::rescue`] answers.
#[derive(Debug, Clone)]
pub struct InjectToken<S> {
    inner: S,
    tokens: Option<TokenSource>,
    keep_caller_token: bool,
    replay: Option<Arc<Replay>>,
}

/// What answering claims challenges needs: the cache (for tokens with claims) and the replay budget.
#[derive(Debug)]
struct Replay {
    cache: TokenCache,
    limit: usize,
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
            replay: None,
        }
    }

    /// A route with `pass_through_authorization: true`: a caller's own `Authorization` is forwarded; the
    /// route's token (if it has a credential) is inserted only when the caller sent none.
    pub fn pass_through(tokens: Option<TokenSource>) -> Self {
        Self {
            tokens,
            keep_caller_token: true,
            replay: None,
        }
    }

    /// Answers claims challenges: acquires tokens with claims from `cache` and replays request bodies of up to
    /// `replay_buffer_bytes` (0: never replay, but still drop the challenged token).
    pub fn answering_challenges(mut self, cache: TokenCache, replay_buffer_bytes: usize) -> Self {
        self.replay = Some(Arc::new(Replay {
            cache,
            limit: replay_buffer_bytes,
        }));
        self
    }
}

impl<S> Layer<S> for InjectTokenLayer {
    type Service = InjectToken<S>;

    fn layer(&self, inner: S) -> InjectToken<S> {
        InjectToken {
            inner,
            tokens: self.tokens.clone(),
            keep_caller_token: self.keep_caller_token,
            replay: self.replay.clone(),
        }
    }
}

// === impl InjectToken ===

impl<S> Service<Request<ProxyBody>> for InjectToken<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ResponseFuture<Response<ProxyBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<ProxyBody>) -> Self::Future {
        // Move the readied service into the future and leave a fresh clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let caller_has_token = req.headers().contains_key(AUTHORIZATION);
        let tokens = match &self.tokens {
            Some(t) if !(self.keep_caller_token && caller_has_token) => t.clone(),
            _ => {
                if !self.keep_caller_token {
                    req.headers_mut().remove(AUTHORIZATION);
                }
                return Box::pin(call(inner, req));
            }
        };
        let replay = self.replay.clone();
        Box::pin(async move {
            let token = tokens.header_value().await?;
            match replay {
                None => {
                    req.headers_mut().insert(AUTHORIZATION, token);
                    call(inner, req).await
                }
                Some(replay) => answer_challenges(inner, req, tokens, token, &replay).await,
            }
        })
    }
}

async fn call<S>(inner: S, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, BoxError>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>>,
    S::Error: Into<BoxError>,
{
    inner.oneshot(req).await.map_err(Into::into)
}

/// Sends the request with `token`; on a claims challenge drops that token and, if the body was kept, replays once
/// with a token that carries the challenge's claims.
async fn answer_challenges<S>(
    inner: S,
    req: Request<ProxyBody>,
    tokens: TokenSource,
    token: HeaderValue,
    replay: &Replay,
) -> Result<Response<ProxyBody>, BoxError>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>> + Clone,
    S::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let replayable = replay.limit > 0
        && !is_websocket_upgrade(parts.version, &parts.headers)
        && body
            .size_hint()
            .upper()
            .is_some_and(|n| n <= replay.limit as u64);
    if !replayable {
        // The body streams and cannot be sent twice: a challenge still drops the challenged token.
        parts.headers.insert(AUTHORIZATION, token.clone());
        let response = call(inner, Request::from_parts(parts, body)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            if claims_challenge(response.headers()).is_some() {
                tokens.invalidate(&token, "claims challenge");
            } else if token_refused(response.headers()) {
                tokens.invalidate(&token, "invalid_token");
            }
        }
        return Ok(response);
    }
    let kept = buffer(body, replay.limit).await?;
    let response = call(
        inner.clone(),
        copy_request(&parts, kept.clone(), token.clone()),
    )
    .await?;
    if response.status() != StatusCode::UNAUTHORIZED {
        return Ok(response);
    }
    let Some(challenge) = claims_challenge(response.headers()) else {
        // A plain `invalid_token` (revoked or expired early): drop the token; an idempotent request is sent once
        // more with a fresh one, anything else goes back to the caller as it is.
        if token_refused(response.headers())
            && tokens.invalidate(&token, "invalid_token")
            && parts.method.is_idempotent()
        {
            let fresh = tokens.header_value().await?;
            if fresh != token {
                drop(response);
                return call(inner, copy_request(&parts, kept, fresh)).await;
            }
        }
        return Ok(response);
    };
    tokens.invalidate(&token, "claims challenge");
    tracing::debug!(error = %challenge.error, "upstream claims challenge: acquiring a token with its claims and replaying once");
    let with_claims = replay.cache.claims_source(&tokens, challenge.claims.into());
    let token = with_claims.header_value().await?;
    drop(response);
    call(inner, copy_request(&parts, kept, token)).await
}

/// True when a 401 says the bearer token itself was refused (`error="invalid_token"`), as opposed to a missing
/// permission or a claims challenge.
fn token_refused(headers: &http::HeaderMap) -> bool {
    challenges(headers).iter().any(|c| {
        c.scheme.eq_ignore_ascii_case("bearer") && c.param("error") == Some("invalid_token")
    })
}

/// Reads a body known to be at most `limit` bytes. Each chunk is copied and dropped at once: a streamed body hands
/// on its next chunk only when the previous one is gone (`body`).
async fn buffer(mut body: ProxyBody, limit: usize) -> Result<Bytes, BoxError> {
    let mut kept = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| -> BoxError {
            if super::forward::request_body_timed_out(&e) {
                Box::new(ProxyError::RequestBodyTimeout)
            } else {
                Box::new(ProxyError::BadRequest("the request body could not be read"))
            }
        })?;
        if let Ok(data) = frame.into_data() {
            if kept.len() + data.remaining() > limit {
                return Err(Box::new(ProxyError::BadRequest(
                    "the request body could not be read",
                )));
            }
            kept.extend_from_slice(data.chunk());
        }
    }
    Ok(kept.freeze())
}

/// A copy of the request with `body` and `token`.
fn copy_request(
    parts: &http::request::Parts,
    body: Bytes,
    token: HeaderValue,
) -> Request<ProxyBody> {
    let mut req = Request::new(ProxyBody::full(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.headers_mut().insert(AUTHORIZATION, token);
    // Who is asking, and the caller connection's upstream connection (client module docs).
    if let Some(caller) = parts.extensions.get::<ClientAddr>() {
        req.extensions_mut().insert(caller.clone());
    }
    req
}
