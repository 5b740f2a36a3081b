//! The proxy's own HTTP/1.1 connection loop, for the plain requests that make up nearly all of a proxy's traffic;
//! hyper serves everything else.
//!
//! Per request it reads the head (and a small body that came with it) into one buffer, parses it in place
//! ([`head`]: header values share that buffer), calls the service, and writes the response head and the first
//! body bytes in one write ([`encode`]: byte for byte what hyper would write). What it buys over hyper's generic
//! server, measured on the proxy's benchmark (`benches/profile/callgrind.sh`, `benches/load/run.sh`): its own
//! work is about 7k user-space instructions per request where hyper's server took about 15k, and, above all,
//! memory: between requests a connection holds **no buffer** — it waits for the socket to become readable and
//! only then takes one — where hyper keeps an 8 KiB read and an 8 KiB write buffer for the connection's life. One
//! more idle keep-alive connection costs 2.6 KiB with the loop, about 25 KiB with hyper.
//!
//! The first request the loop is not sure about ends it: the socket and every byte read so far go to hyper
//! ([`Handoff`]), which parses them again from the start and serves the connection from then on (HTTP/2 prior
//! knowledge, upgrades, chunked or large or slow bodies, `Expect`, `HEAD`, HTTP/1.0, malformed heads — hyper
//! writes their error answers). So the framing of any request is decided either by hyper itself or, for a plain
//! one, the same way hyper would decide it; `tests` hold the two together.
//!
//! Timeouts are hyper's: the head (and the wait for it on an idle keep-alive connection) within the header
//! timeout, else the connection closes without an answer; a caller that closes its side while its request is
//! served has left (the response is dropped, the access line says 499); writes go through the same write-stall
//! guard. At shutdown an idle connection closes at once and a busy one after its response, which then carries
//! `Connection: close`.

pub mod differential;
pub mod encode;
pub mod head;
pub(crate) mod spare;

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::Service;

use self::encode::{BodyLength, EncodeError, Framing};
use self::head::{ForHyper, Plain};
use self::spare::READ_SIZE;
use super::HttpService;
use super::caller_body::CallerBody;
use super::write_stall::StallGuard;
use crate::proxy::client_addr::WithClientAddr;

/// The most head bytes read before hyper decides (its own limit: 64 KiB, then `431`).
const MAX_HEAD: usize = 64 * 1024;

/// How an HTTP/2 connection with prior knowledge starts.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Up to this many response bytes are gathered into one write.
const GATHER: usize = 16 * 1024;

/// A socket the loop can wait on without a buffer.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when the socket has bytes (or end-of-file) to read.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Socket for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl Socket for UnixStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_read_ready(self, cx)
    }
}

/// A connection hyper serves from here on: the socket, and the bytes already read from it.
pub struct Handoff<IO> {
    /// The socket, still guarded against write stalls.
    pub io: StallGuard<IO>,
    /// Bytes read and not yet served: the start of the request hyper parses first.
    pub read: Bytes,
    /// The loop served requests on this connection before: hyper takes it as HTTP/1 (an HTTP/2 preface is only
    /// valid as a connection's first bytes).
    pub served: bool,
}

/// One caller connection served by the loop.
pub struct Connection<S, IO> {
    io: StallGuard<IO>,
    service: WithClientAddr<S>,
    /// Bytes read and not yet served; no allocation while empty between requests.
    buf: BytesMut,
    header_timeout: Duration,
    /// Fires at or before the current head's deadline; moved only when it fires early, so that a busy connection
    /// does not re-arm a timer for every request.
    header_timer: Option<Pin<Box<Sleep>>>,
    stop: watch::Receiver<bool>,
    /// Requests served so far.
    served: bool,
}

/// What became of a request.
enum Next {
    /// The connection stays open for another request.
    KeepAlive,
    /// The connection closes (the response said so, or it could not be completed).
    Close,
}

impl<S: HttpService, IO: Socket> Connection<S, IO> {
    /// A connection on `io` for `service`; `stop` turns true when the server shuts down.
    pub fn new(
        io: StallGuard<IO>,
        service: WithClientAddr<S>,
        header_timeout: Duration,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            io,
            service,
            buf: BytesMut::new(),
            header_timeout,
            header_timer: None,
            stop,
            served: false,
        }
    }

    /// Serves requests until the connection closes (`None`) or a request needs hyper (`Some`).
    pub async fn serve(mut self) -> Option<Handoff<IO>> {
        loop {
            let Some(plain) = self.next_head().await? else {
                if self.served && self.buf.starts_with(H2_PREFACE) {
                    // Only valid as a connection's first bytes: a malformed HTTP/1 request here, on which hyper
                    // closes the connection without an answer.
                    return None;
                }
                return Some(Handoff {
                    io: self.io,
                    read: self.buf.freeze(),
                    served: self.served,
                });
            };
            self.served = true;
            // Boxed, so that an idle connection's task holds only the loop's own state.
            match Box::pin(self.exchange(plain)).await {
                Next::KeepAlive => {}
                Next::Close => {
                    let _ = self.io.shutdown().await;
                    return None;
                }
            }
        }
    }

    /// Reads until a head is complete: `Some(Some(_))` a plain request, `Some(None)` one for hyper, `None` when
    /// the connection closes first (end of file, an error, the header timeout, or shutdown while idle).
    async fn next_head(&mut self) -> Option<Option<Plain>> {
        let deadline = Instant::now() + self.header_timeout;
        loop {
            if !self.buf.is_empty() {
                match head::parse(&mut self.buf) {
                    Ok(Some(plain)) => return Some(Some(plain)),
                    Ok(None) if self.buf.len() < MAX_HEAD => {}
                    Ok(None) | Err(ForHyper) => return Some(None),
                }
            }
            let idle = self.buf.is_empty();
            let timer = self
                .header_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            tokio::select! {
                biased;
                read = read_more(&mut self.io, &mut self.buf) => match read {
                    Ok(n) if n > 0 => {}
                    // End of file or an error: closed without an answer, as hyper does.
                    _ => return None,
                },
                // The header timeout: closed without an answer, as hyper does.
                () = expire(timer.as_mut(), deadline) => return None,
                _ = self.stop.wait_for(|stop| *stop), if idle => return None,
            }
        }
    }

    /// Serves one plain request.
    async fn exchange(&mut self, plain: Plain) -> Next {
        let Plain { head, body, close } = plain;
        let request = head.map(|()| CallerBody::read(body));
        // The service is called in place (not a clone per request, as hyper's glue does): it is always ready, and
        // its future owns what it needs.
        if poll_fn(|cx| self.service.poll_ready(cx)).await.is_err() {
            return Next::Close;
        }
        let call = self.service.call(request);
        let response = tokio::select! {
            biased;
            response = call => response,
            () = caller_left(&mut self.io, &mut self.buf) => return Next::Close,
        };
        let Ok(response) = response else {
            return Next::Close;
        };
        let (mut parts, body) = response.into_parts();
        let keep_alive = !close && !*self.stop.borrow();
        let length = if body.is_end_stream() {
            BodyLength::None
        } else {
            body.size_hint()
                .exact()
                .map_or(BodyLength::Unknown, BodyLength::Known)
        };
        let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
        let mut out = spare::write_buffer();
        let encoded = encode::encode(
            &mut out,
            parts.status,
            reason.map(|r| r.as_bytes()),
            &mut parts.headers,
            length,
            keep_alive,
        );
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(EncodeError::Informational) => {
                let _ = self.io.write_all(&out).await;
                return Next::Close;
            }
            Err(EncodeError::Framing) => return Next::Close,
        };
        spare::give_back_headers(std::mem::take(&mut parts.headers));
        let sent = self.send_body(&mut out, pin!(body), encoded.framing).await;
        spare::give_back_write(out);
        match sent {
            Ok(()) if !encoded.last => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    /// Writes `out` (the head) and the body after it, gathering what is ready into as few writes as possible.
    async fn send_body<B>(
        &mut self,
        out: &mut Vec<u8>,
        mut body: Pin<&mut B>,
        framing: Framing,
    ) -> Result<(), BodyFailed>
    where
        B: Body<Data: Buf>,
    {
        let mut remaining = match framing {
            Framing::Length(0) => {
                self.io.write_all(out).await.map_err(|_| BodyFailed)?;
                return Ok(());
            }
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        };
        loop {
            // What is ready goes into `out`; the write happens once the body has nothing more at hand.
            let frame = if out.is_empty() {
                tokio::select! {
                    biased;
                    frame = poll_fn(|cx| body.as_mut().poll_frame(cx)) => frame,
                    () = caller_left(&mut self.io, &mut self.buf) => return Err(BodyFailed),
                }
            } else {
                match poll_now(body.as_mut()) {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        self.io.write_all(out).await.map_err(|_| BodyFailed)?;
                        out.clear();
                        continue;
                    }
                }
            };
            let mut data = match frame {
                None => break,
                Some(Err(_)) => return Err(BodyFailed),
                // Trailers are sent only to callers that ask for them (`TE: trailers`), which hyper serves.
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            let len = data.remaining();
            if len == 0 {
                continue;
            }
            match remaining.as_mut() {
                Some(left) => {
                    // More than the announced length: the response cannot be completed.
                    *left = left.checked_sub(len as u64).ok_or(BodyFailed)?;
                }
                None => {
                    out.extend_from_slice(format!("{len:X}\r\n").as_bytes());
                }
            }
            if out.len() + len > GATHER {
                self.io.write_all(out).await.map_err(|_| BodyFailed)?;
                out.clear();
                while data.has_remaining() {
                    let chunk = data.chunk();
                    self.io.write_all(chunk).await.map_err(|_| BodyFailed)?;
                    let n = chunk.len();
                    data.advance(n);
                }
            } else {
                while data.has_remaining() {
                    let chunk = data.chunk();
                    out.extend_from_slice(chunk);
                    let n = chunk.len();
                    data.advance(n);
                }
            }
            // The chunk has left the proxy (or sits in `out`): its body may hand on the next one.
            drop(data);
            if remaining.is_none() {
                out.extend_from_slice(b"\r\n");
            }
            if remaining == Some(0) {
                break;
            }
        }
        match remaining {
            // The body ended before its announced length.
            Some(left) if left > 0 => {
                let _ = self.io.write_all(out).await;
                return Err(BodyFailed);
            }
            Some(_) => {}
            None => out.extend_from_slice(b"0\r\n\r\n"),
        }
        self.io.write_all(out).await.map_err(|_| BodyFailed)
    }
}

/// A response body that could not be sent whole: the connection closes.
#[derive(Debug)]
struct BodyFailed;

/// A body's next frame, or that it has none at hand.
type Polled<B> = Poll<Option<Result<http_body::Frame<<B as Body>::Data>, <B as Body>::Error>>>;

/// The body's next frame if it is at hand, without waiting.
fn poll_now<B: Body>(body: Pin<&mut B>) -> Polled<B> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    body.poll_frame(&mut cx)
}

/// Completes once `deadline` has passed; `timer` fires at or before it and is moved on when it fires early.
async fn expire(mut timer: Pin<&mut Sleep>, deadline: Instant) {
    loop {
        timer.as_mut().await;
        if timer.deadline() >= deadline {
            return;
        }
        timer.as_mut().reset(deadline);
    }
}

/// Reads more bytes into `buf`, taking a buffer only once the socket is readable and handing an empty one back
/// while it is not (so an idle connection holds none). `Ok(0)` at end of file.
async fn read_more<IO: Socket>(io: &mut StallGuard<IO>, buf: &mut BytesMut) -> io::Result<usize> {
    poll_fn(|cx| poll_read_more(io, buf, cx)).await
}

fn poll_read_more<IO: Socket>(
    io: &mut StallGuard<IO>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    match io.get_ref().poll_read_ready(cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        Poll::Pending => {
            if buf.is_empty() && buf.capacity() > 0 {
                spare::give_back_read(std::mem::take(buf));
            }
            return Poll::Pending;
        }
    }
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        if buf.is_empty() {
            *buf = spare::read_buffer();
        } else {
            buf.reserve(READ_SIZE);
        }
    }
    let polled = {
        let read = pin!(io.read_buf(&mut *buf));
        read.poll(cx)
    };
    if polled.is_pending() && buf.is_empty() {
        // Readiness was stale: the buffer goes back while waiting again.
        spare::give_back_read(std::mem::take(buf));
    }
    polled
}

/// Completes when the caller has closed its side (or its socket failed) while a request is served. Bytes it sends
/// meanwhile (a pipelined request) are kept in `buf`, and once there are some, nothing more is read until the
/// current response is done: as hyper does, which also means a caller that half-closes after pipelining is not
/// noticed until then.
async fn caller_left<IO: Socket>(io: &mut StallGuard<IO>, buf: &mut BytesMut) {
    if buf.is_empty() {
        match read_more(io, buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending::<()>().await;
}

/// `read` first, then `io`: how hyper sees a connection the loop hands over (and an upstream connection whose
/// answer hyper's client reads after the proxy's own exchange began it: see [`Prefixed::replaying`]).
pub struct Prefixed<IO> {
    read: Bytes,
    io: IO,
    /// While the first head written is being dropped instead of written: how much of its end (`\r\n\r\n`) has
    /// been seen.
    swallow: Option<usize>,
    /// A read that waits for them: nothing is read before the request is written (a client that finds an answer
    /// before it has sent a request takes it for a broken connection).
    reader: Option<std::task::Waker>,
}

impl<IO> Prefixed<IO> {
    /// `io` with `read` in front of its bytes.
    pub fn new(read: Bytes, io: IO) -> Self {
        Self {
            read,
            io,
            swallow: None,
            reader: None,
        }
    }

    /// `io` with `read` in front of its bytes, and the first head written to it (up to and including its blank
    /// line) dropped, reported as written: the stand-in request a client sends to read an answer already on its
    /// way. Nothing is read before that head is complete.
    pub fn replaying(read: Bytes, io: IO) -> Self {
        Self {
            swallow: Some(0),
            ..Self::new(read, io)
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.swallow.is_some() {
            this.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if this.read.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, dst);
        }
        let n = this.read.len().min(dst.remaining());
        dst.put_slice(&this.read[..n]);
        this.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(seen) = this.swallow.as_mut() {
            const END: &[u8] = b"\r\n\r\n";
            let mut taken = 0;
            for &b in buf {
                taken += 1;
                *seen = if b == END[*seen] {
                    *seen + 1
                } else {
                    usize::from(b == END[0])
                };
                if *seen == END.len() {
                    this.swallow = None;
                    if let Some(reader) = this.reader.take() {
                        reader.wake();
                    }
                    break;
                }
            }
            return Poll::Ready(Ok(taken));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
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
        let this = self.get_mut();
        if this.swallow.is_some() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(this).poll_write(cx, first);
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests;
