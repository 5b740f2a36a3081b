//! The loop's framing decision against hyper's, for the tests and the fuzz target.
//!
//! [`compare_with_hyper`] runs [`head::parse`] over an input as the loop does — plain request after plain request
//! until one is not plain, the head is incomplete, a request asks to close, or the bytes run out — and feeds the
//! same bytes to a real hyper HTTP/1 connection set up as the server sets it up (64 KiB read buffer, keep-alive,
//! the default parser and its 100 header fields, upgrades allowed), whose service records every request it is
//! given. Every plain request must be the request hyper read at that place in the connection: method, target,
//! version, header fields in order with their duplicates, the body, and hyper's answer to it must be `200` with
//! `Connection: close` exactly when the loop read a close. Where the loop waits for more of a head, hyper must
//! not have read a request there either; where the loop leaves the bytes to hyper, nothing is compared from there
//! on (hyper decides).
//!
//! The whole input is written and the write side then shut: the loop decides on exactly the bytes it has, and with
//! the end of input hyper ends every connection it would otherwise keep waiting on. hyper's connection allows half
//! closes here (the proxy's does not) so that the end of input does not cut the last request's answer short; it
//! changes nothing in how a request is framed. Everything runs in memory on a current-thread runtime without a
//! timer; a run that can make no more progress is reported as a stall instead of waiting for a timeout.

use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Wake, Waker};

use bytes::{Bytes, BytesMut};
use http::header::CONNECTION;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::head::{self, ForHyper, Plain};

/// hyper's read buffer limit, as the server sets it.
const MAX_BUF_SIZE: usize = 64 * 1024;

/// Room in the in-memory pipe each way.
const PIPE: usize = 64 * 1024;

/// What the loop made of the bytes, request after request.
#[derive(Debug)]
enum Step {
    /// A plain request the loop serves.
    Plain(Box<Plain>),
    /// An incomplete head: the loop waits for more.
    Incomplete,
    /// The bytes from here on are hyper's.
    Hyper,
}

/// Compares the loop's decisions on `input` with hyper's; `Err` describes the first disagreement.
pub fn compare_with_hyper(input: &[u8]) -> Result<(), String> {
    let steps = loop_steps(input);
    if matches!(steps.first(), None | Some(Step::Hyper)) {
        return Ok(());
    }
    let hyper = run_hyper(input).map_err(|e| format!("{e}\ninput: {}", show(input)))?;
    compare(&steps, &hyper).map_err(|e| {
        format!(
            "{e}\ninput: {}\nhyper read {} request(s) and answered {:?}",
            show(input),
            hyper.requests.len(),
            hyper.answers
        )
    })
}

/// The loop's decisions, as it makes them on a connection that has sent exactly `input`.
fn loop_steps(input: &[u8]) -> Vec<Step> {
    let mut buf = BytesMut::from(input);
    let mut steps = Vec::new();
    loop {
        match head::parse(&mut buf) {
            Ok(Some(plain)) => {
                let close = plain.close;
                steps.push(Step::Plain(Box::new(plain)));
                // After a close the loop reads nothing more; with no bytes left it waits for the next request.
                if close || buf.is_empty() {
                    return steps;
                }
            }
            Ok(None) => {
                steps.push(Step::Incomplete);
                return steps;
            }
            Err(ForHyper) => {
                steps.push(Step::Hyper);
                return steps;
            }
        }
    }
}

/// A request as hyper's service was given it.
#[derive(Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    version: Version,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The collected body; `None` while (or if never) collected.
    body: Option<Result<Bytes, String>>,
}

/// One of hyper's answers: its status and whether it said `Connection: close`.
#[derive(Debug)]
struct Answer {
    status: u16,
    close: bool,
}

/// What hyper made of the input.
#[derive(Debug)]
struct Hyper {
    requests: Vec<Seen>,
    answers: Vec<Answer>,
}

fn compare(steps: &[Step], hyper: &Hyper) -> Result<(), String> {
    let mut plain = 0;
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Plain(p) => {
                let Some(seen) = hyper.requests.get(i) else {
                    return Err(format!(
                        "request {i}: the loop read a plain request ({} {}, {} field(s)), hyper did not",
                        p.head.method(),
                        p.head.uri(),
                        p.head.headers().len()
                    ));
                };
                same_request(i, p, seen)?;
                let Some(answer) = hyper.answers.get(i) else {
                    return Err(format!("request {i}: hyper did not answer it"));
                };
                if answer.status != 200 {
                    return Err(format!(
                        "request {i}: hyper answered {} where the loop served the request",
                        answer.status
                    ));
                }
                if answer.close != p.close {
                    return Err(format!(
                        "request {i}: the loop read close = {}, hyper's answer says close = {}",
                        p.close, answer.close
                    ));
                }
                plain += 1;
            }
            Step::Incomplete => {
                if hyper.requests.len() > i {
                    return Err(format!(
                        "request {i}: the loop waits for more of the head, hyper read {:?} {:?}",
                        hyper.requests[i].method, hyper.requests[i].uri
                    ));
                }
            }
            Step::Hyper => return Ok(()),
        }
    }
    // The loop closed after its last request, or had no bytes left: neither has hyper read another.
    if hyper.requests.len() > plain {
        return Err(format!(
            "the loop took {plain} request(s) and stopped, hyper read {}",
            hyper.requests.len()
        ));
    }
    Ok(())
}

fn same_request(i: usize, p: &Plain, seen: &Seen) -> Result<(), String> {
    let mut diff = String::new();
    if p.head.method() != seen.method {
        let _ = write!(diff, " method {:?} / {:?};", p.head.method(), seen.method);
    }
    if p.head.uri() != &seen.uri || p.head.uri().to_string() != seen.uri.to_string() {
        let _ = write!(diff, " target {:?} / {:?};", p.head.uri(), seen.uri);
    }
    if p.head.version() != seen.version {
        let _ = write!(
            diff,
            " version {:?} / {:?};",
            p.head.version(),
            seen.version
        );
    }
    let fields: Vec<_> = p
        .head
        .headers()
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    if fields != seen.headers {
        let _ = write!(diff, " header fields {fields:?} / {:?};", seen.headers);
    }
    match &seen.body {
        Some(Ok(body)) if *body == p.body => {}
        other => {
            let _ = write!(diff, " body {:?} / {other:?};", p.body);
        }
    }
    if diff.is_empty() {
        Ok(())
    } else {
        Err(format!("request {i} differs (loop / hyper):{diff}"))
    }
}

/// Serves `input` with hyper, as the server's HTTP/1 connections are set up, and records what it read and answered.
fn run_hyper(input: &[u8]) -> Result<Hyper, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?;
    let seen: Rc<RefCell<Vec<Seen>>> = Rc::default();
    let recorder = Rc::clone(&seen);
    let service = service_fn(move |req: Request<Incoming>| {
        let seen = Rc::clone(&recorder);
        let index = {
            let mut seen = seen.borrow_mut();
            seen.push(Seen {
                method: req.method().clone(),
                uri: req.uri().clone(),
                version: req.version(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect(),
                body: None,
            });
            seen.len() - 1
        };
        async move {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .map_err(|e| e.to_string());
            if let Some(seen) = seen.borrow_mut().get_mut(index) {
                seen.body = Some(body);
            }
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    });
    let (client, server) = tokio::io::duplex(PIPE);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(MAX_BUF_SIZE)
        .keep_alive(true)
        .half_close(true);
    let conn = builder
        .serve_connection(TokioIo::new(server), service)
        .with_upgrades();
    let (mut read, mut write) = tokio::io::split(client);
    let send = async move {
        // hyper may close before it has read everything (after an error or a close): the rest is not its.
        if write.write_all(input).await.is_ok() {
            let _ = write.shutdown().await;
        }
    };
    let receive = async move {
        let mut out = Vec::new();
        let _ = read.read_to_end(&mut out).await;
        out
    };
    let both = async move {
        let ((), out, _) = tokio::join!(send, receive, conn);
        out
    };
    let out = runtime
        .block_on(until_stalled(both))
        .ok_or("hyper's connection stalled: neither side can make progress")?;
    let answers = read_answers(&out)?;
    let requests = seen.take();
    Ok(Hyper { requests, answers })
}

/// Runs `future` until it completes (`Some`) or can no longer make progress (`None`). Everything it waits on is
/// inside it, so a poll that ends pending without anything having been woken means nothing ever will be.
async fn until_stalled<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    poll_fn(|cx| {
        let flag = Arc::new(Woken {
            woken: AtomicBool::new(false),
            outer: cx.waker().clone(),
        });
        let waker = Waker::from(Arc::clone(&flag));
        let mut inner = std::task::Context::from_waker(&waker);
        match future.as_mut().poll(&mut inner) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending if flag.woken.load(Ordering::SeqCst) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => Poll::Ready(None),
        }
    })
    .await
}

/// A waker that remembers having been woken.
struct Woken {
    woken: AtomicBool,
    outer: Waker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.outer.wake_by_ref();
    }
}

/// hyper's answers, in order.
fn read_answers(mut out: &[u8]) -> Result<Vec<Answer>, String> {
    let mut answers = Vec::new();
    while !out.is_empty() {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut fields);
        let len = match response.parse(out) {
            Ok(httparse::Status::Complete(len)) => len,
            other => {
                return Err(format!(
                    "hyper's answer {} cannot be read ({other:?}): {}",
                    answers.len(),
                    show(out)
                ));
            }
        };
        let mut body = 0;
        let mut close = false;
        for field in response.headers.iter() {
            if field.name.eq_ignore_ascii_case("content-length") {
                body = std::str::from_utf8(field.value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| format!("hyper's answer has length {:?}", field.value))?;
            } else if field.name.eq_ignore_ascii_case(CONNECTION.as_str()) {
                close |= std::str::from_utf8(field.value).is_ok_and(|v| {
                    v.split(',')
                        .any(|token| token.trim().eq_ignore_ascii_case("close"))
                });
            }
        }
        answers.push(Answer {
            status: response.code.unwrap_or_default(),
            close,
        });
        out = out.get(len + body..).unwrap_or_default();
    }
    Ok(answers)
}

/// The input as an escaped string, cut short when long.
fn show(input: &[u8]) -> String {
    const SHOWN: usize = 600;
    let escaped: String = input
        .iter()
        .take(SHOWN)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if input.len() > SHOWN {
        format!("\"{escaped}\"… ({} bytes)", input.len())
    } else {
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many plain requests the loop takes from `input` before it waits, closes or hands over.
    fn plain_count(input: &[u8]) -> usize {
        loop_steps(input)
            .iter()
            .filter(|step| matches!(step, Step::Plain(_)))
            .count()
    }

    fn fields(n: usize) -> String {
        (0..n).map(|i| format!("X-F{i}: v{i}\r\n")).collect()
    }

    /// Request heads and whole inputs that exercise framing, the classic smuggling shapes among them.
    fn table() -> Vec<Vec<u8>> {
        let mut cases: Vec<Vec<u8>> = [
            // Plain requests.
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /score?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
            "POST /score HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            "POST /score HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "PUT /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nabc",
            "DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a.example/x?y HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "GET http://user@a.example:8080/x HTTP/1.1\r\nHost: b\r\n\r\n",
            "GET a.example:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-B: 3\r\nX-A: 4\r\n\r\n",
            "GET / HTTP/1.1\r\nX-Empty:\r\nX-Spaces:    \r\nX-Tab:\tv\t\r\n\r\n",
            "GET / HTTP/1.1\r\nX-Utf8: caf\u{e9} \u{2603}\r\n\r\n",
            "GET / HTTP/1.1\r\nX-Chars: !#$%&'*+-.^_`|~ \"q\" (c) <a> [b] {c}\r\n\r\n",
            "GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09az: v\r\n\r\n",
            // Body boundaries: exact, one byte short, extra bytes that start the next request.
            "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET / HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET / HT",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdX",
            "POST / HTTP/1.1\r\nContent-Length: 004\r\n\r\nabcd",
            "POST / HTTP/1.1\r\nContent-Length: 0000000000000000004\r\n\r\nabcd",
            "GET / HTTP/1.1\r\nContent-Length: 2\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            // Pipelines.
            "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
            "GET /1 HTTP/1.1\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET /1 HTTP/1.1\r\n\r\n\r\n\r\n\n\nGET /2 HTTP/1.1\r\n\r\n",
            "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
            "GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET /1 HTTP/1.1\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /1 HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "POST /1 HTTP/1.1\r\nContent-Length: 1\r\n\r\naPOST /2 HTTP/1.1\r\nContent-Length: 1\r\n\r\nb",
            // Content-Length and Transfer-Encoding together, duplicated, odd.
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: 3 \r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length:  3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: 3\t\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: 3,3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabcd",
            "POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: 3e0\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: 3 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 9999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \u{663}\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\n Content-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length\t: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent_Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nX: y\r\n folded\r\n\r\nabc",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding\r\n : chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nX: y\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: \u{1}chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer_Encoding: chunked\r\nContent-Length: 1\r\n\r\na",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            // Line endings and odd bytes.
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET / HTTP/1.1\r\nHost: a\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\n",
            "GET / HTTP/1.1\rHost: a\r\r",
            "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\rX: y\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
            "GET /\0 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nX\0: a\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x0bb\r\n\r\n",
            "\r\nGET / HTTP/1.1\r\n\r\n",
            "\r\n\r\n\nGET / HTTP/1.1\r\n\r\n",
            " GET / HTTP/1.1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 \r\n\r\n",
            "GET\t/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A:b:c\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A b: c\r\n\r\n",
            "GET / HTTP/1.1\r\nX-\u{e9}: c\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: b\r\n\tc\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET /a\"b<c>{d}|e HTTP/1.1\r\n\r\n",
            "GET /caf\u{e9} HTTP/1.1\r\n\r\n",
            "GET //a/../b/%2e%2e HTTP/1.1\r\n\r\n",
            "GET ?q HTTP/1.1\r\n\r\n",
            "GET # HTTP/1.1\r\n\r\n",
            "GET /#frag HTTP/1.1\r\n\r\n",
            "GET http:// HTTP/1.1\r\n\r\n",
            "GET http://a.example:99999/ HTTP/1.1\r\n\r\n",
            // Versions.
            "GET / HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.2\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / http/1.1\r\n\r\n",
            "GET / HTTP/1.10\r\n\r\n",
            "GET /\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04\0\0\0\0\0",
            // Methods.
            "HEAD / HTTP/1.1\r\n\r\n",
            "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "Get / HTTP/1.1\r\n\r\n",
            "PATCH /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nz",
            "PURGE / HTTP/1.1\r\n\r\n",
            "M-SEARCH * HTTP/1.1\r\n\r\n",
            "!#$%&'*+-.^_`|~ / HTTP/1.1\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "G\u{e9}T / HTTP/1.1\r\n\r\n",
            // Connection, Expect, Upgrade, TE.
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: CLOSE\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: close, keep-alive\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: ,, Close ,\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection:\tclose\t\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: closed\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: \"close\"\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: close;q=1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: clos\u{e9}\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: close \u{e9}\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: \u{e9}, close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: x-close, close-x\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nProxy-Connection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\na",
            "POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nTE: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nTrailer: X\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            // Incomplete heads.
            "",
            "G",
            "GET / HTTP/1.1",
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\r",
            "\r\n",
            "\r\n\r\n",
            "PRI * HTT",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        // Raw bytes that are not UTF-8.
        for raw in [
            &b"GET / HTTP/1.1\r\nX: \xff\xfe\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nConnection: \xffclose\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: close\r\nX: \x80\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\xff: a\r\n\r\n",
            b"\xef\xbb\xbfGET / HTTP/1.1\r\n\r\n",
        ] {
            cases.push(raw.to_vec());
        }
        // Many fields: the loop's limit (64), hyper's (100), either side of each.
        for n in [63, 64, 65, 99, 100, 101] {
            cases.push(format!("GET / HTTP/1.1\r\n{}\r\n", fields(n)).into_bytes());
            cases.push(
                format!(
                    "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n{}\r\n",
                    fields(n)
                )
                .into_bytes(),
            );
        }
        // Long targets and values, bodies at the loop's limit.
        for len in [
            1_000,
            8_000,
            16 * 1024 - 15,
            16 * 1024 - 14,
            16 * 1024,
            20_000,
            65_534,
            65_535,
        ] {
            cases.push(format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(len - 1)).into_bytes());
        }
        for len in [8_000, 9_000, 30_000] {
            cases.push(
                format!(
                    "GET / HTTP/1.1\r\nX: {}\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
                    "v".repeat(len)
                )
                .into_bytes(),
            );
        }
        for len in [head::MAX_BODY - 1, head::MAX_BODY, head::MAX_BODY + 1] {
            cases.push(
                format!(
                    "POST / HTTP/1.1\r\nContent-Length: {len}\r\n\r\n{}GET /2 HTTP/1.1\r\n\r\n",
                    "b".repeat(len)
                )
                .into_bytes(),
            );
        }
        // Heads around hyper's 64 KiB read buffer.
        for total in [
            60 * 1024,
            64 * 1024 - 1,
            64 * 1024,
            64 * 1024 + 1,
            70 * 1024,
            100 * 1024,
        ] {
            cases.push(head_of(total));
        }
        cases
    }

    /// A plain `GET` head of exactly `total` bytes, in 40 fields.
    fn head_of(total: usize) -> Vec<u8> {
        let start = "GET / HTTP/1.1\r\n";
        let fixed = start.len() + 2 + 40 * "X-00: \r\n".len();
        let each = (total - fixed) / 40;
        let mut head = String::from(start);
        for i in 0..40 {
            let len = if i == 0 {
                total - fixed - each * 39
            } else {
                each
            };
            let _ = write!(head, "X-{i:02}: {}\r\n", "v".repeat(len));
        }
        head.push_str("\r\n");
        assert_eq!(head.len(), total);
        head.into_bytes()
    }

    fn check_all(cases: &[Vec<u8>]) -> (usize, usize) {
        let mut failures = Vec::new();
        let mut plain_inputs = 0;
        let mut plain_requests = 0;
        for case in cases {
            let n = plain_count(case);
            plain_requests += n;
            plain_inputs += usize::from(n > 0);
            if let Err(e) = compare_with_hyper(case) {
                failures.push(e);
            }
        }
        assert!(
            failures.is_empty(),
            "{} disagreement(s):\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
        (plain_inputs, plain_requests)
    }

    #[test]
    fn the_loop_and_hyper_frame_the_table_alike() {
        let cases = table();
        assert!(cases.len() >= 150, "{} cases", cases.len());
        let (plain_inputs, plain_requests) = check_all(&cases);
        // Not vacuous: a good part of the table is served by the loop and so compared field by field.
        assert!(
            plain_inputs >= 70,
            "only {plain_inputs} inputs start with a plain request"
        );
        assert!(plain_requests >= 90, "only {plain_requests} plain requests");
    }

    #[test]
    fn the_loop_and_hyper_frame_mutated_requests_alike() {
        let bases: Vec<Vec<u8>> = [
            "POST /score HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /x?y=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\nPOST /3 HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let alphabet = b"\r\n :,;\t\0\x7f\x80\xff0123456789+-aAcCkK/?#%\"";
        let mut rng = fastrand::Rng::with_seed(0x6874_7470_3131);
        let mut cases = Vec::new();
        for i in 0..3_000 {
            let mut case = bases[i % bases.len()].clone();
            for _ in 0..rng.usize(1..=3) {
                let at = rng.usize(0..case.len());
                let byte = if rng.bool() {
                    alphabet[rng.usize(0..alphabet.len())]
                } else {
                    rng.u8(..)
                };
                match rng.u8(0..4) {
                    0 => case[at] = byte,
                    1 => case.insert(at, byte),
                    2 => {
                        case.remove(at);
                    }
                    _ => case.truncate(at),
                }
                if case.is_empty() {
                    break;
                }
            }
            cases.push(case);
        }
        let (plain_inputs, _) = check_all(&cases);
        assert!(
            plain_inputs >= 600,
            "only {plain_inputs} mutated inputs start with a plain request"
        );
    }

    #[test]
    fn the_rest_after_a_plain_request_is_what_hyper_reads_next() {
        let second = [
            "GET /2 HTTP/1.1\r\nHost: b\r\nX: 1\r\n\r\n",
            "POST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz",
            "PUT /2 HTTP/1.1\r\nConnection: close\r\nContent-Length: 1\r\n\r\nq",
            "\r\nGET /2 HTTP/1.1\r\n\r\n",
        ];
        let first = [
            "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST /1 HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
            "POST /1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /1 HTTP/1.1\nHost: a\n\n",
        ];
        for a in first {
            for b in second {
                let input = format!("{a}{b}");
                assert_eq!(plain_count(input.as_bytes()), 2, "{input:?}");
                // The second request hyper read is compared with the loop's reading of the rest.
                compare_with_hyper(input.as_bytes()).unwrap();
                let hyper = run_hyper(input.as_bytes()).unwrap();
                assert_eq!(hyper.requests.len(), 2, "{input:?}");
                let mut rest = BytesMut::from(input.as_bytes());
                let Ok(Some(_)) = head::parse(&mut rest) else {
                    panic!("{input:?}");
                };
                let Ok(Some(next)) = head::parse(&mut rest) else {
                    panic!("{input:?}");
                };
                same_request(1, &next, &hyper.requests[1]).unwrap();
                assert!(rest.is_empty());
            }
        }
    }

    #[test]
    fn a_disagreement_is_reported() {
        // The comparison itself notices a difference: hyper's record of a request against a different one.
        let hyper = run_hyper(b"GET /a HTTP/1.1\r\nX: 1\r\n\r\n").unwrap();
        for other in [
            "GET /b HTTP/1.1\r\nX: 1\r\n\r\n",
            "POST /a HTTP/1.1\r\nX: 1\r\n\r\n",
            "GET /a HTTP/1.1\r\nX: 2\r\n\r\n",
            "GET /a HTTP/1.1\r\nX: 1\r\nX: 1\r\n\r\n",
            "GET /a HTTP/1.1\r\nX: 1\r\nContent-Length: 1\r\n\r\nz",
            "GET /a HTTP/1.1\r\nX: 1\r\nConnection: close\r\n\r\n",
        ] {
            let steps = loop_steps(other.as_bytes());
            assert!(compare(&steps, &hyper).is_err(), "{other:?}");
        }
        let steps = loop_steps(b"GET /a HTTP/1.1\r\nX: 1\r\n\r\n");
        compare(&steps, &hyper).unwrap();
        // A request hyper read where the loop waits for more.
        assert!(compare(&[Step::Incomplete], &hyper).is_err());
        // hyper's error answers are read as such.
        let hyper = run_hyper(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").unwrap();
        assert!(hyper.requests.is_empty());
        assert_eq!(hyper.answers.len(), 1);
        assert_eq!(hyper.answers[0].status, 400);
        assert!(hyper.answers[0].close);
    }
}
