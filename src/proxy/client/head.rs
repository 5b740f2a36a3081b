//! Which upstream answers the proxy's own HTTP/1.1 exchange reads itself, and the response it makes of them.
//!
//! The exchange takes only the plainest answers and leaves every decision hyper could make differently to hyper,
//! as the caller side's loop does (`server::http1::head`): an answer head is read here when it parses completely
//! (with the parser and settings hyper's client uses) in less than [`super::HTTP1_BUFFER`], is HTTP/1.1, is not
//! informational (`1xx`), carries no `Transfer-Encoding`, and has exactly one `Content-Length` of plain digits —
//! or is `204`/`304`, which have no body whatever they say. Anything else — a parse error, a chunked or
//! close-delimited body, an answer to `HEAD` or `CONNECT` — is [`ForHyper`]: hyper's client reads the answer from its first
//! byte (`exchange`), so its framing decision is hyper's own. A differential test and a fuzz target hold the two
//! readers together.

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderName, Method, Response, StatusCode, Version};

use crate::server::http1::head::{
    MAX_HEADERS, Spans, UnsplitFront, digits, field_map, lists_close,
};

/// What the bytes read so far hold: `Ok(Some(_))` a plain answer head, split off the front of the buffer;
/// `Ok(None)` not a complete head yet; `Err(ForHyper)` anything else (`buf` untouched).
pub(super) type Parsed = Result<Option<PlainAnswer>, ForHyper>;

/// An answer hyper's client reads, from the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ForHyper;

/// A plain answer head: the response without its body, how many body bytes follow, and whether the connection
/// can carry another exchange afterwards.
pub(super) struct PlainAnswer {
    pub(super) head: Response<()>,
    pub(super) body_len: u64,
    pub(super) keep_alive: bool,
}

/// Parses the answer head at the front of `buf`. At most [`MAX_HEADERS`] fields are read here (hyper's client takes
/// up to 100; beyond 64 it decides).
pub(super) fn parse(buf: &mut BytesMut, method: &Method) -> Parsed {
    // An answer to HEAD has no body whatever its fields say, and a 2xx to CONNECT is a tunnel: hyper's.
    if *method == Method::HEAD || *method == Method::CONNECT {
        return Err(ForHyper);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut fields);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ForHyper),
    };
    let (Some(1), Some(code)) = (res.version, res.code) else {
        return Err(ForHyper);
    };
    let Ok(status) = StatusCode::from_u16(code) else {
        return Err(ForHyper);
    };
    if status.is_informational() {
        return Err(ForHyper);
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let mut spans = Spans::new();
    let mut content_length: Option<Option<u64>> = None;
    let mut keep_alive = true;
    for field in res.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else {
            return Err(ForHyper);
        };
        if name == TRANSFER_ENCODING {
            return Err(ForHyper);
        }
        if name == CONTENT_LENGTH {
            if content_length.is_some() {
                return Err(ForHyper);
            }
            content_length = Some(digits(field.value));
        } else if name == CONNECTION && lists_close(field.value) {
            keep_alive = false;
        }
        spans.push((name, span(field.value)));
    }
    let body_len = match (status.as_u16(), content_length) {
        (204 | 304, _) => 0,
        (_, Some(Some(n))) => n,
        // No length (read to the end), or one hyper reads differently: hyper's.
        _ => return Err(ForHyper),
    };
    let head = buf.split_to(head_len).freeze();
    let Some(headers) = field_map(&head, &mut spans, 0) else {
        buf.unsplit_front(head, Bytes::new());
        return Err(ForHyper);
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = Version::HTTP_11;
    *response.headers_mut() = headers;
    Ok(Some(PlainAnswer {
        head: response,
        body_len,
        keep_alive,
    }))
}

impl std::fmt::Debug for PlainAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainAnswer")
            .field("status", &self.head.status())
            .field("fields", &self.head.headers().len())
            .field("body_len", &self.body_len)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(bytes: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        (parse(&mut buf, &Method::GET), buf)
    }

    #[test]
    fn answers_to_head_and_connect_are_left_to_hyper() {
        for method in [Method::HEAD, Method::CONNECT] {
            let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
            assert!(
                matches!(parse(&mut buf, &method), Err(ForHyper)),
                "{method}"
            );
        }
    }

    #[test]
    fn a_plain_answer_is_split_off_with_its_length_and_fields_in_order() {
        let (parsed, rest) = parse_str(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
        );
        let answer = parsed.unwrap().unwrap();
        assert_eq!(answer.head.status(), StatusCode::OK);
        assert_eq!(answer.body_len, 5);
        assert!(answer.keep_alive);
        let fields: Vec<_> = answer
            .head
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            fields,
            [
                ("content-type", "text/plain"),
                ("content-length", "5"),
                ("x-a", "1"),
                ("x-a", "2")
            ]
        );
        assert_eq!(&rest[..], b"hello");
    }

    #[test]
    fn connection_close_ends_the_connection_after_the_answer() {
        let (parsed, _) = parse_str(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive, Close\r\n\r\n",
        );
        assert!(!parsed.unwrap().unwrap().keep_alive);
    }

    #[test]
    fn no_body_statuses_need_no_length() {
        for status in ["204 No Content", "304 Not Modified"] {
            let (parsed, _) =
                parse_str(&format!("HTTP/1.1 {status}\r\nContent-Length: 12\r\n\r\n"));
            assert_eq!(parsed.unwrap().unwrap().body_len, 0, "{status}");
        }
    }

    #[test]
    fn a_partial_head_asks_for_more_and_leaves_the_buffer() {
        let (parsed, rest) = parse_str("HTTP/1.1 200 OK\r\nContent-Len");
        assert!(matches!(parsed, Ok(None)));
        assert_eq!(&rest[..], b"HTTP/1.1 200 OK\r\nContent-Len");
    }

    #[test]
    fn everything_not_plain_is_left_to_hyper_untouched() {
        for bytes in [
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\nto the end",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
            "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n folded\r\n\r\n",
        ] {
            let (parsed, rest) = parse_str(bytes);
            assert!(matches!(parsed, Err(ForHyper)), "{bytes:?}");
            assert_eq!(&rest[..], bytes.as_bytes(), "{bytes:?}");
        }
    }

    #[test]
    fn more_fields_than_read_here_are_left_to_hyper() {
        let mut bytes = String::from("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n");
        for i in 0..MAX_HEADERS {
            bytes.push_str(&format!("x-{i}: {i}\r\n"));
        }
        bytes.push_str("\r\n");
        assert!(matches!(parse_str(&bytes).0, Err(ForHyper)));
    }

    #[test]
    fn debug_output_shows_no_field_value() {
        let (parsed, _) =
            parse_str("HTTP/1.1 200 OK\r\nSet-Cookie: canary-7f3a\r\nContent-Length: 0\r\n\r\n");
        let shown = format!("{:?}", parsed.unwrap().unwrap());
        assert!(!shown.contains("canary-7f3a"), "{shown}");
    }
}
