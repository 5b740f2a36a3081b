//! URL- and host-valued keys: `https://` (or loopback `http://`) origins, upstreams, token endpoints, checked by
//! the rules of [`crate::origin`].

use std::str::FromStr;

use http::Uri;
use serde_yaml::Value;

use super::walk::Walker;
use crate::config::Upstream;
use crate::origin::{CheckedUrl, HttpsOrigin, UrlRule, check_host, check_url};

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

#[cfg(test)]
mod tests;
