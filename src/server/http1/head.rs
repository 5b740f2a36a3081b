//! Which request heads the proxy's own HTTP/1.1 loop serves, and the request it makes of them.
//!
//! The loop takes only the plainest requests and leaves every decision hyper could make differently to hyper: a
//! head is served here when it parses completely (with the same parser and settings hyper uses) in at most 64 KiB,
//! is HTTP/1.1, its method is not `HEAD` or `CONNECT`, it has at most one `Content-Length` (plain digits) and its
//! whole body is already read, and it carries none of `Transfer-Encoding`, `Upgrade`, `Expect` or `TE`. Anything
//! else — a parse error included, so hyper writes the error answer — is [`ForHyper`]: hyper serves the
//! connection from those bytes on. The framing decision is therefore hyper's own for every request that is not
//! plain, and for the plain ones it is the one hyper makes (a differential test and a fuzz target hold the two
//! together).

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

/// The most header fields a head served here may have (hyper takes up to 100; beyond 64 it decides).
pub(crate) const MAX_HEADERS: usize = 64;

/// The largest body read whole before the request is handed on.
pub const MAX_BODY: usize = 16 * 1024;

/// The longest request target served here (hyper's own limit is 65,534).
const MAX_TARGET: usize = 16 * 1024;

/// The longest head served here: hyper's read buffer limit. hyper takes a longer head only when it happens to
/// arrive whole in the read that crosses the limit, and answers `431` otherwise; such heads are hyper's to judge.
const MAX_HEAD_LEN: usize = 64 * 1024;

/// What the bytes read so far hold: `Ok(Some(_))` a plain request, split off the front of the buffer with its
/// body; `Ok(None)` not a complete head yet; `Err(ForHyper)` anything else.
pub type Parsed = Result<Option<Plain>, ForHyper>;

/// A request hyper serves, from the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForHyper;

/// A plain request: its head, its whole body, and whether the caller asked to close the connection after it. Its
/// `Debug` output names the method and counts fields and bytes: no target, header value or body byte (a caller's
/// token is marked sensitive only further on).
pub struct Plain {
    /// The request, its body not yet attached.
    pub head: Request<()>,
    /// The whole body (empty for none).
    pub body: Bytes,
    /// The caller sent `Connection: close`.
    pub close: bool,
}

/// Parses the head at the front of `buf`. For a plain request the head and body are split off `buf`, which keeps
/// any bytes after them (a pipelined next request); otherwise `buf` is untouched.
pub fn parse(buf: &mut BytesMut) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        // Errors (hyper answers them), too many fields (hyper's limit is higher): hyper decides.
        Err(_) => return Err(ForHyper),
    };
    if head_len > MAX_HEAD_LEN {
        return Err(ForHyper);
    }
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Err(ForHyper);
    };
    if target.len() > MAX_TARGET {
        return Err(ForHyper);
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Err(ForHyper);
    };
    if method == Method::HEAD || method == Method::CONNECT {
        return Err(ForHyper);
    }
    // Offsets into `buf` of the target and of every field's name and value, so that the values can share the
    // head's one buffer once it is split off.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let target = span(target.as_bytes());
    let mut spans = Spans::new();
    let mut content_length: Option<u64> = None;
    let mut close = false;
    for field in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else {
            return Err(ForHyper);
        };
        if name == TRANSFER_ENCODING || name == UPGRADE || name == EXPECT || name == TE {
            return Err(ForHyper);
        }
        if name == CONTENT_LENGTH {
            match (content_length, digits(field.value)) {
                (None, Some(n)) => content_length = Some(n),
                _ => return Err(ForHyper),
            }
        } else if name == CONNECTION {
            close |= lists_close(field.value);
        }
        spans.push((name, span(field.value)));
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > MAX_BODY as u64 || (buf.len() - head_len) < body_len as usize {
        return Err(ForHyper);
    }
    let head = buf.split_to(head_len).freeze();
    let body = buf.split_to(body_len as usize).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target)) else {
        buf.unsplit_front(head, body);
        return Err(ForHyper);
    };
    // With room for the fields the proxy adds on the way upstream (token, forwarding, trace).
    let Some(headers) = field_map(&head, &mut spans, 8) else {
        buf.unsplit_front(head, body);
        return Err(ForHyper);
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(Some(Plain {
        head: request,
        body,
        close,
    }))
}

impl std::fmt::Debug for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plain")
            .field("method", self.head.method())
            .field("fields", &self.head.headers().len())
            .field("body_bytes", &self.body.len())
            .field("close", &self.close)
            .finish()
    }
}

/// Field names and the spans of their values in a head (before it is split off).
pub(crate) type Spans = smallvec::SmallVec<[(HeaderName, std::ops::Range<usize>); MAX_HEADERS]>;

/// The fields of `head` (split off its buffer) from their names and value spans, in a map with `room` for more;
/// `None` when a value is not a valid field value.
pub(crate) fn field_map(head: &Bytes, spans: &mut Spans, room: usize) -> Option<HeaderMap> {
    let mut headers = super::spare::header_map(spans.len() + room);
    // Drained, not moved: the inline array is kilobytes.
    for (name, value) in spans.drain(..) {
        headers.append(
            name,
            HeaderValue::from_maybe_shared(head.slice(value)).ok()?,
        );
    }
    Some(headers)
}

/// Puts split-off bytes back at the front of a buffer.
pub(crate) trait UnsplitFront {
    fn unsplit_front(&mut self, head: Bytes, body: Bytes);
}

impl UnsplitFront for BytesMut {
    fn unsplit_front(&mut self, head: Bytes, body: Bytes) {
        let mut whole = BytesMut::with_capacity(head.len() + body.len() + self.len());
        whole.extend_from_slice(&head);
        whole.extend_from_slice(&body);
        whole.extend_from_slice(self);
        *self = whole;
    }
}

/// A `Content-Length` value of plain digits (1 to 19 of them, so it fits a `u64`), as hyper reads it; `None` for
/// anything else (hyper then decides: lists, signs and spaces are its business).
pub(crate) fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether a `Connection` value lists `close`, as hyper reads it: comma-separated, trimmed, any case, and only
/// in a value that is visible ASCII.
pub(crate) fn lists_close(value: &[u8]) -> bool {
    if value.eq_ignore_ascii_case(b"keep-alive") {
        // What most peers send: no list to read.
        return false;
    }
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return false;
    }
    text.split(',')
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(bytes: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        (parse(&mut buf), buf)
    }

    fn plain(bytes: &str) -> (Plain, BytesMut) {
        match parse_str(bytes) {
            (Ok(Some(p)), rest) => (p, rest),
            (other, _) => panic!("expected a plain request, got {other:?}"),
        }
    }

    fn goes_to_hyper(bytes: &str) {
        let (parsed, rest) = parse_str(bytes);
        assert_eq!(parsed.err(), Some(ForHyper), "{bytes:?}");
        assert_eq!(rest, bytes.as_bytes(), "the bytes stay for hyper");
    }

    #[test]
    fn a_plain_get_is_split_off_and_a_pipelined_request_stays() {
        let (p, rest) =
            plain("GET /score?x=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next");
        assert_eq!(p.head.method(), Method::GET);
        assert_eq!(p.head.uri(), "/score?x=1");
        assert_eq!(p.head.version(), Version::HTTP_11);
        let values: Vec<_> = p.head.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(p.body.is_empty());
        assert!(!p.close);
        assert_eq!(rest, "GET /next");
    }

    #[test]
    fn a_body_is_taken_whole_when_every_byte_is_there() {
        let (p, rest) = plain("POST /s HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET");
        assert_eq!(p.body, "hello");
        assert_eq!(rest, "GET");
        goes_to_hyper("POST /s HTTP/1.1\r\nContent-Length: 5\r\n\r\nhell");
        goes_to_hyper(&format!(
            "POST /s HTTP/1.1\r\nContent-Length: {n}\r\n\r\n{}",
            "a".repeat(MAX_BODY + 1),
            n = MAX_BODY + 1
        ));
    }

    #[test]
    fn a_partial_head_waits() {
        assert!(matches!(
            parse_str("GET / HTTP/1.1\r\nHost: a\r\n").0,
            Ok(None)
        ));
        assert!(matches!(parse_str("PRI * HTT").0, Ok(None)));
    }

    #[test]
    fn anything_unusual_goes_to_hyper_untouched() {
        for head in [
            "GET / HTTP/1.0\r\n\r\n",
            "HEAD / HTTP/1.1\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\na",
            "POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\na",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\na",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: a\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
            "G@T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\n\rX: y\r\n\r\n",
        ] {
            goes_to_hyper(head);
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        goes_to_hyper(&format!("GET / HTTP/1.1\r\n{many}\r\n"));
    }

    #[test]
    fn connection_close_is_read_as_hyper_reads_it() {
        assert!(
            plain("GET / HTTP/1.1\r\nConnection: keep-alive, Close \r\n\r\n")
                .0
                .close
        );
        assert!(
            plain("GET / HTTP/1.1\r\nConnection: x\r\nConnection: close\r\n\r\n")
                .0
                .close
        );
        assert!(
            !plain("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n")
                .0
                .close
        );
        assert!(
            !plain("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")
                .0
                .close
        );
    }

    #[test]
    fn debug_output_never_shows_the_target_a_header_value_or_the_body() {
        let (p, _) = plain(
            "POST /score?sig=canary-q HTTP/1.1\r\nAuthorization: Bearer canary-t\r\nContent-Length: 8\r\n\r\ncanary-b",
        );
        let shown = format!("{p:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(
            shown.contains("POST") && shown.contains("body_bytes: 8"),
            "{shown}"
        );
    }

    #[test]
    fn content_length_digits() {
        assert_eq!(digits(b"0"), Some(0));
        assert_eq!(digits(b"0012"), Some(12));
        assert_eq!(digits(b"18446744073709551615"), None, "20 digits");
        assert_eq!(
            digits(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(digits(b""), None);
        assert_eq!(digits(b"1 "), None);
    }
}
