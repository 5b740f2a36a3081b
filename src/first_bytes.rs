//! A deadline for a connection's first bytes. hyper's HTTP/1 header timeout starts only once the auto-builder
//! has decided the connection speaks HTTP/1, and HTTP/2 has no such timeout, so a client that connects and sends
//! nothing (or a few bytes of the HTTP/2 preface) would hold a connection open forever. Until the first
//! [`PREFACE_LEN`] bytes have arrived, reads fail with `TimedOut` once the deadline passes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The length of the HTTP/2 connection preface; an HTTP/1 request line is at least this long too.
pub const PREFACE_LEN: usize = 24;

/// An I/O object whose first [`PREFACE_LEN`] bytes must arrive before a deadline.
#[derive(Debug)]
pub struct FirstBytesDeadline<IO> {
    io: IO,
    deadline: Option<Pin<Box<Sleep>>>,
    received: usize,
}

// === impl FirstBytesDeadline ===

impl<IO> FirstBytesDeadline<IO> {
    /// Wraps `io`; the first bytes must arrive within `limit`.
    pub fn new(io: IO, limit: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            received: 0,
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
        if this.deadline.is_none() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = buf.filled().len() - before;
                this.received += got;
                if this.received >= PREFACE_LEN || got == 0 {
                    // Enough bytes (or EOF): from here on hyper's own timeouts apply.
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request started within the header timeout",
                ))),
                _ => Poll::Pending,
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
