//! The loop against hyper on real loopback sockets: for the same request and the same service answer, a caller
//! gets the same bytes (the `date` value aside) from the proxy's own loop as from hyper's server with the
//! proxy's settings; and the loop hands what it does not serve to hyper with every byte it read.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::encode::without_date;
use super::{Connection, Handoff};
use crate::proxy::client_addr::WithClientAddr;
use crate::server::write_stall::StallGuard;
use crate::server::{CallerBody, Peer, hyper_builder, serve_with_hyper};

/// A response body of given frames; `exact` is its size hint; `gap` makes it report one `Pending` before each
/// frame (as a body streamed from an upstream does).
#[derive(Debug)]
struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    exact: Option<u64>,
    gap: bool,
    waited: bool,
}

impl Frames {
    fn data(chunks: &[&'static str], exact: Option<u64>) -> Self {
        Self {
            frames: chunks
                .iter()
                .map(|c| Frame::data(Bytes::from_static(c.as_bytes())))
                .collect(),
            exact,
            gap: false,
            waited: false,
        }
    }

    fn with_gaps(mut self) -> Self {
        self.gap = true;
        self
    }

    fn with_trailers(mut self) -> Self {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-trailer", HeaderValue::from_static("1"));
        self.frames.push_back(Frame::trailers(trailers));
        self
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.gap && !this.waited && !this.frames.is_empty() {
            this.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.waited = false;
        Poll::Ready(this.frames.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        self.exact
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// What the service saw of a request.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    uri: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// Whether the loop read the body (else hyper streamed it).
    read_by_loop: bool,
}

/// A service that records requests and answers every one with a copy of `answer`.
#[derive(Clone)]
struct Answer {
    answer: Arc<dyn Fn() -> Response<Frames> + Send + Sync>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Answer {
    fn new(answer: impl Fn() -> Response<Frames> + Send + Sync + 'static) -> Self {
        Self {
            answer: Arc::new(answer),
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl tower::Service<Request<CallerBody>> for Answer {
    type Response = Response<Frames>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<Frames>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<CallerBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let read_by_loop = matches!(body, CallerBody::Read(_));
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            this.seen.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                    .collect(),
                body: body.to_vec(),
                read_by_loop,
            });
            Ok((this.answer)())
        })
    }
}

/// Which server answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    Loop,
    Hyper,
}

/// Sends `request` on a fresh loopback connection served by `server`, half-closes after it unless `keep_open`,
/// and returns every byte the caller received until the server closed.
async fn exchange(server: Server, service: Answer, request: &[u8]) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut caller = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (socket, _) = listener.accept().await.unwrap();
    let io = StallGuard::new(socket, Duration::from_secs(10), Box::new(|| {}));
    let service = WithClientAddr::new(service, None);
    let timeout = Duration::from_secs(5);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let graceful = GracefulShutdown::new();
    let watcher = graceful.watcher();
    let builder = Arc::new(hyper_builder(timeout));
    let peer = Peer::Unix { uid: 0 };
    tokio::spawn(async move {
        let handoff = match server {
            Server::Loop => {
                match Connection::new(io, service.clone(), timeout, stop)
                    .serve()
                    .await
                {
                    Some(handoff) => handoff,
                    None => return,
                }
            }
            Server::Hyper => Handoff {
                io,
                read: Bytes::new(),
                served: false,
            },
        };
        serve_with_hyper(builder, watcher, handoff, service, timeout, peer).await;
    });
    caller.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), caller.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    out
}

/// Both servers' answers to `request` (date values cut), and what each service saw.
async fn both(
    request: &str,
    answer: impl Fn() -> Response<Frames> + Send + Sync + Clone + 'static,
) -> ((String, Vec<Seen>), (String, Vec<Seen>)) {
    let mut results = Vec::new();
    for server in [Server::Loop, Server::Hyper] {
        let service = Answer::new(answer.clone());
        let bytes = exchange(server, service.clone(), request.as_bytes()).await;
        results.push((without_date(&bytes), service.seen()));
    }
    let hyper = results.pop().unwrap();
    let own = results.pop().unwrap();
    (own, hyper)
}

fn response(
    status: u16,
    fields: &[(&'static str, &'static str)],
    body: Frames,
) -> Response<Frames> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in fields {
        response
            .headers_mut()
            .append(*name, HeaderValue::from_static(value));
    }
    response
}

/// The same bytes from both servers for two keep-alive requests, the second closing the connection; the loop
/// served both itself.
async fn same_answer(answer: impl Fn() -> Response<Frames> + Send + Sync + Clone + 'static) {
    let request = "GET /a?x=1 HTTP/1.1\r\nHost: localhost\r\nX-Two: 1\r\nx-two: 2\r\n\r\n\
                   POST /b HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let ((own, own_seen), (hyper, hyper_seen)) = both(request, answer).await;
    assert_eq!(own, hyper, "the loop's bytes differ from hyper's");
    assert_eq!(own_seen.len(), 2, "{own}");
    assert!(
        own_seen.iter().all(|s| s.read_by_loop),
        "the loop served both requests"
    );
    assert!(hyper_seen.iter().all(|s| !s.read_by_loop));
    let strip = |seen: Vec<Seen>| {
        seen.into_iter()
            .map(|s| Seen {
                read_by_loop: false,
                ..s
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(own_seen),
        strip(hyper_seen),
        "the service saw different requests"
    );
}

#[tokio::test]
async fn a_complete_body_gets_the_same_bytes() {
    same_answer(|| {
        response(
            200,
            &[("content-type", "text/plain")],
            Frames::data(&["hello"], Some(5)),
        )
    })
    .await;
}

#[tokio::test]
async fn a_streamed_body_with_a_length_header_gets_the_same_bytes() {
    same_answer(|| {
        response(
            200,
            &[("content-length", "11"), ("x-a", "1"), ("x-a", "2")],
            Frames::data(&["hello", " world"], None).with_gaps(),
        )
    })
    .await;
}

#[tokio::test]
async fn a_body_of_unknown_length_is_chunked_the_same_way() {
    same_answer(|| response(404, &[], Frames::data(&["hel", "", "lo"], None).with_gaps())).await;
    same_answer(|| response(200, &[], Frames::data(&["a"; 40], None))).await;
}

#[tokio::test]
async fn trailers_are_not_sent_to_callers_that_did_not_ask() {
    same_answer(|| response(200, &[], Frames::data(&["x"], None).with_trailers())).await;
}

#[tokio::test]
async fn no_content_and_not_modified_send_no_body() {
    same_answer(|| {
        response(
            204,
            &[("content-length", "3")],
            Frames::data(&["abc"], Some(3)),
        )
    })
    .await;
    same_answer(|| response(304, &[("content-length", "3")], Frames::data(&[], None))).await;
}

#[tokio::test]
async fn an_empty_answer_gets_a_zero_length() {
    same_answer(|| response(503, &[("retry-after", "1")], Frames::data(&[], None))).await;
}

#[tokio::test]
async fn joined_fields_are_written_the_same_way() {
    same_answer(|| {
        response(
            200,
            &[("trailer", "x-t"), ("trailer", "x-u"), ("x-b", "2")],
            Frames::data(&["zz"], None),
        )
    })
    .await;
}

/// The one difference the tests know of, and keep: after a `transfer-encoding` that does not end in `chunked`,
/// hyper appends `, chunked` to every later field whose values it joins (`trailer`, `connection`) as well, which
/// is a slip of its encoder. The loop writes those fields as they are. The proxy's own answers never carry
/// `transfer-encoding` (a hop-by-hop field it drops from upstream responses), so callers do not meet this.
#[tokio::test]
async fn a_field_after_a_transfer_coding_is_written_as_it_is() {
    let request = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = || {
        response(
            200,
            &[("transfer-encoding", "gzip"), ("trailer", "x-t")],
            Frames::data(&["zz"], None),
        )
    };
    let ((own, _), (hyper, _)) = both(request, answer).await;
    assert_eq!(
        own,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ntrailer: x-t\r\nconnection: close\r\n\r\n2\r\nzz\r\n0\r\n\r\n"
    );
    assert_eq!(
        own.replace("x-t\r\n", "x-t, chunked\r\n")
            .replace("close\r\n", "close, chunked\r\n"),
        hyper
    );
}

#[tokio::test]
async fn a_response_that_asks_to_close_ends_the_connection_on_both() {
    // A response that asks to close ends the connection after it on both.
    let request = "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /never HTTP/1.1\r\nHost: a\r\n\r\n";
    let answer = || {
        response(
            200,
            &[("connection", "close")],
            Frames::data(&["x"], Some(1)),
        )
    };
    let ((own, own_seen), (hyper, hyper_seen)) = both(request, answer).await;
    assert_eq!(own, hyper);
    assert_eq!((own_seen.len(), hyper_seen.len()), (1, 1));
}

#[tokio::test]
async fn a_large_body_is_relayed_whole() {
    let chunk: &'static str = Box::leak("0123456789abcdef".repeat(2048).into_boxed_str());
    same_answer(move || {
        response(
            200,
            &[],
            Frames::data(&[chunk, chunk, chunk], None).with_gaps(),
        )
    })
    .await;
    same_answer(move || {
        response(
            200,
            &[],
            Frames::data(&[chunk, chunk], Some(2 * chunk.len() as u64)),
        )
    })
    .await;
}

#[tokio::test]
async fn an_informational_status_is_refused_as_hyper_refuses_it() {
    let request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let answer = || response(103, &[("link", "</a>")], Frames::data(&[], None));
    let ((own, _), (hyper, _)) = both(request, answer).await;
    assert_eq!(own, hyper);
    assert!(
        own.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{own}"
    );
}

#[tokio::test]
async fn what_the_loop_does_not_serve_reaches_hyper_whole() {
    let answer = || response(200, &[], Frames::data(&["ok"], Some(2)));
    for request in [
        // A chunked upload, HTTP/1.0, `Expect`, a body not yet complete, and a malformed head (hyper's 400).
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /old HTTP/1.0\r\nHost: a\r\n\r\n",
        "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
    ] {
        let ((own, own_seen), (hyper, hyper_seen)) = both(request, answer).await;
        assert_eq!(own, hyper, "{request:?}");
        assert_eq!(own_seen, hyper_seen, "{request:?}");
    }
    // A plain request first, then one for hyper on the same connection: each server's part is intact.
    let request = "GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
                   POST /second HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    let ((own, own_seen), (hyper, _)) = both(request, answer).await;
    assert_eq!(own, hyper);
    let served: Vec<_> = own_seen
        .iter()
        .map(|s| (s.uri.as_str(), s.read_by_loop, s.body.as_slice()))
        .collect();
    // An HTTP/2 preface after a plain request is a malformed HTTP/1 request for hyper alone; so it is after the loop
    // hands the connection over (the preface is only valid as a connection's first bytes).
    let request = "GET /first HTTP/1.1\r\nHost: a\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let ((own, own_seen), (hyper, hyper_seen)) = both(request, answer).await;
    assert_eq!(own, hyper);
    assert_eq!((own_seen.len(), hyper_seen.len()), (1, 1));
    assert_eq!(
        served,
        [("/first", true, &b""[..]), ("/second", false, &b"hi"[..])]
    );
}

#[tokio::test]
async fn an_idle_connection_holds_no_read_buffer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut caller = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (socket, _) = listener.accept().await.unwrap();
    let io = StallGuard::new(socket, Duration::from_secs(10), Box::new(|| {}));
    let service = Answer::new(|| response(200, &[], Frames::data(&["ok"], Some(2))));
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut connection = Connection::new(
        io,
        WithClientAddr::new(service, None),
        Duration::from_secs(5),
        stop,
    );
    caller
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let plain = connection.next_head().await.unwrap().unwrap();
    assert!(matches!(
        connection.exchange(plain).await,
        super::Next::KeepAlive
    ));
    let mut answer = [0u8; 256];
    let n = caller.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
    // Waiting for the next request: the buffer went back before the wait.
    let waiting = tokio::time::timeout(Duration::from_millis(50), connection.next_head()).await;
    assert!(waiting.is_err(), "no request yet");
    assert_eq!(
        connection.buf.capacity(),
        0,
        "an idle connection holds no buffer"
    );
}

#[tokio::test(start_paused = true)]
async fn the_header_timeout_closes_an_idle_connection_without_an_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut caller = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (socket, _) = listener.accept().await.unwrap();
    let io = StallGuard::new(socket, Duration::from_secs(10), Box::new(|| {}));
    let service = Answer::new(|| response(200, &[], Frames::data(&["ok"], Some(2))));
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let connection = Connection::new(
        io,
        WithClientAddr::new(service.clone(), None),
        Duration::from_secs(5),
        stop,
    );
    let served = tokio::spawn(connection.serve());
    caller
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    assert!(
        served.await.unwrap().is_none(),
        "closed, not handed to hyper"
    );
    let mut out = Vec::new();
    caller.read_to_end(&mut out).await.unwrap();
    assert!(
        out.is_empty(),
        "no answer: {}",
        String::from_utf8_lossy(&out)
    );
    assert!(service.seen().is_empty());
}

#[tokio::test]
async fn at_shutdown_an_idle_connection_closes_and_a_busy_one_says_close() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut caller = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (socket, _) = listener.accept().await.unwrap();
    let io = StallGuard::new(socket, Duration::from_secs(10), Box::new(|| {}));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let stop_on_call = Arc::new(Mutex::new(Some(stop_tx)));
    let service = Answer::new(move || {
        // Shutdown begins while the request is being served.
        if let Some(tx) = stop_on_call.lock().unwrap().as_ref() {
            let _ = tx.send(true);
        }
        response(200, &[], Frames::data(&["ok"], Some(2)))
    });
    let connection = Connection::new(
        io,
        WithClientAddr::new(service, None),
        Duration::from_secs(5),
        stop,
    );
    let served = tokio::spawn(connection.serve());
    caller
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    caller.read_to_end(&mut out).await.unwrap();
    let text = without_date(&out);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    );
    assert!(served.await.unwrap().is_none());
}

/// A replaying connection drops the first head written to it, however it is split across writes, reads nothing
/// before that head is complete, and then passes everything on: what was read ahead first, then the socket.
#[tokio::test]
async fn a_replaying_connection_swallows_one_head_and_reads_only_after_it() {
    let (near, mut far) = tokio::io::duplex(1024);
    let mut io = super::Prefixed::replaying(Bytes::from_static(b"HTTP/1.1 200 OK\r\n"), near);
    let mut first = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(50), io.read(&mut first)).await;
    assert!(early.is_err(), "read before the stand-in head was written");
    for part in [
        "GET / HTTP/1.1\r\nhost: x\r",
        "\n",
        "\r",
        "\nPOST /next HTTP/1.1\r\n\r\n",
    ] {
        io.write_all(part.as_bytes()).await.unwrap();
    }
    far.write_all(b"content-length: 0\r\n\r\n").await.unwrap();
    let mut read = Vec::new();
    while read.len() < 38 {
        let n = io.read(&mut first).await.unwrap();
        read.extend_from_slice(&first[..n]);
    }
    assert_eq!(read, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    drop(io);
    let mut upstream = Vec::new();
    far.read_to_end(&mut upstream).await.unwrap();
    assert_eq!(
        upstream, b"POST /next HTTP/1.1\r\n\r\n",
        "only what follows the stand-in head"
    );
}
