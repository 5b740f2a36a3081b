//! The upstream HTTP clients: rustls (system roots plus `tls.extra_ca_file`), pooled connections, a connect
//! timeout, no redirect following (hyper never follows redirects), and no link-local destinations.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::UpstreamBody;
use super::resolve::NoLinkLocal;

/// A pooled upstream client.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector<NoLinkLocal>>, UpstreamBody>;

/// The upstream clients: one negotiating HTTP/2 or HTTP/1.1 by ALPN, and one HTTP/1.1-only for WebSocket
/// upgrades (which HTTP/2 connections cannot carry).
#[derive(Clone, Debug)]
pub struct UpstreamClients {
    /// HTTP/2 or HTTP/1.1 by ALPN.
    pub pooled: UpstreamClient,
    /// HTTP/1.1 only.
    pub http1: UpstreamClient,
}

/// Builds the upstream clients. Plain `http://` is only reachable for loopback upstreams (configuration rule).
pub fn upstream_clients(
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> UpstreamClients {
    UpstreamClients {
        pooled: upstream_client(Arc::clone(&tls), connect_timeout, true),
        http1: upstream_client(tls, connect_timeout, false),
    }
}

fn upstream_client(
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    http2: bool,
) -> UpstreamClient {
    let mut http = HttpConnector::new_with_resolver(NoLinkLocal::new());
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1();
    let https = if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.wrap_connector(http)
    };
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(20))
        .build(https)
}
