//! URL- and host-valued keys: `https://` (or loopback `http://`) origins, upstreams, token endpoints.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use serde_yaml::Value;

use super::walk::Walker;
use crate::config::{HttpsOrigin, Upstream};

/// What a URL may contain beyond scheme and authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UrlRule {
    /// Nothing but an optional `/` (`authority_host`).
    Origin,
    /// A clean base path (`routes[].upstream`).
    Upstream,
    /// Any path (`managed_identity.endpoint`, a full token URL).
    Endpoint,
}

/// A URL that passed [`check_url`].
#[derive(Debug)]
pub(super) struct CheckedUrl {
    /// Lower-case scheme and authority.
    pub(super) origin: HttpsOrigin,
    /// The path as written (`/` when empty).
    pub(super) path: String,
}

// === impl Walker ===

impl Walker<'_> {
    /// A URL checked against `rule`; messages echo the URL only when it cannot hold a secret.
    pub(super) fn url(&mut self, path: &str, value: &Value, rule: UrlRule) -> Option<CheckedUrl> {
        let text = self.string(path, value)?;
        check_url(&text, rule)
            .map_err(|message| self.problem(path, message))
            .ok()
    }

    /// An `authority_host`-style origin.
    pub(super) fn origin(&mut self, path: &str, value: &Value) -> Option<HttpsOrigin> {
        self.url(path, value, UrlRule::Origin).map(|url| url.origin)
    }

    /// A route's upstream: origin plus base path without trailing slash.
    pub(super) fn upstream(&mut self, path: &str, value: &Value) -> Option<Upstream> {
        let url = self.url(path, value, UrlRule::Upstream)?;
        let base_path = url.path.trim_end_matches('/').to_owned();
        Some(Upstream {
            origin: url.origin,
            base_path,
        })
    }

    /// A full token URL (path allowed, no query).
    pub(super) fn endpoint(&mut self, path: &str, value: &Value) -> Option<Uri> {
        let url = self.url(path, value, UrlRule::Endpoint)?;
        let text = format!("{}{}", url.origin, url.path);
        Uri::from_str(&text)
            .map_err(|_| self.problem(path, format!("is not a valid URL (got {text:?})")))
            .ok()
    }

    /// A host name or IP literal (IPv6 in brackets), lower-cased, without port.
    pub(super) fn host(&mut self, path: &str, value: &Value) -> Option<String> {
        let text = self.string(path, value)?;
        check_host(&text)
            .map_err(|message| self.problem(path, message))
            .ok()
    }
}

/// Checks an absolute URL: https (http only for loopback), no userinfo, no query or fragment, path per `rule`.
pub(super) fn check_url(text: &str, rule: UrlRule) -> Result<CheckedUrl, String> {
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
        "http" if rule == UrlRule::Endpoint && is_link_local(&host) => Scheme::HTTP,
        "http" => {
            return Err(format!(
                "plain http is only allowed for loopback hosts{}",
                shown(text)
            ));
        }
        _ => return Err(format!("must be an https:// URL{}", shown(text))),
    };
    if rule == UrlRule::Upstream && is_link_local_literal(&host) {
        return Err(format!(
            "must not be a link-local address: tokens are never sent to IMDS or its neighbours{}",
            shown(text)
        ));
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
pub(super) fn check_authority(authority: &str) -> Result<String, String> {
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
pub(super) fn check_host(text: &str) -> Result<String, String> {
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
    if host.parse::<Ipv4Addr>().is_ok() || is_dns_name(&host) {
        return Ok(host);
    }
    problem("is not a valid host name")
}

/// True for `localhost`, 127.0.0.0/8 and `[::1]` (lower-case input).
pub(super) fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return ip.is_loopback();
    }
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

/// True for a link-local IP literal, IPv4 (169.254.0.0/16) or bracketed IPv6 (fe80::/10).
fn is_link_local_literal(host: &str) -> bool {
    let v6 = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok());
    is_link_local(host) || v6.is_some_and(|ip| ip.is_unicast_link_local())
}

/// True for an IPv4 link-local address (169.254.0.0/16), where IMDS listens.
fn is_link_local(host: &str) -> bool {
    host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_link_local())
}

/// True when a `/`-separated path has a `.` or `..` segment.
pub(super) fn has_dot_segment(path: &str) -> bool {
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
pub(super) fn shown(text: &str) -> String {
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
