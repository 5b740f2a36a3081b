//! The route table: longest `path_prefix` wins (on segment boundaries), routes with a `host` before routes
//! without; the upstream URI is built from configuration plus the validated path, never from the caller's Host
//! or request-target authority.

use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, Method, Uri};

use crate::config::{AllowPolicy, RouteConfig};

/// Methods a route refuses unless `allow.methods` names them: they make a server echo or debug rather than act.
/// `TRACE` sends the request back, token included, to whoever asked; `TRACK` and `DEBUG` are IIS's and ASP.NET's
/// variants. `CONNECT` is refused before routing; it is here for a method-override header that names it.
const EXPLICIT_ONLY_METHODS: [&str; 4] = ["TRACE", "TRACK", "DEBUG", "CONNECT"];

/// All routes, in match order.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Indices into `routes`, most specific first.
    order: Vec<usize>,
}

/// One route, ready for matching and URI building.
#[derive(Debug)]
pub struct Route {
    /// Position in the configuration (used as a compact id).
    pub index: usize,
    /// The route name (metrics, logs).
    pub name: Arc<str>,
    prefix: String,
    host: Option<String>,
    strip_prefix: bool,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    allow: AllowPolicy,
    forward_headers: Vec<HeaderName>,
}

// === impl RouteTable ===

impl RouteTable {
    /// Builds the table from validated configuration.
    pub fn new(configs: &[RouteConfig]) -> Self {
        let routes: Vec<Route> = configs
            .iter()
            .enumerate()
            .map(|(index, c)| Route {
                index,
                name: c.name.as_str().into(),
                prefix: c.path_prefix.clone(),
                host: c.host.clone(),
                strip_prefix: c.strip_prefix,
                scheme: c.upstream.origin.scheme.clone(),
                authority: c.upstream.origin.authority.clone(),
                base_path: c.upstream.base_path.clone(),
                allow: c.allow.clone(),
                forward_headers: c.forward_headers.clone(),
            })
            .collect();
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by(|&a, &b| {
            let (ra, rb) = (&routes[a], &routes[b]);
            rb.host
                .is_some()
                .cmp(&ra.host.is_some())
                .then(rb.prefix.len().cmp(&ra.prefix.len()))
                .then(a.cmp(&b))
        });
        Self { routes, order }
    }

    /// The most specific route for (`host` name, `path`).
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.order
            .iter()
            .map(|&i| &self.routes[i])
            .find(|r| r.host.as_deref().is_none_or(|h| Some(h) == host) && r.matches_path(path))
    }

    /// Every route, in configuration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Maps an upstream URL (absolute, or an absolute path relative to `served_by`'s upstream) back to the proxy
    /// path that reaches it, preferring the route that served the request. `None` when no route leads there.
    pub fn proxy_path_for(
        &self,
        served_by: &Route,
        host: Option<&str>,
        location: &Uri,
    ) -> Option<String> {
        let candidates = std::iter::once(served_by)
            .chain(self.routes.iter().filter(|r| r.index != served_by.index));
        for route in candidates {
            let same_origin = match (location.scheme(), location.authority()) {
                (Some(scheme), Some(authority)) => route.same_origin(scheme, authority),
                (None, None) => route.index == served_by.index,
                _ => false,
            };
            if !same_origin {
                continue;
            }
            if let Some(path) = route.reverse_path(location.path())
                && self
                    .find(host, &path)
                    .is_some_and(|r| r.index == route.index)
            {
                return Some(path);
            }
        }
        None
    }
}

// === impl Route ===

impl Route {
    /// True when `path` is the prefix or continues it with `/`.
    fn matches_path(&self, path: &str) -> bool {
        self.prefix == "/"
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The upstream URI for a request path (already validated) and query.
    pub fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(self.upstream_target(path, query)?)
            .build()
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
    fn reverse_path(&self, upstream_path: &str) -> Option<String> {
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

    fn same_origin(&self, scheme: &Scheme, authority: &Authority) -> bool {
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

    /// Headers this route forwards although the proxy drops them by default (`forward_headers`).
    pub fn forward_headers(&self) -> &[HeaderName] {
        &self.forward_headers
    }

    /// True when `path` is allowed: one of `allow.paths` is a segment prefix of it (`*` matches one segment).
    pub fn allows_path(&self, path: &str) -> bool {
        self.allow
            .paths
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| path_pattern_matches(p, path)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HttpsOrigin, Upstream};

    fn route(
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
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            route("arm", "/", None, false, "https://management.azure.com"),
            route("api", "/api", None, true, "https://ws.api.azureml.ms/"),
            route(
                "score",
                "/score/my-endpoint",
                None,
                true,
                "https://my-endpoint.eastus.inference.ml.azure.com/score",
            ),
            route(
                "hosted",
                "/api",
                Some("ml.local"),
                false,
                "https://other.example",
            ),
        ])
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = table();
        let name = |host: Option<&str>, path: &str| t.find(host, path).map(|r| &*r.name);
        assert_eq!(name(None, "/subscriptions/x"), Some("arm"));
        assert_eq!(name(None, "/api"), Some("api"));
        assert_eq!(name(None, "/api/v1/items"), Some("api"));
        assert_eq!(
            name(None, "/apix"),
            Some("arm"),
            "prefixes match whole segments"
        );
        assert_eq!(name(None, "/score/my-endpoint"), Some("score"));
        assert_eq!(
            name(Some("ml.local"), "/api/x"),
            Some("hosted"),
            "a host-specific route wins"
        );
        assert_eq!(name(Some("localhost"), "/api/x"), Some("api"));
    }

    #[test]
    fn upstream_uris() {
        let t = table();
        let uri = |path: &str, q: Option<&str>| {
            let r = t.find(None, path).unwrap();
            r.upstream_uri(path, q).unwrap().to_string()
        };
        assert_eq!(
            uri("/subscriptions/a", Some("api-version=1")),
            "https://management.azure.com/subscriptions/a?api-version=1"
        );
        assert_eq!(
            uri("/api/v1/items", Some("x=1")),
            "https://ws.api.azureml.ms/v1/items?x=1"
        );
        assert_eq!(uri("/api", None), "https://ws.api.azureml.ms/");
        assert_eq!(
            uri("/score/my-endpoint", None),
            "https://my-endpoint.eastus.inference.ml.azure.com/score"
        );
        assert_eq!(
            uri("/score/my-endpoint/x", None),
            "https://my-endpoint.eastus.inference.ml.azure.com/score/x"
        );
    }

    #[test]
    fn reverse_mapping_for_location_headers() {
        let t = table();
        let arm = t.find(None, "/x").unwrap();
        let api = t.find(None, "/api/x").unwrap();
        let back =
            |served: &Route, loc: &str| t.proxy_path_for(served, None, &loc.parse().unwrap());
        assert_eq!(
            back(arm, "https://management.azure.com/operations/1").as_deref(),
            Some("/operations/1")
        );
        assert_eq!(
            back(arm, "https://MANAGEMENT.azure.com:443/operations/1").as_deref(),
            Some("/operations/1")
        );
        assert_eq!(
            back(api, "https://ws.api.azureml.ms/v1/ops/2").as_deref(),
            Some("/api/v1/ops/2")
        );
        assert_eq!(
            back(api, "/v1/ops/3").as_deref(),
            Some("/api/v1/ops/3"),
            "relative to the serving upstream"
        );
        assert_eq!(
            back(arm, "https://ws.api.azureml.ms/v1/x").as_deref(),
            Some("/api/v1/x"),
            "another route's upstream"
        );
        assert_eq!(
            back(arm, "https://example.blob.core.windows.net/c/b?sig=x"),
            None
        );
        assert_eq!(
            back(arm, "http://management.azure.com/x"),
            None,
            "scheme must match"
        );
        let score = t.find(None, "/score/my-endpoint").unwrap();
        assert_eq!(
            back(
                score,
                "https://my-endpoint.eastus.inference.ml.azure.com/other"
            ),
            None,
            "outside the base path"
        );
    }

    #[test]
    fn echoing_methods_need_an_explicit_allow() {
        let mut config = route("r", "/", None, false, "https://h");
        let open = RouteTable::new(std::slice::from_ref(&config));
        let r = &open.routes()[0];
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
        config.allow.methods = Some(vec![Method::GET, Method::TRACE]);
        let listed = RouteTable::new(&[config]);
        let r = &listed.routes()[0];
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
}
