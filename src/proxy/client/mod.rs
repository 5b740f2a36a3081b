//! The upstream client: rustls (system roots plus `tls.extra_ca_file`), a connect timeout, no redirect following,
//! no link-local destinations, and a connection strategy built for a proxy's hot path.
//!
//! Each upstream origin (scheme and authority, shared by the routes that name it) has an [`Origin`]:
//! - **HTTP/1.1** exchanges with a body already in hand and a plain answer are the proxy's own (`exchange`);
//!   every other one is hyper's, on the same connections (a connection hyper has taken stays hyper's).
//! - **HTTP/1.1** connections live in a per-origin idle list, most recently used first. A caller's HTTP/1
//!   connection additionally keeps the upstream connection it last used in its [`Affinity`] slot: the next
//!   request on that caller connection takes it back without touching the shared list, and when the caller
//!   connection closes the upstream connection returns to the idle list for others. So a keep-alive caller costs
//!   no lock and no task per request, and callers that open a connection per request still reuse upstream
//!   connections.
//! - **HTTP/2** (when the upstream's ALPN picks it) is one multiplexed connection per origin, shared.
//! - A request that finds a reused HTTP/1 connection closed before anything was written is sent once more on a
//!   fresh connection (the keep-alive race); one that was written is never resent.
//! - At most [`MAX_HELD_PER_ORIGIN`] connections per origin wait in caller slots; beyond that a caller's
//!   connection goes back to the idle list after each exchange, so a thousand idle keep-alive callers do not pin
//!   a thousand upstream connections (and their buffers).
//! - Idle connections older than [`IDLE_TIMEOUT`] are closed when the list is next used; at most
//!   [`MAX_IDLE_PER_ORIGIN`] are kept.
//! - WebSocket handshakes get a fresh HTTP/1.1-only connection, which is never pooled (it becomes the tunnel).
//!
//! This client replaced hyper-util's legacy client and its pool. Measured with `benches/profile/callgrind.sh`
//! (user-space instructions per proxied request), the proxy costs 83.5k instructions per request with it (before
//! the logging work: `logging::writer`, `logging::json`). The cap on caller slots bounds memory: with 1,000 idle
//! keep-alive callers, it brought the proxy's RSS from 49.8 MiB to 35.2 MiB.

pub mod differential;
mod exchange;
mod head;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

pub use self::exchange::OwnAnswer;
use self::exchange::{Conn, ExchangeError, Sent};
use super::BoxError;
use super::body::{BodyError, UpstreamBody};
use super::resolve::NoLinkLocal;
use crate::lock;
use crate::server::http1::Prefixed;
use crate::server::per_core::runtime_key;

/// Idle HTTP/1.1 connections unused for longer are closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a request waits for its caller connection's upstream connection to finish the previous exchange
/// before it looks elsewhere (usually it is a matter of microseconds; a new connection costs a handshake).
pub const READY_WAIT: Duration = Duration::from_millis(100);

/// Most idle HTTP/1.1 connections kept per origin in the shared list.
pub const MAX_IDLE_PER_ORIGIN: usize = 256;

/// Most HTTP/1.1 connections per origin kept in caller connections' [`Affinity`] slots. Each held connection
/// costs its socket (and hyper's about 21 KiB of buffers and state, once hyper has taken it) for as long as its
/// caller connection stays open, idle or not; 32 keeps a busy sidecar's callers on their own connections while 1,000 idle keep-alive callers pin at most
/// 32 (with 128, the benchmark's 1,000 idle callers held 227 upstream connections in all, 9.1 KiB per caller).
pub const MAX_HELD_PER_ORIGIN: usize = 32;

/// The read and write buffer limit of an upstream HTTP/1.1 connection: the largest response head accepted, and the
/// largest body chunk read at once. With pacing (`body`) it bounds what a download whose caller stopped reading
/// holds in the proxy: two reads, in buffers of at most twice this size (hyper's read buffer grows by doubling).
/// hyper's default (about 400 KiB) made that more than a megabyte per stalled download; smaller reads cost more
/// CPU per byte on bulk transfers.
pub const HTTP1_BUFFER: usize = 64 * 1024;

type Connector = HttpsConnector<HttpConnector<NoLinkLocal>>;
type H1 = http1::SendRequest<UpstreamBody>;
type H2 = http2::SendRequest<UpstreamBody>;

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (DNS, TCP, TLS).
    Connect(BoxError),
    /// The connection failed while sending the request or reading the response head.
    Request(hyper::Error),
    /// The connection of the proxy's own exchange failed while sending the request or reading the answer head.
    Io(std::io::Error),
}

/// An upstream's answer body: read by hyper's client, or by the proxy's own exchange.
pub enum Answer {
    /// Read by hyper's client.
    Hyper(Incoming),
    /// Read by the proxy's own exchange.
    Own(OwnAnswer),
}

/// Builds [`Origin`]s: the connectors, shared by every origin.
#[derive(Clone)]
pub struct UpstreamClient {
    shared: Arc<Shared>,
    /// Not in [`Shared`]: origins hold that, so a client that goes (a reload) takes its origins and their idle
    /// connections with it instead of keeping them in a cycle.
    origins: Arc<Mutex<Origins>>,
}

/// A client's origins, by scheme and authority.
type Origins = HashMap<(Scheme, Authority), Arc<Origin>>;

/// What every origin of a client uses.
struct Shared {
    /// HTTP/2 or HTTP/1.1 by ALPN.
    pooled: Connector,
    /// HTTP/1.1 only (WebSocket handshakes).
    http1: Connector,
    /// Whether HTTP/1.1 exchanges may be the proxy's own (else hyper's client makes them all).
    own_exchange: bool,
}

/// One upstream origin and its connections.
pub struct Origin {
    shared: Arc<Shared>,
    scheme: Scheme,
    authority: Authority,
    /// `scheme://authority/`, what the connectors are called with.
    connect_uri: Uri,
    /// The `Host` header of HTTP/1.1 requests (port omitted when it is the scheme's default).
    host: HeaderValue,
    idle: Mutex<VecDeque<Idle>>,
    /// Connections held in [`Affinity`] slots (at most [`MAX_HELD_PER_ORIGIN`]).
    held: AtomicUsize,
    h2: Mutex<Option<H2>>,
    /// What the upstream's ALPN picked last: [`UNKNOWN`], [`HTTP1`] or [`HTTP2`].
    protocol: AtomicU8,
    /// The connect in progress that requests wait for while the protocol may be HTTP/2 (see [`Origin::connect`]).
    connecting: Mutex<Option<watch::Receiver<Option<Outcome>>>>,
}

const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// How a connect that others waited for ended.
#[derive(Clone)]
enum Outcome {
    H2(H2),
    Http1,
    Failed(Arc<str>),
}

/// An HTTP/1.1 connection between exchanges: the proxy's own, or hyper's.
enum Pooled {
    Own(Conn),
    Hyper(H1),
}

struct Idle {
    conn: Pooled,
    since: Instant,
    /// The runtime whose task drives the connection ([`crate::server::per_core::runtime_key`]): only requests
    /// served there take it, so a request never wakes another proxy thread.
    home: usize,
}

/// A caller connection's slot for the upstream HTTP/1.1 connection it last used (see the module docs). Cloned
/// into each request of the connection; when the last clone goes, the upstream connection goes back to its
/// origin's idle list.
#[derive(Clone, Default)]
pub struct Affinity(Arc<Slot>);

#[derive(Default)]
struct Slot(Mutex<Option<Held>>);

struct Held {
    origin: Arc<Origin>,
    conn: Pooled,
}

/// Where an own exchange's connection goes once its answer is whole: the caller connection's slot, else the
/// origin's idle list.
pub(crate) struct Home {
    origin: Arc<Origin>,
    affinity: Option<Affinity>,
}

// === impl UpstreamError ===

impl UpstreamError {
    /// True when no connection could be made.
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect(_) => f.write_str("connection failed"),
            UpstreamError::Request(_) | UpstreamError::Io(_) => f.write_str("request failed"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect(e) => Some(e.as_ref()),
            UpstreamError::Request(e) => Some(e),
            UpstreamError::Io(e) => Some(e),
        }
    }
}

/// A connection picked for one request.
enum Picked {
    H1 { conn: Pooled, reused: bool },
    H2(H2),
}

// === impl UpstreamClient ===

impl UpstreamClient {
    /// A client trusting `tls`'s roots, with `connect_timeout` for TCP connects. With `own_exchange`, HTTP/1.1
    /// exchanges with a body in hand and a plain answer are the proxy's own (`exchange`).
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        own_exchange: bool,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                pooled: connector(Arc::clone(&tls), connect_timeout, true),
                http1: connector(tls, connect_timeout, false),
                own_exchange,
            }),
            origins: Arc::default(),
        }
    }

    /// The origin `scheme://authority`, shared with every other route that names it.
    pub fn origin(&self, scheme: &Scheme, authority: &Authority) -> Arc<Origin> {
        let mut origins = lock(&self.origins);
        let key = (scheme.clone(), authority.clone());
        Arc::clone(
            origins
                .entry(key)
                .or_insert_with(|| Arc::new(Origin::new(&self.shared, scheme, authority))),
        )
    }
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

/// HTTP/1.1 connection settings: [`HTTP1_BUFFER`].
fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.max_buf_size(HTTP1_BUFFER);
    builder
}

fn connector(tls: Arc<rustls::ClientConfig>, connect_timeout: Duration, http2: bool) -> Connector {
    let mut http = HttpConnector::new_with_resolver(NoLinkLocal::new());
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1();
    if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.wrap_connector(http)
    }
}

// === impl Origin ===

impl Origin {
    fn new(shared: &Arc<Shared>, scheme: &Scheme, authority: &Authority) -> Self {
        let default_port = if *scheme == Scheme::HTTP { 80 } else { 443 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => authority.as_str().to_owned(),
            _ => authority.host().to_owned(),
        };
        let connect_uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        Self {
            shared: Arc::clone(shared),
            scheme: scheme.clone(),
            authority: authority.clone(),
            connect_uri,
            host: HeaderValue::try_from(host).unwrap_or(HeaderValue::from_static("localhost")),
            idle: Mutex::new(VecDeque::new()),
            held: AtomicUsize::new(0),
            h2: Mutex::new(None),
            protocol: AtomicU8::new(UNKNOWN),
            connecting: Mutex::new(None),
        }
    }

    /// The upstream's host name.
    pub fn host_name(&self) -> &str {
        self.authority.host()
    }

    /// Sends `req` (its URI in origin form: path and query) and waits for the response head. `affinity` is the
    /// caller connection's slot, for requests that arrived over HTTP/1.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
        affinity: Option<&Affinity>,
    ) -> Result<Response<Answer>, UpstreamError> {
        let picked = match self.shared_h2() {
            Some(h2) => Picked::H2(h2),
            None => {
                let held = match affinity {
                    Some(a) => a.take(self).await,
                    None => None,
                };
                match held.or_else(|| self.checkout()) {
                    Some(conn) => Picked::H1 { conn, reused: true },
                    // Boxed: connecting is the cold path, and its future is large.
                    None => Box::pin(self.connect()).await?,
                }
            }
        };
        let req = match self.send_on(picked, req, affinity).await {
            Ok(response) => return Ok(response),
            Err(Retry::No(e)) => return Err(e),
            Err(Retry::Unsent(req)) => *req,
        };
        // A reused connection had closed before the request was written: once more, on a fresh connection.
        let picked = Box::pin(self.open()).await?;
        match Box::pin(self.send_on(picked, req, affinity)).await {
            Ok(response) => Ok(response),
            Err(Retry::No(e)) => Err(e),
            Err(Retry::Unsent(_)) => Err(UpstreamError::Connect(
                "the upstream closed a new connection before the request was sent".into(),
            )),
        }
    }

    async fn send_on(
        self: &Arc<Self>,
        picked: Picked,
        mut req: Request<UpstreamBody>,
        affinity: Option<&Affinity>,
    ) -> Result<Response<Answer>, Retry> {
        let (conn, reused) = match picked {
            Picked::H2(mut sender) => {
                *req.uri_mut() = self.absolute(req.uri());
                return match sender.send_request(req).await {
                    Ok(response) => Ok(response.map(Answer::Hyper)),
                    Err(e) => Err(Retry::No(UpstreamError::Request(e))),
                };
            }
            Picked::H1 { conn, reused } => (conn, reused),
        };
        let sender = match conn {
            Pooled::Hyper(sender) => sender,
            Pooled::Own(conn) => match req.body_mut().take_in_hand() {
                Some(body) if exchange::writes_here(req.headers(), body.len()) => {
                    return self.exchange(conn, reused, req, body, affinity).await;
                }
                in_hand => {
                    if let Some(body) = in_hand {
                        *req.body_mut() = UpstreamBody::full(body);
                    }
                    // Boxed, as below: hyper's handshake and exchange futures are large, and this future is
                    // moved and boxed on every request that the own exchange serves.
                    Box::pin(hyper_h1(conn.into_hyper_io()))
                        .await
                        .map_err(|e| Retry::No(UpstreamError::Request(e)))?
                }
            },
        };
        req.headers_mut().insert(HOST, self.host.clone());
        Box::pin(self.send_with_hyper(sender, reused, req, affinity)).await
    }

    /// hyper's client sends `req` on `sender`'s connection.
    async fn send_with_hyper(
        self: &Arc<Self>,
        mut sender: H1,
        reused: bool,
        req: Request<UpstreamBody>,
        affinity: Option<&Affinity>,
    ) -> Result<Response<Answer>, Retry> {
        let response = sender.try_send_request(req);
        // Usable again once this exchange is over: back where the next request will look first.
        self.keep(Pooled::Hyper(sender), affinity);
        match response.await {
            Ok(response) => Ok(response.map(Answer::Hyper)),
            Err(mut e) => match e.take_message() {
                Some(req) if reused => Err(Retry::Unsent(Box::new(req))),
                _ => Err(Retry::No(UpstreamError::Request(e.into_error()))),
            },
        }
    }

    /// The proxy's own exchange of `req` with its whole `body` on `conn`; an answer that is not plain is read by
    /// hyper's client (module docs of [`exchange`]).
    async fn exchange(
        self: &Arc<Self>,
        conn: Conn,
        reused: bool,
        req: Request<UpstreamBody>,
        body: Bytes,
        affinity: Option<&Affinity>,
    ) -> Result<Response<Answer>, Retry> {
        let (parts, rest) = req.into_parts();
        let mut head = Request::from_parts(parts, ());
        let home = Home {
            origin: Arc::clone(self),
            affinity: affinity.cloned(),
        };
        let sent = conn
            .exchange(&mut head, body.clone(), &self.host, home)
            .await;
        match sent {
            Ok(Sent::Answer(response)) => Ok(response.map(Answer::Own)),
            Ok(Sent::ForHyper(conn, read)) => {
                // hyper's request is swallowed: the upstream has the real one, and answers it.
                let io = TokioIo::new(Prefixed::replaying(
                    read,
                    TokioIo::new(conn.into_hyper_io()),
                ));
                // Boxed: the cold path, whose futures would make every exchange's future larger.
                let sender = Box::pin(hyper_h1(io))
                    .await
                    .map_err(|e| Retry::No(UpstreamError::Request(e)))?;
                let mut stand_in = Request::new(UpstreamBody::empty());
                *stand_in.method_mut() = head.method().clone();
                Box::pin(self.send_with_hyper(sender, false, stand_in, affinity)).await
            }
            Err(ExchangeError::Unsent(_)) if reused => {
                let (parts, ()) = head.into_parts();
                drop(rest);
                Err(Retry::Unsent(Box::new(Request::from_parts(
                    parts,
                    UpstreamBody::full(body),
                ))))
            }
            Err(ExchangeError::Unsent(e) | ExchangeError::Failed(e)) => {
                Err(Retry::No(UpstreamError::Io(e)))
            }
        }
    }

    /// Keeps a connection whose exchange has begun: in the caller connection's slot, else back in the origin.
    fn keep(self: &Arc<Self>, conn: Pooled, affinity: Option<&Affinity>) {
        match affinity {
            Some(a) => a.put(self, conn),
            None => self.release(conn),
        }
    }

    /// Sends a WebSocket handshake on a fresh HTTP/1.1 connection that can be upgraded.
    pub async fn send_upgrade(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Answer>, UpstreamError> {
        let io = self
            .shared
            .http1
            .clone()
            .oneshot(self.connect_uri.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let (mut sender, conn) = http1_builder()
            .handshake(io)
            .await
            .map_err(UpstreamError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        req.headers_mut().insert(HOST, self.host.clone());
        sender
            .send_request(req)
            .await
            .map(|response| response.map(Answer::Hyper))
            .map_err(UpstreamError::Request)
    }

    fn shared_h2(&self) -> Option<H2> {
        let mut h2 = lock(&self.h2);
        match &*h2 {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                *h2 = None;
                None
            }
            None => None,
        }
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self) -> Option<Pooled> {
        let mut idle = lock(&self.idle);
        let now = Instant::now();
        // Entries of other runtimes are skipped, not popped, so closed or expired ones anywhere in the list go
        // here; they would otherwise hold places under MAX_IDLE_PER_ORIGIN until they reached the front. (Own
        // connections are looked at when picked: that reads their socket.)
        idle.retain(|entry| {
            !entry.conn.is_known_closed() && now.duration_since(entry.since) < IDLE_TIMEOUT
        });
        let home = runtime_key();
        loop {
            let at = idle
                .iter()
                .rposition(|entry| entry.home == home && entry.conn.is_ready())?;
            let mut conn = idle.remove(at)?.conn;
            if !conn.is_closed() {
                return Some(conn);
            }
        }
    }

    /// Puts a connection back: into the idle list when it is ready; when it is still busy, once it is.
    fn release(self: &Arc<Self>, conn: Pooled) {
        let sender = match conn {
            Pooled::Own(conn) => return self.push_idle(Pooled::Own(conn)),
            Pooled::Hyper(sender) => sender,
        };
        if sender.is_ready() {
            self.push_idle(Pooled::Hyper(sender));
        } else if !sender.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let origin = Arc::clone(self);
            let mut sender = sender;
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    origin.push_idle(Pooled::Hyper(sender));
                }
            });
        }
    }

    fn push_idle(&self, conn: Pooled) {
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        while idle.front().is_some_and(|e| {
            now.duration_since(e.since) >= IDLE_TIMEOUT || e.conn.is_known_closed()
        }) {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE_PER_ORIGIN {
            idle.push_back(Idle {
                conn,
                since: now,
                home: runtime_key(),
            });
        }
    }

    /// A connection for a request that found none to reuse. While the upstream may speak HTTP/2 (not yet known,
    /// or known to), concurrent requests wait for one connect and share its connection instead of each opening
    /// one; if it fails, they fail with it. Once the upstream is known to pick HTTP/1.1, each connects at once.
    async fn connect(self: &Arc<Self>) -> Result<Picked, UpstreamError> {
        if self.protocol.load(Ordering::Relaxed) == HTTP1 {
            return self.open().await;
        }
        let joined = {
            let mut slot = lock(&self.connecting);
            match &*slot {
                // A leader that went away without an outcome (its request was cancelled) leads nothing.
                Some(rx) if rx.has_changed().is_ok() => Ok(rx.clone()),
                _ => {
                    // A leader that finished since this request last looked left its HTTP/2 connection (it is
                    // stored before the slot is cleared): use it rather than open a second one.
                    if let Some(h2) = self.shared_h2() {
                        return Ok(Picked::H2(h2));
                    }
                    let (tx, rx) = watch::channel(None);
                    *slot = Some(rx);
                    Err(tx)
                }
            }
        };
        let mut joined = match joined {
            Ok(rx) => rx,
            Err(tx) => return self.lead(tx).await,
        };
        let outcome = match joined.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        match outcome {
            Some(Outcome::H2(sender)) => Ok(Picked::H2(sender)),
            Some(Outcome::Failed(why)) => Err(UpstreamError::Connect(why.to_string().into())),
            Some(Outcome::Http1) | None => match self.checkout() {
                Some(conn) => Ok(Picked::H1 { conn, reused: true }),
                None => self.open().await,
            },
        }
    }

    /// Opens the connection others wait for, and tells them how it went.
    async fn lead(
        self: &Arc<Self>,
        tx: watch::Sender<Option<Outcome>>,
    ) -> Result<Picked, UpstreamError> {
        let leading = Leading { origin: self };
        let result = self.open().await;
        let outcome = match &result {
            Ok(Picked::H2(sender)) => Outcome::H2(sender.clone()),
            Ok(Picked::H1 { .. }) => Outcome::Http1,
            Err(UpstreamError::Connect(e)) => {
                Outcome::Failed(crate::error_chain(e.as_ref()).into())
            }
            Err(UpstreamError::Request(e)) => Outcome::Failed(crate::error_chain(e).into()),
            Err(UpstreamError::Io(e)) => Outcome::Failed(crate::error_chain(e).into()),
        };
        drop(leading);
        tx.send_replace(Some(outcome));
        result
    }

    /// A new connection: HTTP/2 when the upstream's ALPN chose it (then shared), else HTTP/1.1.
    async fn open(self: &Arc<Self>) -> Result<Picked, UpstreamError> {
        let io = self
            .shared
            .pooled
            .clone()
            .oneshot(self.connect_uri.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        if io.connected().is_negotiated_h2() {
            self.protocol.store(HTTP2, Ordering::Relaxed);
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20))
                .handshake(io)
                .await
                .map_err(UpstreamError::Request)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
                }
            });
            let mut shared = lock(&self.h2);
            if shared.as_ref().is_none_or(|s| s.is_closed()) {
                *shared = Some(sender.clone());
            }
            return Ok(Picked::H2(sender));
        }
        self.protocol.store(HTTP1, Ordering::Relaxed);
        let conn = if self.shared.own_exchange {
            Pooled::Own(Conn::new(io))
        } else {
            Pooled::Hyper(hyper_h1(io).await.map_err(UpstreamError::Request)?)
        };
        Ok(Picked::H1 {
            conn,
            reused: false,
        })
    }

    /// `uri` (origin form) made absolute on this origin, as HTTP/2 needs.
    fn absolute(&self, uri: &Uri) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = uri.path_and_query().cloned();
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// Clears the origin's connect-in-progress slot when the leading connect ends, however it ends.
struct Leading<'a> {
    origin: &'a Origin,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        *lock(&self.origin.connecting) = None;
    }
}

enum Retry {
    /// The request was (or may have been) written: not sent again.
    No(UpstreamError),
    /// Nothing was written on a reused connection.
    Unsent(Box<Request<UpstreamBody>>),
}

// === impl Affinity ===

impl Affinity {
    /// The slot's connection if it is to `origin` and idle. The caller's previous exchange has ended on its side,
    /// but the upstream connection may still be finishing it (it becomes ready a moment after the last body
    /// bytes): it gets up to [`READY_WAIT`] before the request goes elsewhere and it goes back to the origin.
    async fn take(&self, origin: &Arc<Origin>) -> Option<Pooled> {
        let held = lock(&self.0.0).take_if(|h| Arc::ptr_eq(&h.origin, origin))?;
        origin.held.fetch_sub(1, Ordering::Relaxed);
        let mut sender = match held.conn {
            // An own connection is in the slot only once its exchange is over.
            Pooled::Own(mut conn) => return (!conn.is_closed()).then_some(Pooled::Own(conn)),
            Pooled::Hyper(sender) => sender,
        };
        if sender.is_ready() {
            return Some(Pooled::Hyper(sender));
        }
        if !sender.is_closed()
            && let Ok(Ok(())) = Box::pin(tokio::time::timeout(READY_WAIT, sender.ready())).await
        {
            return Some(Pooled::Hyper(sender));
        }
        origin.release(Pooled::Hyper(sender));
        None
    }

    /// Keeps `sender` (to `origin`) for the connection's next request, unless the origin already has
    /// [`MAX_HELD_PER_ORIGIN`] in slots (then it goes back to the origin); a connection the slot held before goes
    /// back to its origin.
    fn put(&self, origin: &Arc<Origin>, conn: Pooled) {
        if origin.held.fetch_add(1, Ordering::Relaxed) >= MAX_HELD_PER_ORIGIN {
            origin.held.fetch_sub(1, Ordering::Relaxed);
            origin.release(conn);
            return;
        }
        let previous = lock(&self.0.0).replace(Held {
            origin: Arc::clone(origin),
            conn,
        });
        if let Some(h) = previous {
            h.origin.held.fetch_sub(1, Ordering::Relaxed);
            h.origin.release(h.conn);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let held = match self.0.get_mut() {
            Ok(held) => held.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(h) = held {
            h.origin.held.fetch_sub(1, Ordering::Relaxed);
            h.origin.release(h.conn);
        }
    }
}

// === impl Home ===

impl Home {
    fn take_back(self, conn: Conn) {
        self.origin.keep(Pooled::Own(conn), self.affinity.as_ref());
    }
}

// === impl Pooled ===

impl Pooled {
    /// Closed, as far as can be told without reading its socket.
    fn is_known_closed(&self) -> bool {
        match self {
            Pooled::Own(_) => false,
            Pooled::Hyper(sender) => sender.is_closed(),
        }
    }

    /// Ready for a request, as far as can be told without reading its socket.
    fn is_ready(&self) -> bool {
        match self {
            Pooled::Own(_) => true,
            Pooled::Hyper(sender) => sender.is_ready(),
        }
    }

    /// Closed: an own connection's socket is looked at.
    fn is_closed(&mut self) -> bool {
        match self {
            Pooled::Own(conn) => conn.is_closed(),
            Pooled::Hyper(sender) => sender.is_closed(),
        }
    }
}

/// hyper's client on `io`, its connection driven by a task of its own.
async fn hyper_h1<IO>(io: IO) -> Result<H1, hyper::Error>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1_builder().handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

// === impl Answer ===

impl From<Incoming> for Answer {
    fn from(body: Incoming) -> Self {
        Answer::Hyper(body)
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Answer::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Answer::Own(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Hyper(body) => body.is_end_stream(),
            Answer::Own(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Answer::Hyper(body) => body.size_hint(),
            Answer::Own(body) => body.size_hint(),
        }
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Hyper(_) => f.write_str("Answer::Hyper"),
            Answer::Own(body) => fmt::Debug::fmt(body, f),
        }
    }
}

impl fmt::Debug for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Affinity").finish_non_exhaustive()
    }
}
