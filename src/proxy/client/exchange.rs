//! The proxy's own HTTP/1.1 exchange with an upstream, for the common request: its body already in hand (none,
//! or one the caller side read whole), and a plain answer (`head`).
//!
//! - **Request.** The head is written as hyper's client writes it — request line, the fields in the map's order
//!   with lower-case names, `host`, then `content-length` when there is a body and no length field — followed by
//!   the body, in one write.
//! - **Answer.** The head is read into a spare buffer and parsed in place; a plain answer's fields share that one
//!   buffer. Its body is handed on as it arrives ([`OwnAnswer`]), bounded by [`super::HTTP1_BUFFER`] per read;
//!   when it is whole the connection goes back to its origin, holding no buffer while it waits.
//! - **Anything else.** An answer that is not plain is read by hyper's client from its first byte: hyper gets the
//!   connection with the bytes read so far in front of it, sends a request of the same method whose bytes are
//!   swallowed (the upstream has the real one), and reads the answer as it would have (`Origin::send`).
//!
//! Why it exists, measured with `benches/profile/callgrind.sh`: hyper's client spent about 19k user-space
//! instructions per proxied request (its connection task, the dispatch channel to it, and the answer head), and
//! this exchange about 10k, taking the proxy from about 59.8k to about 52.5k per request; and an idle upstream
//! connection held by hyper keeps about 21 KiB (its buffers and task), where one of these keeps its socket.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::head::{self, ForHyper, PlainAnswer};
use super::{HTTP1_BUFFER, Home};
use crate::server::http1::spare;

/// Bodies up to this size are copied behind the head and go out in the same write.
const IN_ONE_WRITE: usize = 16 * 1024;

/// What the connector hands over, as hyper sees it.
pub(super) type HyperIo = MaybeHttpsStream<TokioIo<TcpStream>>;

/// An upstream HTTP/1.1 connection the proxy drives itself. Between exchanges it holds its socket and nothing else.
/// Boxed: a TLS stream is kilobytes, and a connection moves through the pool and every exchange future.
pub(super) struct Conn {
    io: Box<TokioIo<HyperIo>>,
}

/// How an exchange went on.
pub(super) enum Sent {
    /// A plain answer.
    Answer(Response<OwnAnswer>),
    /// An answer hyper's client reads: the connection, and what was read of the answer so far.
    ForHyper(Conn, Bytes),
}

/// Why an exchange failed.
#[derive(Debug)]
pub(super) enum ExchangeError {
    /// Nothing was written: the connection was already closed (a reused connection may be replaced).
    Unsent(io::Error),
    /// The request was, or may have been, written.
    Failed(io::Error),
}

/// An answer's body, read from the connection as the caller takes it. Once it is whole and the connection can carry
/// another exchange, the connection goes home.
pub struct OwnAnswer {
    conn: Option<Conn>,
    buf: BytesMut,
    remaining: u64,
    keep_alive: bool,
    home: Option<Home>,
}

// === impl Conn ===

impl Conn {
    pub(super) fn new(io: HyperIo) -> Self {
        Self {
            io: Box::new(TokioIo::new(io)),
        }
    }

    /// The connection as hyper's client takes it.
    pub(super) fn into_hyper_io(self) -> HyperIo {
        (*self.io).into_inner()
    }

    /// True when the upstream closed the connection (or sent bytes nobody asked for) while it was idle. Looks
    /// at what has already arrived; never waits.
    pub(super) fn is_closed(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_ready()
    }

    /// Sends `req` (its target in origin form) with `body`, the whole of its body, and reads the answer head.
    /// `host` is the upstream's `Host`; `home` takes the connection back once the answer is whole.
    pub(super) async fn exchange(
        mut self,
        req: &mut Request<()>,
        body: Bytes,
        host: &HeaderValue,
        home: Home,
    ) -> Result<Sent, ExchangeError> {
        let mut out = spare::write_buffer();
        encode(req, &body, host, &mut out);
        let rest = if body.len() <= IN_ONE_WRITE {
            out.extend_from_slice(&body);
            Bytes::new()
        } else {
            body
        };
        let written = self.write(&out, &rest).await;
        spare::give_back_write(out);
        written?;
        // Sent: the fields are done with (an unsent request keeps them, to be sent again).
        spare::give_back_headers(std::mem::take(req.headers_mut()));
        let mut buf = spare::read_buffer();
        let answer = loop {
            if !buf.is_empty() {
                match head::parse(&mut buf, req.method()) {
                    Ok(Some(answer)) => break answer,
                    Ok(None) if buf.len() < HTTP1_BUFFER => {}
                    // hyper's to judge: too long a head, or not a plain answer.
                    Ok(None) | Err(ForHyper) => return Ok(Sent::ForHyper(self, buf.freeze())),
                }
            }
            if buf.capacity() - buf.len() < spare::READ_SIZE / 4 {
                buf.reserve(spare::READ_SIZE);
            }
            match self.io.read_buf(&mut buf).await {
                // hyper tells a closed connection from a cut-off head the way it always does.
                Ok(0) => return Ok(Sent::ForHyper(self, buf.freeze())),
                Ok(_) => {}
                Err(e) => return Err(ExchangeError::Failed(e)),
            }
        };
        let PlainAnswer {
            head,
            body_len,
            keep_alive,
        } = answer;
        let mut body = OwnAnswer {
            conn: Some(self),
            buf,
            remaining: body_len,
            keep_alive,
            home: Some(home),
        };
        if body.buf.len() as u64 >= body_len {
            // The whole answer is in hand: the connection goes home before the caller sees it.
            body.finish_in_hand();
        }
        Ok(Sent::Answer(head.map(|()| body)))
    }

    /// Writes the request head and body. A failure before the first byte leaves the request unsent.
    async fn write(&mut self, head: &[u8], body: &Bytes) -> Result<(), ExchangeError> {
        let mut wrote = false;
        for part in [head, &body[..]] {
            let mut part = part;
            while !part.is_empty() {
                match self.io.write(part).await {
                    Ok(0) => {
                        let e = io::Error::from(io::ErrorKind::WriteZero);
                        return Err(if wrote {
                            ExchangeError::Failed(e)
                        } else {
                            ExchangeError::Unsent(e)
                        });
                    }
                    Ok(n) => {
                        wrote = true;
                        part = &part[n..];
                    }
                    Err(e) if !wrote => return Err(ExchangeError::Unsent(e)),
                    Err(e) => return Err(ExchangeError::Failed(e)),
                }
            }
        }
        self.io.flush().await.map_err(ExchangeError::Failed)
    }
}

/// The request head as hyper's client writes it.
fn encode(req: &mut Request<()>, body: &Bytes, host: &HeaderValue, out: &mut Vec<u8>) {
    let headers = req.headers_mut();
    headers.insert(HOST, host.clone());
    headers.remove(TRANSFER_ENCODING);
    if !body.is_empty() && !headers.contains_key(CONTENT_LENGTH) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    match req.uri().path_and_query() {
        Some(target) => out.extend_from_slice(target.as_str().as_bytes()),
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether the whole of a request body of `len` bytes with these fields is written here: when it has no
/// `Transfer-Encoding` and any `Content-Length` is the plain length of the body in hand (hyper's client decides
/// every other case itself).
pub(super) fn writes_here(headers: &http::HeaderMap, len: usize) -> bool {
    if headers.contains_key(TRANSFER_ENCODING) {
        return false;
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => true,
        (Some(value), None) => {
            crate::server::http1::head::digits(value.as_bytes()) == Some(len as u64)
        }
        (Some(_), Some(_)) => false,
    }
}

// === impl OwnAnswer ===

impl OwnAnswer {
    /// The body is all in the buffer: the connection goes home (or is closed, when bytes follow the answer or it
    /// may not carry another).
    fn finish_in_hand(&mut self) {
        let extra = self.buf.len() as u64 > self.remaining;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && !extra
            && let Some(home) = self.home.take()
        {
            home.take_back(conn);
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if self.remaining == 0 {
                if self.conn.is_some() {
                    self.finish_in_hand();
                }
                return Poll::Ready(None);
            }
            if !self.buf.is_empty() {
                let n = self.buf.len().min(self.remaining as usize);
                let chunk = self.buf.split_to(n).freeze();
                self.remaining -= n as u64;
                if self.remaining == 0 && self.conn.is_some() {
                    self.finish_in_hand();
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if self.buf.capacity() == 0
                || self.buf.capacity() - self.buf.len() < spare::READ_SIZE / 4
            {
                let want = (self.remaining as usize).clamp(spare::READ_SIZE, HTTP1_BUFFER);
                self.buf.reserve(want);
            }
            let polled = {
                let read = pin!(conn.io.read_buf(&mut self.buf));
                read.poll(cx)
            };
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.conn = None;
                    self.remaining = 0;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "end of file before message length reached",
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.conn = None;
                    self.remaining = 0;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl Body for OwnAnswer {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.get_mut()
            .poll_data(cx)
            .map(|data| data.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Drop for OwnAnswer {
    fn drop(&mut self) {
        if self.remaining == 0 && self.conn.is_none() {
            spare::give_back_read(std::mem::take(&mut self.buf));
        }
    }
}

impl std::fmt::Debug for OwnAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnAnswer")
            .field("remaining", &self.remaining)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}
