//! The body type of both directions: an enum, so the hot path boxes nothing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A body the proxy passes on: streamed from the other side as it arrives, or complete in memory. Used in both
/// directions (caller → upstream and upstream → caller).
#[derive(Debug)]
pub enum ProxyBody {
    /// A peer's body, streamed as it arrives (an upstream's response, trailers included).
    Stream(Incoming),
    /// A caller's request body, streamed as it arrives, with trailers dropped: a trailer could smuggle
    /// `Authorization` or framing fields past the header rules (RELIABILITY threat 6e).
    Request(Incoming),
    /// A complete body (error documents, admin answers); `None` once sent.
    Full(Option<Bytes>),
}

/// What the proxy answers with.
pub type ResponseBody = ProxyBody;

/// What the proxy sends upstream.
pub type UpstreamBody = ProxyBody;

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
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Stream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Request(body) => loop {
                match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
                    Some(Ok(frame)) if frame.is_trailers() => {
                        tracing::debug!("dropped request trailers");
                    }
                    other => return Poll::Ready(other),
                }
            },
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Stream(body) | ProxyBody::Request(body) => body.is_end_stream(),
            ProxyBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Stream(body) | ProxyBody::Request(body) => body.size_hint(),
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
