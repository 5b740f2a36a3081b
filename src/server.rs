//! Accept loops: HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on one port, a header-read timeout that really
//! fires (hyper silently disables it without a timer), a deadline for every connection's first request (HTTP/2
//! too), a write-stall timeout for callers that stop reading, and graceful drain.
//!
//! A listener is TCP or a Unix-domain socket. The socket is created with mode 0600, every connection's peer uid
//! (`SO_PEERCRED`) is checked against the allowed uids, and the socket file is removed when the listener stops.

use std::fmt;
use std::fs::{self, Permissions};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;

use crate::config::Listen;
use crate::first_bytes::FirstBytesDeadline;
use crate::proxy::client_addr::WithClientAddr;
use crate::write_stall::StallGuard;

/// Mode of a Unix-domain socket listener: only its owner may connect.
pub const UNIX_SOCKET_MODE: u32 = 0o600;

/// How long the start-up check for a live listener on an existing socket file may take.
const STALE_SOCKET_PROBE: Duration = Duration::from_secs(1);

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
}

/// A bound listener for [`serve`].
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-domain socket listener.
    Unix(UnixSocketListener),
}

/// A Unix-domain socket listener (see [`bind_unix`]): mode 0600, connections from uids outside `allowed_uids`
/// closed at once, and the socket file removed on drop if it is still the one this listener created.
#[derive(Debug)]
pub struct UnixSocketListener {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file, so drop never removes a file someone else put there since.
    file_id: (u64, u64),
    allowed_uids: Vec<u32>,
}

/// An accepted connection whose peer may be served.
enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream, u32),
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
            Listener::Unix(u) => Listen::Unix(u.path.clone()),
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
            Listener::Unix(u) => u.accept().await,
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener::Tcp(listener)
    }
}

// === impl UnixSocketListener ===

impl UnixSocketListener {
    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The uids whose connections are served.
    pub fn allowed_uids(&self) -> &[u32] {
        &self.allowed_uids
    }

    /// Accepts a connection and checks its peer's uid; a foreign peer's connection is closed (dropped) at once.
    async fn accept(&self) -> io::Result<Option<Accepted>> {
        let (stream, _) = self.listener.accept().await?;
        match stream.peer_cred() {
            Ok(cred) if self.allowed_uids.contains(&cred.uid()) => {
                Ok(Some(Accepted::Unix(stream, cred.uid())))
            }
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    socket = %self.path.display(),
                    "refused a Unix-socket connection: its uid is not in unix_allowed_uids"
                );
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    socket = %self.path.display(),
                    "refused a Unix-socket connection: its peer credentials could not be read"
                );
                Ok(None)
            }
        }
    }
}

impl Drop for UnixSocketListener {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.file_id);
        if ours && let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(error = %e, socket = %self.path.display(), "cannot remove the socket file");
        }
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

/// Serves `service` on `listener` until `stop` turns true, then stops accepting and lets open connections
/// finish their in-flight requests (HTTP/1 gets `Connection: close`, HTTP/2 a GOAWAY). Returns once every
/// connection has closed or `deadline` has passed, whichever comes first. A Unix socket's file is removed as
/// soon as accepting stops.
pub async fn serve<S, B>(
    listener: Listener,
    service: S,
    options: ServerOptions,
    mut stop: watch::Receiver<bool>,
    deadline: impl Future<Output = ()>,
) where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Limits from RELIABILITY a.4: 64 KiB of request head and (hyper's default) 100 header fields, 431 beyond;
    // 100 concurrent HTTP/2 streams, a 64 KiB HTTP/2 header list, and keep-alive pings that close dead peers.
    // The 64 KiB buffer limit also caps HTTP/1 request-body reads (what a stream holds: `proxy::body`).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
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
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        match accepted {
            Ok(Some(Accepted::Tcp(stream, peer))) => {
                spawn_connection(
                    &builder,
                    &graceful,
                    stream,
                    &service,
                    Peer::Tcp(peer),
                    &options,
                );
            }
            Ok(Some(Accepted::Unix(stream, uid))) => {
                spawn_connection(
                    &builder,
                    &graceful,
                    stream,
                    &service,
                    Peer::Unix { uid },
                    &options,
                );
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

/// Serves one connection under `graceful`, on its own task.
fn spawn_connection<IO, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    io: IO,
    service: &S,
    peer: Peer,
    options: &ServerOptions,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let client_ip = match peer {
        Peer::Tcp(addr) => Some(addr.ip()),
        Peer::Unix { .. } => None,
    };
    let io = FirstBytesDeadline::new(io, options.header_read_timeout);
    let service = io.marker(WithClientAddr::new(service.clone(), client_ip));
    let stalls = options.write_stalls.clone();
    let limit = options.write_stall_timeout;
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
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    let conn = graceful.watch(conn.into_owned());
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
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

/// Binds a Unix-domain socket at `path`, mode 0600, serving peers whose uid is in `allowed_uids` (`None`: only the
/// uid that owns the new socket file, i.e. this process).
///
/// An existing socket file nobody listens on (left by a crash) is replaced. Anything else at `path` — a live
/// socket, a regular file, a directory — is an error, and is left alone. Between `bind` and `chmod` the file has
/// the umask's mode; the peer-uid check covers that window.
pub async fn bind_unix(
    path: &Path,
    allowed_uids: Option<Vec<u32>>,
    what: &str,
) -> Result<UnixSocketListener, io::Error> {
    let fail = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on unix:{} ({what}): {e}", path.display()),
        )
    };
    remove_stale_socket(path).await.map_err(fail)?;
    let listener = UnixListener::bind(path).map_err(fail)?;
    let meta = fs::symlink_metadata(path).map_err(fail)?;
    // From here on, dropping `socket` (on any error too) removes the file.
    let mut socket = UnixSocketListener {
        listener,
        path: path.to_owned(),
        file_id: (meta.dev(), meta.ino()),
        allowed_uids: Vec::new(),
    };
    fs::set_permissions(path, Permissions::from_mode(UNIX_SOCKET_MODE)).map_err(fail)?;
    socket.allowed_uids = allowed_uids.unwrap_or_else(|| vec![meta.uid()]);
    tracing::info!(
        socket = %path.display(),
        mode = %format!("{UNIX_SOCKET_MODE:04o}"),
        allowed_uids = ?socket.allowed_uids,
        "{what}: listening on a Unix socket"
    );
    Ok(socket)
}

/// Removes a socket file left behind by a process that is gone; refuses to touch anything else.
async fn remove_stale_socket(path: &Path) -> Result<(), io::Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; refusing to replace it",
        ));
    }
    match tokio::time::timeout(STALE_SOCKET_PROBE, UnixStream::connect(path)).await {
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path)?;
            tracing::info!(socket = %path.display(), "removed a stale socket file");
            Ok(())
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) => Err(io::Error::new(
            e.kind(),
            format!(
                "an existing socket is there and cannot be checked ({e}); refusing to replace it"
            ),
        )),
        Ok(Ok(_)) | Err(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on this socket",
        )),
    }
}
