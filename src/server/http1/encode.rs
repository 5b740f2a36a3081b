//! The response head, written as hyper's HTTP/1.1 server writes it for the requests the proxy's own loop serves
//! (HTTP/1.1, neither `HEAD` nor `CONNECT`): the status line with the canonical reason (or the upstream's own,
//! when hyper's client kept it), header names in lower case in the map's order, the body's framing
//! (`content-length` from the headers or the body's exact size, else `transfer-encoding: chunked`),
//! `connection: close` when the connection ends after this response, and a `date` unless there is one.
//!
//! Keeping the bytes identical to hyper's means a caller cannot tell which server answered it; the differential
//! test in `tests` compares the two for every case here.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, StatusCode};

/// How long the response body is, as far as its sender knows before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// The body has ended already: no bytes.
    None,
    /// Exactly this many bytes.
    Known(u64),
    /// Unknown until it ends.
    Unknown,
}

/// How the body is sent after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (none for 0: the body is not read at all).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A written head: how the body follows it, and whether the connection closes after the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// The body's framing.
    pub framing: Framing,
    /// The connection closes once the response is sent.
    pub last: bool,
}

/// Why a head could not be written (hyper closes the connection for these too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A `content-length` that is not a number, two that disagree, or framing fields in an order hyper refuses.
    #[error("the response's framing headers are invalid")]
    Framing,
    /// A 1xx status as a final response: a `500` was written instead and the connection closes.
    #[error("a 1xx status cannot be a final response")]
    Informational,
}

/// Writes the head of a response with `status` and `headers` (drained) to `dst`. `reason` is a reason phrase to
/// use instead of the canonical one; `keep_alive` whether the connection may stay open after it.
pub fn encode(
    dst: &mut Vec<u8>,
    status: StatusCode,
    reason: Option<&[u8]>,
    headers: &mut HeaderMap,
    body: BodyLength,
    keep_alive: bool,
) -> Result<Encoded, EncodeError> {
    if !keep_alive {
        insert_close(headers);
    }
    let (status, body, mut last, result) = if status == StatusCode::SWITCHING_PROTOCOLS {
        (status, body, true, Ok(()))
    } else if status.is_informational() {
        headers.clear();
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            BodyLength::None,
            true,
            Err(EncodeError::Informational),
        )
    } else {
        (status, body, !keep_alive, Ok(()))
    };
    let start = dst.len();
    dst.reserve(30 + headers.len() * 32);
    if status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(reason) => dst.extend_from_slice(reason),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }
    let can_body = !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let mut framing = Framing::Length(0);
    let mut wrote_len = false;
    let mut wrote_date = false;
    // The field whose line is still open (values of framing fields are joined onto one line).
    let mut open: Option<(http::HeaderName, bool)> = None;
    let mut known_len: Option<u64> = None;
    let mut name = None;
    for (next, value) in headers.drain() {
        if let Some(next) = next {
            close_line(dst, &mut open);
            name = Some(next);
        }
        let Some(name) = name.as_ref() else {
            continue;
        };
        let continuing = matches!(&open, Some((n, _)) if n == name);
        match *name {
            CONTENT_LENGTH => {
                if wrote_len && !continuing {
                    dst.truncate(start);
                    return Err(EncodeError::Framing);
                }
                match body {
                    BodyLength::Known(len) => {
                        if !continuing {
                            framing = Framing::Length(len);
                            dst.extend_from_slice(b"content-length: ");
                            dst.extend_from_slice(value.as_bytes());
                            wrote_len = true;
                            open = Some((CONTENT_LENGTH, false));
                        }
                        continue;
                    }
                    BodyLength::Unknown => {
                        let Some(len) = digits(value.as_bytes()) else {
                            dst.truncate(start);
                            return Err(EncodeError::Framing);
                        };
                        match known_len {
                            Some(prev) if prev != len => {
                                dst.truncate(start);
                                return Err(EncodeError::Framing);
                            }
                            Some(_) => continue,
                            None => {
                                framing = Framing::Length(len);
                                dst.extend_from_slice(b"content-length: ");
                                dst.extend_from_slice(value.as_bytes());
                                wrote_len = true;
                                known_len = Some(len);
                                open = Some((CONTENT_LENGTH, false));
                                continue;
                            }
                        }
                    }
                    // No body: the field is dropped (an implicit `content-length: 0` follows).
                    BodyLength::None => continue,
                }
            }
            TRANSFER_ENCODING => {
                if wrote_len && !continuing {
                    dst.truncate(start);
                    return Err(EncodeError::Framing);
                }
                if !can_body {
                    continue;
                }
                wrote_len = true;
                let chunked_last = ends_in_chunked(&value);
                if continuing {
                    dst.extend_from_slice(b", ");
                } else {
                    framing = Framing::Chunked;
                    dst.extend_from_slice(b"transfer-encoding: ");
                }
                dst.extend_from_slice(value.as_bytes());
                open = Some((TRANSFER_ENCODING, !chunked_last));
                continue;
            }
            CONNECTION => {
                if !last && lists(&value, "close") {
                    last = true;
                }
                if continuing {
                    dst.extend_from_slice(b", ");
                } else {
                    dst.extend_from_slice(b"connection: ");
                }
                dst.extend_from_slice(value.as_bytes());
                open = Some((CONNECTION, false));
                continue;
            }
            TRAILER => {
                if !can_body {
                    continue;
                }
                if continuing {
                    dst.extend_from_slice(b", ");
                } else {
                    dst.extend_from_slice(b"trailer: ");
                }
                dst.extend_from_slice(value.as_bytes());
                open = Some((TRAILER, false));
                continue;
            }
            DATE => wrote_date = true,
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    close_line(dst, &mut open);
    if !wrote_len {
        framing = match body {
            BodyLength::Unknown if can_body => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            // A body of unknown length where none may be sent: nothing is sent.
            BodyLength::Unknown => Framing::Length(0),
            BodyLength::None | BodyLength::Known(0) => {
                if can_body {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            BodyLength::Known(len) => {
                if can_body {
                    dst.extend_from_slice(b"content-length: ");
                    dst.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                    dst.extend_from_slice(b"\r\n");
                    Framing::Length(len)
                } else {
                    Framing::Length(0)
                }
            }
        };
    }
    if !can_body {
        framing = Framing::Length(0);
    }
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        http_date(dst);
        dst.extend_from_slice(b"\r\n\r\n");
    } else {
        dst.extend_from_slice(b"\r\n");
    }
    result.map(|()| Encoded { framing, last })
}

/// Ends the line of a framing field whose values were being joined (adding `chunked` to a transfer coding that
/// did not end in it).
fn close_line(dst: &mut Vec<u8>, open: &mut Option<(http::HeaderName, bool)>) {
    if let Some((_, add_chunked)) = open.take() {
        if add_chunked {
            dst.extend_from_slice(b", chunked\r\n");
        } else {
            dst.extend_from_slice(b"\r\n");
        }
    }
}

/// `Connection: close` for a response after which the connection closes, unless it says so already.
fn insert_close(headers: &mut HeaderMap) {
    match headers.entry(CONNECTION) {
        http::header::Entry::Occupied(mut entry) => {
            if !entry.iter().any(|v| lists(v, "close")) {
                entry.append(HeaderValue::from_static("close"));
            }
        }
        http::header::Entry::Vacant(entry) => {
            entry.insert(HeaderValue::from_static("close"));
        }
    }
}

/// Whether a comma-separated header value lists `token` (any case).
fn lists(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|s| {
        s.split(',')
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    })
}

/// Whether a transfer-coding list ends in `chunked`.
fn ends_in_chunked(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|s| {
        s.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    })
}

/// A `content-length` value: digits only.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// The current time as an HTTP date (`Fri, 04 Dec 2026 16:27:00 GMT`), formatted once a second per thread.
fn http_date(dst: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        dst.extend_from_slice(cached.1.as_bytes());
    });
}

/// What a written head looks like with its `date` value cut out, for comparisons.
#[cfg(test)]
pub(crate) fn without_date(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n")
        .filter(|line| !line.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        status: u16,
        fields: &[(&str, &str)],
        body: BodyLength,
        keep_alive: bool,
    ) -> (String, Result<Encoded, EncodeError>) {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut dst = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        let result = encode(&mut dst, status, None, &mut headers, body, keep_alive);
        (without_date(&dst), result)
    }

    #[test]
    fn a_known_length_is_written_and_a_date_added() {
        let (text, result) = head(200, &[("x-a", "1")], BodyLength::Known(5), true);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(
            result,
            Ok(Encoded {
                framing: Framing::Length(5),
                last: false
            })
        );
    }

    #[test]
    fn an_unknown_length_is_chunked_unless_the_headers_give_it() {
        let (text, result) = head(404, &[], BodyLength::Unknown, true);
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(result.map(|e| e.framing), Ok(Framing::Chunked));
        let (text, result) = head(200, &[("content-length", "7")], BodyLength::Unknown, true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(result.map(|e| e.framing), Ok(Framing::Length(7)));
    }

    #[test]
    fn disagreeing_lengths_are_refused() {
        let fields = [("content-length", "7"), ("content-length", "8")];
        assert_eq!(
            head(200, &fields, BodyLength::Unknown, true).1,
            Err(EncodeError::Framing)
        );
        let fields = [("content-length", "x")];
        assert_eq!(
            head(200, &fields, BodyLength::Unknown, true).1,
            Err(EncodeError::Framing)
        );
    }

    #[test]
    fn a_closing_connection_says_so() {
        let (text, result) = head(503, &[], BodyLength::None, false);
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(result.map(|e| e.last), Ok(true));
    }

    #[test]
    fn no_content_has_no_length_and_no_body() {
        let (text, result) = head(204, &[("content-length", "3")], BodyLength::Known(3), true);
        assert_eq!(text, "HTTP/1.1 204 No Content\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(result.map(|e| e.framing), Ok(Framing::Length(0)));
    }

    #[test]
    fn a_transfer_coding_gets_chunked_added() {
        let (text, result) = head(
            200,
            &[("transfer-encoding", "gzip")],
            BodyLength::Unknown,
            true,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
        );
        assert_eq!(result.map(|e| e.framing), Ok(Framing::Chunked));
    }

    #[test]
    fn an_informational_status_becomes_a_500() {
        let (text, result) = head(103, &[("x", "y")], BodyLength::Unknown, true);
        assert_eq!(
            text,
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(result, Err(EncodeError::Informational));
    }

    #[test]
    fn the_date_is_an_http_date() {
        let mut dst = Vec::new();
        http_date(&mut dst);
        let text = String::from_utf8(dst).unwrap();
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
        assert_eq!(text.len(), 29);
    }
}
