//! Sends the request to the route's upstream and adapts the response: the URI is rebuilt from configuration
//! plus the validated path; `Host` becomes the upstream's; hop-by-hop and `Access-Control-*` headers are removed
//! from the response and its `Content-Length` re-serialised;
//! `Location`, `Azure-AsyncOperation` and `Operation-Location` pointing at a route's upstream are rewritten to the
//! proxy, so long-running-operation polling keeps going through it. Redirects are returned, never followed.
//! A WebSocket handshake goes over an HTTP/1.1 connection; on `101 Switching Protocols` both connections are
//! spliced together.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, Version};
use tokio::time::Instant;
use tower::Service;

use super::BoxError;
use super::admission::host_of;
use super::body::{BodyError, IdleLimit, ResponseBody, StreamTimeout, UpstreamBody};
use super::client::{Origin, UpstreamError};
use super::client_addr::ClientAddr;
use super::error::ProxyError;
use super::headers::{
    canonical_content_length, is_websocket_upgrade, strip_cors, strip_hop_by_hop,
};
use super::route::{Route, RouteInfo};
use super::route_table::RouteTable;

/// Headers that carry URLs the caller will follow (redirects and long-running operations).
const URL_HEADERS: [HeaderName; 3] = [
    header::LOCATION,
    HeaderName::from_static("azure-asyncoperation"),
    HeaderName::from_static("operation-location"),
];

/// The innermost service of a route.
#[derive(Clone)]
pub struct Forward {
    origin: Arc<Origin>,
    route: Arc<Route>,
    /// Every route, for rewriting URLs that point at another route's upstream.
    table: Arc<RouteTable>,
    response_idle: Option<IdleLimit>,
}

/// Future of [`Forward`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static>>;

/// What the response rewrite needs to know about the inbound request: cheap reference-counted copies of the
/// caller's authority, turned into text only when a response actually has a URL header to rewrite.
struct Inbound {
    target: Option<http::uri::Authority>,
    host_header: Option<HeaderValue>,
}

// === impl Inbound ===

impl Inbound {
    fn of(parts: &http::request::Parts) -> Self {
        Self {
            target: parts.uri.authority().cloned(),
            host_header: parts.headers.get(HOST).cloned(),
        }
    }

    /// The authority the caller used (HTTP/2 `:authority` or absolute-form target, else `Host`), and its host
    /// name lower-cased; `None` unless admission would accept it (a valid port, no user info), so a rewritten URL
    /// never carries what admission refuses.
    fn authority_and_host(&self) -> Option<(String, String)> {
        let authority = match &self.target {
            Some(a) => a.as_str().to_owned(),
            None => self.host_header.as_ref()?.to_str().ok()?.to_owned(),
        };
        host_of(&authority)?;
        let host = authority
            .parse::<http::uri::Authority>()
            .ok()?
            .host()
            .to_ascii_lowercase();
        Some((authority, host))
    }
}

// === impl Forward ===

impl Forward {
    /// Forwards `route`'s requests to its upstream `origin`; URLs in responses are rewritten for the routes of
    /// `table`.
    pub fn new(origin: Arc<Origin>, route: Arc<Route>, table: Arc<RouteTable>) -> Self {
        Self {
            origin,
            route,
            table,
            response_idle: None,
        }
    }

    /// Response bodies that bring no byte for `idle`'s limit are ended (`body`).
    pub fn with_response_idle(mut self, idle: IdleLimit) -> Self {
        self.response_idle = Some(idle);
        self
    }
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("route", self.route.name())
            .finish_non_exhaustive()
    }
}

impl Service<Request<UpstreamBody>> for Forward {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<UpstreamBody>) -> ResponseFuture {
        // The router kept `Connection: upgrade` / `Upgrade: websocket` only for a WebSocket handshake.
        let inbound_upgrade = is_websocket_upgrade(req.version(), req.headers())
            .then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let inbound = Inbound::of(&parts);
        let target = match self.route.upstream_target_of(&parts.uri) {
            Ok(target) => target,
            Err(_) => {
                return Box::pin(async {
                    Err(ProxyError::BadRequest("the request target cannot be forwarded").into())
                });
            }
        };
        // A caller's HTTP/1 connection keeps its upstream connection between requests (client module docs).
        let affinity = match parts.version {
            Version::HTTP_2 => None,
            _ => parts
                .extensions
                .get::<ClientAddr>()
                .map(|c| c.affinity.clone()),
        };
        parts.uri = Uri::from(target);
        parts.version = Version::HTTP_11;
        parts.headers.remove(HOST);
        parts.extensions = http::Extensions::new();
        let request = Request::from_parts(parts, body);
        let sent = Instant::now();
        let origin = Arc::clone(&self.origin);
        let route = Arc::clone(&self.route);
        let table = Arc::clone(&self.table);
        let idle = self.response_idle.clone();
        Box::pin(async move {
            let response = if inbound_upgrade.is_some() {
                Box::pin(origin.send_upgrade(request)).await
            } else {
                origin.send(request, affinity.as_ref()).await
            };
            let mut response = response.map_err(|e| upstream_error(origin.host_name(), &e))?;
            route
                .metrics()
                .upstream_duration
                .observe(sent.elapsed().as_secs_f64());
            let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
            let upgrade = match (switching, inbound_upgrade) {
                (true, Some(inbound)) => Some((inbound, hyper::upgrade::on(&mut response))),
                _ => None,
            };
            let (mut parts, body) = response.into_parts();
            let upgrade_header = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            strip_cors(&mut parts.headers);
            canonical_content_length(&mut parts.headers);
            if let Some((inbound, upstream)) = upgrade {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                if let Some(v) = upgrade_header {
                    parts.headers.insert(header::UPGRADE, v);
                }
                tokio::spawn(splice(inbound, upstream, origin.host_name().to_owned()));
            }
            rewrite_urls(&mut parts.headers, &table, &route, &inbound);
            parts.extensions = http::Extensions::new();
            parts.extensions.insert(RouteInfo {
                route,
                upstream: true,
            });
            Ok(Response::from_parts(
                parts,
                ResponseBody::response(body, idle),
            ))
        })
    }
}

/// Copies bytes both ways between the caller's and the upstream's upgraded connections until either closes.
async fn splice(
    inbound: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    host: String,
) {
    match tokio::try_join!(inbound, upstream) {
        Ok((caller, upstream)) => {
            let mut caller = hyper_util::rt::TokioIo::new(caller);
            let mut upstream = hyper_util::rt::TokioIo::new(upstream);
            match tokio::io::copy_bidirectional(&mut caller, &mut upstream).await {
                Ok((up, down)) => {
                    tracing::debug!(upstream = %host, bytes_up = up, bytes_down = down, "upgraded connection closed")
                }
                Err(e) => {
                    tracing::debug!(upstream = %host, error = %e, "upgraded connection ended with an error")
                }
            }
        }
        Err(e) => tracing::debug!(upstream = %host, error = %e, "connection upgrade failed"),
    }
}

/// A client error as `UpstreamUnavailable`, with a short, secret-free explanation.
fn upstream_error(host: &str, e: &UpstreamError) -> BoxError {
    let detail = crate::error_chain(e);
    tracing::debug!(upstream = host, error = %detail, "upstream request failed");
    if request_body_timed_out(e) {
        // The proxy itself ended the caller's body: it stopped arriving, or too slowly for a full proxy.
        return Box::new(ProxyError::RequestBodyTimeout);
    }
    if caused_by_request_body(e) {
        // The caller's own body was malformed (bad chunked framing) or cut off: not the upstream's fault.
        return Box::new(ProxyError::BadRequest(
            "the request body is malformed or was interrupted",
        ));
    }
    let what = if e.is_connect() {
        "could not connect to"
    } else {
        "lost the connection to"
    };
    Box::new(ProxyError::UpstreamUnavailable(format!(
        "{what} upstream {host}: {detail}"
    )))
}

/// True when the request body failed because the proxy ended it (`body`).
pub(crate) fn request_body_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.downcast_ref::<StreamTimeout>().is_some()
            || matches!(e.downcast_ref::<BodyError>(), Some(BodyError::Timeout(_)))
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// True when hyper reports the failure as coming from the request body we streamed (a "user" body error).
fn caused_by_request_body(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Request(h) if h.is_user())
}

/// Rewrites URL headers that point at a route's upstream so they point at the proxy.
fn rewrite_urls(headers: &mut HeaderMap, table: &RouteTable, served_by: &Route, inbound: &Inbound) {
    // One pass over the response's few names, cheaper than a hashed look-up for each URL header.
    if !headers.keys().any(|name| URL_HEADERS.contains(name)) {
        return;
    }
    let Some((authority, host)) = inbound.authority_and_host() else {
        return;
    };
    for name in &URL_HEADERS {
        let Some(value) = headers.get(name) else {
            continue;
        };
        let Some(location) = value.to_str().ok().and_then(|v| v.parse::<Uri>().ok()) else {
            continue;
        };
        let Some(path) = table.proxy_path_for(served_by, Some(&host), &location) else {
            continue;
        };
        let mut rewritten = format!("http://{authority}{path}");
        if let Some(q) = location.query() {
            rewritten.push('?');
            rewritten.push_str(q);
        }
        if let Ok(v) = HeaderValue::try_from(rewritten) {
            headers.insert(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_urls_never_carry_an_authority_admission_refuses() {
        let inbound = |host: &str| Inbound {
            target: None,
            host_header: Some(HeaderValue::from_str(host).unwrap()),
        };
        for bad in [
            "localhost:99999",
            "localhost:0",
            "localhost:080",
            "localhost:+80",
            "user@localhost",
            "[::1]:65536",
        ] {
            assert_eq!(inbound(bad).authority_and_host(), None, "{bad}");
        }
        assert_eq!(
            inbound("LocalHost:65535").authority_and_host(),
            Some(("LocalHost:65535".to_owned(), "localhost".to_owned()))
        );
        let h2 = Inbound {
            target: Some("localhost:99999".parse().unwrap()),
            host_header: None,
        };
        assert_eq!(h2.authority_and_host(), None);
    }
}
