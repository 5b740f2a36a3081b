//! Admission: every rule a request must pass before the proxy forwards it, in the order they apply.
//!
//! Before a route is chosen ([`Admission::check`]):
//! 1. the caller key (`caller_auth`): checked and removed first, so an unauthenticated caller learns nothing about
//!    hosts or routes, and the key never travels on;
//! 2. the Host name (and a request target's authority) is an allowed host with a valid port: the DNS-rebinding
//!    defence. A request in forward-proxy form (an absolute `http://other-host/…` target or `CONNECT`, as
//!    `curl -x`, `HTTP_PROXY` and `HTTPS_PROXY` send) is refused the same way, with a message saying how to call a
//!    reverse proxy instead;
//! 3. the path is an origin-form path no server reads differently (the `path` submodule says how);
//! 4. no CORS preflight, no protocol switch but WebSocket, no header name with an underscore.
//!
//! Once the route is known ([`Admission::check_route`]):
//! 5. no browser cross-origin request unless the route's `allow.origins` lists its origin;
//! 6. the route's `allow.methods` allows the method, and the method any forwarded method-override header names;
//! 7. the route's `allow.paths` allows the path.
//!
//! Then the request is made fit to forward: hop-by-hop headers are stripped (before any token is inserted; a
//! WebSocket handshake keeps its `Connection: upgrade` / `Upgrade: websocket`), and so are the override and
//! client-identity headers the route does not forward; `Content-Length` is re-serialised, and `X-Forwarded-For`
//! says who asked.

mod path;

use std::sync::Arc;

use http::header::{HOST, ORIGIN, UPGRADE};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};

use super::client_addr::ClientAddr;
use super::error::ProxyError;
use super::headers::{
    canonical_content_length, has_underscore_name, is_websocket_upgrade, restore_websocket_upgrade,
    strip_caller_metadata, strip_hop_by_hop,
};
use super::route::Route;
use crate::config::forward_headers::is_method_override;
use crate::config::{CallerAuth, Listen};
use crate::secret::Secret;

/// The rules of this module for one configuration: its caller key and allowed hosts.
#[derive(Debug, Clone)]
pub struct Admission {
    caller_key: Option<CallerKey>,
    hosts: HostAllowlist,
    /// How callers reach the proxy (`http://127.0.0.1:8080`), for messages that say how to use it.
    served_at: Option<Arc<str>>,
}

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

// === impl Admission ===

impl Admission {
    /// Admission with `hosts`, and with a `caller_key` every request must carry.
    pub fn new(caller_key: Option<CallerKey>, hosts: HostAllowlist) -> Self {
        Self {
            caller_key,
            hosts,
            served_at: None,
        }
    }

    /// Names the listener callers use in the messages that say how to call the proxy.
    pub fn served_at(mut self, listen: &Listen) -> Self {
        self.served_at = Some(base_url(listen).into());
        self
    }

    /// How callers reach the proxy, when known: `http://127.0.0.1:8080` (a TCP listener on an unspecified address
    /// is named by its loopback address), or `http://localhost` over `unix:/path.sock`.
    pub fn base_url(&self) -> Option<&str> {
        self.served_at.as_deref()
    }

    /// The header that carries the caller key, when one is required.
    pub fn caller_key_header(&self) -> Option<&HeaderName> {
        self.caller_key.as_ref().map(CallerKey::header)
    }

    /// The rules for every request (1–4 of the module documentation). Returns the allowed host name the request
    /// used, to route on.
    pub fn check<B>(&self, req: &mut Request<B>) -> Result<&str, ProxyError> {
        if let Some(key) = &self.caller_key {
            key.check(req.headers_mut())?;
        }
        let host = self
            .hosts
            .check(req)
            .map_err(|e| self.explain_forward_proxy(req, e))?;
        check_path(req.method(), req.uri().path())?;
        check_protocol(req)?;
        Ok(host)
    }

    /// The rules of `route` (5–7 of the module documentation); then strips what must not be forwarded and adds
    /// `X-Forwarded-For`.
    pub fn check_route<B>(&self, route: &Route, req: &mut Request<B>) -> Result<(), ProxyError> {
        check_origin(req.headers(), route)?;
        for method in std::iter::once(Ok(req.method().clone()))
            .chain(method_overrides(req.headers(), route.forward_headers()))
        {
            let method = method?;
            if !route.allows_method(&method) {
                return Err(ProxyError::MethodNotAllowed {
                    method,
                    allowed: route.allow().methods.clone().unwrap_or_default(),
                });
            }
        }
        if !route.allows_path(req.uri().path()) {
            return Err(ProxyError::PathNotAllowed);
        }
        prepare_to_forward(route, req);
        Ok(())
    }

    /// A refused Host in a request sent in forward-proxy form means the caller mistook this proxy for a forward
    /// proxy: the answer keeps its code and status, with a message saying how to call a reverse proxy.
    fn explain_forward_proxy<B>(&self, req: &Request<B>, e: ProxyError) -> ProxyError {
        if !matches!(e, ProxyError::HostNotAllowed(_)) || !is_forward_proxy_form(req) {
            return e;
        }
        let target = req
            .uri()
            .authority()
            .and_then(|a| host_of(a.as_str()))
            .map_or_else(|| "another host".to_owned(), |h| h.to_ascii_lowercase());
        let how = if req.method() == Method::CONNECT {
            "it does not open tunnels to"
        } else {
            "it does not fetch URLs of"
        };
        let example = self.base_url().unwrap_or("http://127.0.0.1:8080");
        ProxyError::HostNotAllowed(format!(
            "this is a reverse proxy, not a forward proxy: {how} {target} for you (the request came in \
             forward-proxy form, as `curl -x`, HTTP_PROXY and HTTPS_PROXY send it). Do not configure it as a \
             proxy; send plain requests to it instead, as {example}/<path>, and it forwards them with a token to \
             the upstream of the route whose path_prefix matches"
        ))
    }
}

/// True for a request a client sends to a forward proxy: `CONNECT`, or an HTTP/1 request whose target is an
/// absolute URL (HTTP/2 requests always carry an authority, so theirs says nothing).
fn is_forward_proxy_form<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        || (req.version() < http::Version::HTTP_2 && req.uri().scheme().is_some())
}

/// `http://IP:port` for a TCP listener (the loopback address of its family for an unspecified one),
/// `http://localhost` for a Unix socket (callers name the socket on their side).
fn base_url(listen: &Listen) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    match listen {
        Listen::Tcp(addr) => {
            let ip = match addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            format!("http://{}", SocketAddr::new(ip, addr.port()))
        }
        Listen::Unix(_) => "http://localhost".to_owned(),
    }
}

/// Removes what a forwarded request must not carry (hop-by-hop headers but a WebSocket handshake's, the override
/// and client-identity headers `route` does not forward), re-serialises `Content-Length`, and says who asked.
fn prepare_to_forward<B>(route: &Route, req: &mut Request<B>) {
    let websocket = is_websocket_upgrade(req.version(), req.headers());
    strip_hop_by_hop(req.headers_mut());
    strip_caller_metadata(req.headers_mut(), route.forward_headers());
    canonical_content_length(req.headers_mut());
    if websocket {
        restore_websocket_upgrade(req.headers_mut());
    }
    // Who asked, for the upstream's logs; also makes IMDS refuse the request should it ever get it.
    let forwarded_for = req
        .extensions()
        .get::<ClientAddr>()
        .map_or(HeaderValue::from_static("unknown"), |c| c.header.clone());
    req.headers_mut().insert(X_FORWARDED_FOR, forwarded_for);
}

/// Request rules that need no route: no CORS preflight, no protocol switch but WebSocket, no header names with
/// underscores.
fn check_protocol<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.method() == Method::OPTIONS {
        return Err(ProxyError::MethodNotAllowed {
            method: Method::OPTIONS,
            allowed: Vec::new(),
        });
    }
    if req.headers().contains_key(UPGRADE) && !is_websocket_upgrade(req.version(), req.headers()) {
        return Err(ProxyError::BadRequest(
            "only WebSocket upgrades are supported (no h2c or other protocol switches)",
        ));
    }
    if has_underscore_name(req.headers()) {
        return Err(ProxyError::BadRequest(
            "header names with underscores are refused (some servers read them as dashes)",
        ));
    }
    Ok(())
}

/// The methods named by the method-override headers the route forwards (upper-cased), in order: a server that
/// honours one acts on that method, so the route's `allow.methods` must allow it too. A value that is not one
/// method is refused.
fn method_overrides<'a>(
    headers: &'a HeaderMap,
    forward: &'a [HeaderName],
) -> impl Iterator<Item = Result<Method, ProxyError>> + 'a {
    forward
        .iter()
        .filter(|name| is_method_override(name.as_str()))
        .flat_map(|name| headers.get_all(name))
        .map(|value| {
            let upper = value.as_bytes().trim_ascii().to_ascii_uppercase();
            Method::from_bytes(&upper).map_err(|_| {
                ProxyError::BadRequest("a method-override header must name exactly one HTTP method")
            })
        })
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
            "CONNECT is not supported: this is a reverse proxy, not a forward proxy. Do not set it as \
             HTTPS_PROXY or `curl -x`; send plain http:// requests to it, with the path of the route to use",
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
fn check_origin(headers: &HeaderMap, route: &Route) -> Result<(), ProxyError> {
    if !is_refused_browser_request(headers, &route.allow().origins) {
        return Ok(());
    }
    Err(ProxyError::OriginNotAllowed(
        "browser cross-origin requests are refused (the request carries Origin or Sec-Fetch-Site); list the origin in the route's allow.origins to permit it".into(),
    ))
}

/// Who asked, as the upstream sees it.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A browser's word on where a request comes from.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// True for a browser request (`Origin`, or `Sec-Fetch-Site: cross-site|same-site`) whose origin is not one of
/// `allowed` (exact, case-insensitive). The proxy's routes and the token service both refuse these.
pub fn is_refused_browser_request(headers: &HeaderMap, allowed: &[String]) -> bool {
    let origin = headers.get(ORIGIN).map(|v| v.to_str().unwrap_or(""));
    let site = headers.get(SEC_FETCH_SITE).and_then(|v| v.to_str().ok());
    let cross_site = site.is_some_and(|s| {
        s.eq_ignore_ascii_case("cross-site") || s.eq_ignore_ascii_case("same-site")
    });
    if origin.is_none() && !cross_site {
        return false;
    }
    !origin.is_some_and(|origin| allowed.iter().any(|o| o.eq_ignore_ascii_case(origin)))
}

#[cfg(test)]
mod tests;
