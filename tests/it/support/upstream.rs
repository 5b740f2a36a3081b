//! A mock Azure ML / ARM upstream.
//!
//! [`Upstream`] serves HTTPS with a [`TestCa`] leaf certificate (ALPN `h2` and `http/1.1`, or
//! `http/1.1` only) or plain HTTP, with hyper-util's auto (HTTP/1 + HTTP/2) server. It records every
//! request as an [`UpstreamRequest`] and can check bearer tokens against a [`TokenRegistry`]: with
//! checking on, a request whose token is missing, unknown or expired gets the 401 Azure sends
//! (`WWW-Authenticate: Bearer … error="invalid_token" …`) and is recorded with its [`Rejection`].
//!
//! Routes (any method; with token checking on, they are reached only with a valid token):
//!
//! | path                          | answer                                                                   |
//! |-------------------------------|--------------------------------------------------------------------------|
//! | anything else                 | 200 JSON echo of the request (see [`echo_json`])                         |
//! | `/status/<code>`              | `<code>` with `{"status":<code>}` (no body for 204/304)                  |
//! | `/redirect-away`              | 302 to a storage SAS URL on another host                                 |
//! | `/lro`                        | 202 with `Location`, `Azure-AsyncOperation`, `Operation-Location` on this server, `Retry-After: 1` |
//! | `/relative-location`          | 201 with `Location: /things/42`                                          |
//! | `/stream?chunks=N&interval_ms=M` | `text/event-stream`, `data: i\n\n` for i in 0..N (default 5), the first at once, then one every M ms (default 50) |
//! | `/bytes?n=N`                  | N deterministic bytes ([`pseudo_random_bytes`]), `Content-Length`, `x-body-fnv` |
//! | `/slow-headers?ms=M`          | the echo, after waiting M ms before sending the head                     |
//! | `/hop-by-hop`                 | 200 with hop-by-hop response headers (HTTP/1.x only; on h2 only `X-Kept: yes`) |
//! | `/challenge`                  | 401 with a CAE `insufficient_claims` claims challenge ([`CAE_CHALLENGE`]) |
//! | `/challenge-until-claims`     | the same 401, unless the token was issued with claims naming `access_token.nbf` (needs a registry): then the echo |
//! | `/reset-mid-body`             | head with `Content-Length: 1000000`, 1000 bytes, then the connection is cut |
//!
//! [`pseudo_random_bytes`]: super::pseudo_random_bytes

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::mock_aad::{TokenRegistry, TokenStatus};
use super::tls::TestCa;
use super::{BoxBody, BoxError, ChannelBody, ServeOptions, Server, ServerHandle, Shutdown};

/// `WWW-Authenticate` of the 401 for a missing, unknown or expired token.
pub(crate) const INVALID_TOKEN_CHALLENGE: &str = r#"Bearer authorization_uri="https://login.windows.net/", error="invalid_token", error_description="The access token is invalid or expired""#;

/// `WWW-Authenticate` of `/challenge`: a Continuous Access Evaluation claims challenge. The `claims`
/// value is base64 of `{"access_token":{"nbf":{"essential":true,"value":"1726077595"},"xms_caeerror":{"value":"10012"}}}`.
pub(crate) const CAE_CHALLENGE: &str = r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwidmFsdWUiOiIxNzI2MDc3NTk1In0sInhtc19jYWVlcnJvciI6eyJ2YWx1ZSI6IjEwMDEyIn19fQ==""#;

/// `Location` of `/redirect-away`.
pub(crate) const REDIRECT_AWAY_LOCATION: &str =
    "https://example-storage.blob.core.windows.net/container/blob?sv=2024-01-01&sig=SAS";

/// Why the upstream refused a request's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A bearer token the registry never issued.
    Unknown,
    /// A token the registry issued that has expired (or was expired by hand).
    Expired,
}

/// One request the upstream received.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) version: Version,
    /// Every request header as received, `authorization` included.
    pub(crate) headers: HeaderMap,
    /// The token of an `Authorization: Bearer <token>` header.
    pub(crate) token: Option<String>,
    pub(crate) body_len: usize,
    /// 64-bit FNV-1a of the body ([`super::fnv1a64`]).
    pub(crate) body_fnv: u64,
    /// Request trailers, if any arrived.
    pub(crate) trailers: Option<HeaderMap>,
    /// When the request (head and body) had been read, on tokio's clock.
    pub(crate) arrived_at: Instant,
    /// Set if token checking is on and the token was refused (the request then got a 401).
    pub(crate) rejection: Option<Rejection>,
}

/// The mock upstream. Dropping it stops the server.
#[derive(Debug)]
pub(crate) struct Upstream {
    state: Arc<UpstreamState>,
    server: ServerHandle,
}

/// Options for an [`Upstream`]; finish with [`UpstreamBuilder::start`].
#[derive(Debug, Default)]
pub(crate) struct UpstreamBuilder {
    tls: Option<Arc<rustls::ServerConfig>>,
    http1_only: bool,
    no_keep_alive: bool,
    registry: Option<TokenRegistry>,
}

#[derive(Debug)]
struct UpstreamState {
    base_url: String,
    registry: Option<TokenRegistry>,
    requests: Mutex<Vec<UpstreamRequest>>,
    shutdown: Shutdown,
}

// === impl UpstreamBuilder ===

impl UpstreamBuilder {
    /// Serve HTTPS with `ca`'s leaf certificate (default: plain HTTP).
    pub(crate) fn tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some(ca.server_config(&[b"h2", b"http/1.1"]));
        self
    }

    /// Speak HTTP/1.x only: offer only `http/1.1` in ALPN and refuse HTTP/2 prior knowledge.
    pub(crate) fn http1_only(mut self) -> Self {
        self.http1_only = true;
        self
    }

    /// Close each connection after its first response (HTTP/1.x, `Connection: close`).
    pub(crate) fn no_keep_alive(mut self) -> Self {
        self.no_keep_alive = true;
        self
    }

    /// Check bearer tokens against `registry` (see the module docs).
    pub(crate) fn validate_tokens(mut self, registry: TokenRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    pub(crate) async fn start(self) -> Upstream {
        let server = Server::bind().await;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{}", server.addr());
        let tls = match self.tls {
            Some(config) if self.http1_only => {
                let mut config = (*config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(Arc::new(config))
            }
            other => other,
        };
        let state = Arc::new(UpstreamState {
            base_url,
            registry: self.registry,
            requests: Mutex::new(Vec::new()),
            shutdown: server.shutdown(),
        });
        let options = ServeOptions {
            tls,
            http1_only: self.http1_only,
            no_keep_alive: self.no_keep_alive,
        };
        let handler_state = state.clone();
        let server = server.spawn(options, move |req| handle(handler_state.clone(), req));
        Upstream { state, server }
    }
}

// === impl Upstream ===

impl Upstream {
    /// Options: TLS or plain, HTTP/1-only, token checking.
    pub(crate) fn builder() -> UpstreamBuilder {
        UpstreamBuilder::default()
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `https://127.0.0.1:PORT` (or `http://…` in plain mode).
    pub(crate) fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// Every request received so far (rejected ones included), oldest first.
    pub(crate) fn requests(&self) -> Vec<UpstreamRequest> {
        self.lock().clone()
    }

    /// The most recent request, if any.
    pub(crate) fn last_request(&self) -> Option<UpstreamRequest> {
        self.lock().last().cloned()
    }

    /// How many requests were received (rejected ones included).
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    /// How many requests were refused for their token (missing, unknown or expired).
    pub(crate) fn rejected_count(&self) -> usize {
        self.lock().iter().filter(|r| r.rejection.is_some()).count()
    }

    /// How many requests were refused for this particular reason.
    pub(crate) fn rejected_count_for(&self, why: Rejection) -> usize {
        self.lock()
            .iter()
            .filter(|r| r.rejection == Some(why))
            .count()
    }

    /// How many TLS handshakes failed (e.g. a client that does not trust the certificate).
    pub(crate) fn tls_failures(&self) -> usize {
        self.server.tls_failures()
    }

    /// How many connections the upstream accepted.
    pub(crate) fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Forget the recorded requests.
    pub(crate) fn reset(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<UpstreamRequest>> {
        self.state.requests.lock().expect("requests lock")
    }
}

// === request handling ===

/// The token of an `Authorization: Bearer <token>` header (scheme matched case-insensitively).
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The value of `name` in a query string.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn query_u64(query: Option<&str>, name: &str, default: u64) -> u64 {
    query_param(query, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn handle(
    state: Arc<UpstreamState>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, BoxError> {
    let (parts, body) = req.into_parts();
    let (body, body_fnv, trailers) = super::read_body_and_trailers(body).await?;
    let token = bearer_token(&parts.headers);
    let rejection = state.registry.as_ref().and_then(|registry| match &token {
        None => Some(Rejection::Missing),
        Some(t) => match registry.status(t) {
            TokenStatus::Valid => None,
            TokenStatus::Expired => Some(Rejection::Expired),
            TokenStatus::Unknown => Some(Rejection::Unknown),
        },
    });
    let record = UpstreamRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        version: parts.version,
        headers: parts.headers,
        token,
        body_len: body.len(),
        body_fnv,
        trailers,
        arrived_at: Instant::now(),
        rejection,
    };
    state
        .requests
        .lock()
        .expect("requests lock")
        .push(record.clone());

    if rejection.is_some() {
        let mut resp = super::json_response(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": {
                "code": "InvalidAuthenticationToken",
                "message": "The access token is invalid or expired.",
            }}),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(INVALID_TOKEN_CHALLENGE),
        );
        return Ok(resp);
    }
    route(&state, &record).await
}

async fn route(
    state: &UpstreamState,
    req: &UpstreamRequest,
) -> Result<Response<BoxBody>, BoxError> {
    let query = req.query.as_deref();
    let resp = match req.path.as_str() {
        path if path.starts_with("/status/") => status(&path["/status/".len()..]),
        "/redirect-away" => with_header(
            empty(StatusCode::FOUND),
            header::LOCATION,
            REDIRECT_AWAY_LOCATION,
        ),
        "/lro" => {
            let base = &state.base_url;
            let mut resp = super::json_response(
                StatusCode::ACCEPTED,
                &serde_json::json!({"status": "Accepted"}),
            );
            let headers = resp.headers_mut();
            let location = format!("{base}/operations/1/result?api-version=2024-04-01");
            let async_op = format!("{base}/operations/1?api-version=2024-04-01");
            let op_location = format!("{base}/operations/1/status?api-version=2024-04-01");
            headers.insert(header::LOCATION, HeaderValue::try_from(location)?);
            headers.insert("azure-asyncoperation", HeaderValue::try_from(async_op)?);
            headers.insert("operation-location", HeaderValue::try_from(op_location)?);
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        "/relative-location" => with_header(
            super::json_response(StatusCode::CREATED, &serde_json::json!({"id": 42})),
            header::LOCATION,
            "/things/42",
        ),
        "/stream" => stream(
            &state.shutdown,
            query_u64(query, "chunks", 5),
            Duration::from_millis(query_u64(query, "interval_ms", 50)),
        ),
        "/bytes" => {
            let data = super::pseudo_random_bytes(usize::try_from(query_u64(query, "n", 0))?);
            let fnv = super::fnv_hex(super::fnv1a64(&data));
            let mut resp = Response::new(super::full(data.clone()));
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(data.len()));
            headers.insert("x-body-fnv", HeaderValue::try_from(fnv)?);
            resp
        }
        "/slow-headers" => {
            tokio::time::sleep(Duration::from_millis(query_u64(query, "ms", 0))).await;
            echo(req)
        }
        "/hop-by-hop" => hop_by_hop(req.version),
        "/challenge" => challenge(),
        "/challenge-until-claims" => {
            let claims = match (&state.registry, &req.token) {
                (Some(registry), Some(token)) => registry.claims_of(token),
                _ => None,
            };
            // Like the real thing: only a token issued with the challenged claim (`nbf`) satisfies it; the CP1
            // capability alone does not.
            let answers = claims
                .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
                .is_some_and(|c| c["access_token"].get("nbf").is_some());
            if answers { echo(req) } else { challenge() }
        }
        "/reset-mid-body" => {
            let mut resp = Response::new(AbortAfter::new(Bytes::from(vec![b'x'; 1000])).boxed());
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000000"));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            resp
        }
        _ => echo(req),
    };
    Ok(resp)
}

/// The echo body: `{"method","path","query","version","token","headers","body_len","body_fnv"}`.
///
/// `headers` maps each lower-case name to its value, or to an array of values if it appeared more than
/// once; `version` is `"HTTP/1.1"` or `"HTTP/2.0"`; `body_fnv` is 16 lower-case hex digits; `query` and
/// `token` are `null` when absent.
pub(crate) fn echo_json(req: &UpstreamRequest) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for name in req.headers.keys() {
        let values: Vec<serde_json::Value> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
            .collect();
        let value = match <[_; 1]>::try_from(values) {
            Ok([single]) => single,
            Err(many) => many.into(),
        };
        headers.insert(name.as_str().to_owned(), value);
    }
    serde_json::json!({
        "method": req.method.as_str(),
        "path": req.path,
        "query": req.query,
        "version": format!("{:?}", req.version),
        "token": req.token,
        "headers": headers,
        "body_len": req.body_len,
        "body_fnv": super::fnv_hex(req.body_fnv),
    })
}

fn echo(req: &UpstreamRequest) -> Response<BoxBody> {
    super::json_response(StatusCode::OK, &echo_json(req))
}

fn empty(status: StatusCode) -> Response<BoxBody> {
    let mut resp = Response::new(super::full(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

fn with_header(
    mut resp: Response<BoxBody>,
    name: header::HeaderName,
    value: &'static str,
) -> Response<BoxBody> {
    resp.headers_mut()
        .insert(name, HeaderValue::from_static(value));
    resp
}

fn status(code: &str) -> Response<BoxBody> {
    match code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        Some(s) if s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED => empty(s),
        Some(s) if !s.is_informational() => {
            super::json_response(s, &serde_json::json!({"status": s.as_u16()}))
        }
        _ => super::json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": format!("mock upstream cannot answer status {code:?}")}),
        ),
    }
}

fn challenge() -> Response<BoxBody> {
    let resp = super::json_response(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": {
            "code": "InvalidAuthenticationToken",
            "message": "Continuous access evaluation resulted in challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp",
        }}),
    );
    with_header(resp, header::WWW_AUTHENTICATE, CAE_CHALLENGE)
}

/// `/hop-by-hop`. HTTP/2 forbids connection-specific headers (hyper strips them), so they are only sent
/// over HTTP/1.x; on h2 only the end-to-end `X-Kept: yes` is sent.
fn hop_by_hop(version: Version) -> Response<BoxBody> {
    let mut resp = super::json_response(StatusCode::OK, &serde_json::json!({"hop_by_hop": true}));
    let headers = resp.headers_mut();
    if version == Version::HTTP_11 || version == Version::HTTP_10 {
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-upstream-private, keep-alive"),
        );
        headers.insert("x-upstream-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic"),
        );
    }
    headers.insert("x-kept", HeaderValue::from_static("yes"));
    resp
}

/// `/stream`: server-sent events, one `data: i\n\n` chunk per interval, produced by a task that stops
/// when the client goes away or the server shuts down.
fn stream(shutdown: &Shutdown, chunks: u64, interval: Duration) -> Response<BoxBody> {
    let (tx, body) = ChannelBody::channel(1);
    shutdown.spawn(async move {
        for i in 0..chunks {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            if tx
                .send(Ok(Bytes::from(format!("data: {i}\n\n"))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A body that yields `data`, then fails, which makes hyper cut the connection (HTTP/1) or reset the
/// stream (HTTP/2) mid-body.
///
/// Between the two it returns `Pending` once (waking itself at once), so that hyper writes out the data
/// it already has before it sees the error.
struct AbortAfter {
    data: Option<Bytes>,
    paused: bool,
}

impl AbortAfter {
    fn new(data: Bytes) -> Self {
        Self {
            data: Some(data),
            paused: false,
        }
    }
}

impl Body for AbortAfter {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if !self.paused {
            self.paused = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err("mock upstream: connection cut mid-body".into())))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::new()
    }
}
