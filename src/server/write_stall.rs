//! Callers that stop reading. Every accepted connection's socket is wrapped in a [`StallGuard`]: when data has
//! been waiting to be written for `write_stall_timeout` and the socket has accepted none of it (the caller stopped
//! reading), writes fail with `TimedOut`, which makes hyper close the connection, and the stall is reported once.
//!
//! A caller that reads slowly but steadily is never cut: each byte the socket accepts restarts the clock. An idle
//! connection with nothing to send is not stalled. The guard stays on the socket after a WebSocket upgrade, so a
//! WebSocket caller that stops reading what the upstream sends is disconnected the same way.
//!
//! What a stalled connection can hold meanwhile is bounded elsewhere: responses are handed to hyper one chunk at a
//! time (`proxy::body`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What a [`StallGuard`] does when its caller has stalled; called at most once.
pub type OnStall = Box<dyn FnOnce() + Send + Sync>;

/// An I/O object whose writes must make progress (see the module documentation).
pub struct StallGuard<IO> {
    io: IO,
    limit: Duration,
    /// Fires `limit` after a wait for the socket began; moved only when it fires early (re-arming at every wait
    /// would cost more than reading the clock).
    timer: Option<Pin<Box<Sleep>>>,
    /// When the current wait for the socket began; `None` while writes make progress.
    waiting_since: Option<Instant>,
    /// Set once the limit has passed: every later write fails.
    stalled: bool,
    on_stall: Option<OnStall>,
}

// === impl StallGuard ===

impl<IO> StallGuard<IO> {
    /// Wraps `io`: a write that makes no progress for `limit` fails, and `on_stall` runs.
    pub fn new(io: IO, limit: Duration, on_stall: OnStall) -> Self {
        Self {
            io,
            limit,
            timer: None,
            waiting_since: None,
            stalled: false,
            on_stall: Some(on_stall),
        }
    }

    /// The guarded I/O object.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Bookkeeping after a write attempt.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.waiting_since = None;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.wait(cx),
        }
    }

    /// The socket accepts nothing right now: start the clock (once per wait) and fail when it runs out.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let deadline = *self.waiting_since.get_or_insert_with(Instant::now) + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if timer.deadline() >= deadline {
                break;
            }
            timer.as_mut().reset(deadline);
        }
        self.stalled = true;
        if let Some(report) = self.on_stall.take() {
            report();
        }
        Poll::Ready(Err(stalled()))
    }
}

fn stalled() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the caller accepted no data within the write-stall timeout",
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for StallGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StallGuard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.stalled {
            return Poll::Ready(Err(stalled()));
        }
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.after_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.stalled {
            return Poll::Ready(Err(stalled()));
        }
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO> std::fmt::Debug for StallGuard<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StallGuard")
            .field("limit", &self.limit)
            .field("stalled", &self.stalled)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A guard over one end of an in-memory pipe with a 1 KiB buffer, counting its stall reports.
    fn guarded(
        limit: Duration,
    ) -> (
        StallGuard<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<AtomicUsize>,
    ) {
        let (near, far) = tokio::io::duplex(1024);
        let reports = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reports);
        let guard = StallGuard::new(
            near,
            limit,
            Box::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (guard, far, reports)
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_writes_at_the_limit_and_is_reported_once() {
        let (mut guard, _far, reports) = guarded(Duration::from_secs(60));
        let started = Instant::now();
        let err = guard.write_all(&[7u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert_eq!(
            guard.write(b"more").await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(reports.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_reader_is_never_cut() {
        let (mut guard, mut far, reports) = guarded(Duration::from_secs(60));
        // The reader takes 512 bytes every 50 s: each accepted byte restarts the clock.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 512];
            while got < 16 * 1024 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                got += far.read(&mut buf).await.unwrap();
            }
            got
        });
        guard.write_all(&[1u8; 16 * 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 16 * 1024);
        assert_eq!(reports.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_with_nothing_to_send_is_not_stalled() {
        let (mut guard, mut far, reports) = guarded(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        guard.write_all(b"late but fine").await.unwrap();
        let mut buf = [0u8; 13];
        far.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"late but fine");
        assert_eq!(reports.load(Ordering::SeqCst), 0);
    }
}
