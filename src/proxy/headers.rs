//! Header hygiene: hop-by-hop removal (RFC 9110 §7.6.1) for requests and responses; spoofable, override and
//! client-identity headers dropped from requests.

use http::HeaderMap;
use http::header::{self, HeaderName};

use crate::config::forward_headers::{is_always_dropped, is_dropped_by_default};

/// Headers that are always hop-by-hop, plus `Proxy-Authorization` (consumed by the first proxy) and
/// `Proxy-Connection` (a non-standard alias of `Connection`).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

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
    // from them (nginx answers `Connection: keep-alive` on every response).
    let listed: Vec<&str> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            is_hop_by_hop(name)
                || (**name != header::CONTENT_LENGTH
                    && listed.iter().any(|t| t.eq_ignore_ascii_case(name.as_str())))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// True for a name [`strip_hop_by_hop`] always removes.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == "keep-alive" || name == "proxy-connection"
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

/// True when a header name contains `_`, which some servers treat as `-` (header smuggling, threat 6d).
pub fn has_underscore_name(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| name.as_str().contains('_'))
}

/// True for an HTTP/1.1 WebSocket handshake (`Connection: upgrade` and `Upgrade: websocket`).
pub fn is_websocket_upgrade(version: http::Version, headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    version == http::Version::HTTP_11 && connection_upgrade && websocket
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
