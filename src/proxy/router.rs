//! The router: admits the request ([`super::admission`]), picks its route ([`super::route_table`]) and hands it
//! to that route's own stack, its body made a paced, timed stream (`body`). Errors after the route is known carry
//! the route ([`RoutedError`]), so its metrics and access line name it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use super::BoxError;
use super::admission::Admission;
use super::azure_ml_route::RouteService;
use super::body::{IdleLimit, ProxyBody, ResponseBody};
use super::error::ProxyError;
use super::respond::RoutedError;
use super::route::Route;
use super::route_table::RouteTable;
use super::shed::uploads::UploadTicket;
use crate::server::CallerBody;

/// Routes requests to per-route stacks.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    admission: Admission,
    stacks: RouteTable<RouteService>,
    request_idle: Option<IdleLimit>,
    /// The message of a `NoRoute` answer: made once, it lists every route's path prefix.
    no_route: Arc<str>,
}

/// Future of [`Router`]: the call of the request's route stack, its error tagged with the route; or the refusal.
pub struct ResponseFuture {
    routed: Option<(RouteCall, Arc<Route>)>,
    refused: Option<BoxError>,
}

/// The call of a route's stack.
type RouteCall = Oneshot<RouteService, Request<ProxyBody>>;

// === impl Router ===

impl Router {
    /// A router that admits requests with `admission` and hands them to the stack of their route in `stacks`.
    pub fn new(admission: Admission, stacks: RouteTable<RouteService>) -> Self {
        let no_route = no_route_message(&stacks, admission.base_url()).into();
        Self {
            inner: Arc::new(RouterInner {
                admission,
                stacks,
                request_idle: None,
                no_route,
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

    /// Admits the request and picks its route's stack.
    fn route(&self, req: &mut Request<CallerBody>) -> Result<(Arc<Route>, RouteService), BoxError> {
        let inner = &*self.inner;
        let host = inner.admission.check(req)?;
        let (route, stack) = inner
            .stacks
            .find(Some(host), req.uri().path())
            .ok_or_else(|| ProxyError::NoRoute(Arc::clone(&inner.no_route)))?;
        inner
            .admission
            .check_route(route, req)
            .map_err(|e| RoutedError {
                route: Arc::clone(route),
                error: Box::new(e),
            })?;
        Ok((Arc::clone(route), stack.clone()))
    }
}

/// `no route matches this path; the configured path prefixes are /arm, /score (Host api.local); send requests to
/// http://127.0.0.1:8080 followed by one of them`: what a caller needs to pick the right path. (At most
/// [`LISTED_PREFIXES`] are listed.)
fn no_route_message<T>(stacks: &RouteTable<T>, base_url: Option<&str>) -> String {
    let mut prefixes: Vec<String> = Vec::new();
    for route in stacks.routes() {
        let prefix = match route.host() {
            Some(host) => format!("{} (Host {host})", route.path_prefix()),
            None => route.path_prefix().to_owned(),
        };
        if !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
    }
    let total = prefixes.len();
    if total == 0 {
        return "no route matches this path: no routes are configured".to_owned();
    }
    prefixes.truncate(LISTED_PREFIXES);
    let mut message = format!(
        "no route matches this path; the configured path prefixes are {}",
        prefixes.join(", ")
    );
    if total > LISTED_PREFIXES {
        message.push_str(&format!(" and {} more", total - LISTED_PREFIXES));
    }
    match base_url {
        Some(base) => message.push_str(&format!(
            "; send requests to {base} followed by one of them"
        )),
        None => message.push_str("; send requests to a path that starts with one of them"),
    }
    message
}

/// How many path prefixes a `NoRoute` message lists.
const LISTED_PREFIXES: usize = 20;

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.inner.stacks.len())
            .finish()
    }
}

impl Service<Request<CallerBody>> for Router {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<CallerBody>) -> ResponseFuture {
        match self.route(&mut req) {
            Ok((route, stack)) => {
                // The request body streams upstream, timed and metered (an upload's ticket came from `shed`).
                let upload = req.extensions_mut().remove::<Arc<UploadTicket>>();
                let idle = self.inner.request_idle.clone();
                let req = req.map(|body| ProxyBody::request(body, idle, upload));
                ResponseFuture {
                    routed: Some((stack.oneshot(req), route)),
                    refused: None,
                }
            }
            Err(e) => ResponseFuture {
                routed: None,
                refused: Some(e),
            },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.routed {
            Some((call, route)) => Pin::new(call).poll(cx).map_err(|error| {
                Box::new(RoutedError {
                    route: Arc::clone(route),
                    error,
                }) as BoxError
            }),
            None => Poll::Ready(Err(this
                .refused
                .take()
                .unwrap_or_else(|| "polled after completion".into()))),
        }
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
