//! Trace: gives every request its trace context ([`TraceContext`]) before anything else looks at it. The caller's
//! valid `traceparent` is continued, otherwise a new trace starts; the request goes on with
//! `traceparent: 00-<trace id>-<the proxy's span id>-<flags>`, so the upstream's work is a child of the proxy's
//! span, and with the context as an extension for the access line and the request's span.

use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use crate::telemetry::TraceContext;

/// Layer for [`Trace`].
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    sample_new: bool,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    sample_new: bool,
}

// === impl TraceLayer ===

impl TraceLayer {
    /// New traces are sampled when `sample_new` (the proxy exports spans); a caller's trace keeps its own flag.
    pub fn new(sample_new: bool) -> Self {
        Self { sample_new }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            sample_new: self.sample_new,
        }
    }
}

// === impl Trace ===

impl<S, B> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let context = TraceContext::for_request(req.headers(), self.sample_new);
        context.apply(req.headers_mut());
        req.extensions_mut().insert(context);
        self.inner.call(req)
    }
}
