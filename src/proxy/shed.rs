//! Load shedding: at most `max_in_flight` requests are served at once. A request holds a slot from arrival until
//! its response body ends (or is dropped), so streamed responses count whole. A request that finds every slot
//! taken first evicts the slowest slow upload, if there is one ([`uploads`]: slow callers cannot hold every
//! slot), and takes its slot; otherwise it is answered `503 Overloaded` at once: no queue, no token fetch, no
//! upstream call. An evicted upload is answered `408 RequestBodyTimeout` if its response has not started.
//!
//! The number of requests in flight is the `aml_auth_proxy_in_flight_requests` gauge.

pub mod uploads;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use prometheus::IntGauge;
use tower::{Layer, Service};

use self::uploads::{Upload, Uploads};
use super::body::{BodyError, Chunk, ResponseBody};
use super::error::ProxyError;
use super::respond::proxy_error;
use crate::config::Limits;
use crate::metrics::ProxyMetrics;

/// Layer for [`Shed`].
#[derive(Clone)]
pub struct ShedLayer {
    state: Arc<ShedState>,
}

/// See the module documentation.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    state: Arc<ShedState>,
}

/// The slots of one configuration.
struct ShedState {
    in_flight: AtomicUsize,
    max_in_flight: usize,
    gauge: IntGauge,
    uploads: Arc<Uploads>,
}

pin_project_lite::pin_project! {
    /// Future of [`Shed`].
    pub struct ShedFuture<F> {
        #[pin]
        inner: Option<F>,
        slot: Option<Slot>,
        rejected: Option<Response<ResponseBody>>,
        // The request's upload, while its body arrives: evicting it answers at once.
        upload: Option<Arc<Upload>>,
    }
}

/// A response body that holds its request's slot until it ends.
pub struct ShedBody {
    inner: ResponseBody,
    slot: Option<Slot>,
}

/// One request's place in the in-flight count; dropping it leaves.
struct Slot(Arc<ShedState>);

// === impl ShedLayer ===

impl ShedLayer {
    /// A layer with `limits`' `max_in_flight` and upload rate rule, counting into `metrics`.
    pub fn new(metrics: &ProxyMetrics, limits: &Limits) -> Self {
        Self {
            state: Arc::new(ShedState {
                in_flight: AtomicUsize::new(0),
                max_in_flight: limits.max_in_flight,
                gauge: metrics.in_flight.clone(),
                uploads: Uploads::new(
                    limits.request_body_min_rate as u64,
                    limits.request_body_rate_window,
                    metrics.stream_timeouts.request_min_rate.clone(),
                ),
            }),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

// === impl Shed ===

impl<S, B> Service<Request<B>> for Shed<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
    B: Body,
{
    type Response = Response<ShedBody>;
    type Error = Infallible;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let state = &self.state;
        let n = state.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        state.gauge.inc();
        let slot = Some(Slot(Arc::clone(state)));
        if n > state.max_in_flight && !state.uploads.evict_slowest() {
            // Shed at once: no queue, no token fetch, no upstream call.
            return ShedFuture {
                inner: None,
                slot,
                rejected: Some(proxy_error(&ProxyError::Overloaded(state.max_in_flight))),
                upload: None,
            };
        }
        let upload = (!req.body().is_end_stream()).then(|| {
            let ticket = state.uploads.register();
            let upload = Arc::clone(ticket.upload());
            // The router hands it to the request body, which reports its bytes and ends the upload.
            req.extensions_mut().insert(Arc::new(ticket));
            upload
        });
        ShedFuture {
            inner: Some(self.inner.call(req)),
            slot,
            rejected: None,
            upload,
        }
    }
}

impl<F> Future for ShedFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    type Output = Result<Response<ShedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let evicted = this.upload.as_ref().is_some_and(|u| u.evicted());
        let response = match this.rejected.take() {
            Some(r) => r,
            None if evicted => {
                // Its slot went to another request: drop the exchange (cancelling the upstream request).
                this.inner.set(None);
                proxy_error(&ProxyError::RequestBodyTimeout)
            }
            None => match this.inner.as_mut().as_pin_mut() {
                Some(inner) => match inner.poll(cx) {
                    Poll::Ready(Ok(r)) => r,
                    Poll::Ready(Err(never)) => match never {},
                    Poll::Pending => {
                        if this.upload.as_ref().is_some_and(|u| u.watch(cx)) {
                            cx.waker().wake_by_ref();
                        }
                        return Poll::Pending;
                    }
                },
                None => proxy_error(&ProxyError::Overloaded(0)),
            },
        };
        *this.upload = None;
        let slot = this.slot.take();
        Poll::Ready(Ok(response.map(|inner| ShedBody { inner, slot })))
    }
}

// === impl ShedBody ===

impl Body for ShedBody {
    type Data = Chunk;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunk>, Self::Error>>> {
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if polled.is_none() || self.inner.is_end_stream() {
            // The slot is free now, not when hyper gets round to dropping the body.
            self.slot = None;
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

// === impl Slot ===

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;
    use crate::metrics::Metrics;
    use crate::proxy::body::testing::{Fed, channel};
    use crate::proxy::respond::ERROR_HEADER;

    /// With every slot held by an upload that has sent nothing for a whole rate window, a new request takes its
    /// slot: the upload is answered 408 `RequestBodyTimeout` at once; before the window is over, the newcomer is
    /// shed as usual.
    #[tokio::test(start_paused = true)]
    async fn a_slow_upload_gives_its_slot_to_a_new_request() {
        let metrics = Metrics::new().unwrap();
        let one_slot = Limits {
            max_in_flight: 1,
            ..Limits::default()
        };
        let layer = ShedLayer::new(&metrics.proxy, &one_slot);
        // Answers GETs at once; an upload waits for its body, which never comes.
        let mut service = layer.layer(tower::service_fn(|req: Request<Fed>| async move {
            // The upload lasts while its ticket (in the extensions, where the router would take it) lives.
            let (parts, body) = req.into_parts();
            let _ = body.collect().await;
            drop(parts);
            Ok::<_, Infallible>(Response::new(ResponseBody::full("done")))
        }));
        let (_sender, body) = channel();
        let upload = tokio::spawn(service.call(Request::post("/upload").body(body).unwrap()));
        tokio::task::yield_now().await;
        let get = || {
            let (sender, body) = channel();
            drop(sender);
            Request::get("/status").body(body).unwrap()
        };

        tokio::time::advance(Duration::from_secs(9)).await;
        let early = service.call(get()).await.unwrap();
        assert_eq!(
            early.status(),
            503,
            "within the grace period the upload keeps its slot"
        );

        tokio::time::advance(Duration::from_secs(1)).await;
        let admitted = service.call(get()).await.unwrap();
        assert_eq!(admitted.status(), 200);
        let evicted = upload.await.unwrap().unwrap();
        assert_eq!(evicted.status(), 408);
        assert_eq!(evicted.headers()[ERROR_HEADER], "RequestBodyTimeout");
        drop((early, admitted, evicted));
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains(
                r#"aml_auth_proxy_stream_timeouts_total{direction="request",kind="min_rate"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("aml_auth_proxy_in_flight_requests 0"),
            "{text}"
        );
    }
}
