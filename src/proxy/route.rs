//! One route as the request path carries it: built once per configuration, shared as an `Arc<Route>` by the
//! route's stack, the errors it produces and the responses it answers, so no layer looks a route up again.
//!
//! A [`Route`] holds what serving needs: its name, the requests it matches (`path_prefix`, `host`), its upstream
//! (origin, base path, `strip_prefix`: the request target and, in reverse, the URL rewrite), its least-privilege
//! policy and forwarded headers, how it authorizes requests ([`RouteAuth`]) and its metric handles.

use std::fmt;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, Method, Uri};

use crate::azure_ml::AzureMlRoute;
use crate::config::{AllowPolicy, RouteConfig, Upstream};
use crate::metrics::RouteMetrics;
use crate::token_cache::TokenSource;

/// Methods a route refuses unless `allow.methods` names them: they make a server echo or debug rather than act.
/// `TRACE` sends the request back, token included, to whoever asked; `TRACK` and `DEBUG` are IIS's and ASP.NET's
/// variants. `CONNECT` is refused before routing; it is here for a method-override header that names it.
const EXPLICIT_ONLY_METHODS: [&str; 4] = ["TRACE", "TRACK", "DEBUG", "CONNECT"];

/// One route, ready for matching, admission and forwarding.
pub struct Route {
    name: Arc<str>,
    prefix: String,
    host: Option<String>,
    strip_prefix: bool,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    allow: AllowPolicy,
    forward_headers: Vec<HeaderName>,
    auth: RouteAuth,
    metrics: RouteMetrics,
}

/// How a route authorizes what it forwards. There is no mode that forwards a caller's `Authorization` on a route
/// that is meant to replace it: a route that does not pass the caller's token through always has a token source.
#[derive(Debug, Clone)]
pub enum RouteAuth {
    /// The route's token replaces any `Authorization` the caller sent.
    Inject(TokenSource),
    /// `pass_through_authorization: true`: a caller's own `Authorization` is forwarded as sent; the route's token
    /// (when the route has a credential) is inserted only into requests that carry none.
    PassThrough(Option<TokenSource>),
    /// An online endpoint's key or AML token (read from Resource Manager) replaces any `Authorization` the
    /// caller sent. When the endpoint answers `401` to it, it is dropped and read again once (a rotated key) and
    /// a request whose body was kept is replayed once.
    EndpointSecret(TokenSource),
    /// An Azure ML route (`online_endpoint:` / `workspace:`) as configured: its upstream and credential are known
    /// only once Resource Manager has been read. Its requests are served by the route [`Route::resolved`] makes;
    /// this route itself never forwards anything.
    AzureMl(AzureMlRoute),
}

/// A route that would forward callers' own tokens although configuration asked it to replace them: refused when
/// the route is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "route {route:?} has no credential and scope, and does not pass the caller's Authorization through"
)]
pub struct NoRouteToken {
    /// The route's name.
    pub route: String,
}

/// Response extension: the route that answered, and whether the status is its upstream's (false for the
/// proxy's own answers).
#[derive(Clone)]
pub struct RouteInfo {
    /// The route.
    pub route: Arc<Route>,
    /// True when the status is the upstream's.
    pub upstream: bool,
}

// === impl Route ===

impl Route {
    /// The route `config` describes, authorizing with `auth` and counting into `metrics`.
    pub fn new(config: &RouteConfig, auth: RouteAuth, metrics: RouteMetrics) -> Self {
        Self {
            name: config.name.as_str().into(),
            prefix: config.path_prefix.clone(),
            host: config.host.clone(),
            strip_prefix: config.strip_prefix,
            scheme: config.upstream.origin.scheme.clone(),
            authority: config.upstream.origin.authority.clone(),
            base_path: config.upstream.base_path.clone(),
            allow: config.allow.clone(),
            forward_headers: config.forward_headers.clone(),
            auth,
            metrics,
        }
    }

    /// The route name (metrics, logs).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The route that serves this Azure ML route's requests once it is resolved: the same name, match, policy and
    /// metrics, with the resolved `upstream` (the prefix replaced by its base path) and `auth`.
    pub fn resolved(&self, upstream: &Upstream, auth: RouteAuth) -> Self {
        Self {
            name: Arc::clone(&self.name),
            prefix: self.prefix.clone(),
            host: self.host.clone(),
            strip_prefix: true,
            scheme: upstream.origin.scheme.clone(),
            authority: upstream.origin.authority.clone(),
            base_path: upstream.base_path.clone(),
            allow: self.allow.clone(),
            forward_headers: self.forward_headers.clone(),
            auth,
            metrics: self.metrics.clone(),
        }
    }

    /// How the route authorizes requests.
    pub fn auth(&self) -> &RouteAuth {
        &self.auth
    }

    /// The route's metric handles.
    pub fn metrics(&self) -> &RouteMetrics {
        &self.metrics
    }

    /// True when a request for `host` (the allowed host name it used) and `path` is this route's: the route names
    /// no host or that one, and the path is the prefix or continues it with `/`. Inlined into the table's
    /// generic lookup, wherever that is instantiated.
    #[inline]
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        self.host.as_deref().is_none_or(|h| Some(h) == host)
            && (self.prefix == "/"
                || path
                    .strip_prefix(self.prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
    }

    /// The one host name the route serves, if it names one.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// True when the route only serves one host name (such routes are tried first).
    pub fn has_host(&self) -> bool {
        self.host.is_some()
    }

    /// The path prefix (longer prefixes are tried first).
    pub fn path_prefix(&self) -> &str {
        &self.prefix
    }

    /// The upstream URI for a request path (already validated) and query.
    pub fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(self.upstream_target(path, query)?)
            .build()
    }

    /// The upstream request target for a request's (validated) target: [`Self::upstream_target`] of its path and
    /// query, which is the request's own target, shared rather than rebuilt, when the upstream has no base path and
    /// no prefix is stripped.
    pub fn upstream_target_of(&self, uri: &Uri) -> Result<PathAndQuery, http::uri::InvalidUri> {
        if self.base_path.is_empty()
            && !(self.strip_prefix && self.prefix != "/")
            && let Some(target) = uri.path_and_query()
            // Its path and query as they are (a target without a path would be given one).
            && target.as_str().starts_with('/')
        {
            return Ok(target.clone());
        }
        self.upstream_target(uri.path(), uri.query())
    }

    /// The upstream request target (path and query) for a request path (already validated) and query.
    pub fn upstream_target(
        &self,
        path: &str,
        query: Option<&str>,
    ) -> Result<PathAndQuery, http::uri::InvalidUri> {
        let rest = if self.strip_prefix && self.prefix != "/" {
            path.strip_prefix(self.prefix.as_str()).unwrap_or(path)
        } else {
            path
        };
        let mut target = String::with_capacity(
            self.base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1,
        );
        target.push_str(&self.base_path);
        target.push_str(rest);
        if target.is_empty() {
            target.push('/');
        }
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        PathAndQuery::try_from(target)
    }

    /// The upstream's scheme and authority.
    pub fn origin(&self) -> (&Scheme, &Authority) {
        (&self.scheme, &self.authority)
    }

    /// The proxy path that forwards to `upstream_path`, if it lies under this route's upstream base path.
    pub fn reverse_path(&self, upstream_path: &str) -> Option<String> {
        let rest = if self.base_path.is_empty() {
            upstream_path
        } else {
            let rest = upstream_path.strip_prefix(self.base_path.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        let path = match (self.strip_prefix && self.prefix != "/", rest.is_empty()) {
            (true, _) => format!("{}{rest}", self.prefix),
            (false, true) => "/".to_owned(),
            (false, false) => rest.to_owned(),
        };
        Some(path)
    }

    /// True when `scheme://authority` is this route's upstream origin (host case-insensitive, default ports
    /// implied).
    pub fn same_origin(&self, scheme: &Scheme, authority: &Authority) -> bool {
        let default = |s: &Scheme| if *s == Scheme::HTTP { 80 } else { 443 };
        *scheme == self.scheme
            && authority.port_u16().unwrap_or(default(scheme))
                == self.authority.port_u16().unwrap_or(default(&self.scheme))
            && authority.host().eq_ignore_ascii_case(self.authority.host())
    }

    /// The route's least-privilege policy.
    pub fn allow(&self) -> &AllowPolicy {
        &self.allow
    }

    /// True when `method` is allowed: listed in `allow.methods`, or, without that list, any method but `TRACE`,
    /// `TRACK`, `DEBUG` and `CONNECT`.
    pub fn allows_method(&self, method: &Method) -> bool {
        match &self.allow.methods {
            Some(methods) => methods.contains(method),
            None => !EXPLICIT_ONLY_METHODS.contains(&method.as_str()),
        }
    }

    /// True when `path` is allowed: one of `allow.paths` is a segment prefix of it (`*` matches one segment).
    pub fn allows_path(&self, path: &str) -> bool {
        self.allow
            .paths
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| path_pattern_matches(p, path)))
    }

    /// Headers this route forwards although the proxy drops them by default (`forward_headers`).
    pub fn forward_headers(&self) -> &[HeaderName] {
        &self.forward_headers
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .field("host", &self.host)
            .field(
                "upstream",
                &format_args!("{}://{}{}", self.scheme, self.authority, self.base_path),
            )
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// Segment-wise prefix match where a `*` pattern segment matches any one non-empty segment.
fn path_pattern_matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.trim_end_matches('/').split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, _) => return true,
            (Some(_), None) => return false,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(w), Some(seg)) if w == seg => {}
            _ => return false,
        }
    }
}

// === impl RouteAuth ===

impl RouteAuth {
    /// The mode of route `route`: with `pass_through` (its `pass_through_authorization`) the caller's token goes
    /// through; otherwise `tokens` must be the route's token source. Configuration requires `credential` and
    /// `scope` on such a route, so the error means a configuration built around that check: the route is refused
    /// rather than left to forward whatever `Authorization` the caller sent.
    pub fn new(
        route: &str,
        pass_through: bool,
        tokens: Option<TokenSource>,
    ) -> Result<Self, NoRouteToken> {
        match (pass_through, tokens) {
            (true, tokens) => Ok(RouteAuth::PassThrough(tokens)),
            (false, Some(tokens)) => Ok(RouteAuth::Inject(tokens)),
            (false, None) => Err(NoRouteToken {
                route: route.to_owned(),
            }),
        }
    }

    /// The route's token source, if it has one (an unresolved Azure ML route has none yet).
    pub fn tokens(&self) -> Option<&TokenSource> {
        match self {
            RouteAuth::Inject(tokens) | RouteAuth::EndpointSecret(tokens) => Some(tokens),
            RouteAuth::PassThrough(tokens) => tokens.as_ref(),
            RouteAuth::AzureMl(_) => None,
        }
    }

    /// The token source whose token a request with `headers` gets; `None` when it goes with the caller's own
    /// `Authorization` (or none).
    /// An unresolved Azure ML route never forwards, so it names none ([`super::inject_token`] refuses it).
    pub fn tokens_for(&self, headers: &HeaderMap) -> Option<&TokenSource> {
        match self {
            RouteAuth::Inject(tokens) | RouteAuth::EndpointSecret(tokens) => Some(tokens),
            RouteAuth::PassThrough(_) if headers.contains_key(AUTHORIZATION) => None,
            RouteAuth::PassThrough(tokens) => tokens.as_ref(),
            RouteAuth::AzureMl(_) => None,
        }
    }
}

// === impl RouteInfo ===

impl fmt::Debug for RouteInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteInfo")
            .field("route", &self.route.name)
            .field("upstream", &self.upstream)
            .finish()
    }
}

/// Routes for unit tests: built from configuration, passing callers' tokens through (no token source), with
/// metric handles of a fresh registry.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::config::{HttpsOrigin, Upstream};

    /// The configuration of a route `name` for `prefix` (and `host`), forwarding to `upstream`.
    pub(crate) fn config(
        name: &str,
        prefix: &str,
        host: Option<&str>,
        strip: bool,
        upstream: &str,
    ) -> RouteConfig {
        let uri: Uri = upstream.parse().unwrap();
        RouteConfig {
            name: name.into(),
            path_prefix: prefix.into(),
            host: host.map(Into::into),
            strip_prefix: strip,
            upstream: Upstream {
                origin: HttpsOrigin {
                    scheme: uri.scheme().unwrap().clone(),
                    authority: uri.authority().unwrap().clone(),
                },
                base_path: uri.path().trim_end_matches('/').to_owned(),
            },
            scope: Some("s/.default".into()),
            credential: Some("c".into()),
            allow: AllowPolicy::default(),
            pass_through_authorization: false,
            forward_headers: Vec::new(),
            azure_ml: None,
        }
    }

    /// The route `config` describes.
    pub(crate) fn route(config: &RouteConfig) -> Arc<Route> {
        let metrics = crate::metrics::Metrics::new()
            .unwrap()
            .proxy
            .route(&config.name);
        Arc::new(Route::new(config, RouteAuth::PassThrough(None), metrics))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{config, route};
    use super::*;

    #[test]
    fn upstream_uris() {
        let api = route(&config(
            "api",
            "/api",
            None,
            true,
            "https://ws.api.azureml.ms/",
        ));
        let arm = route(&config(
            "arm",
            "/",
            None,
            false,
            "https://management.azure.com",
        ));
        let score = route(&config(
            "score",
            "/score/my-endpoint",
            None,
            true,
            "https://my-endpoint.eastus.inference.ml.azure.com/score",
        ));
        let uri =
            |r: &Route, path: &str, q: Option<&str>| r.upstream_uri(path, q).unwrap().to_string();
        assert_eq!(
            uri(&arm, "/subscriptions/a", Some("api-version=1")),
            "https://management.azure.com/subscriptions/a?api-version=1"
        );
        assert_eq!(
            uri(&api, "/api/v1/items", Some("x=1")),
            "https://ws.api.azureml.ms/v1/items?x=1"
        );
        assert_eq!(uri(&api, "/api", None), "https://ws.api.azureml.ms/");
        assert_eq!(
            uri(&score, "/score/my-endpoint", None),
            "https://my-endpoint.eastus.inference.ml.azure.com/score"
        );
        assert_eq!(
            uri(&score, "/score/my-endpoint/x", None),
            "https://my-endpoint.eastus.inference.ml.azure.com/score/x"
        );
    }

    #[test]
    fn a_shared_target_is_the_rebuilt_one() {
        let routes = [
            route(&config("arm", "/", None, false, "https://h")),
            route(&config("root", "/", None, true, "https://h/")),
            route(&config("api", "/api", None, true, "https://h")),
            route(&config("kept", "/api", None, false, "https://h")),
            route(&config("base", "/", None, false, "https://h/score")),
        ];
        let targets = [
            "/",
            "/a/b?x=1&y",
            "/api/v1?",
            "/api",
            "/p%20q?%41",
            "http://h/x?y",
            "http://h",
            "http://h?q",
            "*",
        ];
        for r in &routes {
            for target in targets {
                let uri: Uri = target.parse().unwrap();
                assert_eq!(
                    r.upstream_target_of(&uri).unwrap(),
                    r.upstream_target(uri.path(), uri.query()).unwrap(),
                    "{} {target}",
                    r.name()
                );
            }
        }
    }

    #[test]
    fn echoing_methods_need_an_explicit_allow() {
        let mut c = config("r", "/", None, false, "https://h");
        let r = route(&c);
        for m in ["GET", "POST", "DELETE", "PATCH", "PROPFIND"] {
            assert!(
                r.allows_method(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in ["TRACE", "TRACK", "DEBUG", "CONNECT"] {
            assert!(
                !r.allows_method(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        c.allow.methods = Some(vec![Method::GET, Method::TRACE]);
        let r = route(&c);
        assert!(r.allows_method(&Method::TRACE) && r.allows_method(&Method::GET));
        assert!(!r.allows_method(&Method::POST));
        assert!(!r.allows_method(&Method::from_bytes(b"TRACK").unwrap()));
    }

    #[test]
    fn allow_paths() {
        assert!(path_pattern_matches(
            "/subscriptions/*/resourceGroups/rg",
            "/subscriptions/abc/resourceGroups/rg/x"
        ));
        assert!(!path_pattern_matches(
            "/subscriptions/*/resourceGroups/rg",
            "/subscriptions/abc/resourceGroups/other"
        ));
        assert!(!path_pattern_matches(
            "/subscriptions/*/resourceGroups",
            "/subscriptions//resourceGroups"
        ));
        assert!(path_pattern_matches("/score/", "/score"));
        assert!(!path_pattern_matches("/score", "/scores"));
    }

    #[test]
    fn a_route_that_replaces_tokens_cannot_be_built_without_a_token_source() {
        let refused = RouteAuth::new("arm", false, None).unwrap_err();
        assert_eq!(
            refused,
            NoRouteToken {
                route: "arm".into()
            }
        );
        assert!(refused.to_string().contains("\"arm\""), "{refused}");
        let own = RouteAuth::new("own", true, None).unwrap();
        let mut headers = HeaderMap::new();
        assert!(own.tokens_for(&headers).is_none());
        headers.insert(AUTHORIZATION, "Bearer callers".parse().unwrap());
        assert!(own.tokens_for(&headers).is_none());
    }
}
