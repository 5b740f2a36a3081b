//! Observe: records each request once — one access log line and its metrics, and its span when spans are
//! exported and its trace is sampled — when the response body ends (or is abandoned), so streamed responses are
//! measured whole. A request whose caller goes away before the response head is recorded with status 499.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::Buf;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::respond::ERROR_HEADER;
use super::route::RouteInfo;
use crate::logging::access::AccessLine;
use crate::metrics::{NO_ROUTE, ProxyMetrics, RouteMetrics};
use crate::telemetry::{Span, SpanKind, SpanSink, TraceContext};

/// Layer for [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer {
    state: Arc<ObserveState>,
}

/// See the module documentation.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    state: Arc<ObserveState>,
}

/// Shared state of the layer.
struct ObserveState {
    /// The metrics of requests that matched no route.
    unrouted: RouteMetrics,
    /// Where request spans go, when spans are exported.
    spans: Option<SpanSink>,
}

pin_project_lite::pin_project! {
    /// Future of [`Observe`].
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
    }
}

/// A response body that reports the request when it ends.
pub struct ObservedBody<B: Body> {
    inner: B,
    record: Option<Record>,
}

/// What the access line needs, gathered along the way. Dropping it reports the request (access line, metrics),
/// so a request is reported exactly once however it ends: at the end of its body, when the body is dropped early,
/// or when the caller goes away before the response head (hyper then drops the service's future; the line says
/// status 499, nginx's "client closed request").
struct Record {
    state: Arc<ObserveState>,
    start: Instant,
    start_wall: SystemTime,
    /// The request's trace ([`super::trace`]).
    trace: Option<TraceContext>,
    method: Method,
    uri: Uri,
    version: Version,
    route: Option<RouteInfo>,
    status: u16,
    request_id: Option<HeaderValue>,
    correlation_id: Option<HeaderValue>,
    error_code: Option<HeaderValue>,
    bytes: u64,
    failed: bool,
}

/// The access-log status of a request whose caller left before the response head.
const CLIENT_CLOSED_REQUEST: u16 = 499;

// === impl ObserveLayer ===

impl ObserveLayer {
    /// A layer counting into `metrics` (each route's own handles come with its responses).
    pub fn new(metrics: &ProxyMetrics) -> Self {
        Self {
            state: Arc::new(ObserveState {
                unrouted: metrics.route(NO_ROUTE),
                spans: None,
            }),
        }
    }

    /// Also sends each request's span to `spans` (requests whose trace is sampled).
    pub fn with_spans(self, spans: Option<SpanSink>) -> Self {
        Self {
            state: Arc::new(ObserveState {
                unrouted: self.state.unrouted.clone(),
                spans,
            }),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

// === impl Observe ===

impl<S, B, RB> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible>,
    RB: Body,
{
    type Response = Response<ObservedBody<RB>>;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let record = Record {
            state: Arc::clone(&self.state),
            start: Instant::now(),
            start_wall: SystemTime::now(),
            trace: req.extensions().get::<TraceContext>().copied(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            route: None,
            status: 0,
            request_id: None,
            correlation_id: None,
            error_code: None,
            bytes: 0,
            failed: false,
        };
        ObserveFuture {
            inner: self.inner.call(req),
            record: Some(record),
        }
    }
}

impl<F, RB> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response<RB>, Infallible>>,
    RB: Body,
{
    type Output = Result<Response<ObservedBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match ready!(this.inner.poll(cx)) {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let mut record = this.record.take();
        if let Some(r) = record.as_mut() {
            r.observe_response(&mut response);
        }
        Poll::Ready(Ok(response.map(|inner| ObservedBody { inner, record })))
    }
}

/// The Azure request ids an access line carries, from the upstream's response.
const X_MS_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
const X_MS_CORRELATION_REQUEST_ID: HeaderName =
    HeaderName::from_static("x-ms-correlation-request-id");

// === impl Record ===

impl Record {
    fn observe_response<B>(&mut self, response: &mut Response<B>) {
        self.status = response.status().as_u16();
        self.route = response.extensions_mut().remove::<RouteInfo>();
        let headers = response.headers();
        // Copied, not shared: an upstream's header values point into the buffer its head was read into, which
        // must not stay pinned for as long as the response streams.
        let copy = |v: &HeaderValue| HeaderValue::from_bytes(v.as_bytes()).ok();
        // The first value of each, found in one pass over the response's few fields rather than three hashed
        // look-ups.
        let (mut request_id, mut correlation_id, mut error_code) = (None, None, None);
        for (name, value) in headers {
            let first = if *name == X_MS_REQUEST_ID {
                &mut request_id
            } else if *name == X_MS_CORRELATION_REQUEST_ID {
                &mut correlation_id
            } else if *name == ERROR_HEADER {
                &mut error_code
            } else {
                continue;
            };
            first.get_or_insert(value);
        }
        self.request_id = request_id.and_then(copy);
        self.correlation_id = correlation_id.and_then(copy);
        self.error_code = error_code.cloned();
    }
}

impl Drop for Record {
    /// Emits the access line and the metrics.
    fn drop(&mut self) {
        if self.status == 0 {
            // The future was dropped before a response existed: the caller went away.
            self.status = CLIENT_CLOSED_REQUEST;
            self.failed = true;
        }
        let (bytes, failed) = (self.bytes, self.failed);
        let state = &self.state;
        let (name, metrics) = match &self.route {
            Some(r) => (&**r.route.name(), r.route.metrics()),
            None => (NO_ROUTE, &state.unrouted),
        };
        let elapsed = self.start.elapsed();
        metrics.count(self.status);
        metrics.request_duration.observe(elapsed.as_secs_f64());
        let upstream_status = self
            .route
            .as_ref()
            .filter(|r| r.upstream)
            .map(|_| self.status);
        AccessLine {
            route: name,
            method: self.method.as_str(),
            path: self.uri.path(),
            version: version_text(self.version),
            status: self.status,
            upstream_status,
            duration: elapsed,
            bytes,
            completed: !failed,
            error_code: text(&self.error_code),
            x_ms_request_id: text(&self.request_id),
            x_ms_correlation_request_id: text(&self.correlation_id),
            trace_id: self.trace.map(|t| t.trace_id),
        }
        .emit();
        if let (Some(spans), Some(trace)) = (&state.spans, self.trace)
            && trace.sampled()
        {
            spans.record(self.span(trace, name, elapsed));
        }
    }
}

impl Record {
    /// The request's span: what the access line says, as OpenTelemetry's HTTP attributes.
    fn span(&self, context: TraceContext, route: &str, elapsed: std::time::Duration) -> Span {
        let mut attributes = vec![
            ("http.request.method", self.method.as_str().into()),
            ("url.path", self.uri.path().into()),
            ("http.route", route.into()),
            ("http.response.status_code", i64::from(self.status).into()),
            (
                "network.protocol.version",
                version_text(self.version)
                    .trim_start_matches("HTTP/")
                    .into(),
            ),
            ("http.response.body.size", (self.bytes as i64).into()),
        ];
        if let Some(code) = self.error_code.as_ref().and_then(|v| v.to_str().ok()) {
            attributes.push(("error.type", code.into()));
        }
        if let Some(id) = self.request_id.as_ref().and_then(|v| v.to_str().ok()) {
            attributes.push(("aml_auth_proxy.x_ms_request_id", id.into()));
        }
        let error = if self.status >= 500 || self.failed {
            Some(text(&self.error_code).to_owned())
                .filter(|code| !code.is_empty())
                .or_else(|| Some(format!("status {}", self.status)))
        } else {
            None
        };
        Span {
            context,
            name: format!("{} {route}", self.method),
            kind: SpanKind::Server,
            start: self.start_wall,
            end: self.start_wall + elapsed,
            attributes,
            error,
        }
    }
}

/// A header value as text for the log (empty when absent or not visible ASCII).
fn text(value: &Option<HeaderValue>) -> &str {
    value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// `HTTP/1.1` and so on, as `Version`'s `Debug` writes it.
fn version_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

// === impl ObservedBody ===

impl<B> Body for ObservedBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(record) = self.record.as_mut() {
            match &polled {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        record.bytes += data.remaining() as u64;
                    }
                }
                Some(Err(_)) => record.failed = true,
                None => {}
            }
        }
        if polled.is_none() || self.inner.is_end_stream() {
            // Reported now, not when hyper gets round to dropping the body.
            self.record = None;
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        // A body dropped before its end: the caller went away or the stream broke. The record reports as it drops.
        if let Some(record) = self.record.as_mut()
            && !self.inner.is_end_stream()
        {
            record.failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Empty;

    use super::*;
    use crate::config::Limits;
    use crate::logging::capture::Capture;
    use crate::metrics::Metrics;
    use crate::proxy::body::ResponseBody;
    use crate::proxy::shed::ShedLayer;

    fn one_slot() -> Limits {
        Limits {
            max_in_flight: 1,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn a_caller_gone_before_the_response_head_is_logged_499_and_frees_its_slot() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let metrics = Metrics::new().unwrap();
        // An upstream that never answers, behind the shedding layer as in the stack.
        let mut service = tower::ServiceBuilder::new()
            .layer(ObserveLayer::new(&metrics.proxy))
            .layer(ShedLayer::new(&metrics.proxy, &one_slot()))
            .service(tower::service_fn(|_: Request<Empty<Bytes>>| {
                std::future::pending::<Result<Response<ResponseBody>, Infallible>>()
            }));
        let request = || Request::get("/slow").body(Empty::new()).unwrap();

        let first = service.call(request());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), first)
                .await
                .is_err(),
            "the first request waits for its upstream"
        );
        // Dropped by the timeout, as hyper drops it when the caller goes: the only slot is free again.
        let second = service.call(request());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), second)
                .await
                .is_err(),
            "the second request was shed: the first one's slot leaked"
        );
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("aml_auth_proxy_in_flight_requests 0"),
            "{text}"
        );
        let log = capture.text();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("request")).collect();
        assert_eq!(lines.len(), 2, "{log}");
        for line in lines {
            assert!(
                line.contains("status=499") && line.contains("completed=false"),
                "{line}"
            );
        }
    }
}
