//! Answers an upstream's refusal of the route's token, around [`super::inject_token`], replaying a request at
//! most once.
//!
//! - **A claims challenge** (a `401` whose `WWW-Authenticate` carries Bearer `claims`: Continuous Access
//!   Evaluation, a Conditional Access step-up; see [`super::www_authenticate`]): the challenged token is dropped
//!   from the cache. When the request body fit `limits.replay_buffer_bytes`, a token is acquired once with the
//!   challenge's claims (merged with the `CP1` client capability by the credential) and the request is replayed
//!   once with it. Whatever the replay answers — even another challenge — goes back to the caller unchanged, so a
//!   challenge loop is impossible.
//! - **A revoked token** (a plain `error="invalid_token"` 401, a token revoked mid-life): the token is dropped —
//!   at most once per 5 s, the cache's rule — and an idempotent request whose body was kept is sent once more with
//!   the fresh token. Anything else goes back to the caller as it is.
//!
//! - **A refused endpoint key or AML token** (an online endpoint's `401` on a route of
//!   [`RouteAuth::EndpointSecret`]: the key was rotated, the token revoked): it is dropped and read again from
//!   Resource Manager — once for any number of refused requests, and at most once per 5 s — and a request whose
//!   body was kept is replayed once with the new one, whatever its method (the endpoint refused it before
//!   scoring anything). A request whose body could not be kept gets the `401`; the next one uses the new key.
//!
//! Only requests that carry the route's token are answered: a pass-through request with the caller's own token is
//! the caller's business. A body that cannot be kept (larger than the replay buffer, of unknown length beyond
//! it, or a WebSocket handshake) streams as usual, and a refusal still drops the token. A kept body is read
//! before the request is sent, so that it can be sent again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

use super::BoxError;
use super::body::ProxyBody;
use super::client_addr::ClientAddr;
use super::error::ProxyError;
use super::headers::is_websocket_upgrade;
use super::inject_token::{RefusedToken, ReplayToken};
use super::route::RouteAuth;
use super::www_authenticate::{challenges, claims_challenge};
use crate::token_cache::{TokenCache, TokenSource};

/// Layer for [`AnswerChallenge`].
#[derive(Debug, Clone)]
pub struct AnswerChallengeLayer {
    replay: Arc<Replay>,
}

/// Answers claims challenges and revoked tokens as the module describes.
#[derive(Debug, Clone)]
pub struct AnswerChallenge<S> {
    inner: S,
    replay: Arc<Replay>,
}

/// What answering needs: how the route authorizes, the cache (for tokens with claims) and the replay budget.
#[derive(Debug)]
struct Replay {
    auth: RouteAuth,
    cache: TokenCache,
    limit: usize,
}

/// A boxed future of [`AnswerChallenge`].
type Boxed = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, BoxError>> + Send + 'static>>;

pin_project_lite::pin_project! {
    /// Future of [`AnswerChallenge`]. A request without a body is sent at once, its copy kept beside the send, and
    /// only a refusal of its token goes on in a boxed future ([`after_refusal`]); every other request is served
    /// by a boxed [`answer`] (or sent as it is).
    pub struct ResponseFuture<S>
    where
        S: Service<Request<ProxyBody>>,
    {
        #[pin]
        first: Option<S::Future>,
        kept: Option<Kept<S>>,
        boxed: Option<Boxed>,
    }
}

/// What a replay of a request sent by [`ResponseFuture`] needs.
struct Kept<S> {
    inner: S,
    parts: http::request::Parts,
    caller: Option<ClientAddr>,
    tokens: TokenSource,
    replay: Arc<Replay>,
}

// === impl AnswerChallengeLayer ===

impl AnswerChallengeLayer {
    /// Answers refusals of `auth`'s tokens: acquires tokens with claims from `cache` and replays request bodies
    /// of up to `replay_buffer_bytes` (0: never replay, but still drop the refused token).
    pub fn new(auth: RouteAuth, cache: TokenCache, replay_buffer_bytes: usize) -> Self {
        Self {
            replay: Arc::new(Replay {
                auth,
                cache,
                limit: replay_buffer_bytes,
            }),
        }
    }
}

impl<S> Layer<S> for AnswerChallengeLayer {
    type Service = AnswerChallenge<S>;

    fn layer(&self, inner: S) -> AnswerChallenge<S> {
        AnswerChallenge {
            inner,
            replay: Arc::clone(&self.replay),
        }
    }
}

// === impl AnswerChallenge ===

impl<S> Service<Request<ProxyBody>> for AnswerChallenge<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        let Some(tokens) = self.replay.auth.tokens_for(req.headers()) else {
            return ResponseFuture::boxed(Box::pin(call(self.take_readied(), req)));
        };
        let tokens = tokens.clone();
        let replay = Arc::clone(&self.replay);
        if !(replayable(&req, &replay) && req.body().is_end_stream()) {
            let inner = self.take_readied();
            return ResponseFuture::boxed(Box::pin(answer(inner, req, tokens, replay)));
        }
        // No body to read first: sent now by the readied service, as `answer` sends it after reading a body; a
        // clone is kept for a replay.
        let (mut parts, _) = req.into_parts();
        let (first, caller) = first_send(&mut parts, Bytes::new());
        ResponseFuture {
            first: Some(self.inner.call(first)),
            kept: Some(Kept {
                inner: self.inner.clone(),
                parts,
                caller,
                tokens,
                replay,
            }),
            boxed: None,
        }
    }
}

impl<S: Clone> AnswerChallenge<S> {
    /// The readied service, for a future to call; a fresh clone is left behind.
    fn take_readied(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

// === impl ResponseFuture ===

impl<S> ResponseFuture<S>
where
    S: Service<Request<ProxyBody>>,
{
    fn boxed(future: Boxed) -> Self {
        Self {
            first: None,
            kept: None,
            boxed: Some(future),
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(boxed) = this.boxed.as_mut() {
            return boxed.as_mut().poll(cx);
        }
        let Some(first) = this.first.as_mut().as_pin_mut() else {
            return Poll::Ready(Err("polled after completion".into()));
        };
        let sent = ready!(first.poll(cx));
        this.first.set(None);
        let mut response = sent.map_err(Into::into)?;
        let Some(token) = refused_token(&mut response) else {
            return Poll::Ready(Ok(response));
        };
        let Some(kept) = this.kept.take() else {
            return Poll::Ready(Ok(response));
        };
        let mut boxed: Boxed = Box::pin(after_refusal(kept, Bytes::new(), response, token));
        let polled = boxed.as_mut().poll(cx);
        *this.boxed = Some(boxed);
        polled
    }
}

/// Whether `req`'s body can be kept for a replay (sending it again).
fn replayable(req: &Request<ProxyBody>, replay: &Replay) -> bool {
    replay.limit > 0
        && !is_websocket_upgrade(req.version(), req.headers())
        && req
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= replay.limit as u64)
}

/// The first send of a request whose body (`kept`) is in hand, and who is asking (for a replay); `parts` keeps a
/// copy of the fields for a replay.
fn first_send(
    parts: &mut http::request::Parts,
    kept: Bytes,
) -> (Request<ProxyBody>, Option<ClientAddr>) {
    // The first send takes the caller's extensions as they are, not a copy: the layers inside read only
    // `ClientAddr` and `ReplayToken` (which a caller's request never carries). A replay gets who is asking.
    let caller = parts.extensions.get::<ClientAddr>().cloned();
    let extensions = std::mem::take(&mut parts.extensions);
    // It takes the caller's header map too, which has room for the headers the layers inside add (a copy has
    // none, and would grow); the copy, with the same fields in the same order, is kept for a replay.
    let copy = parts.headers.clone();
    let headers = std::mem::replace(&mut parts.headers, copy);
    (copy_request(parts, headers, kept, extensions), caller)
}

async fn call<S>(inner: S, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, BoxError>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>>,
    S::Error: Into<BoxError>,
{
    inner.oneshot(req).await.map_err(Into::into)
}

/// Sends the request; on a refusal of its token drops that token and, if the body was kept, replays once as the
/// module describes.
async fn answer<S>(
    inner: S,
    req: Request<ProxyBody>,
    tokens: TokenSource,
    replay: Arc<Replay>,
) -> Result<Response<ProxyBody>, BoxError>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>> + Clone,
    S::Error: Into<BoxError>,
{
    let replayable = replayable(&req, &replay);
    let (mut parts, body) = req.into_parts();
    if !replayable {
        // The body streams and cannot be sent twice: a refusal still drops the refused token.
        let mut response = call(inner, Request::from_parts(parts, body)).await?;
        if let Some(token) = refused_token(&mut response) {
            if replay.rereads_secret() {
                tokens.invalidate(&token, "endpoint refused its key or token");
            } else if claims_challenge(response.headers()).is_some() {
                tokens.invalidate(&token, "claims challenge");
            } else if token_refused(response.headers()) {
                tokens.invalidate(&token, "invalid_token");
            }
        }
        return Ok(response);
    }
    let kept = buffer(body, replay.limit).await?;
    let (first, caller) = first_send(&mut parts, kept.clone());
    let mut response = call(inner.clone(), first).await?;
    let Some(token) = refused_token(&mut response) else {
        return Ok(response);
    };
    let request = Kept {
        inner,
        parts,
        caller,
        tokens,
        replay,
    };
    after_refusal(request, kept, response, token).await
}

/// After the first send of a `request` with the body `kept` was refused `token`: drops that token and replays
/// once as the module describes, or gives back `response`.
async fn after_refusal<S>(
    request: Kept<S>,
    kept: Bytes,
    response: Response<ProxyBody>,
    token: HeaderValue,
) -> Result<Response<ProxyBody>, BoxError>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>> + Clone,
    S::Error: Into<BoxError>,
{
    let Kept {
        inner,
        parts,
        caller,
        tokens,
        replay,
    } = request;
    if replay.rereads_secret() {
        // Dropped here, or already by a request refused at the same time: either way the next value is read
        // once and shared, and the request goes again with it. The same value again (a re-read within 5 s)
        // means the endpoint refuses what Resource Manager gives: its 401 goes back.
        tokens.invalidate(&token, "endpoint refused its key or token");
        let fresh = tokens.header_value().await?;
        if fresh != token {
            drop(response);
            return last(
                inner,
                copy_request(
                    &parts,
                    parts.headers.clone(),
                    kept,
                    replay_extensions(caller, fresh),
                ),
            )
            .await;
        }
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
                return last(
                    inner,
                    copy_request(
                        &parts,
                        parts.headers.clone(),
                        kept,
                        replay_extensions(caller, fresh),
                    ),
                )
                .await;
            }
        }
        return Ok(response);
    };
    tokens.invalidate(&token, "claims challenge");
    tracing::debug!(error = %challenge.error, "upstream claims challenge: acquiring a token with its claims and replaying once");
    let with_claims = replay.cache.claims_source(&tokens, challenge.claims.into());
    let token = with_claims.header_value().await?;
    drop(response);
    last(
        inner,
        copy_request(
            &parts,
            parts.headers.clone(),
            kept,
            replay_extensions(caller, token),
        ),
    )
    .await
}

// === impl Replay ===

impl Replay {
    /// True for an online endpoint's key or AML token, which a `401` makes the proxy read again.
    fn rereads_secret(&self) -> bool {
        matches!(self.auth, RouteAuth::EndpointSecret(_))
    }
}

/// The replay: its answer goes back as it is, without the refused token it may carry.
async fn last<S>(inner: S, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, BoxError>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>>,
    S::Error: Into<BoxError>,
{
    let mut response = call(inner, req).await?;
    refused_token(&mut response);
    Ok(response)
}

/// The token a `401` refused, taken out of the response.
fn refused_token(response: &mut Response<ProxyBody>) -> Option<HeaderValue> {
    if response.status() != StatusCode::UNAUTHORIZED {
        return None;
    }
    response
        .extensions_mut()
        .remove::<RefusedToken>()
        .map(|RefusedToken(token)| token)
}

/// True when a 401 says the bearer token itself was refused (`error="invalid_token"`), as opposed to a missing
/// permission or a claims challenge.
fn token_refused(headers: &HeaderMap) -> bool {
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

/// A copy of the request with `headers`, `body` and `extensions`.
fn copy_request(
    parts: &http::request::Parts,
    headers: HeaderMap,
    body: Bytes,
    extensions: http::Extensions,
) -> Request<ProxyBody> {
    let mut req = Request::new(ProxyBody::full(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = headers;
    *req.extensions_mut() = extensions;
    req
}

/// A replay's extensions: who is asking, and the caller connection's upstream connection (client module docs),
/// and the `token` it carries.
fn replay_extensions(caller: Option<ClientAddr>, token: HeaderValue) -> http::Extensions {
    let mut extensions = http::Extensions::new();
    if let Some(caller) = caller {
        extensions.insert(caller);
    }
    extensions.insert(ReplayToken(token));
    extensions
}
