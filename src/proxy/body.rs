//! The body type of both directions: an enum, so the hot path boxes nothing.
//!
//! A streamed body ([`Streamed`]: an upstream's response on its way to the caller, or a caller's request body on
//! its way to the upstream) is where a stream's memory and its stalls are bounded:
//! - **Pacing.** It hands its next chunk on only once the previous one has left the proxy: hyper has written it
//!   to the socket and dropped it, which the [`Chunk`] reports. With the one chunk the reading connection holds
//!   ahead (hyper's body channel) and that connection's read size (at most 64 KiB: the upstream client's and the
//!   server's buffer limits), a stream holds about two reads' worth of data (≤ 128 KiB) however slowly the other
//!   side takes it, and never a backing buffer much larger than its data. Whatever the kernel's socket buffers hold
//!   comes on top; the proxy does not size those.
//! - **Idle timeout.** While the body waits for its source and no byte arrives for `stream_idle_timeout`, it
//!   ends with [`StreamTimeout::Idle`], which aborts the stream (the caller's connection for a response; the
//!   upstream exchange, and a `408 RequestBodyTimeout` if no response has started, for a request). Time spent
//!   waiting for a slow consumer does not count: that is the write-stall timeout's business (`write_stall`). The
//!   event is counted and logged once. Upgraded (WebSocket) connections carry no body and are not timed: a quiet
//!   WebSocket is normal, and its caller socket keeps the write-stall guard.
//! - **Upload metering.** A request body reports its bytes to its [`UploadTicket`], and ends with
//!   [`StreamTimeout::TooSlow`] if it is evicted as a slow upload (`shed::uploads`).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use prometheus::IntCounter;
use tokio::time::{Instant, Sleep};

use super::client::Answer;
use super::shed::uploads::{UploadTicket, WakerSlot};
use crate::server::CallerBody;

/// A body the proxy passes on: streamed from the other side as it arrives, or complete in memory. Used in both
/// directions (caller → upstream and upstream → caller).
#[derive(Debug)]
pub enum ProxyBody {
    /// A peer's body, streamed as it arrives (an upstream's response, trailers included).
    Stream(Streamed),
    /// A caller's request body, streamed as it arrives, with trailers dropped: a trailer could smuggle
    /// `Authorization` or framing fields past the header rules (a trailer is a header the rules never saw).
    Request(Streamed<CallerBody>),
    /// A complete body (error documents, admin answers); `None` once sent.
    Full(Option<Bytes>),
}

/// What the proxy answers with.
pub type ResponseBody = ProxyBody;

/// What the proxy sends upstream.
pub type UpstreamBody = ProxyBody;

/// A streamed body; see the module documentation. `B` is the peer's body (an upstream's [`Answer`]; tests use
/// others).
pub struct Streamed<B = Answer> {
    inner: B,
    direction: Direction,
    pacer: Arc<Pacer>,
    idle: Idle,
    upload: Option<Arc<UploadTicket>>,
    /// Set once the body has failed: nothing more is read.
    failed: bool,
}

/// Which way a body flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the caller to the upstream.
    Request,
    /// From the upstream to the caller.
    Response,
}

/// The idle limit for streamed bodies in one direction, and the counter of bodies it ends.
#[derive(Debug, Clone)]
pub struct IdleLimit {
    limit: Duration,
    timeouts: IntCounter,
}

/// A chunk of body data on its way out. Dropping it (hyper does, once it has written it) lets its body hand on
/// the next one.
pub struct Chunk {
    bytes: Bytes,
    _sent: Option<Sent>,
}

/// Why a body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection it came from failed (or the peer's framing was wrong).
    #[error(transparent)]
    Transport(#[from] hyper::Error),
    /// The upstream connection of the proxy's own exchange failed, or ended before the body was whole.
    #[error(transparent)]
    Upstream(#[from] std::io::Error),
    /// The proxy ended it.
    #[error(transparent)]
    Timeout(#[from] StreamTimeout),
}

/// Why the proxy ended a streamed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamTimeout {
    /// No byte for `stream_idle_timeout`.
    #[error("no {0} body bytes within stream_idle_timeout")]
    Idle(Direction),
    /// Evicted as a slow upload to admit a request at `max_in_flight`.
    #[error("the request body arrived slower than request_body_min_rate while the proxy was full")]
    TooSlow,
}

/// Whether a body's last chunk has left the proxy, and who waits for it.
#[derive(Debug, Default)]
struct Pacer {
    in_flight: AtomicBool,
    waiter: WakerSlot,
}

/// Held by a [`Chunk`]: tells its [`Pacer`] when the chunk is gone.
struct Sent(Arc<Pacer>);

/// The idle timer of one body. The timer is moved only when it fires early, not at every wait: a wait begins at
/// almost every chunk, and re-arming a timer costs more than reading the clock.
struct Idle {
    limit: Option<IdleLimit>,
    timer: Option<Pin<Box<Sleep>>>,
    /// When the body began waiting for its source; `None` while it is not waiting.
    waiting_since: Option<Instant>,
}

// === impl ProxyBody ===

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// No body.
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    /// The whole body when it is already in memory (none, a complete body, or a caller's body read whole), taken
    /// out of `self`; `None` (and `self` untouched) when it is still to arrive. A metered upload counts as received.
    pub fn take_in_hand(&mut self) -> Option<Bytes> {
        match self {
            ProxyBody::Full(bytes) => Some(bytes.take().unwrap_or_default()),
            ProxyBody::Request(body) => match &mut body.inner {
                CallerBody::Read(bytes) => {
                    let bytes = bytes.take().unwrap_or_default();
                    if let Some(upload) = body.upload.take() {
                        upload.received(bytes.len());
                    }
                    Some(bytes)
                }
                CallerBody::Hyper(incoming) if incoming.is_end_stream() => {
                    body.upload = None;
                    Some(Bytes::new())
                }
                CallerBody::Hyper(_) => None,
            },
            ProxyBody::Stream(_) => None,
        }
    }

    /// An upstream's response body on its way to the caller.
    pub fn response(body: Answer, idle: Option<IdleLimit>) -> Self {
        ProxyBody::Stream(Streamed::new(body, Direction::Response, idle, None))
    }

    /// A caller's request body on its way upstream; `upload` meters it when the request is an upload.
    pub fn request(
        body: CallerBody,
        idle: Option<IdleLimit>,
        upload: Option<Arc<UploadTicket>>,
    ) -> Self {
        ProxyBody::Request(Streamed::new(body, Direction::Request, idle, upload))
    }
}

impl Body for ProxyBody {
    type Data = Chunk;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunk>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Stream(body) => body.poll_next(cx),
            ProxyBody::Request(body) => body.poll_next(cx),
            ProxyBody::Full(bytes) => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(Chunk::from(b)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Stream(body) => body.inner.is_end_stream(),
            ProxyBody::Request(body) => body.inner.is_end_stream(),
            ProxyBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Stream(body) => body.inner.size_hint(),
            ProxyBody::Request(body) => body.inner.size_hint(),
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

// === impl Streamed ===

impl<B> Streamed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    /// Streams `inner` in `direction`: ended after `idle` without bytes (if given), metered by `upload`.
    pub fn new(
        inner: B,
        direction: Direction,
        idle: Option<IdleLimit>,
        upload: Option<Arc<UploadTicket>>,
    ) -> Self {
        Self {
            inner,
            direction,
            pacer: Arc::default(),
            idle: Idle {
                limit: idle,
                timer: None,
                waiting_since: None,
            },
            upload,
            failed: false,
        }
    }

    /// The next frame; see the module documentation.
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunk>, BodyError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        if self.upload.as_ref().is_some_and(|u| u.evicted()) {
            return self.fail(StreamTimeout::TooSlow);
        }
        if self.pacer.busy(cx) {
            // The previous chunk has not left yet: the consumer is behind, and it is not the source's fault.
            return self.pending(cx);
        }
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.idle.waiting_since = None;
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            if let Some(upload) = &self.upload {
                                upload.received(data.len());
                            }
                            Frame::data(Chunk::paced(data, &self.pacer))
                        }
                        Err(frame) if self.direction == Direction::Request => {
                            if frame.is_trailers() {
                                tracing::debug!("dropped request trailers");
                            }
                            continue;
                        }
                        Err(frame) => frame.map_data(Chunk::from),
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.failed = true;
                    self.upload = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    // The upload is complete: it no longer holds a slot that could be given to someone else.
                    self.upload = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if self.idle.expired(cx) {
                        let limit = self.idle.limit.as_ref().map_or(Duration::ZERO, |l| l.limit);
                        if let Some(l) = &self.idle.limit {
                            l.timeouts.inc();
                        }
                        tracing::warn!(
                            direction = %self.direction,
                            stream_idle_timeout_s = limit.as_secs_f64(),
                            "no body bytes within stream_idle_timeout; stream ended"
                        );
                        return self.fail(StreamTimeout::Idle(self.direction));
                    }
                    return self.pending(cx);
                }
            }
        }
    }

    /// Pending, unless the body was evicted meanwhile (an eviction wakes it).
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Chunk>, BodyError>>> {
        match &self.upload {
            Some(upload) if upload.watch(cx) => self.fail(StreamTimeout::TooSlow),
            _ => Poll::Pending,
        }
    }

    fn fail(&mut self, why: StreamTimeout) -> Poll<Option<Result<Frame<Chunk>, BodyError>>> {
        self.failed = true;
        self.upload = None;
        Poll::Ready(Some(Err(BodyError::Timeout(why))))
    }
}

impl<B> fmt::Debug for Streamed<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streamed")
            .field("direction", &self.direction)
            .field("upload", &self.upload.is_some())
            .finish_non_exhaustive()
    }
}

// === impl BodyError ===

impl From<std::convert::Infallible> for BodyError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

// === impl Direction ===

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Request => "request",
            Direction::Response => "response",
        })
    }
}

// === impl IdleLimit ===

impl IdleLimit {
    /// Bodies idle for `limit` end; each is counted in `timeouts`.
    pub fn new(limit: Duration, timeouts: IntCounter) -> Self {
        Self { limit, timeouts }
    }
}

// === impl Idle ===

impl Idle {
    /// The body waits for its source: starts the clock if it is not running, and says whether it ran out.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(limit) = &self.limit else {
            return false;
        };
        let deadline = *self.waiting_since.get_or_insert_with(Instant::now) + limit.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if timer.deadline() >= deadline {
                return true;
            }
            // Armed for an earlier wait that ended: move it to this one's deadline.
            timer.as_mut().reset(deadline);
        }
    }
}

// === impl Pacer ===

impl Pacer {
    /// True while the last chunk handed out has not left yet; then `cx` is woken when it does.
    fn busy(&self, cx: &Context<'_>) -> bool {
        if !self.in_flight.load(Ordering::SeqCst) {
            return false;
        }
        self.waiter.register(cx);
        self.in_flight.load(Ordering::SeqCst)
    }

    fn sent(&self) {
        self.in_flight.store(false, Ordering::SeqCst);
        self.waiter.wake();
    }
}

// === impl Chunk ===

impl Chunk {
    /// `bytes`, reported to `pacer` when dropped.
    fn paced(bytes: Bytes, pacer: &Arc<Pacer>) -> Self {
        pacer.in_flight.store(true, Ordering::SeqCst);
        Self {
            bytes,
            _sent: Some(Sent(Arc::clone(pacer))),
        }
    }
}

impl From<Bytes> for Chunk {
    fn from(bytes: Bytes) -> Self {
        Self { bytes, _sent: None }
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.bytes.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.bytes.chunk()
    }

    fn advance(&mut self, cnt: usize) {
        self.bytes.advance(cnt);
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        self.bytes.copy_to_bytes(len)
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        self.0.sent();
    }
}

/// A body fed through a channel, for tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::convert::Infallible;

    use tokio::sync::mpsc;

    use super::*;

    /// The receiving end: a body whose frames come from a [`Feed`]; it ends when the feed is dropped.
    #[derive(Debug)]
    pub(crate) struct Fed(mpsc::Receiver<Frame<Bytes>>);

    /// The sending end of a [`Fed`] body.
    #[derive(Debug, Clone)]
    pub(crate) struct Feed(mpsc::Sender<Frame<Bytes>>);

    pub(crate) fn channel() -> (Feed, Fed) {
        let (tx, rx) = mpsc::channel(4);
        (Feed(tx), Fed(rx))
    }

    impl Feed {
        pub(crate) async fn send_data(&mut self, bytes: Bytes) -> Result<(), ()> {
            self.0.send(Frame::data(bytes)).await.map_err(|_| ())
        }

        pub(crate) async fn send_trailers(&mut self, trailers: http::HeaderMap) -> Result<(), ()> {
            self.0.send(Frame::trailers(trailers)).await.map_err(|_| ())
        }
    }

    impl Body for Fed {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|frame| frame.map(Ok))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Fed as Source, Feed as Sender, channel};
    use super::*;
    use crate::proxy::shed::uploads::Uploads;

    fn counter() -> IntCounter {
        IntCounter::new("timeouts", "test").unwrap()
    }

    fn response(limit: Duration) -> (Sender, Streamed<Source>, IntCounter) {
        let (tx, rx) = channel();
        let timeouts = counter();
        let idle = IdleLimit::new(limit, timeouts.clone());
        (
            tx,
            Streamed::new(rx, Direction::Response, Some(idle), None),
            timeouts,
        )
    }

    async fn next(body: &mut Streamed<Source>) -> Option<Result<Frame<Chunk>, BodyError>> {
        std::future::poll_fn(|cx| body.poll_next(cx)).await
    }

    fn data(frame: Option<Result<Frame<Chunk>, BodyError>>) -> Chunk {
        frame.unwrap().unwrap().into_data().unwrap()
    }

    #[tokio::test]
    async fn the_next_chunk_waits_until_the_previous_one_has_left() {
        let (mut tx, mut body, _) = response(Duration::from_secs(300));
        tx.send_data(Bytes::from_static(b"one")).await.unwrap();
        tx.send_data(Bytes::from_static(b"two")).await.unwrap();
        let first = data(next(&mut body).await);
        assert_eq!(first.chunk(), b"one");
        let second = tokio::time::timeout(Duration::from_millis(50), next(&mut body)).await;
        assert!(
            second.is_err(),
            "handed on while the first chunk was still queued"
        );
        drop(first);
        assert_eq!(data(next(&mut body).await).chunk(), b"two");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_source_ends_the_body_at_the_idle_limit_once() {
        let (_tx, mut body, timeouts) = response(Duration::from_secs(300));
        let started = Instant::now();
        let err = next(&mut body).await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(300));
        assert!(matches!(
            err,
            BodyError::Timeout(StreamTimeout::Idle(Direction::Response))
        ));
        assert!(next(&mut body).await.is_none());
        assert_eq!(timeouts.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_keeps_sending_and_a_slow_consumer_are_never_cut() {
        let (mut tx, mut body, timeouts) = response(Duration::from_secs(300));
        let source = tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_secs(200)).await;
                tx.send_data(Bytes::from_static(b"event")).await.unwrap();
            }
        });
        for _ in 0..20 {
            let chunk = data(next(&mut body).await);
            // The consumer holds each chunk far longer than the idle limit: that is not the source's silence.
            tokio::time::sleep(Duration::from_secs(1000)).await;
            drop(chunk);
        }
        source.await.unwrap();
        assert!(next(&mut body).await.is_none());
        assert_eq!(timeouts.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_upload_ends_with_too_slow_and_trailers_never_go_upstream() {
        let uploads = Uploads::new(1024, Duration::from_secs(10), counter());
        let (mut tx, rx) = channel();
        let mut body = Streamed::new(
            rx,
            Direction::Request,
            None,
            Some(Arc::new(uploads.register())),
        );
        let mut trailers = http::HeaderMap::new();
        trailers.insert("authorization", "Bearer smuggled".parse().unwrap());
        tx.send_data(Bytes::from_static(b"x")).await.unwrap();
        tx.send_trailers(trailers).await.unwrap();
        drop(data(next(&mut body).await));
        let waiting =
            tokio::spawn(async move { next(&mut body).await.map(|f| f.map(|f| f.is_trailers())) });
        tokio::time::advance(Duration::from_secs(10)).await;
        // The trailers were dropped, the body now waits for more: one byte in its first window, so it is slow.
        assert!(uploads.evict_slowest());
        let ended = waiting.await.unwrap().unwrap().unwrap_err();
        assert!(matches!(ended, BodyError::Timeout(StreamTimeout::TooSlow)));
        assert!(uploads.is_empty(), "a failed body ends its upload");
    }
}
