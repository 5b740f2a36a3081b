//! Accept loops: HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on one port, a header-read timeout that really
//! fires (hyper silently disables it without a timer), and graceful drain.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::client_addr::WithClientAddr;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Time allowed for complete request headers (also closes idle keep-alive connections).
    pub header_read_timeout: Duration,
}

/// Serves `service` on `listener` until `stop` turns true, then stops accepting and lets open connections
/// finish their in-flight requests (HTTP/1 gets `Connection: close`, HTTP/2 a GOAWAY). Returns once every
/// connection has closed or `deadline` has passed, whichever comes first.
pub async fn serve<S, B>(
    listener: TcpListener,
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
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(WithClientAddr::new(service.clone(), peer.ip())),
                );
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Err(e) => accept_error(&e).await,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = deadline => tracing::warn!("drain deadline reached; closing the remaining connections"),
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
