//! The router: admits the request ([`super::admission`]), picks its route ([`super::route_table`]) and hands it
//! to that route's own stack, its body made a paced, timed stream (`body`). Errors after the route is known carry
//! the route ([`RoutedError`]), so its metrics and access line name it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
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

/// Routes requests to per-route stacks.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    admission: Admission,
    stacks: RouteTable<RouteService>,
    request_idle: Option<IdleLimit>,
}

/// Future of [`Router`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static>>;

// === impl Router ===

impl Router {
    /// A router that admits requests with `admission` and hands them to the stack of their route in `stacks`.
    pub fn new(admission: Admission, stacks: RouteTable<RouteService>) -> Self {
        Self {
            inner: Arc::new(RouterInner {
                admission,
                stacks,
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

    /// Admits the request and picks its route's stack.
    fn route(&self, req: &mut Request<Incoming>) -> Result<(Arc<Route>, RouteService), BoxError> {
        let inner = &*self.inner;
        let host = inner.admission.check(req)?;
        let (route, stack) = inner
            .stacks
            .find(Some(host), req.uri().path())
            .ok_or(ProxyError::NoRoute)?;
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
        match self.route(&mut req) {
            Ok((route, stack)) => {
                // The request body streams upstream, timed and metered (an upload's ticket came from `shed`).
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
