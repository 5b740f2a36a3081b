//! The per-route service of the router: a route's own stack, or, for an Azure ML route (`online_endpoint:`,
//! `workspace:`), the stack of the route its resolution makes.
//!
//! An Azure ML route's upstream and credential come from Resource Manager ([`crate::azure_ml`]). A request waits
//! for the resolution for at most [`RESOLVE_WAIT`] (only before the first attempt has finished); a route that
//! could not be resolved answers with that failure — `AuthorizationFailed`, `ResourceNotFound`,
//! `TokenServiceUnavailable` with `Retry-After` — and nothing is forwarded. Once resolved, the route
//! [`Route::resolved`] makes (the scoring or data-plane origin, the credential of the endpoint's `authMode`) gets
//! an ordinary stack, built once and reused for every request after.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{Service, ServiceExt};

use super::body::{ProxyBody, ResponseBody};
use super::route::{Route, RouteAuth};
use super::{BoxError, RouteStack, StackParts};
use crate::azure_ml::{AzureMlRoute, Detail, EndpointMode, Resolved};
use crate::lock;

/// How long a request waits for a route's first resolution attempt.
pub const RESOLVE_WAIT: Duration = Duration::from_secs(5);

/// A route's service in the router.
#[derive(Debug, Clone)]
pub enum RouteService {
    /// An ordinary route's stack.
    Stack(RouteStack),
    /// An Azure ML route.
    AzureMl(AzureMlRouteService),
}

/// Serves an Azure ML route with the stack of its resolved route.
#[derive(Debug, Clone)]
pub struct AzureMlRouteService {
    inner: Arc<Inner>,
}

struct Inner {
    /// The route as configured (name, match, policy, metrics).
    route: Arc<Route>,
    target: AzureMlRoute,
    parts: Arc<StackParts>,
    /// The stack of the resolved route, with the resolution it was built for.
    built: Mutex<Option<(Arc<Resolved>, RouteStack)>>,
}

/// Future of [`RouteService`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static>>;

// === impl RouteService ===

impl Service<Request<ProxyBody>> for RouteService {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            RouteService::Stack(stack) => stack.poll_ready(cx),
            RouteService::AzureMl(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<ProxyBody>) -> ResponseFuture {
        match self {
            RouteService::Stack(stack) => Box::pin(stack.call(req)),
            RouteService::AzureMl(route) => {
                let route = route.clone();
                Box::pin(async move {
                    let resolved = route.inner.target.resolved(RESOLVE_WAIT).await?;
                    route.stack_for(&resolved).oneshot(req).await
                })
            }
        }
    }
}

// === impl AzureMlRouteService ===

impl AzureMlRouteService {
    /// Serves `route` (configured with `target`) with stacks made from `parts`.
    pub fn new(route: Arc<Route>, target: AzureMlRoute, parts: Arc<StackParts>) -> Self {
        Self {
            inner: Arc::new(Inner {
                route,
                target,
                parts,
                built: Mutex::new(None),
            }),
        }
    }

    /// The stack of the route `resolved` makes, built on first use.
    fn stack_for(&self, resolved: &Arc<Resolved>) -> RouteStack {
        let mut built = lock(&self.inner.built);
        if let Some((for_resolution, stack)) = &*built
            && Arc::ptr_eq(for_resolution, resolved)
        {
            return stack.clone();
        }
        let route = Arc::new(
            self.inner
                .route
                .resolved(&resolved.upstream, resolved_auth(resolved)),
        );
        let stack = self.inner.parts.build(&route);
        *built = Some((Arc::clone(resolved), stack.clone()));
        stack
    }
}

/// How a resolved route authorizes: an endpoint's key or AML token is re-read on a `401`; Entra ID tokens
/// (`AADToken` endpoints, workspaces) are ordinary route tokens.
fn resolved_auth(resolved: &Resolved) -> RouteAuth {
    let tokens = resolved.tokens.clone();
    match resolved.detail {
        Detail::OnlineEndpoint {
            mode: EndpointMode::Key | EndpointMode::AmlToken,
            ..
        } => RouteAuth::EndpointSecret(tokens),
        Detail::OnlineEndpoint {
            mode: EndpointMode::AadToken,
            ..
        }
        | Detail::Workspace { .. } => RouteAuth::Inject(tokens),
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureMlRouteService")
            .field("route", self.route.name())
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}
