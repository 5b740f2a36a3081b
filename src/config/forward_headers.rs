//! Request headers the proxy drops from every forwarded request unless a route names them in `forward_headers`.
//!
//! Each asks the upstream, or something in front of it, to act on another method, another URL or another client
//! than the one the proxy checked: a caller that sets them borrows the proxy's token and its place in the network.
//! `Forwarded`, `X-Forwarded-*`, `X-Original-*` and `Metadata` are dropped too, always: the proxy writes
//! `X-Forwarded-For` itself, and IMDS must never take a forwarded request for one of its own.

/// Headers that ask a server to act on another method than the request line's (Google APIs, ASP.NET Web API,
/// OData, Express's and Symfony's method-override support). When a route forwards one, its `allow.methods` applies
/// to the method it names too.
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Every header dropped unless a route forwards it, lower-case (see also [`DROPPED_HEADER_PREFIXES`]).
pub const DROPPED_HEADERS: &[&str] = &[
    // Method overrides.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // URL and host overrides (IIS URL Rewrite, Symfony and Zend read the first two; App Service keeps the raw URL
    // in the third).
    "x-rewrite-url",
    "x-override-url",
    "x-waws-unencoded-url",
    "x-host",
    "x-http-host-override",
    // Client identity: the address or network a server may trust for allow-lists, rate limits and logs.
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-proxyuser-ip",
    "proxy-client-ip",
    "wl-proxy-client-ip",
    "x-ms-forwarded-client-ip",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-azure-fdid",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "fastly-client-ip",
    "x-appengine-user-ip",
];

/// Name prefixes dropped the same way: Envoy's internal headers (`x-envoy-original-path`, `x-envoy-internal`, …)
/// and App Service authentication's identity and token headers (`x-ms-client-principal`, `-id`, `-name`, `-idp`;
/// `x-ms-token-aad-access-token`, …).
pub const DROPPED_HEADER_PREFIXES: &[&str] = &["x-envoy-", "x-ms-client-principal", "x-ms-token-"];

/// True for a lower-case name in [`DROPPED_HEADERS`] or starting with one of [`DROPPED_HEADER_PREFIXES`].
pub fn is_dropped_by_default(name: &str) -> bool {
    DROPPED_HEADERS.contains(&name) || DROPPED_HEADER_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// True for a lower-case name that is always dropped, whatever the route says.
pub fn is_always_dropped(name: &str) -> bool {
    name == "forwarded"
        || name == "metadata"
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-original-")
}

/// True for a lower-case name in [`METHOD_OVERRIDE_HEADERS`].
pub fn is_method_override(name: &str) -> bool {
    METHOD_OVERRIDE_HEADERS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_lower_case_and_consistent() {
        for name in DROPPED_HEADERS.iter().chain(DROPPED_HEADER_PREFIXES) {
            assert_eq!(*name, name.to_ascii_lowercase());
            assert!(
                http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "{name}"
            );
            assert!(!is_always_dropped(name), "{name}");
        }
        for name in METHOD_OVERRIDE_HEADERS {
            assert!(is_dropped_by_default(name), "{name}");
        }
        assert!(is_dropped_by_default("x-envoy-original-path"));
        assert!(is_dropped_by_default("x-ms-client-principal-name"));
        assert!(!is_dropped_by_default("x-ms-client-request-id"));
        assert!(!is_dropped_by_default("x-envoy"));
        assert!(is_always_dropped("x-forwarded-server") && is_always_dropped("x-original-url"));
    }
}
