//! Outbound origins: the `https://` (or loopback `http://`) scheme and authority that upstreams and token services
//! are reached at, and the URL rules every configured or discovered URL passes before it becomes one.
//!
//! A leaf module: configuration checks its URL-valued keys with `check_url`, and credentials check URLs they find
//! outside the configuration file (an sdk-auth file's authority) with [`authority_origin`], by the same rules.
//! Link-local addresses are refused in every spelling a URL parser or resolver accepts; messages echo a URL only
//! when it cannot hold a secret.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use http::uri::{Authority, PathAndQuery, Scheme};

/// An `https://` origin, or `http://` for a loopback host (emulators and tests). No path, query or userinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsOrigin {
    /// `https` or (loopback only) `http`.
    pub scheme: Scheme,
    /// Host and optional port.
    pub authority: Authority,
}

/// What a URL may contain beyond scheme and authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlRule {
    /// Nothing but an optional `/` (`authority_host`).
    Origin,
    /// A clean base path (`routes[].upstream`).
    Upstream,
    /// Any path (`managed_identity.endpoint`, a full token URL).
    Endpoint,
}

/// A URL that passed [`check_url`].
#[derive(Debug)]
pub(crate) struct CheckedUrl {
    /// Lower-case scheme and authority.
    pub(crate) origin: HttpsOrigin,
    /// The path as written (`/` when empty).
    pub(crate) path: String,
}

// === impl HttpsOrigin ===

impl HttpsOrigin {
    /// The host without port (IPv6 literals keep their brackets), lower-case.
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.scheme == Scheme::HTTP { 80 } else { 443 })
    }

    /// True when `scheme://authority` of `uri` is this origin (host case-insensitive, default ports equal).
    pub fn matches(&self, scheme: &Scheme, authority: &Authority) -> bool {
        let port = authority
            .port_u16()
            .unwrap_or(if *scheme == Scheme::HTTP { 80 } else { 443 });
        *scheme == self.scheme
            && port == self.port()
            && authority.host().eq_ignore_ascii_case(self.host())
    }
}

impl fmt::Display for HttpsOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// Checks an authority-host URL (the `authority_host` key, or one found outside the configuration file such as an
/// sdk-auth file's `activeDirectoryEndpointUrl`): `https://`, or `http://` for loopback hosts; no path, query or
/// user info.
pub fn authority_origin(text: &str) -> Result<HttpsOrigin, String> {
    check_url(text.trim(), UrlRule::Origin).map(|url| url.origin)
}

/// Checks an absolute URL: https (http only for loopback), no userinfo, no query or fragment, path per `rule`.
pub(crate) fn check_url(text: &str, rule: UrlRule) -> Result<CheckedUrl, String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!(
            "must be an absolute URL like https://host{}",
            shown(text)
        ));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err("must not contain user information".to_owned());
    }
    if path.contains(['?', '#']) {
        return Err("must not contain a query or fragment".to_owned());
    }
    let host = check_authority(authority).map_err(|e| format!("{e}{}", shown(text)))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => Scheme::HTTPS,
        "http" if is_loopback(&host) => Scheme::HTTP,
        // Managed-identity endpoints are plain http on the link-local IMDS address (169.254.0.0/16) too.
        "http" if rule == UrlRule::Endpoint && is_link_local_ipv4(&host) => Scheme::HTTP,
        "http" => {
            return Err(format!(
                "plain http is only allowed for loopback hosts{}",
                shown(text)
            ));
        }
        _ => return Err(format!("must be an https:// URL{}", shown(text))),
    };
    match rule {
        // Upstreams get tokens, the authority host gets client secrets and assertions.
        UrlRule::Upstream | UrlRule::Origin if is_link_local_literal(&host) => {
            return Err(format!(
                "must not be a link-local address: tokens and secrets are never sent to IMDS or its neighbours{}",
                shown(text)
            ));
        }
        // The managed-identity endpoint may be IMDS itself, written the one way IMDS is written.
        UrlRule::Endpoint if is_link_local_literal(&host) && !is_link_local_ipv4(&host) => {
            return Err(format!(
                "a link-local endpoint must be written as an IPv4 address, like http://169.254.169.254{}",
                shown(text)
            ));
        }
        _ => {}
    }
    let authority = Authority::from_str(&authority.to_ascii_lowercase())
        .map_err(|_| format!("has an invalid host or port{}", shown(text)))?;
    let path = check_url_path(path, rule).map_err(|e| format!("{e}{}", shown(text)))?;
    Ok(CheckedUrl {
        origin: HttpsOrigin { scheme, authority },
        path,
    })
}

/// Checks `host[:port]` and returns the lower-case host.
pub(crate) fn check_authority(authority: &str) -> Result<String, String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(inner) => match inner.split_once(']') {
            Some((ip, tail)) => (&authority[..ip.len() + 2], tail),
            None => return Err("has an invalid IPv6 address".to_owned()),
        },
        None => match authority.find(':') {
            Some(at) => authority.split_at(at),
            None => (authority, ""),
        },
    };
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    let host = check_host(host)?;
    if let Some(port) = port.strip_prefix(':') {
        if !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err("has an invalid port".to_owned());
        }
    } else if !port.is_empty() {
        return Err("has an invalid host".to_owned());
    }
    Ok(host)
}

/// Checks the path part of a URL against `rule`; returns it (`/` when empty).
fn check_url_path(path: &str, rule: UrlRule) -> Result<String, String> {
    let path = if path.is_empty() { "/" } else { path };
    let invalid = path.bytes().any(|b| b <= b' ' || b == b'\\' || b >= 0x7f);
    if invalid || PathAndQuery::from_str(path).is_err() {
        return Err("has invalid characters in its path".to_owned());
    }
    match rule {
        UrlRule::Origin if path != "/" => Err("must not have a path".to_owned()),
        UrlRule::Upstream if path.contains("//") || has_dot_segment(path) => {
            Err("must have a clean path (no `//`, `.` or `..` segments)".to_owned())
        }
        _ => Ok(path.to_owned()),
    }
}

/// Checks a host name or IP literal (IPv6 in brackets) and returns it lower-cased.
pub(crate) fn check_host(text: &str) -> Result<String, String> {
    let host = text.to_ascii_lowercase();
    let problem = |what: &str| Err(format!("{text:?} {what}"));
    if host.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if host.contains("://") {
        return problem("must be a host name, without a scheme");
    }
    if host.contains('*') {
        return problem("is not a host name (wildcards are not supported)");
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.split_once(']') {
            Some((ip, "")) if ip.parse::<Ipv6Addr>().is_ok() => Ok(host),
            Some((_, tail)) if tail.starts_with(':') => problem("must not contain a port"),
            _ => problem("is not a valid IPv6 address"),
        };
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return problem("is an IPv6 address; write it in brackets, like \"[::1]\"");
    }
    if host.contains(':') {
        return problem("must not contain a port");
    }
    // A name whose last label is a number is an IPv4 address to URL parsers and to the system resolver
    // (inet_aton reads `0xa9fea9fe`, `2852039166`, `0251.0376.0251.0376` and `169.254.43518` as 169.254.169.254):
    // only the canonical form is accepted, so that what is checked is what gets connected to.
    if looks_numeric(&host) {
        return match host.parse::<Ipv4Addr>() {
            Ok(ip) if ip.to_string() == host => Ok(host),
            _ => problem(
                "is not an IP address as written: write IPv4 addresses in dotted-decimal, like 10.0.0.1",
            ),
        };
    }
    if is_dns_name(&host) {
        return Ok(host);
    }
    problem("is not a valid host name")
}

/// True when the last label (after one trailing dot) is a decimal number or `0x` followed by hex digits.
fn looks_numeric(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or(host);
    let digits = last.strip_prefix("0x").unwrap_or(last);
    (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
        || (last.starts_with("0x") && digits.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// True for `localhost`, 127.0.0.0/8, `[::1]` and IPv4-mapped loopback (`[::ffff:127.0.0.1]`), for a host that
/// passed [`check_host`] (lower-case, IPv4 in dotted-decimal).
pub(crate) fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    match literal(host) {
        Some(IpAddr::V4(ip)) => ip.is_loopback(),
        Some(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// True for a link-local IP literal in any form: IPv4 169.254.0.0/16, IPv6 fe80::/10, or an IPv6 address that
/// carries a link-local IPv4 address (`[::ffff:169.254.169.254]`, `[64:ff9b::a9fe:a9fe]`…).
fn is_link_local_literal(host: &str) -> bool {
    literal(host).is_some_and(crate::ip::is_link_local)
}

/// True for an IPv4 link-local address written as one (169.254.0.0/16), where IMDS listens.
fn is_link_local_ipv4(host: &str) -> bool {
    host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_link_local())
}

/// The IP address a host that passed [`check_host`] is, if it is an IP literal.
fn literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// True when a `/`-separated path has a `.` or `..` segment.
pub(crate) fn has_dot_segment(path: &str) -> bool {
    path.split('/')
        .any(|segment| segment == "." || segment == "..")
}

/// Labels of `[a-z0-9_-]`, 1–63 characters, not starting or ending with `-`; at most 253 characters.
fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// ` (got "…")` for a message, or nothing when the text might carry a secret (userinfo, query).
pub(crate) fn shown(text: &str) -> String {
    if text.contains(['@', '?', '#']) {
        String::new()
    } else {
        format!(" (got {text:?})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(check_host("LocalHost"), Ok("localhost".to_owned()));
        assert_eq!(check_host("[::1]"), Ok("[::1]".to_owned()));
        assert_eq!(check_host("10.0.0.1"), Ok("10.0.0.1".to_owned()));
        for bad in [
            "localhost:8080",
            "[::1]:80",
            "::1",
            "*.example.com",
            "http://x",
            "a b",
            "-a.com",
            "",
            "a..b",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }

    /// Every spelling of IMDS, or of another link-local address, that a URL parser or the system resolver would
    /// accept: refused for upstreams and the authority host; for a managed-identity endpoint only the dotted
    /// IPv4 form is accepted.
    #[test]
    fn link_local_in_every_spelling() {
        let not_dotted = "is not an IP address as written: write IPv4 addresses in dotted-decimal, like 10.0.0.1";
        let link_local = "must not be a link-local address";
        let cases = [
            ("169.254.169.254", link_local),
            ("169.254.0.1:8443", link_local),
            ("[::ffff:169.254.169.254]", link_local),
            ("[::ffff:a9fe:a9fe]", link_local),
            ("[::FFFF:A9FE:A9FE]", link_local),
            ("[0:0:0:0:0:ffff:169.254.169.254]", link_local),
            ("[::169.254.169.254]", link_local),
            ("[64:ff9b::169.254.169.254]", link_local),
            ("[64:ff9b::a9fe:a9fe]", link_local),
            ("[64:ff9b:1::a9fe:a9fe]", link_local),
            ("[2002:a9fe:a9fe::1]", link_local),
            ("[fe80::1]", link_local),
            ("[fe80::a9fe:a9fe]:80", link_local),
            ("[febf::1]", link_local),
            ("0xa9fea9fe", not_dotted),
            ("0XA9FEA9FE", not_dotted),
            ("2852039166", not_dotted),
            ("0251.0376.0251.0376", not_dotted),
            ("169.254.43518", not_dotted),
            ("169.16689662", not_dotted),
            ("0xa9.0xfe.0xa9.0xfe", not_dotted),
            ("0xa9.254.0251.0xfe", not_dotted),
            ("169.254.169.0376", not_dotted),
            ("0169.254.169.254", not_dotted),
            ("169.254.169.254.", not_dotted),
            ("0xa9fea9fe.", not_dotted),
            ("169.254.169.254.:80", not_dotted),
            ("a.169.254", not_dotted),
        ];
        for (host, why) in cases {
            for rule in [UrlRule::Upstream, UrlRule::Origin] {
                let url = format!("https://{host}");
                let e = check_url(&url, rule).unwrap_err();
                assert!(e.contains(why), "{url} {rule:?}: {e}");
            }
            let endpoint = format!("http://{host}/metadata/identity/oauth2/token");
            let result = check_url(&endpoint, UrlRule::Endpoint);
            if host.starts_with("169.254.") && why == link_local {
                assert!(result.is_ok(), "{endpoint}: {result:?}");
            } else {
                assert!(result.is_err(), "{endpoint}");
            }
        }
        // Bracketed forms with a zone, or a scope, are not IP literals at all.
        assert!(check_url("https://[fe80::1%25eth0]", UrlRule::Upstream).is_err());
        // Names and canonical addresses still pass.
        for ok in [
            "https://10.0.0.1",
            "https://169.255.0.1",
            "https://[2001:db8::1]",
            "https://[::ffff:10.0.0.1]",
            "https://0x1.example.com",
            "https://a9fea9fe",
            "https://ml-1.azure.com",
        ] {
            assert!(check_url(ok, UrlRule::Upstream).is_ok(), "{ok}");
        }
    }

    /// Plain http only for real loopback: numeric spellings of 127.0.0.1 are refused, not mistaken for names, and
    /// IPv6 forms that only carry 127.0.0.1 through a translator are not loopback.
    #[test]
    fn the_http_loopback_exemption_cannot_be_reached_by_spelling() {
        for ok in [
            "http://localhost:1",
            "http://127.0.0.1",
            "http://127.3.4.5",
            "http://[::1]",
            "http://[::ffff:127.0.0.1]",
        ] {
            assert!(check_url(ok, UrlRule::Upstream).is_ok(), "{ok}");
        }
        for bad in [
            "http://0x7f000001",
            "http://2130706433",
            "http://127.1",
            "http://0177.0.0.1",
            "http://127.0.0.1.",
            "http://localhost.",
            "http://[64:ff9b::7f00:1]",
            "http://[::127.0.0.1]",
            "http://[2002:7f00:1::]",
            "http://[::]",
            "http://0.0.0.0",
        ] {
            assert!(check_url(bad, UrlRule::Upstream).is_err(), "{bad}");
            assert!(check_url(bad, UrlRule::Origin).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("localhost") && is_loopback("127.3.4.5") && is_loopback("[::1]"));
        assert!(!is_loopback("example.com") && !is_loopback("10.0.0.1") && !is_loopback("[::2]"));
    }

    #[test]
    fn urls() {
        let up = check_url("HTTPS://Example.COM:8443/a/b/", UrlRule::Upstream).unwrap();
        assert_eq!(up.origin.to_string(), "https://example.com:8443");
        assert_eq!(up.path, "/a/b/");
        assert!(check_url("http://127.0.0.1:1/", UrlRule::Origin).is_ok());
        assert!(check_url("http://[::1]/", UrlRule::Origin).is_ok());
        let cases = [
            (
                "http://example.com",
                UrlRule::Upstream,
                "plain http is only allowed for loopback hosts (got \"http://example.com\")",
            ),
            (
                "https://u:canary@h/",
                UrlRule::Upstream,
                "must not contain user information",
            ),
            (
                "https://h/?sig=canary",
                UrlRule::Endpoint,
                "must not contain a query or fragment",
            ),
            (
                "https://h/#x",
                UrlRule::Endpoint,
                "must not contain a query or fragment",
            ),
            (
                "https://h/x",
                UrlRule::Origin,
                "must not have a path (got \"https://h/x\")",
            ),
            (
                "https://h/a/../b",
                UrlRule::Upstream,
                "must have a clean path (no `//`, `.` or `..` segments) (got \"https://h/a/../b\")",
            ),
            (
                "https://h:99999",
                UrlRule::Upstream,
                "has an invalid port (got \"https://h:99999\")",
            ),
            (
                "https://:443",
                UrlRule::Upstream,
                "has no host (got \"https://:443\")",
            ),
            (
                "ftp://h",
                UrlRule::Upstream,
                "must be an https:// URL (got \"ftp://h\")",
            ),
            (
                "h.example",
                UrlRule::Upstream,
                "must be an absolute URL like https://host (got \"h.example\")",
            ),
        ];
        for (url, rule, message) in cases {
            assert_eq!(check_url(url, rule).unwrap_err(), message, "{url}");
        }
    }
}
