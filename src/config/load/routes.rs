//! `routes:`: each route's match, upstream, token and least-privilege policy; duplicate detection.

use std::collections::{BTreeSet, HashMap};

use http::{HeaderName, Method};
use serde_yaml::Value;

use super::azure_ml;
use super::syntax::{check_name, check_route_scope};
use super::walk::{Field, Walker, child};
use crate::config::forward_headers::{is_always_dropped, is_dropped_by_default};
use crate::config::{
    AllowPolicy, AzureMlTarget, DEFAULT_CREDENTIAL, OnlineEndpointConfig, RouteConfig, Upstream,
    WorkspaceId,
};
use crate::origin::{UrlRule, check_authority, check_url, has_dot_segment};

/// Routes seen so far, to report duplicates at the later one.
#[derive(Debug, Default)]
struct Seen {
    names: HashMap<String, usize>,
    matches: HashMap<(Option<String>, String), usize>,
}

/// A route's keys as walked, before the cross-field checks.
#[derive(Debug, Default)]
struct RouteFields {
    name: Field<String>,
    path_prefix: Field<String>,
    host: Field<String>,
    strip_prefix: Field<bool>,
    upstream: Field<Upstream>,
    scope: Field<String>,
    credential: Field<String>,
    allow: Field<AllowPolicy>,
    pass_through_authorization: Field<bool>,
    forward_headers: Field<Vec<HeaderName>>,
    online_endpoint: Field<OnlineEndpointConfig>,
    workspace: Field<WorkspaceId>,
}

/// Walks `routes:` (a non-empty list). `names` are the declared credentials.
pub(super) fn section(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
    names: &BTreeSet<String>,
) -> Option<Vec<RouteConfig>> {
    let mut seen = Seen::default();
    let mut routes = Vec::new();
    let mut all_valid = true;
    let count = w.items(path, value, |w, i, p, v| {
        let (route, identity) = route(w, p, v, names);
        // Duplicates are checked on whatever parts of the route are valid, so a route with another problem
        // still claims its name and prefix.
        let unique = seen.check(w, i, p, &identity);
        match route {
            Some(route) if unique => routes.push(route),
            _ => all_valid = false,
        }
    })?;
    if count == 0 {
        w.problem(path, "must list at least one route");
        return None;
    }
    all_valid.then_some(routes)
}

/// What makes a route distinct: its name, and its host + path prefix (`None` where that key is invalid).
#[derive(Debug, Default)]
struct Identity {
    name: Option<String>,
    matches: Option<(Option<String>, String)>,
}

/// One route, and its identity (known even when the route as a whole is invalid).
fn route(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
    names: &BTreeSet<String>,
) -> (Option<RouteConfig>, Identity) {
    let mut f = RouteFields::default();
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "name" => f.name.set(w.checked(p, v, check_name)),
            "path_prefix" => f
                .path_prefix
                .set(w.string(p, v).and_then(|t| report(w, p, path_prefix(&t)))),
            "host" => f.host.set(w.host(p, v)),
            "strip_prefix" => f.strip_prefix.set(w.boolean(p, v)),
            "upstream" => f.upstream.set(w.upstream(p, v)),
            "scope" => f.scope.set(w.checked(p, v, check_route_scope)),
            "credential" => f.credential.set(credential_ref(w, p, v, names)),
            "allow" => f.allow.set(allow(w, p, v)),
            "pass_through_authorization" => f.pass_through_authorization.set(w.boolean(p, v)),
            "forward_headers" => f.forward_headers.set(w.list(p, v, false, |w, p, v| {
                w.string(p, v)
                    .and_then(|t| report(w, p, forward_header(&t)))
            })),
            "online_endpoint" => f.online_endpoint.set(azure_ml::online_endpoint(w, p, v)),
            "workspace" => f.workspace.set(azure_ml::workspace(w, p, v)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return (None, Identity::default());
    }
    let identity = Identity {
        name: match &f.name {
            Field::Valid(n) => Some(n.clone()),
            _ => None,
        },
        matches: match (&f.host, &f.path_prefix) {
            (Field::Valid(h), Field::Valid(p)) => Some((Some(h.clone()), p.clone())),
            (Field::Absent, Field::Valid(p)) => Some((None, p.clone())),
            _ => None,
        },
    };
    (f.into_route(w, path, names), identity)
}

/// A `credential:` value: the name of a declared credential.
fn credential_ref(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
    names: &BTreeSet<String>,
) -> Option<String> {
    let name = w.string(path, value)?;
    if names.contains(&name) {
        Some(name)
    } else {
        w.problem(path, format!("no credential named {name:?}"));
        None
    }
}

/// `allow: { methods, paths, origins }`.
fn allow(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<AllowPolicy> {
    let (mut methods, mut paths, mut origins) = (Field::Absent, Field::Absent, Field::Absent);
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "methods" => methods.set(w.list(p, v, true, method)),
            "paths" => paths.set(w.list(p, v, true, |w, p, v| {
                w.string(p, v).and_then(|t| report(w, p, allow_path(&t)))
            })),
            "origins" => origins.set(w.list(p, v, false, |w, p, v| {
                w.string(p, v)
                    .and_then(|t| report(w, p, browser_origin(&t)))
            })),
            _ => return false,
        }
        true
    });
    if !is_map {
        return None;
    }
    Some(AllowPolicy {
        methods: methods.optional()?,
        paths: paths.optional()?,
        origins: origins.or(Vec::new())?,
    })
}

/// An HTTP method token, upper-cased.
fn method(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<Method> {
    let text = w.string(path, value)?;
    let upper = text.to_ascii_uppercase();
    Method::from_bytes(upper.as_bytes())
        .map_err(|_| w.problem(path, format!("invalid HTTP method {text:?}")))
        .ok()
}

/// Reports `result`'s message at `path`.
fn report<T>(w: &mut Walker<'_>, path: &str, result: Result<T, String>) -> Option<T> {
    result.map_err(|message| w.problem(path, message)).ok()
}

/// A route's `path_prefix`: absolute, clean, unencoded; trailing `/` removed (except for `/`).
fn path_prefix(text: &str) -> Result<String, String> {
    let problem = if !text.starts_with('/') {
        "must start with `/`"
    } else if text.contains(['?', '#']) {
        "must not contain `?` or `#`"
    } else if text.contains('%') {
        "must not contain `%` (write the path unencoded)"
    } else if text.contains('\\') {
        "must not contain `\\`"
    } else if text.contains("//") {
        "must not contain `//`"
    } else if has_dot_segment(text) {
        "must not contain `.` or `..` segments"
    } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain whitespace or control characters"
    } else {
        return Ok(trim_trailing_slash(text));
    };
    Err(format!("{problem} (got {text:?})"))
}

/// An `allow.paths` entry: absolute, no query, no dot segments; `*` segments allowed.
fn allow_path(text: &str) -> Result<String, String> {
    let problem = if !text.starts_with('/') {
        "must start with `/`"
    } else if text.contains(['?', '#']) {
        "must not contain `?` or `#`"
    } else if text.contains('\\') || text.contains("//") || has_dot_segment(text) {
        "must be a clean path (no `\\`, `//`, `.` or `..` segments)"
    } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain whitespace or control characters"
    } else {
        return Ok(trim_trailing_slash(text));
    };
    Err(format!("{problem} (got {text:?})"))
}

/// An `allow.origins` entry: exactly `scheme://host[:port]`, lower-cased.
fn browser_origin(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let malformed = || format!("must be an origin like https://host[:port] (got {text:?})");
    let Some((scheme, authority)) = lower.split_once("://") else {
        return Err(malformed());
    };
    if !matches!(scheme, "http" | "https") || authority.contains(['/', '?', '#', '@']) {
        return Err(malformed());
    }
    check_authority(authority).map_err(|e| format!("{e} (got {text:?})"))?;
    Ok(lower)
}

/// A `forward_headers` entry: a header the proxy drops by default, lower-cased.
fn forward_header(text: &str) -> Result<HeaderName, String> {
    let lower = text.trim().to_ascii_lowercase();
    if is_always_dropped(&lower) {
        return Err(format!(
            "{text:?} is always dropped: the proxy sets X-Forwarded-For itself and never forwards Forwarded, X-Forwarded-*, X-Original-* or Metadata"
        ));
    }
    if !is_dropped_by_default(&lower) {
        return Err(format!(
            "{text:?} is forwarded anyway; list only headers the proxy drops by default (method overrides such as x-http-method-override, URL overrides such as x-rewrite-url, client-identity headers such as x-real-ip; docs/configuration.md lists them all)"
        ));
    }
    HeaderName::from_bytes(lower.as_bytes()).map_err(|_| format!("{text:?} is not a header name"))
}

/// `/a/b/` → `/a/b`; `/` stays.
fn trim_trailing_slash(text: &str) -> String {
    match text.trim_end_matches('/') {
        "" => "/".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

// === impl RouteFields ===

impl RouteFields {
    /// Cross-field checks: required keys, the default credential, and scope ⇔ credential.
    fn into_route(
        self,
        w: &mut Walker<'_>,
        path: &str,
        names: &BTreeSet<String>,
    ) -> Option<RouteConfig> {
        if self.online_endpoint.is_present() || self.workspace.is_present() {
            return self.into_azure_ml_route(w, path, names);
        }
        let name = self.name.required(w, &child(path, "name"));
        let path_prefix = self.path_prefix.required(w, &child(path, "path_prefix"));
        let upstream = self.upstream.required(w, &child(path, "upstream"));
        let pass_through = self.pass_through_authorization.or(false);
        let credential = match self.credential {
            Field::Absent if pass_through == Some(true) && !self.scope.is_present() => Some(None),
            Field::Absent if names.contains(DEFAULT_CREDENTIAL) => {
                Some(Some(DEFAULT_CREDENTIAL.to_owned()))
            }
            given => {
                let message =
                    "required key is missing (and no credential named \"default\" is configured)";
                given
                    .or_problem(w, &child(path, "credential"), message)
                    .map(Some)
            }
        };
        let scope = match credential {
            Some(None) => Some(None),
            _ => self.scope.required(w, &child(path, "scope")).map(Some),
        };
        Some(RouteConfig {
            name: name?,
            path_prefix: path_prefix?,
            host: self.host.optional()?,
            strip_prefix: self.strip_prefix.or(false)?,
            upstream: upstream?,
            scope: scope?,
            credential: credential?,
            allow: self.allow.or(AllowPolicy::default())?,
            pass_through_authorization: pass_through?,
            forward_headers: self.forward_headers.or(Vec::new())?,
            azure_ml: None,
        })
    }

    /// A route with `online_endpoint:` or `workspace:`: Resource Manager gives its upstream and token, so
    /// `upstream`, `scope`, `strip_prefix` and `pass_through_authorization` are refused; `credential` is the
    /// identity used with Resource Manager (default `default`). The upstream stays Resource Manager until the
    /// configuration is complete ([`super::TopLevel`] sets it).
    fn into_azure_ml_route(
        self,
        w: &mut Walker<'_>,
        path: &str,
        names: &BTreeSet<String>,
    ) -> Option<RouteConfig> {
        let both = self.online_endpoint.is_present() && self.workspace.is_present();
        if both {
            w.problem(
                &child(path, "workspace"),
                "a route has either online_endpoint or workspace, not both",
            );
        }
        let block = if self.online_endpoint.is_present() {
            "online_endpoint"
        } else {
            "workspace"
        };
        for (key, present) in [
            ("upstream", self.upstream.is_present()),
            ("scope", self.scope.is_present()),
            ("strip_prefix", self.strip_prefix.is_present()),
            (
                "pass_through_authorization",
                self.pass_through_authorization.is_present(),
            ),
        ] {
            if present {
                w.problem(
                    &child(path, key),
                    format!(
                        "not allowed with {block}: Resource Manager gives the route its upstream and token, and the path prefix is always stripped"
                    ),
                );
            }
        }
        let name = self.name.required(w, &child(path, "name"));
        let path_prefix = self.path_prefix.required(w, &child(path, "path_prefix"));
        let credential = match self.credential {
            Field::Absent if names.contains(DEFAULT_CREDENTIAL) => {
                Some(DEFAULT_CREDENTIAL.to_owned())
            }
            given => given.or_problem(
                w,
                &child(path, "credential"),
                "required key is missing (and no credential named \"default\" is configured)",
            ),
        };
        let target = match (self.online_endpoint, self.workspace) {
            (Field::Valid(e), Field::Absent) => Some(AzureMlTarget::OnlineEndpoint(e)),
            (Field::Absent, Field::Valid(ws)) => Some(AzureMlTarget::Workspace(ws)),
            _ => None,
        };
        let placeholder = check_url("https://management.azure.com", UrlRule::Upstream)
            .map_err(|e| w.problem(path, e))
            .ok()?;
        if both || [self.upstream.is_present(), self.scope.is_present()].contains(&true) {
            return None;
        }
        Some(RouteConfig {
            name: name?,
            path_prefix: path_prefix?,
            host: self.host.optional()?,
            strip_prefix: true,
            upstream: Upstream {
                origin: placeholder.origin,
                base_path: String::new(),
            },
            scope: None,
            credential: Some(credential?),
            allow: self.allow.or(AllowPolicy::default())?,
            pass_through_authorization: false,
            forward_headers: self.forward_headers.or(Vec::new())?,
            azure_ml: Some(target?),
        })
    }
}

// === impl Seen ===

impl Seen {
    /// Records route `i`; reports (at the later route) a reused name or a reused host + path prefix.
    fn check(&mut self, w: &mut Walker<'_>, i: usize, path: &str, route: &Identity) -> bool {
        let mut unique = true;
        if let Some(name) = &route.name {
            if let Some(first) = self.names.get(name) {
                let message = format!("duplicate route name {name:?} (also routes[{first}])");
                w.problem(&child(path, "name"), message);
                unique = false;
            } else {
                self.names.insert(name.clone(), i);
            }
        }
        if let Some(key) = &route.matches {
            if let Some(first) = self.matches.get(key) {
                let message = format!(
                    "routes[{first}] already serves this host and path_prefix {:?}",
                    key.1
                );
                w.problem(&child(path, "path_prefix"), message);
                unique = false;
            } else {
                self.matches.insert(key.clone(), i);
            }
        }
        unique
    }
}

#[cfg(test)]
mod tests;
