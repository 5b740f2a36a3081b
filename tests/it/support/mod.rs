//! Test support: in-process mock servers and small HTTP client helpers.
//!
//! - [`tls`]: [`TestCa`], a runtime-generated CA and leaf certificate.
//! - [`h2_frames`]: a frame-level HTTP/2 client, for what a real client library refuses to send.
//! - [`mock_aad`]: [`MockAad`], a scriptable Entra ID token endpoint, and [`mock_aad::TokenRegistry`], the
//!   record of every token it issued.
//! - [`mock_identity`]: [`MockIdentity`], a scriptable managed-identity endpoint (IMDS, App Service, Azure ML,
//!   Cloud Shell, Azure Arc).
//! - [`upstream`]: [`Upstream`], a mock Azure ML / ARM server that echoes, records and (optionally)
//!   checks bearer tokens against the tokens a [`MockAad`] issued.
//! - [`raw`]: raw HTTP/1.1 over TCP, for upstreams and callers that must control every byte.
//! - [`proxy`]: the proxy in process ([`proxy::TestProxy`]) and the usual mocks around it ([`proxy::World`]);
//!   [`process`]: the real binary as a child process.
//! - [`scripted`]: a scripted credential and the token cache, for tests on tokio's paused clock.
//! - [`metrics`]: reading the proxy's Prometheus exposition.
//!
//! Every server binds `127.0.0.1:0`, knows its address before it starts serving, runs on the test's tokio
//! runtime and stops when its handle is dropped: the accept loop is aborted and every connection, HTTP/2
//! stream and body-producing task it started ends too (see [`Shutdown`]). Nothing here sleeps except where
//! a delay is the behaviour under test, and nothing leaves loopback.

// clippy's `allow-*-in-tests` covers `#[test]` functions only, not helpers of an integration-test crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a broken fixture must fail the test loudly"
)]

pub(crate) mod h2_frames;
pub(crate) mod metrics;
pub(crate) mod mock_aad;
pub(crate) mod mock_identity;
pub(crate) mod process;
pub(crate) mod proxy;
pub(crate) mod raw;
pub(crate) mod scripted;
pub(crate) mod tls;
pub(crate) mod upstream;

pub(crate) use mock_aad::{Behavior, DeviceCodeAnswer, DevicePoll, MockAad, TokenRequestRecord};
pub(crate) use mock_identity::{IdentityRequest, MockIdentity, Reply};
pub(crate) use tls::TestCa;
pub(crate) use upstream::{Rejection, Upstream, UpstreamRequest};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aml_auth_proxy::auth::{EntraClient, HttpClientOptions, TokenHttpClient};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The scope of Azure Resource Manager, which most test routes ask a token for.
pub(crate) const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// The error type of the mock servers' services and bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of the mock servers.
pub(crate) type BoxBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A do-nothing guard returned by [`trace_init`].
#[derive(Debug)]
#[must_use = "hold the guard for the whole test"]
pub(crate) struct TraceGuard(());

/// Start of every test: `let _trace = trace_init();`.
///
/// The project installs its own tracing subscriber; this support code deliberately adds none, so the
/// guard is empty. Keeping the call in every test leaves one place to hook logging in later.
pub(crate) fn trace_init() -> TraceGuard {
    TraceGuard(())
}

/// Polls `check` every 20 ms until it is true or `limit` passes; returns how long it took.
pub(crate) async fn eventually(
    limit: Duration,
    mut check: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The wall clock in Unix seconds.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// === clients of the library under test ===

/// A token-service HTTP client with `options`, trusting the system roots.
pub(crate) fn token_http_client(options: &HttpClientOptions) -> TokenHttpClient {
    let tls = aml_auth_proxy::tls::client_config(&[]).unwrap();
    TokenHttpClient::new(Arc::new(tls), options)
}

/// An Entra ID client of the authority host at `base_url` (e.g. a mock's), with the default HTTP options.
pub(crate) fn entra_client(base_url: &str) -> EntraClient {
    entra_client_with(base_url, &HttpClientOptions::default())
}

/// An Entra ID client of the authority host at `base_url`, with `options`.
pub(crate) fn entra_client_with(base_url: &str, options: &HttpClientOptions) -> EntraClient {
    let origin = aml_auth_proxy::origin::authority_origin(base_url).unwrap();
    EntraClient::new(token_http_client(options), origin)
}

// === plain-HTTP client helpers (for talking to the proxy) ===

/// A pooled plain-HTTP client (HTTP/1.1), e.g. for requests to the proxy under test.
pub(crate) fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A plain-HTTP/2 client with prior knowledge (h2c), as load generators use: every request made through one
/// client (and its clones) is a stream on the same single connection.
pub(crate) fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// `GET url` over plain HTTP; returns the status, headers and whole body.
pub(crate) async fn get(url: &str) -> (StatusCode, HeaderMap, Bytes) {
    request(Method::GET, url, &[], Bytes::new()).await
}

/// Sends one request over plain HTTP with the given extra headers and body; returns the status, headers
/// and whole body. Panics if the request fails at the transport level.
pub(crate) async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Bytes) {
    request_via(&http_client(), method, url, headers, body).await
}

/// Like [`request`], through `client` (e.g. a pooled client reused across requests, or [`h2_client`]).
pub(crate) async fn request_via(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Bytes) {
    let req = build_request(
        method,
        url.parse().expect("valid URL"),
        headers,
        body.into(),
    );
    let resp = client.request(req).await.expect("HTTP request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("read response body").to_bytes();
    (parts.status, parts.headers, body)
}

/// A burst of `connections × streams` concurrent `GET url`s over HTTP/2 with prior knowledge: `connections`
/// clients ([`h2_client`], one connection each), each carrying `streams` requests at once. Every request is
/// its own task, so a multi-thread runtime spreads them over its workers. Returns every answer (in no
/// particular order) once all have completed.
pub(crate) async fn h2_burst(
    url: &str,
    connections: usize,
    streams: usize,
) -> Vec<(StatusCode, HeaderMap, Bytes)> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let client = h2_client();
        for _ in 0..streams {
            let (client, url) = (client.clone(), url.to_owned());
            tasks.spawn(async move { request_via(&client, Method::GET, &url, &[], "").await });
        }
    }
    let mut answers = Vec::with_capacity(connections * streams);
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.expect("burst request task panicked"));
    }
    answers
}

/// Parses a JSON body, showing the body if it is not JSON.
pub(crate) fn json_body(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// Checks a proxy-generated error answer: `status`, `content-type: application/json`,
/// `x-aml-auth-proxy-error: <code>` and a body `{"error": {"code": <code>, "message": <non-empty>, …}}`.
/// Returns the `error` object.
pub(crate) fn expect_proxy_error(
    answer: &(StatusCode, HeaderMap, Bytes),
    status: StatusCode,
    code: &str,
) -> serde_json::Value {
    let (got, headers, body) = answer;
    let text = String::from_utf8_lossy(body);
    assert_eq!(*got, status, "status; body: {text}");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert!(
        header("content-type").is_some_and(|v| v.starts_with("application/json")),
        "content-type {:?}; body: {text}",
        header("content-type")
    );
    assert_eq!(header("x-aml-auth-proxy-error"), Some(code), "body: {text}");
    let error = json_body(body)["error"].clone();
    assert_eq!(error["code"], code, "body: {text}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message; body: {text}"
    );
    error
}

/// The `Retry-After` header in whole seconds (panics if it is missing or not a number).
pub(crate) fn retry_after_secs(headers: &HeaderMap) -> u64 {
    headers
        .get(http::header::RETRY_AFTER)
        .unwrap_or_else(|| panic!("no Retry-After in {headers:?}"))
        .to_str()
        .expect("Retry-After is text")
        .parse()
        .expect("Retry-After is a number of seconds")
}

fn build_request(
    method: Method,
    uri: Uri,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    req
}

// === server plumbing shared by the mocks ===

/// Clone of the signal that tells every task of one mock server to stop.
///
/// The matching sender lives in the server's [`ServerHandle`]; dropping the handle drops the sender, and
/// every task spawned through [`Shutdown::spawn`] (connections, HTTP/2 streams, body producers) ends at its
/// next await point. It is also the hyper executor of the server, so HTTP/2 stream tasks obey it too.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown(watch::Receiver<()>);

impl Shutdown {
    /// Resolves once the server's handle has been dropped.
    pub(crate) async fn wait(mut self) {
        // Nothing is ever sent, so `changed` only returns (with an error) once the sender is gone.
        let _ = self.0.changed().await;
    }

    /// Spawns `fut` on the current runtime; it is cancelled when the server shuts down.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let stop = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = fut => {}
                () = stop.wait() => {}
            }
        });
    }
}

impl<F> hyper::rt::Executor<F> for Shutdown
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.spawn(fut);
    }
}

/// A bound listener whose address is known before anything is served.
pub(crate) struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    stop_tx: watch::Sender<()>,
    stop: Shutdown,
}

/// How a [`Server`] speaks to its clients.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServeOptions {
    /// Serve TLS with this config (its ALPN list decides what clients may negotiate); plain TCP if `None`.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Refuse HTTP/2 (even with prior knowledge); serve HTTP/1.x only.
    pub(crate) http1_only: bool,
    /// Close every HTTP/1 connection after its first response (`Connection: close`).
    pub(crate) no_keep_alive: bool,
}

/// Owns a running mock server: dropping it stops the server and everything it spawned.
#[derive(Debug)]
pub(crate) struct ServerHandle {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    tls_failures: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    // Dropped with the handle, which resolves every `Shutdown::wait`.
    _stop_tx: watch::Sender<()>,
}

impl Server {
    /// Binds `127.0.0.1:0`.
    pub(crate) async fn bind() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let (stop_tx, stop_rx) = watch::channel(());
        Self {
            listener,
            addr,
            stop_tx,
            stop: Shutdown(stop_rx),
        }
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shutdown signal of this server, for handlers that wait or spawn.
    pub(crate) fn shutdown(&self) -> Shutdown {
        self.stop.clone()
    }

    /// Starts accepting connections and serving each request with `handler`. A handler that returns
    /// `Err` makes hyper drop the connection (HTTP/1) or reset the stream (HTTP/2) without a response.
    pub(crate) fn spawn<H, Fut>(self, options: ServeOptions, handler: H) -> ServerHandle
    where
        H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<BoxBody>, BoxError>> + Send + 'static,
    {
        let Self {
            listener,
            addr,
            stop_tx,
            stop,
        } = self;
        let tls_failures = Arc::new(AtomicUsize::new(0));
        let failures = tls_failures.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let tls = options.tls.map(tokio_rustls::TlsAcceptor::from);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _peer)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let conn = serve_connection(
                    tcp,
                    tls.clone(),
                    options.http1_only,
                    options.no_keep_alive,
                    handler.clone(),
                    stop.clone(),
                    failures.clone(),
                );
                stop.spawn(conn);
            }
        });
        ServerHandle {
            addr,
            accept,
            tls_failures,
            connections,
            _stop_tx: stop_tx,
        }
    }
}

async fn serve_connection<H, Fut>(
    tcp: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    http1_only: bool,
    no_keep_alive: bool,
    handler: H,
    stop: Shutdown,
    tls_failures: Arc<AtomicUsize>,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<BoxBody>, BoxError>> + Send + 'static,
{
    let service = hyper::service::service_fn(handler);
    let mut builder = hyper_util::server::conn::auto::Builder::new(stop);
    if http1_only {
        builder = builder.http1_only();
    }
    // Room for the headers the proxy adds (e.g. X-Forwarded-For) on top of a caller's 100.
    builder.http1().max_headers(128);
    if no_keep_alive {
        builder.http1().keep_alive(false);
    }
    // Connection errors (client went away, handler asked to drop the connection…) are expected in tests.
    match tls {
        None => {
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        }
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
            Err(_) => {
                tls_failures.fetch_add(1, Ordering::SeqCst);
            }
        },
    }
}

impl ServerHandle {
    /// The bound address (`127.0.0.1:<port>`).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many TLS handshakes failed (e.g. the client refused the certificate).
    pub(crate) fn tls_failures(&self) -> usize {
        self.tls_failures.load(Ordering::SeqCst)
    }

    /// How many connections were accepted.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

// === bodies and responses ===

/// A complete in-memory body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A response with a JSON body and `Content-Type: application/json`.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<BoxBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A body fed by a channel: each `Ok` item is a data frame, an `Err` item aborts the body (hyper then
/// drops the HTTP/1 connection or resets the HTTP/2 stream), and the body ends when the sender is dropped.
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl ChannelBody {
    /// A body and the sender that feeds it. The channel holds `capacity` frames.
    pub(crate) fn channel(capacity: usize) -> (mpsc::Sender<Result<Bytes, BoxError>>, BoxBody) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Self { rx }.boxed())
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|res| res.map(Frame::data)))
    }
}

/// A body that repeats `chunk` until `len` bytes have been produced, without allocating them up front.
/// Its length is not announced, so HTTP/1.1 sends it chunked.
pub(crate) struct RepeatBody {
    chunk: Bytes,
    remaining: usize,
}

impl RepeatBody {
    /// `len` bytes made of `chunk` repeated (the last copy truncated).
    pub(crate) fn new(chunk: Bytes, len: usize) -> Self {
        assert!(!chunk.is_empty(), "chunk must not be empty");
        Self {
            chunk,
            remaining: len,
        }
    }
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len());
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        // Deliberately not exact: the point is a streamed body of unannounced size.
        SizeHint::new()
    }
}

// === deterministic data and hashing ===

/// 64-bit FNV-1a, incremental: `Fnv1a::new()`, `update` with each piece, then `finish`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// The hash of nothing.
    pub(crate) fn new() -> Self {
        Self(Self::OFFSET_BASIS)
    }

    /// Feeds `bytes`.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// The hash so far.
    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

/// 64-bit FNV-1a of `bytes`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::new();
    h.update(bytes);
    h.finish()
}

/// A hash as the mocks print it: 16 lower-case hex digits.
pub(crate) fn fnv_hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// `n` deterministic pseudo-random bytes (SplitMix64 from a fixed seed): the same `n` always gives the
/// same bytes, and a prefix of a longer output equals the shorter output.
pub(crate) fn pseudo_random_bytes(n: usize) -> Vec<u8> {
    let mut state: u64 = 0x5eed_f0a1_1b0d_1e55;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Reads a whole request body while hashing it; returns the bytes and their [`fnv1a64`].
pub(crate) async fn read_body(body: Incoming) -> Result<(Bytes, u64), BoxError> {
    read_body_and_trailers(body).await.map(|(b, h, _)| (b, h))
}

/// Like [`read_body`], also returning the trailers, if any were sent.
pub(crate) async fn read_body_and_trailers(
    mut body: Incoming,
) -> Result<(Bytes, u64, Option<HeaderMap>), BoxError> {
    let mut buf = bytes::BytesMut::new();
    let mut hash = Fnv1a::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(data) => {
                hash.update(&data);
                buf.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    Ok((buf.freeze(), hash.finish(), trailers))
}
