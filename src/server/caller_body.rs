//! The body of a caller's request, whichever HTTP/1 server read its head: streamed by hyper, or read whole by the
//! proxy's own HTTP/1.1 loop ([`super::http1`]) before the request was handed on.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A caller's request body. Its `Debug` output shows how it arrived and its length, never its bytes.
pub enum CallerBody {
    /// Streamed by hyper as it arrives.
    Hyper(Incoming),
    /// Read whole before the request was handed on; `None` once taken (or for no body).
    Read(Option<Bytes>),
}

impl CallerBody {
    /// A body of `bytes` (no body when empty).
    pub fn read(bytes: Bytes) -> Self {
        CallerBody::Read((!bytes.is_empty()).then_some(bytes))
    }
}

impl std::fmt::Debug for CallerBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallerBody::Hyper(_) => f.write_str("CallerBody::Hyper"),
            CallerBody::Read(bytes) => write!(
                f,
                "CallerBody::Read({} bytes)",
                bytes.as_ref().map_or(0, Bytes::len)
            ),
        }
    }
}

impl From<Incoming> for CallerBody {
    fn from(body: Incoming) -> Self {
        CallerBody::Hyper(body)
    }
}

impl Body for CallerBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            CallerBody::Hyper(body) => Pin::new(body).poll_frame(cx),
            CallerBody::Read(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            CallerBody::Hyper(body) => body.is_end_stream(),
            CallerBody::Read(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            CallerBody::Hyper(body) => body.size_hint(),
            CallerBody::Read(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_read_body_yields_its_bytes_once_with_an_exact_size() {
        let mut body = CallerBody::read(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let collected = (&mut body).collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok(), Some(Bytes::from_static(b"hello")));
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    #[test]
    fn debug_output_never_shows_the_bytes() {
        let body = CallerBody::read(Bytes::from_static(b"client_secret=canary-7f3a"));
        assert_eq!(format!("{body:?}"), "CallerBody::Read(25 bytes)");
    }

    #[test]
    fn an_empty_read_body_has_ended() {
        let body = CallerBody::read(Bytes::new());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }
}
