//! A deadline for a connection's first request. hyper's HTTP/1 header timeout starts only once the auto-builder
//! has decided the connection speaks HTTP/1, and HTTP/2 has no such timeout at all: a client that connects and
//! sends nothing, a few bytes, or the HTTP/2 preface and SETTINGS but never a request would hold a connection
//! open for as long as it answers keep-alive pings. So until the connection's first request head is complete —
//! [`FirstRequest`] marks the moment the service is called, whatever the protocol — reads fail with `TimedOut`
//! once the deadline passes, and hyper closes the connection. After the first request, hyper's own timeouts
//! apply (the HTTP/1 header timeout for every later request; HTTP/2 keep-alive pings).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O object that must carry a complete request head before a deadline.
#[derive(Debug)]
pub struct FirstBytesDeadline<IO> {
    io: IO,
    deadline: Option<Pin<Box<Sleep>>>,
    started: Arc<AtomicBool>,
}

/// A service wrapper that tells the connection's [`FirstBytesDeadline`] its first request has arrived.
#[derive(Debug, Clone)]
pub struct FirstRequest<S> {
    inner: S,
    started: Arc<AtomicBool>,
}

// === impl FirstBytesDeadline ===

impl<IO> FirstBytesDeadline<IO> {
    /// Wraps `io`: a first request must arrive within `limit`. Wrap the connection's service with
    /// [`FirstBytesDeadline::marker`].
    pub fn new(io: IO, limit: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            started: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Wraps the connection's service so that its first call lifts the deadline.
    pub fn marker<S>(&self, inner: S) -> FirstRequest<S> {
        FirstRequest {
            inner,
            started: Arc::clone(&self.started),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytesDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.deadline.is_some() && this.started.load(Ordering::Acquire) {
            this.deadline = None;
        }
        let Some(deadline) = this.deadline.as_mut() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() == before {
                    // End of file: hyper closes the connection; nothing left to time.
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete request head within the header timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytesDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

// === impl FirstRequest ===

impl<S, R> tower::Service<R> for FirstRequest<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        if !self.started.load(Ordering::Relaxed) {
            self.started.store(true, Ordering::Release);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::{Service, ServiceExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reads_fail_at_the_deadline_until_a_request_arrives_then_never() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut conn = FirstBytesDeadline::new(near, Duration::from_secs(5));
        // Bytes alone (an HTTP/2 preface, say) do not lift the deadline.
        far.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 24);
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (near, mut far) = tokio::io::duplex(1024);
        let mut conn = FirstBytesDeadline::new(near, Duration::from_secs(5));
        let mut service = conn.marker(tower::service_fn(|_: ()| async { Ok::<_, ()>(()) }));
        service.ready().await.unwrap().call(()).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).await.map(|_| buf)
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        far.write_all(b"late").await.unwrap();
        assert_eq!(&reader.await.unwrap().unwrap(), b"late");
    }
}
