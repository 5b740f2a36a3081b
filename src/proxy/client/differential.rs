//! The proxy's own upstream HTTP/1.1 exchange against hyper's client, for the tests and the fuzz target.
//!
//! [`compare_with_hyper`] sends the same request twice, each time to a loopback upstream that answers with the
//! same bytes: once through an [`UpstreamClient`] whose HTTP/1.1 exchanges may be the proxy's own (`exchange`,
//! which reads plain answers itself and hands every other one to hyper's client), once through one where hyper's
//! client makes every exchange. What the caller of [`Origin::send`](super::Origin::send) is given must be the
//! same: both fail before a response, or both give a response with the same status, version, header fields in
//! order with their duplicates, body bytes (up to the failure, for a body that fails) and trailers, whose body
//! either ends in both or fails part-way in both (the errors' texts are not compared: an I/O error on one side,
//! hyper's on the other). And the upstream must have received the same bytes from both: the request (head and
//! body, byte for byte) and whatever followed it, which is how the request the own exchange replays to hyper's
//! client when it hands an answer over (`Prefixed::replaying`) is checked to be swallowed whole.
//!
//! The upstream is a task on the same current-thread runtime, on `127.0.0.1`: it accepts one connection, reads
//! the request head and the body its `Content-Length` announces, writes the whole answer, shuts its write side
//! (so an answer delimited by the end of the connection ends), and records whatever else arrives until the
//! client closes; its address is replaced by a name in what it recorded. One listener per thread serves every
//! exchange (so a long fuzzing run does not use up the ephemeral ports with connections in TIME_WAIT).
//! Each of the two exchanges runs on a fresh runtime under a timeout (`RUN_TIMEOUT`, 5 s): a stall is reported
//! as a disagreement instead of hanging. The request carries a few ordinary fields (and its body with a
//! `Content-Length` when there is one), the way the forwarding path hands requests to the client.
//!
//! Heads between 64 KiB ([`super::HTTP1_BUFFER`]) and about twice that are accepted or refused by hyper's client
//! itself depending on how the bytes arrive (it refuses a head only when a read leaves it incomplete at the
//! limit), and the own exchange reads in the same way, so the tests keep their long heads well beyond that.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Answer, UpstreamClient};
use crate::proxy::body::ProxyBody;

/// How long one exchange (connect, request, answer, body, the upstream seeing the connection close) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(5);

/// The request target of every compared request.
const TARGET: &str = "/score?x=1";

/// What the upstream's address is replaced with in the bytes it received.
const UPSTREAM: &str = "{upstream}";

/// The most bytes of an answer, a field list or a body shown in a disagreement.
const SHOWN: usize = 200;

/// Compares the proxy's own exchange with hyper's client on an upstream that answers `answer` to a `method`
/// request with `request_body`; `Err` describes the first disagreement.
pub fn compare_with_hyper(answer: &[u8], method: &str, request_body: &[u8]) -> Result<(), String> {
    let (own, hyper) = run_both(answer, method, request_body, &[])?;
    compare(&own, &hyper).map_err(|e| {
        format!(
            "{e}\nrequest: {method} with {} body byte(s); answer: {}",
            request_body.len(),
            show(answer)
        )
    })
}

/// What one client made of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    outcome: Outcome,
    /// What the upstream received.
    received: Received,
    /// Whether the answer was read by the proxy's own exchange ([`Answer::Own`]).
    by_own: bool,
}

/// What the caller of `Origin::send` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// No response (the error's text, for the report only).
    Failed(String),
    /// A response, and what its body gave.
    Answered(Answered),
}

/// A response and its collected body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answered {
    status: StatusCode,
    version: Version,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The data frames, concatenated (up to the error, if the body failed).
    body: Bytes,
    trailers: Option<Vec<(HeaderName, HeaderValue)>>,
    /// The body failed part-way (the error's text, for the report only).
    error: Option<String>,
}

/// What the upstream received on its connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Received {
    /// The request head and the body its `Content-Length` announced (as much of them as arrived).
    request: Vec<u8>,
    /// Everything that arrived after the request, until the client closed.
    after: Vec<u8>,
}

/// Runs the exchange with the own exchange allowed, then with hyper's client only. With `pauses`, the upstream
/// writes the answer in pieces, cut at those offsets, with a short pause after each piece (the tests use it for
/// bodies that arrive after their head).
fn run_both(
    answer: &[u8],
    method: &str,
    request_body: &[u8],
    pauses: &[usize],
) -> Result<(Run, Run), String> {
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("{} is not a method", short(method)))?;
    let own = run(answer, &method, request_body, pauses, true)?;
    let hyper = run(answer, &method, request_body, pauses, false)?;
    Ok((own, hyper))
}

/// One exchange with one client, on a fresh runtime.
fn run(
    answer: &[u8],
    method: &Method,
    request_body: &[u8],
    pauses: &[usize],
    own_exchange: bool,
) -> Result<Run, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?;
    let who = if own_exchange {
        "with the own exchange"
    } else {
        "with hyper's client"
    };
    runtime
        .block_on(async {
            tokio::time::timeout(
                RUN_TIMEOUT,
                exchange(answer, method, request_body, pauses, own_exchange),
            )
            .await
        })
        .map_err(|_| format!("the exchange {who} stalled for {RUN_TIMEOUT:?}"))?
        .map_err(|e| format!("the exchange {who} could not be set up: {e}"))
}

async fn exchange(
    answer: &[u8],
    method: &Method,
    request_body: &[u8],
    pauses: &[usize],
    own_exchange: bool,
) -> Result<Run, String> {
    let listener = shared_listener()
        .and_then(TcpListener::from_std)
        .map_err(|e| format!("no listener: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("no listener address: {e}"))?;
    let upstream = tokio::spawn(upstream(
        listener,
        Bytes::copy_from_slice(answer),
        pauses.to_vec(),
    ));
    let client = UpstreamClient::new(tls()?, RUN_TIMEOUT, own_exchange);
    let authority =
        Authority::try_from(addr.to_string()).map_err(|e| format!("bad authority: {e}"))?;
    let origin = client.origin(&Scheme::HTTP, &authority);
    let (outcome, by_own) = match origin.send(request(method, request_body)?, None).await {
        Err(e) => (Outcome::Failed(crate::error_chain(&e)), false),
        Ok(response) => {
            let by_own = matches!(response.body(), Answer::Own(_));
            (Outcome::Answered(collect(response).await), by_own)
        }
    };
    // Every connection goes with the client (idle ones are pooled in its origin): the upstream sees the end.
    drop(origin);
    drop(client);
    let mut received = upstream
        .await
        .map_err(|e| format!("the upstream task failed: {e}"))?;
    // The upstream's address (in `Host`) is replaced by a name.
    let addr = addr.to_string();
    received.request = named(&received.request, addr.as_bytes());
    received.after = named(&received.after, addr.as_bytes());
    Ok(Run {
        outcome,
        received,
        by_own,
    })
}

thread_local! {
    /// This thread's upstream listener, bound once (see [`shared_listener`]).
    static LISTENER: std::cell::RefCell<Option<std::net::TcpListener>> = const { std::cell::RefCell::new(None) };
}

/// A handle on this thread's loopback listener, with any connection a previous exchange left unaccepted dropped.
///
/// One listener serves every exchange on a thread: the upstream closes first, so each exchange leaves a
/// connection in TIME_WAIT on the listener's port, and with a listener per exchange a long fuzzing run used up
/// the ephemeral port range (binding failed after about 17,000 inputs). A fresh runtime registers the handle.
fn shared_listener() -> std::io::Result<std::net::TcpListener> {
    LISTENER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let listener = match cell.take() {
            Some(listener) => listener,
            None => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                listener.set_nonblocking(true)?;
                listener
            }
        };
        while listener.accept().is_ok() {}
        let handle = listener.try_clone();
        *cell = Some(listener);
        handle
    })
}

/// A client configuration with no roots (only plain HTTP is used), on the proxy's crypto provider.
fn tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS configuration: {e}"))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The request, as the forwarding path hands it to the client: origin-form target, a few fields, the body in hand.
fn request(method: &Method, body: &[u8]) -> Result<Request<ProxyBody>, String> {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(TARGET)
        .header(ACCEPT, "application/json")
        .header(
            "x-ms-client-request-id",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
        );
    if !body.is_empty() {
        builder = builder
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, body.len());
    }
    builder
        .body(ProxyBody::full(Bytes::copy_from_slice(body)))
        .map_err(|e| format!("bad request: {e}"))
}

/// The response with its body read to the end (or to its error).
async fn collect(response: Response<Answer>) -> Answered {
    let (parts, mut body) = response.into_parts();
    let mut data = BytesMut::new();
    let mut trailers = None;
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => {
                    if let Ok(fields) = frame.into_trailers() {
                        trailers = Some(fields_of(&fields));
                    }
                }
            },
            Err(e) => {
                error = Some(crate::error_chain(&e));
                break;
            }
        }
    }
    Answered {
        status: parts.status,
        version: parts.version,
        headers: fields_of(&parts.headers),
        body: data.freeze(),
        trailers,
        error,
    }
}

fn fields_of(map: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    map.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
}

/// The upstream: one connection, one request read, `answer` written (in pieces cut at `pauses`), the write side
/// shut, and everything else read until the client closes.
async fn upstream(listener: TcpListener, answer: Bytes, pauses: Vec<usize>) -> Received {
    let Ok((mut socket, _)) = listener.accept().await else {
        return Received::default();
    };
    let mut buf = Vec::new();
    let mut request_len = None;
    loop {
        if request_len.is_none() {
            request_len = head_end(&buf).map(|end| end + content_length(&buf[..end]));
        }
        if request_len.is_some_and(|len| buf.len() >= len)
            || !read_some(&mut socket, &mut buf).await
        {
            break;
        }
    }
    let after = buf.split_off(request_len.unwrap_or(buf.len()).min(buf.len()));
    let mut received = Received {
        request: buf,
        after,
    };
    // The client may close before it has read everything (a head it refuses): the rest is not its.
    let _ = write_answer(&mut socket, &answer, &pauses).await;
    let _ = socket.shutdown().await;
    while read_some(&mut socket, &mut received.after).await {}
    received
}

async fn write_answer(
    socket: &mut TcpStream,
    answer: &[u8],
    pauses: &[usize],
) -> std::io::Result<()> {
    let mut from = 0;
    for &at in pauses {
        let at = at.clamp(from, answer.len());
        socket.write_all(&answer[from..at]).await?;
        socket.flush().await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        from = at;
    }
    socket.write_all(&answer[from..]).await
}

/// Reads more into `buf`; false at the end of the connection or on an error.
async fn read_some(socket: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.reserve(16 * 1024);
    matches!(socket.read_buf(buf).await, Ok(n) if n > 0)
}

/// `bytes` with every `addr` in them replaced by [`UPSTREAM`].
fn named(bytes: &[u8], addr: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.starts_with(addr) {
            out.extend_from_slice(UPSTREAM.as_bytes());
            rest = &rest[addr.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// Where the request head ends (after its empty line), once it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The `Content-Length` of a request head the client wrote (0 when it has none).
fn content_length(head: &[u8]) -> usize {
    head.split(|&b| b == b'\n')
        .filter_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            if !name.eq_ignore_ascii_case(b"content-length") {
                return None;
            }
            std::str::from_utf8(&value[1..]).ok()?.trim().parse().ok()
        })
        .next()
        .unwrap_or(0)
}

/// The first difference between the two runs (own exchange / hyper's client).
fn compare(own: &Run, hyper: &Run) -> Result<(), String> {
    if own.received.request != hyper.received.request {
        return Err(format!(
            "the upstream received different requests (own / hyper): {} / {}",
            show(&own.received.request),
            show(&hyper.received.request)
        ));
    }
    if own.received.after != hyper.received.after {
        return Err(format!(
            "the upstream received different bytes after the request (own / hyper): {} / {}",
            show(&own.received.after),
            show(&hyper.received.after)
        ));
    }
    let (own_answer, hyper_answer) = match (&own.outcome, &hyper.outcome) {
        (Outcome::Failed(_), Outcome::Failed(_)) => return Ok(()),
        (Outcome::Answered(a), Outcome::Answered(b)) => (a, b),
        (own, hyper) => {
            return Err(format!(
                "one failed and one answered (own / hyper): {} / {}",
                summary(own),
                summary(hyper)
            ));
        }
    };
    let mut diff = String::new();
    if own_answer.status != hyper_answer.status {
        let _ = write!(
            diff,
            " status {} / {};",
            own_answer.status, hyper_answer.status
        );
    }
    if own_answer.version != hyper_answer.version {
        let _ = write!(
            diff,
            " version {:?} / {:?};",
            own_answer.version, hyper_answer.version
        );
    }
    if own_answer.headers != hyper_answer.headers {
        let _ = write!(
            diff,
            " header fields {} / {};",
            short(&own_answer.headers),
            short(&hyper_answer.headers)
        );
    }
    if own_answer.body != hyper_answer.body {
        let _ = write!(
            diff,
            " body {} / {};",
            show(&own_answer.body),
            show(&hyper_answer.body)
        );
    }
    if own_answer.trailers != hyper_answer.trailers {
        let _ = write!(
            diff,
            " trailers {} / {};",
            short(&own_answer.trailers),
            short(&hyper_answer.trailers)
        );
    }
    if own_answer.error.is_some() != hyper_answer.error.is_some() {
        let _ = write!(
            diff,
            " body end {} / {};",
            ending(own_answer),
            ending(hyper_answer)
        );
    }
    if diff.is_empty() {
        Ok(())
    } else {
        Err(format!("the responses differ (own / hyper):{diff}"))
    }
}

fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Failed(e) => format!("failed ({})", short(e)),
        Outcome::Answered(a) => format!(
            "{} {:?}, {} field(s), {} body byte(s), {}",
            a.status,
            a.version,
            a.headers.len(),
            a.body.len(),
            ending(a)
        ),
    }
}

fn ending(answer: &Answered) -> String {
    match &answer.error {
        None => "complete".to_owned(),
        Some(e) => format!("failed ({})", short(e)),
    }
}

/// A value's `Debug` text, cut short when long.
fn short(value: &(impl fmt::Debug + ?Sized)) -> String {
    let text = format!("{value:?}");
    match text.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}… ({} chars)", &text[..at], text.chars().count()),
        None => text,
    }
}

/// Bytes as an escaped string, cut short when long.
fn show(bytes: &[u8]) -> String {
    let escaped: String = bytes
        .iter()
        .take(SHOWN)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > SHOWN {
        format!("\"{escaped}\"… ({} bytes)", bytes.len())
    } else {
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests;
