//! Header hygiene: hop-by-hop removal (RFC 9110 §7.6.1) for requests and responses; spoofable, override and
//! client-identity headers dropped from requests; `Content-Length` re-serialised both ways; no CORS headers.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use smallvec::SmallVec;

use crate::config::forward_headers::{is_always_dropped, is_dropped_by_default};

/// Removes hop-by-hop headers: `Connection` and every name it lists, `Keep-Alive`, `Proxy-Connection`, `TE`,
/// `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`.
///
/// Framing (`Content-Length`) is never removed because a `Connection` header names it: hyper re-derives framing
/// from the body, and dropping a length would only turn a sized body into a chunked one.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (standard ones compare as integers) instead of ten hashed
    // removals.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Only the names present are removed; `Connection` tokens are matched against them without building names
    // from them (nginx answers `Connection: keep-alive` on every response). The lists live on the stack: this
    // runs for most responses.
    // `keep-alive` and `close` alone name no other field (`keep-alive` is hop-by-hop anyway): no list to read.
    let names_fields = |v: &HeaderValue| {
        let v = v.as_bytes();
        !(v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close"))
    };
    let mut connection = headers.get_all(header::CONNECTION).iter();
    let listed: SmallVec<[&str; 4]> = if connection.any(names_fields) {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect()
    } else {
        SmallVec::new()
    };
    let doomed: SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|name| {
            is_hop_by_hop(name)
                || (**name != header::CONTENT_LENGTH
                    && listed.iter().any(|t| t.eq_ignore_ascii_case(name.as_str())))
        })
        .cloned()
        .collect();
    drop(listed);
    for name in doomed {
        headers.remove(&name);
    }
}

/// True for a name [`strip_hop_by_hop`] always removes: the hop-by-hop headers, plus `Proxy-Authorization`
/// (consumed by the first proxy) and `Proxy-Connection` (a non-standard alias of `Connection`). Names are
/// lower-case, so one `match` on the text decides (a length switch, then one comparison).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes headers a caller must not set on a forwarded request: spoofable forwarding metadata (`Forwarded`,
/// `X-Forwarded-*`, `X-Original-*`) and IMDS's `Metadata` header, always (a forwarded request must never look like
/// one to IMDS); method-override, URL-override and client-identity headers
/// ([`crate::config::forward_headers`]) unless they are in `forward`, the route's `forward_headers`.
pub fn strip_caller_metadata(headers: &mut HeaderMap, forward: &[HeaderName]) {
    let spoofable: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            is_always_dropped(n) || (is_dropped_by_default(n) && !forward.contains(name))
        })
        .cloned()
        .collect();
    for name in spoofable {
        headers.remove(name);
    }
}

/// Rewrites `Content-Length` as the decimal number it stands for (`0005` → `5`), so the peer parses exactly what
/// the proxy framed. hyper has already refused a length it could not read and merged equal duplicates; anything
/// else it let through (`5, 5`) is written once. An unreadable value is left for hyper to refuse.
pub fn canonical_content_length(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = match (values.next(), values.next()) {
        (Some(first), None) => first,
        // None: nothing to rewrite.
        (None, _) => return,
        (Some(_), Some(_)) => return rewrite_content_length(headers),
    };
    let bytes = first.as_bytes();
    let canonical = !bytes.is_empty()
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes[0] != b'0' || bytes.len() == 1);
    if !canonical {
        rewrite_content_length(headers);
    }
}

fn rewrite_content_length(headers: &mut HeaderMap) {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let Ok(text) = value.to_str() else { return };
        for item in text.split(',') {
            let item = item.trim();
            let Some(n) = (!item.is_empty() && item.bytes().all(|b| b.is_ascii_digit()))
                .then(|| item.parse::<u64>().ok())
                .flatten()
            else {
                return;
            };
            if length.is_some_and(|l| l != n) {
                return;
            }
            length = Some(n);
        }
    }
    if let Some(n) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// Removes every `Access-Control-*` header: the proxy does no CORS, so an upstream's must not reach a browser.
pub fn strip_cors(headers: &mut HeaderMap) {
    let cors: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
}

/// True when a header name contains `_`, which some servers treat as `-` (header smuggling, threat 6d).
pub fn has_underscore_name(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| name.as_str().contains('_'))
}

/// True for an HTTP/1.1 WebSocket handshake (`Connection: upgrade` and `Upgrade: websocket`). Checked in that
/// order, cheapest first: most requests stop at the version or at the missing `Upgrade`.
pub fn is_websocket_upgrade(version: http::Version, headers: &HeaderMap) -> bool {
    version == http::Version::HTTP_11
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Puts back the two headers a WebSocket handshake needs after hop-by-hop removal.
pub fn restore_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    headers.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn removes_fixed_and_listed_names() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Drop-Me, authorization"),
            ("connection", "x-also"),
            ("x-drop-me", "1"),
            ("x-also", "1"),
            ("authorization", "Bearer caller"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("content-length", "5"),
            ("x-keep-me", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-keep-me"]);
    }

    #[test]
    fn content_length_is_written_as_its_number() {
        let leading = format!("{}5", "0".repeat(200));
        for (sent, want) in [
            (&["0005"][..], Some("5")),
            (&[leading.as_str()][..], Some("5")),
            (&["0"][..], Some("0")),
            (&["00"][..], Some("0")),
            (&["12"][..], Some("12")),
            (&["5, 5"][..], Some("5")),
            (&["5", "05"][..], Some("5")),
            (&["18446744073709551615"][..], Some("18446744073709551615")),
        ] {
            let mut h = HeaderMap::new();
            for v in sent {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
            }
            canonical_content_length(&mut h);
            let got: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
            assert_eq!(got.len(), 1, "{sent:?}");
            assert_eq!(got[0].to_str().ok(), want, "{sent:?}");
        }
        // What hyper would refuse is left for it to refuse; no header is invented.
        for sent in [&["5, 6"][..], &["x"], &["5", "6"], &["-1"], &["+5"]] {
            let mut h = HeaderMap::new();
            for v in sent {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
            }
            let before = h.clone();
            canonical_content_length(&mut h);
            assert_eq!(h, before, "{sent:?}");
        }
        let mut none = HeaderMap::new();
        canonical_content_length(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn override_headers_are_dropped_unless_forwarded() {
        let mut h = HeaderMap::new();
        for name in [
            "forwarded",
            "metadata",
            "x-forwarded-host",
            "x-original-url",
            "x-http-method-override",
            "x-real-ip",
            "x-envoy-original-path",
            "x-ms-client-principal-id",
            "x-ms-client-request-id",
            "x-kept",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
        }
        let forward = [
            HeaderName::from_static("x-real-ip"),
            HeaderName::from_static("x-forwarded-host"),
        ];
        strip_caller_metadata(&mut h, &forward);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-kept", "x-ms-client-request-id", "x-real-ip"]);
    }

    #[test]
    fn cors_headers_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-expose-headers",
            "access-control-allow-private-network",
            "x-access-control",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("*"));
        }
        strip_cors(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-access-control"]
        );
    }

    #[test]
    fn content_length_survives_being_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("content-length"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get(header::CONTENT_LENGTH).unwrap(), "3");
    }
}
