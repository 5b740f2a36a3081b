//! Admission and routing: checks the caller key (when `caller_auth` is configured) and the request rules that
//! hold for every request, picks the route, applies its least-privilege policy (to the method a forwarded
//! method-override header names too), strips hop-by-hop headers (before any token is inserted; a WebSocket
//! handshake keeps its `Connection: upgrade` / `Upgrade: websocket`) and the override and client-identity headers
//! the route does not forward, re-serialises `Content-Length`, and hands the request to the route's own stack.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::UPGRADE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use tower::{Service, ServiceExt};

use super::admit::{CallerKey, HostAllowlist, check_origin, check_path};
use super::body::{IdleLimit, ProxyBody, ResponseBody};
use super::client_addr::ClientAddr;
use super::error::ProxyError;
use super::headers::{
    canonical_content_length, has_underscore_name, is_websocket_upgrade, restore_websocket_upgrade,
    strip_caller_metadata, strip_hop_by_hop,
};
use super::respond::RoutedError;
use super::route::Route;
use super::route_table::RouteTable;
use super::uploads::UploadTicket;
use super::{BoxError, RouteStack};
use crate::config::forward_headers::is_method_override;

/// Routes requests to per-route stacks.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    stacks: RouteTable<RouteStack>,
    caller_key: Option<CallerKey>,
    hosts: HostAllowlist,
    request_idle: Option<IdleLimit>,
}

/// Future of [`Router`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static>>;

// === impl Router ===

impl Router {
    /// A router over `stacks`, each route's own stack. With a `caller_key`, requests without the key are refused
    /// before anything else is looked at.
    pub fn new(
        stacks: RouteTable<RouteStack>,
        caller_key: Option<CallerKey>,
        hosts: HostAllowlist,
    ) -> Self {
        Self {
            inner: Arc::new(RouterInner {
                stacks,
                caller_key,
                hosts,
                request_idle: None,
            }),
        }
    }

    /// Request bodies that bring no byte for `idle`'s limit are ended (`body`).
    pub fn with_request_idle(mut self, idle: IdleLimit) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.request_idle = Some(idle);
        }
        self
    }

    /// Checks the rules and picks the route's stack.
    fn admit(&self, req: &mut Request<Incoming>) -> Result<(Arc<Route>, RouteStack), BoxError> {
        let inner = &*self.inner;
        // First, so an unauthenticated caller learns nothing about hosts or routes, and the key never travels on.
        if let Some(key) = &inner.caller_key {
            key.check(req.headers_mut())?;
        }
        let host = inner.hosts.check(req)?;
        check_path(req.method(), req.uri().path())?;
        check_headers(req)?;
        let (route, stack) = inner
            .stacks
            .find(Some(host), req.uri().path())
            .ok_or(ProxyError::NoRoute)?;
        let routed = |e: ProxyError| -> BoxError {
            Box::new(RoutedError {
                route: Arc::clone(route),
                error: Box::new(e),
            })
        };
        check_origin(req.headers(), route).map_err(routed)?;
        for method in std::iter::once(Ok(req.method().clone()))
            .chain(method_overrides(req.headers(), route.forward_headers()))
        {
            let method = method.map_err(routed)?;
            if !route.allows_method(&method) {
                return Err(routed(ProxyError::MethodNotAllowed {
                    method,
                    allowed: route.allow().methods.clone().unwrap_or_default(),
                }));
            }
        }
        if !route.allows_path(req.uri().path()) {
            return Err(routed(ProxyError::PathNotAllowed));
        }
        let websocket = is_websocket_upgrade(req.version(), req.headers());
        strip_hop_by_hop(req.headers_mut());
        strip_caller_metadata(req.headers_mut(), route.forward_headers());
        canonical_content_length(req.headers_mut());
        if websocket {
            restore_websocket_upgrade(req.headers_mut());
        }
        // Who asked, for the upstream's logs; also makes IMDS refuse the request should it ever get it.
        let forwarded_for = req
            .extensions()
            .get::<ClientAddr>()
            .map_or(HeaderValue::from_static("unknown"), |c| c.header.clone());
        req.headers_mut().insert("x-forwarded-for", forwarded_for);
        Ok((Arc::clone(route), stack.clone()))
    }
}

/// Request rules that need no route: no CORS preflight, no protocol switch but WebSocket, no header names with
/// underscores.
fn check_headers(req: &Request<Incoming>) -> Result<(), ProxyError> {
    if req.method() == Method::OPTIONS {
        return Err(ProxyError::MethodNotAllowed {
            method: Method::OPTIONS,
            allowed: Vec::new(),
        });
    }
    if req.headers().contains_key(UPGRADE) && !is_websocket_upgrade(req.version(), req.headers()) {
        return Err(ProxyError::BadRequest(
            "only WebSocket upgrades are supported (no h2c or other protocol switches)",
        ));
    }
    if has_underscore_name(req.headers()) {
        return Err(ProxyError::BadRequest(
            "header names with underscores are refused (some servers read them as dashes)",
        ));
    }
    Ok(())
}

/// The methods named by the method-override headers the route forwards (upper-cased), in order: a server that
/// honours one acts on that method, so the route's `allow.methods` must allow it too. A value that is not one
/// method is refused.
fn method_overrides<'a>(
    headers: &'a HeaderMap,
    forward: &'a [HeaderName],
) -> impl Iterator<Item = Result<Method, ProxyError>> + 'a {
    forward
        .iter()
        .filter(|name| is_method_override(name.as_str()))
        .flat_map(|name| headers.get_all(name))
        .map(|value| {
            let upper = value.as_bytes().trim_ascii().to_ascii_uppercase();
            Method::from_bytes(&upper).map_err(|_| {
                ProxyError::BadRequest("a method-override header must name exactly one HTTP method")
            })
        })
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.inner.stacks.len())
            .finish()
    }
}

impl Service<Request<Incoming>> for Router {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> ResponseFuture {
        match self.admit(&mut req) {
            Ok((route, stack)) => {
                // The request body streams upstream, timed and metered (an upload's ticket came from `observe`).
                let upload = req.extensions_mut().remove::<Arc<UploadTicket>>();
                let idle = self.inner.request_idle.clone();
                let req = req.map(|body| ProxyBody::request(body, idle, upload));
                Box::pin(async move {
                    stack
                        .oneshot(req)
                        .await
                        .map_err(|error| Box::new(RoutedError { route, error }) as BoxError)
                })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
