//! Accept loops: HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on one port, a header-read timeout that really
//! fires (hyper silently disables it without a timer), a deadline for every connection's first request (HTTP/2
//! too: [`first_bytes`]), a write-stall timeout for callers that stop reading ([`write_stall`]), and graceful
//! drain. On the proxy listener, plain HTTP/1.1 requests are served by the proxy's own connection loop
//! ([`http1`]); hyper serves everything else, from the first request the loop leaves to it.
//!
//! A listener is TCP or a Unix-domain socket ([`unix`]: mode 0600, peers checked by uid).

pub mod caller_body;
pub mod first_bytes;
pub mod http1;
pub mod per_core;
pub mod unix;
pub mod write_stall;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;
use tower::ServiceExt;
use tower::util::MapRequest;

pub use self::caller_body::CallerBody;
use self::first_bytes::FirstBytesDeadline;
use self::http1::{Handoff, Prefixed, Socket};
pub use self::per_core::serve_per_core;
pub use self::unix::{SharedUnixListener, UNIX_SOCKET_MODE, UnixSocketListener, bind_unix};
use self::write_stall::StallGuard;
use crate::config::Listen;
use crate::proxy::client_addr::WithClientAddr;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Time allowed for complete request headers (also closes idle keep-alive connections), and for a
    /// connection's first request to arrive, over HTTP/1 and HTTP/2.
    pub header_read_timeout: Duration,
    /// A connection whose socket accepts none of the bytes waiting for it for this long is closed.
    pub write_stall_timeout: Duration,
    /// Counts connections closed by the write-stall timeout.
    pub write_stalls: prometheus::IntCounter,
    /// Plain HTTP/1.1 requests are served by the proxy's own connection loop ([`http1`]); off, hyper serves
    /// every request.
    pub http1_loop: bool,
}

/// What a [`Server`] serves: a cloneable service of HTTP requests whose futures and bodies may move between tasks.
pub trait HttpService:
    tower::Service<
        http::Request<CallerBody>,
        Response = http::Response<Self::Body>,
        Future: Send + 'static,
        Error: std::error::Error + Send + Sync + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The response body.
    type Body: http_body::Body<Data: Send, Error: std::error::Error + Send + Sync + 'static>
        + Send
        + 'static;
}

impl<S, B> HttpService for S
where
    S: tower::Service<
            http::Request<CallerBody>,
            Response = http::Response<B>,
            Future: Send + 'static,
            Error: std::error::Error + Send + Sync + 'static,
        > + Clone
        + Send
        + 'static,
    B: http_body::Body<Data: Send, Error: std::error::Error + Send + Sync + 'static>
        + Send
        + 'static,
{
    type Body = B;
}

/// A bound listener for [`Server::serve`].
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-domain socket listener.
    Unix(UnixSocketListener),
}

/// Another descriptor of a [`Listener`]'s socket, not yet registered with a runtime: see [`Listener::share`].
#[derive(Debug)]
pub enum SharedListener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A Unix-domain socket listener.
    Unix(SharedUnixListener),
}

/// An accepted connection whose peer may be served.
enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream, u32),
}

/// Serves one service on one listener: see [`Server::serve`].
#[derive(Debug, Clone)]
pub struct Server<S> {
    service: S,
    options: ServerOptions,
}

/// The other end of a connection, for logs.
#[derive(Clone, Copy)]
enum Peer {
    Tcp(SocketAddr),
    Unix { uid: u32 },
}

// === impl Listener ===

impl Listener {
    /// Where this listener listens (a TCP address with its actual port, or the socket path).
    pub fn local(&self) -> Listen {
        match self {
            Listener::Tcp(l) => Listen::Tcp(
                l.local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            ),
            Listener::Unix(u) => Listen::Unix(u.path().to_owned()),
        }
    }

    /// Another descriptor of the same listening socket, for an accept loop on another runtime
    /// ([`SharedListener::register`]). Both accept from one queue; a Unix socket's file stays owned by `self`.
    pub fn share(&self) -> io::Result<SharedListener> {
        match self {
            Listener::Tcp(l) => Ok(SharedListener::Tcp(std::net::TcpListener::from(
                l.as_fd().try_clone_to_owned()?,
            ))),
            Listener::Unix(u) => u.share().map(SharedListener::Unix),
        }
    }

    /// The next connection to serve; `Ok(None)` when one was accepted and refused.
    async fn accept(&self) -> io::Result<Option<Accepted>> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(Some(Accepted::Tcp(stream, peer)))
            }
            Listener::Unix(u) => Ok(u
                .accept()
                .await?
                .map(|(stream, uid)| Accepted::Unix(stream, uid))),
        }
    }
}

// === impl SharedListener ===

impl SharedListener {
    /// Registers the descriptor with the runtime this is called on.
    pub fn register(self) -> io::Result<Listener> {
        match self {
            SharedListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l).map(Listener::Tcp)
            }
            SharedListener::Unix(u) => u.register().map(Listener::Unix),
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener::Tcp(listener)
    }
}

// === impl Peer ===

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix { uid } => write!(f, "unix uid {uid}"),
        }
    }
}

// === impl Server ===

impl<S: HttpService> Server<S> {
    /// A server for `service`, with `options` on every connection.
    pub fn new(service: S, options: ServerOptions) -> Self {
        Self { service, options }
    }

    /// Serves on `listener` until `stop` turns true, then stops accepting and lets open connections finish their
    /// in-flight requests (HTTP/1 gets `Connection: close`, HTTP/2 a GOAWAY). Returns once every connection has
    /// closed or `deadline` has passed, whichever comes first. A Unix socket's file is removed as soon as
    /// accepting stops.
    pub async fn serve(
        self,
        listener: Listener,
        mut stop: watch::Receiver<bool>,
        deadline: impl Future<Output = ()>,
    ) {
        let builder = Arc::new(hyper_builder(self.options.header_read_timeout));
        let graceful = GracefulShutdown::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => break,
            };
            match accepted {
                Ok(Some(Accepted::Tcp(stream, peer))) => {
                    self.spawn_connection(&builder, &graceful, &stop, stream, Peer::Tcp(peer));
                }
                Ok(Some(Accepted::Unix(stream, uid))) => {
                    self.spawn_connection(&builder, &graceful, &stop, stream, Peer::Unix { uid });
                }
                Ok(None) => {}
                Err(e) => accept_error(&e).await,
            }
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = deadline => tracing::warn!("drain deadline reached; closing the remaining connections"),
        }
    }

    /// Serves one connection under `graceful`, on its own task: plain HTTP/1.1 requests by the proxy's own loop
    /// (when on), the rest of the connection by hyper from the first request the loop leaves to it.
    fn spawn_connection<IO: Socket>(
        &self,
        builder: &Arc<auto::Builder<TokioExecutor>>,
        graceful: &GracefulShutdown,
        stop: &watch::Receiver<bool>,
        io: IO,
        peer: Peer,
    ) {
        let client_ip = match peer {
            Peer::Tcp(addr) => Some(addr.ip()),
            Peer::Unix { .. } => None,
        };
        let service = WithClientAddr::new(self.service.clone(), client_ip);
        let stalls = self.options.write_stalls.clone();
        let limit = self.options.write_stall_timeout;
        let io = StallGuard::new(
            io,
            limit,
            Box::new(move || {
                stalls.inc();
                tracing::warn!(
                    %peer,
                    write_stall_timeout_s = limit.as_secs_f64(),
                    "the caller accepted no response bytes within write_stall_timeout; connection closed"
                );
            }),
        );
        let watcher = graceful.watcher();
        let header_timeout = self.options.header_read_timeout;
        if !self.options.http1_loop {
            let handoff = Handoff {
                io,
                read: bytes::Bytes::new(),
                served: false,
            };
            tokio::spawn(serve_with_hyper(
                Arc::clone(builder),
                watcher,
                handoff,
                service,
                header_timeout,
                peer,
            ));
            return;
        }
        let connection = http1::Connection::new(io, service.clone(), header_timeout, stop.clone());
        let builder = Arc::clone(builder);
        let task = async move {
            // Held while the loop serves, so that a graceful shutdown waits for this connection too.
            let watcher = watcher;
            if let Some(handoff) = connection.serve().await {
                // Boxed: the task of a connection the loop serves is not sized for hyper's connection state.
                Box::pin(serve_with_hyper(
                    builder,
                    watcher,
                    handoff,
                    service,
                    header_timeout,
                    peer,
                ))
                .await;
            }
        };
        tokio::spawn(task);
    }
}

/// hyper's server settings for every connection (or the part of one the proxy's own loop hands over).
fn hyper_builder(header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Request limits: 64 KiB of request head and (hyper's default) 100 header fields, 431 beyond;
    // 100 concurrent HTTP/2 streams, a 64 KiB HTTP/2 header list, and keep-alive pings that close dead peers.
    // The 64 KiB buffer limit also caps HTTP/1 request-body reads (what a stream holds: `proxy::body`).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .max_header_list_size(64 * 1024)
        // What a caller may send ahead of an upstream that does not read: 256 KiB a stream, 512 KiB a connection
        // (hyper's defaults are 1 MiB each). Callers are local, so small windows cost no throughput.
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(512 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// How a request hyper read is handed to the service.
type ToCallerBody = fn(http::Request<Incoming>) -> http::Request<CallerBody>;

/// Serves the rest of a connection with hyper (HTTP/1 or HTTP/2, upgrades included), starting with the bytes the
/// proxy's own loop has read. Until its first request's head is complete, the connection must be done within
/// `header_timeout` ([`first_bytes`]).
async fn serve_with_hyper<S: HttpService, IO: Socket>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    handoff: Handoff<IO>,
    service: WithClientAddr<S>,
    header_timeout: Duration,
    peer: Peer,
) {
    let handoff_served = handoff.served;
    let io = FirstBytesDeadline::new(Prefixed::new(handoff.read, handoff.io), header_timeout);
    let service: MapRequest<_, ToCallerBody> = io
        .marker(service)
        .map_request(|req| req.map(CallerBody::Hyper));
    // After requests the loop served, the connection can only go on as HTTP/1 (hyper alone would refuse an
    // HTTP/2 preface there as a malformed HTTP/1 request).
    let builder = if handoff_served {
        Arc::new(builder.as_ref().clone().http1_only())
    } else {
        builder
    };
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Accept errors (e.g. out of file descriptors) must not end the loop or spin it.
async fn accept_error(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Binds a listener, naming the address on failure.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"))
    })
}

/// Binds the proxy listener `listen`: TCP via [`bind`], a Unix socket via [`bind_unix`].
pub async fn bind_listen(
    listen: &Listen,
    allowed_uids: Option<Vec<u32>>,
    what: &str,
) -> Result<Listener, io::Error> {
    match listen {
        Listen::Tcp(addr) => bind(*addr, what).await.map(Listener::Tcp),
        Listen::Unix(path) => bind_unix(path, allowed_uids, what)
            .await
            .map(Listener::Unix),
    }
}
