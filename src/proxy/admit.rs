//! Request admission rules that hold before any route is chosen: the caller key (`caller_auth`), allowed Host
//! names (the DNS-rebinding defence) with a valid port, an origin-form path that no server reads differently (see
//! the `path` submodule), and no browser cross-origin requests unless the route allows them.

mod path;

use std::sync::Arc;

use http::header::{HOST, ORIGIN};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, Method, Request};

use super::error::ProxyError;
use super::route::Route;
use crate::auth::Secret;
use crate::config::CallerAuth;

/// The `caller_auth` check: every request must carry the shared key, once, in its header. The header is removed
/// before anything else sees the request, so it never reaches a route, a log line or an upstream.
#[derive(Clone)]
pub struct CallerKey {
    header: HeaderName,
    secret: Arc<Secret>,
}

/// The allowed host names (lower-case, `[::1]` with brackets, no port).
#[derive(Debug, Clone)]
pub struct HostAllowlist {
    hosts: Vec<String>,
}

// === impl CallerKey ===

impl CallerKey {
    /// The check configured by `caller_auth`.
    pub fn new(auth: CallerAuth) -> Self {
        Self {
            header: auth.header,
            secret: Arc::new(auth.secret),
        }
    }

    /// The header that carries the key (marked sensitive in the stack, so it is never logged).
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Removes the key header from `headers` and checks it: exactly one value, equal to the secret (compared in
    /// constant time). Errors never contain what the caller sent.
    pub fn check(&self, headers: &mut HeaderMap) -> Result<(), ProxyError> {
        let count = headers.get_all(&self.header).iter().count();
        let sent = headers.remove(&self.header);
        let refused = |message: String| ProxyError::CallerNotAuthenticated {
            header: self.header.clone(),
            message,
        };
        match (count, sent) {
            (1, Some(value)) if self.secret.matches(value.as_bytes()) => Ok(()),
            (1, Some(_)) => Err(refused(format!(
                "the {} header does not carry this proxy's caller key",
                self.header
            ))),
            (0, _) | (_, None) => Err(refused(format!(
                "this proxy requires a caller key: send it in the {} header",
                self.header
            ))),
            _ => Err(refused(format!(
                "send the {} header once, not {count} times",
                self.header
            ))),
        }
    }
}

impl std::fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerKey")
            .field("header", &self.header)
            .field("secret", &self.secret)
            .finish()
    }
}

// === impl HostAllowlist ===

impl HostAllowlist {
    /// An allowlist of `hosts` (already lower-case).
    pub fn new(hosts: Vec<String>) -> Self {
        Self { hosts }
    }

    /// Checks the `Host` header and, for absolute-form or HTTP/2 targets, the target's authority: both must name
    /// an allowed host (any port). Returns the allowed host name it matched (lower-case). Allocates nothing on
    /// the way to a match.
    pub fn check<B>(&self, req: &Request<B>) -> Result<&str, ProxyError> {
        let mut hosts = req.headers().get_all(HOST).iter();
        let header = match (hosts.next(), hosts.next()) {
            (Some(v), None) => Some(v.to_str().map_err(|_| bad_host())?),
            (None, _) => None,
            (Some(_), Some(_)) => return Err(ProxyError::BadRequest("more than one Host header")),
        };
        let target = req.uri().authority().map(Authority::as_str);
        let mut name = None;
        for authority in [header, target].into_iter().flatten() {
            let host = self.allowed(authority)?;
            name.get_or_insert(host);
        }
        name.ok_or_else(|| ProxyError::HostNotAllowed("the request has no Host header".into()))
    }

    fn allowed(&self, authority: &str) -> Result<&str, ProxyError> {
        let host = host_of(authority).ok_or_else(bad_host)?;
        match self.hosts.iter().find(|h| h.eq_ignore_ascii_case(host)) {
            Some(h) => Ok(h),
            None => Err(ProxyError::HostNotAllowed(format!(
                "host {:?} is not in allowed_hosts (a DNS-rebinding defence); call the proxy as one of: {}",
                host.to_ascii_lowercase(),
                self.hosts.join(", ")
            ))),
        }
    }
}

/// The host part of `host[:port]` / `[v6][:port]`, if the whole authority is well formed: a host of
/// `[A-Za-z0-9.-]` (or a bracketed IPv6 literal) and an optional port (see [`is_valid_port`]). No user info, no
/// path. Response URLs are rewritten with the caller's authority, so only one that passes here is ever copied.
pub(super) fn host_of(authority: &str) -> Option<&str> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if port.is_some_and(|p| !is_valid_port(p)) {
        return None;
    }
    let plain = !host.starts_with('[');
    if host.is_empty()
        || (plain
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return None;
    }
    Some(host)
}

/// A port a caller can have connected to, written the one way every parser reads alike: 1–65535 in decimal
/// digits, without a sign or leading zeros (`080` is 80 to most parsers and 64 to some; port 0 is never a
/// listener).
fn is_valid_port(port: &str) -> bool {
    !port.starts_with('0')
        && (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok()
}

fn bad_host() -> ProxyError {
    ProxyError::BadRequest("malformed Host header (a host name, and a port from 1 to 65535 if any)")
}

/// Refuses request targets that could be interpreted differently by the upstream than by the route match:
/// non-origin-form, backslashes, encoded `/`, `\` or `.`, NUL, and segments that are, or that a lenient server
/// could read as, dot segments or separators (the `path` submodule says how).
pub fn check_path(method: &Method, path: &str) -> Result<(), ProxyError> {
    if *method == Method::CONNECT {
        return Err(ProxyError::BadRequest(
            "CONNECT is not supported: this is not a forward proxy",
        ));
    }
    if !path.starts_with('/') {
        return Err(ProxyError::BadRequest(
            "the request target must be an absolute path",
        ));
    }
    if path.starts_with("//") {
        return Err(ProxyError::BadRequest(
            "the request path must not start with //",
        ));
    }
    let bytes = path.as_bytes();
    if bytes.iter().any(|&b| b == b'\\' || b == 0) {
        return Err(ProxyError::BadRequest(
            "the request path must not contain backslashes or NUL",
        ));
    }
    for window in bytes.windows(3) {
        if window[0] == b'%' {
            let code = [
                window[1].to_ascii_lowercase(),
                window[2].to_ascii_lowercase(),
            ];
            if matches!(&code, b"2f" | b"5c" | b"2e" | b"00") {
                return Err(ProxyError::BadRequest(
                    "the request path must not contain encoded '/', '\\', '.' or NUL",
                ));
            }
        }
    }
    path.split('/').try_for_each(path::check_segment)
}

/// Refuses browser cross-origin requests (`Origin`, or `Sec-Fetch-Site: cross-site|same-site`) unless the route
/// lists that exact origin in `allow.origins`.
pub fn check_origin(headers: &HeaderMap, route: &Route) -> Result<(), ProxyError> {
    let origin = headers.get(ORIGIN).map(|v| v.to_str().unwrap_or(""));
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let cross_site = site.is_some_and(|s| {
        s.eq_ignore_ascii_case("cross-site") || s.eq_ignore_ascii_case("same-site")
    });
    if origin.is_none() && !cross_site {
        return Ok(());
    }
    if let Some(origin) = origin
        && route
            .allow()
            .origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    Err(ProxyError::OriginNotAllowed(
        "browser cross-origin requests are refused (the request carries Origin or Sec-Fetch-Site); list the origin in the route's allow.origins to permit it".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "caller-key-canary-0123456789";

    fn caller_key() -> CallerKey {
        CallerKey::new(CallerAuth {
            header: HeaderName::from_static("x-aml-auth-proxy-key"),
            secret: Secret::new(KEY),
        })
    }

    #[test]
    fn caller_key_is_checked_and_removed() {
        let key = caller_key();
        let mut ok = HeaderMap::new();
        ok.insert("x-aml-auth-proxy-key", KEY.parse().unwrap());
        ok.insert("x-other", "kept".parse().unwrap());
        assert!(key.check(&mut ok).is_ok());
        assert!(
            !ok.contains_key("x-aml-auth-proxy-key"),
            "the key is removed"
        );
        assert!(ok.contains_key("x-other"));

        let wrong_values = [
            None,
            Some(""),
            Some("caller-key-canary-012345678"),
            Some("caller-key-canary-01234567890"),
            Some("CALLER-KEY-CANARY-0123456789"),
        ];
        for sent in wrong_values {
            let mut headers = HeaderMap::new();
            if let Some(v) = sent {
                headers.insert("x-aml-auth-proxy-key", v.parse().unwrap());
            }
            let e = key.check(&mut headers).unwrap_err();
            assert_eq!(e.code(), "CallerNotAuthenticated", "{sent:?}");
            assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED);
            assert!(!e.to_string().contains("canary"), "{e}");
            assert!(!headers.contains_key("x-aml-auth-proxy-key"));
        }
        let mut twice = HeaderMap::new();
        twice.append("x-aml-auth-proxy-key", KEY.parse().unwrap());
        twice.append("x-aml-auth-proxy-key", KEY.parse().unwrap());
        assert!(key.check(&mut twice).is_err(), "a repeated key is refused");
        assert!(!format!("{key:?}").contains("canary"));
    }

    fn allowlist() -> HostAllowlist {
        HostAllowlist::new(vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()])
    }

    fn req(host: Option<&str>, uri: &str) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn hosts() {
        let a = allowlist();
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1:9",
            "[::1]:8080",
            "[::1]",
            "localhost:65535",
            "[::1]:1",
        ] {
            assert!(a.check(&req(Some(ok), "/x")).is_ok(), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:8080",
            "127.0.0.1.nip.io",
            "localhost.",
            "0.0.0.0",
            "2130706433",
            "user@localhost",
            "",
            "localhost:",
            "localhost:0",
            "localhost:00",
            "localhost:080",
            "localhost:+80",
            "localhost:65536",
            "localhost:99999",
            "localhost:4294967377",
            "[::1]:0",
            "[::1]:99999",
            "[::1]80",
        ] {
            let e = a.check(&req(Some(bad), "/x")).unwrap_err();
            assert!(
                matches!(e, ProxyError::HostNotAllowed(_) | ProxyError::BadRequest(_)),
                "{bad}: {e:?}"
            );
        }
        assert!(matches!(
            a.check(&req(None, "/x")),
            Err(ProxyError::HostNotAllowed(_))
        ));
        // Absolute-form targets: the authority must be allowed too, and is never used for routing.
        assert!(
            a.check(&req(Some("localhost"), "http://attacker.example/steal"))
                .is_err()
        );
        assert!(
            a.check(&req(Some("attacker.example"), "http://localhost/x"))
                .is_err()
        );
        assert!(
            a.check(&req(None, "http://127.0.0.1:1234/x")).is_ok(),
            "HTTP/2 style :authority"
        );
        let mut two = req(Some("localhost"), "/x");
        two.headers_mut().append(HOST, "evil.com".parse().unwrap());
        assert!(matches!(a.check(&two), Err(ProxyError::BadRequest(_))));
    }

    #[test]
    fn paths() {
        for ok in [
            "/",
            "/subscriptions/a/b",
            "/a%20b",
            "/a.b/c..d",
            "/x?y=../z",
        ] {
            assert!(
                check_path(&Method::GET, ok.split('?').next().unwrap()).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "*",
            "x",
            "//evil.com/x",
            "/a\\b",
            "/a/../b",
            "/a/./b",
            "/..",
            "/a%2fb",
            "/a%2F..",
            "/%5c",
            "/%2e%2e/x",
            "/a%00",
        ] {
            assert!(check_path(&Method::GET, bad).is_err(), "{bad}");
        }
        assert!(check_path(&Method::CONNECT, "/").is_err());
    }
}
