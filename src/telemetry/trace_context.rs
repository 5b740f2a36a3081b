//! W3C Trace Context: the `traceparent` header that ties the caller's trace, the proxy's span and the upstream's
//! work together.
//!
//! A request's trace is the caller's when it sent a valid `traceparent` (its trace id and sampled flag are kept,
//! its span becomes the parent of the proxy's), otherwise a new one: a random trace id, sampled exactly when the
//! proxy exports spans. Either way the proxy has a span of its own, with a random id, and the upstream receives
//! `traceparent: 00-<trace id>-<the proxy's span id>-<flags>`, so the proxy's span is the parent of the upstream's
//! work. An invalid `traceparent` (wrong length or case, all-zero ids, version `ff`, sent twice) is replaced, and
//! the caller's `tracestate` goes with it: it belongs to the trace that was not continued.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The request header carrying the trace context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request header carrying vendor-specific trace state, kept only with the caller's `traceparent`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The `sampled` trace flag.
const SAMPLED: u8 = 0x01;

/// The `random` trace flag (the trace id's right-most 7 bytes are random), set on the traces the proxy starts.
const RANDOM: u8 = 0x02;

/// A 16-byte trace id, never all zero. Displays as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, never all zero. Displays as 16 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// The trace a request (or a token acquisition) belongs to, and the proxy's own span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// The proxy's span: the parent of the upstream's.
    pub span_id: SpanId,
    /// The caller's span, when the caller sent a valid `traceparent`.
    pub parent_span_id: Option<SpanId>,
    /// The trace flags sent on (`sampled`, `random`).
    pub flags: u8,
}

// === impl TraceContext ===

impl TraceContext {
    /// The context of a request with `headers`: the caller's trace continued when its `traceparent` is valid,
    /// else a new trace, `sampled` when `sample_new`.
    pub fn for_request(headers: &HeaderMap, sample_new: bool) -> Self {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let caller = match (values.next(), values.next()) {
            (Some(value), None) => parse_traceparent(value.as_bytes()),
            _ => None,
        };
        match caller {
            Some((trace_id, parent, flags)) => Self {
                trace_id,
                span_id: SpanId::random(),
                parent_span_id: Some(parent),
                flags: flags & (SAMPLED | RANDOM),
            },
            None => Self::root(sample_new),
        }
    }

    /// A new trace with the proxy's span at its root.
    pub fn root(sampled: bool) -> Self {
        Self {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent_span_id: None,
            flags: RANDOM | if sampled { SAMPLED } else { 0 },
        }
    }

    /// True when the trace is sampled: the proxy exports its span (if it exports at all).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// `00-<trace id>-<span id>-<flags>`, the `traceparent` the upstream receives.
    pub fn traceparent(&self) -> HeaderValue {
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&mut text[3..35], &self.trace_id.0);
        hex_into(&mut text[36..52], &self.span_id.0);
        hex_into(&mut text[53..55], &[self.flags]);
        // Hex digits and dashes only: always a valid header value.
        HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(""))
    }

    /// Sets the upstream's `traceparent` on `headers`; the caller's `tracestate` stays only when its trace is
    /// continued.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent());
        if self.parent_span_id.is_none() {
            headers.remove(TRACESTATE);
        }
    }
}

/// Parses a `traceparent` value: (trace id, parent span id, flags), or `None` when it is not valid.
///
/// Version `00` is exactly `00-<32 hex>-<16 hex>-<2 hex>`, lower case. A later version may add fields after a
/// `-`; its first four are read the same way. Version `ff` and all-zero ids are invalid.
pub fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, u8)> {
    const LEN: usize = 55;
    if value.len() < LEN || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    match version {
        0xff => return None,
        0x00 if value.len() != LEN => return None,
        _ if value.len() > LEN && value[LEN] != b'-' => return None,
        _ => {}
    }
    let mut trace = [0u8; 16];
    for (i, byte) in trace.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut span = [0u8; 8];
    for (i, byte) in span.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some((TraceId(trace), SpanId(span), flags))
}

/// Two lower-case hex digits.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

/// Writes `bytes` as lower-case hex.
/// Writes `bytes` (at most 16) as lowercase hex in one piece: the trace id is in every access line, and a
/// formatter call per byte cost more than the rest of the line's fields together.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut text = [0u8; 32];
    hex_into(&mut text, bytes);
    let len = 2 * bytes.len().min(16);
    // Hex digits only: always UTF-8.
    f.write_str(std::str::from_utf8(&text[..len]).unwrap_or_default())
}

/// `bytes` as lower-case hex into `out` (two digits a byte, as far as `out` goes).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

/// Lowercase hex digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

// === impl TraceId ===

impl TraceId {
    /// A random trace id (never all zero).
    pub fn random() -> Self {
        loop {
            let id = fastrand::u128(..).to_be_bytes();
            if id != [0; 16] {
                return Self(id);
            }
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

// === impl SpanId ===

impl SpanId {
    /// A random span id (never all zero).
    pub fn random() -> Self {
        loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] {
                return Self(id);
            }
        }
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(TRACEPARENT, HeaderValue::from_str(v).unwrap());
        }
        headers.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        headers
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_the_proxy_span_as_the_new_parent() {
        let context = TraceContext::for_request(&headers(&[VALID]), false);
        assert_eq!(
            context.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            context.parent_span_id.map(|s| s.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(context.span_id.to_string(), "00f067aa0ba902b7");
        assert!(context.sampled());
        let mut out = headers(&[VALID]);
        context.apply(&mut out);
        assert_eq!(
            out.get(TRACEPARENT).unwrap(),
            &format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", context.span_id)
        );
        assert_eq!(out.get(TRACESTATE).unwrap(), "congo=t61rcWkgMzE");
        // Not sampled by the caller: not sampled here either, whatever the proxy would do for a new trace.
        let unsampled = VALID.replace("-01", "-00");
        assert!(!TraceContext::for_request(&headers(&[&unsampled]), true).sampled());
        // A later version's extra fields are ignored; its first four are used.
        let future = format!("{}-what-comes-next", VALID.replacen("00", "cc", 1));
        assert!(parse_traceparent(future.as_bytes()).is_some());
    }

    #[test]
    fn an_invalid_traceparent_is_replaced_and_its_tracestate_dropped() {
        let invalid = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ];
        for value in invalid {
            assert_eq!(parse_traceparent(value.as_bytes()), None, "{value:?}");
            let context = TraceContext::for_request(&headers(&[value]), true);
            assert_eq!(context.parent_span_id, None, "{value:?}");
            assert_ne!(
                context.trace_id.to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            let mut out = headers(&[value]);
            context.apply(&mut out);
            assert!(out.get(TRACESTATE).is_none(), "{value:?}");
        }
        // Two traceparent headers: neither is trusted.
        let twice = TraceContext::for_request(&headers(&[VALID, VALID]), false);
        assert_eq!(twice.parent_span_id, None);
    }

    #[test]
    fn a_new_trace_is_random_and_sampled_as_asked() {
        let a = TraceContext::for_request(&HeaderMap::new(), true);
        let b = TraceContext::for_request(&HeaderMap::new(), false);
        assert!(a.sampled() && !b.sampled());
        assert_ne!(a.trace_id, b.trace_id);
        let header = a.traceparent();
        let text = header.to_str().unwrap();
        assert_eq!(text.len(), 55);
        assert!(text.ends_with("-03"), "{text}");
        assert_eq!(
            parse_traceparent(text.as_bytes()),
            Some((a.trace_id, a.span_id, 0x03))
        );
        assert!(b.traceparent().to_str().unwrap().ends_with("-02"));
    }
}
