//! The route table: which route serves a request, and which proxy path reaches an upstream URL.
//!
//! The longest `path_prefix` wins (on segment boundaries), routes with a `host` before routes without, and the
//! configuration order breaks ties. The table maps each route to a value: the router's table holds each route's
//! stack; the URL rewrite's holds nothing more. The upstream URI is built from configuration plus the validated
//! path ([`Route::upstream_target`]), never from the caller's Host or request-target authority.

use std::sync::Arc;

use http::Uri;

use super::route::Route;

/// Routes, each with a value `T`, in match order.
#[derive(Debug)]
pub struct RouteTable<T = ()> {
    /// Most specific first: routes with a host, then longer prefixes, then configuration order.
    by_specificity: Vec<(Arc<Route>, T)>,
    /// Configuration order.
    routes: Vec<Arc<Route>>,
}

// === impl RouteTable ===

impl RouteTable {
    /// The table of `routes` (in configuration order).
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        Self::with_values(routes.into_iter().map(|r| (r, ())).collect())
    }
}

impl<T> RouteTable<T> {
    /// The table of `entries` (in configuration order).
    pub fn with_values(entries: Vec<(Arc<Route>, T)>) -> Self {
        let routes = entries.iter().map(|(r, _)| Arc::clone(r)).collect();
        let mut by_specificity = entries;
        // Stable: equally specific routes keep their configuration order.
        by_specificity.sort_by(|(a, _), (b, _)| {
            b.has_host()
                .cmp(&a.has_host())
                .then(b.path_prefix().len().cmp(&a.path_prefix().len()))
        });
        Self {
            by_specificity,
            routes,
        }
    }

    /// The same routes, each with the value `f` makes for it.
    pub fn map<U>(&self, mut f: impl FnMut(&Arc<Route>) -> U) -> RouteTable<U> {
        RouteTable::with_values(self.routes.iter().map(|r| (Arc::clone(r), f(r))).collect())
    }

    /// The most specific route for (`host` name, `path`), and its value.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<(&Arc<Route>, &T)> {
        self.by_specificity
            .iter()
            .find(|(r, _)| r.matches(host, path))
            .map(|(r, v)| (r, v))
    }

    /// The routes, in configuration order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when the table has no route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Maps an upstream URL (absolute, or an absolute path relative to `served_by`'s upstream) back to the proxy
    /// path that reaches it, preferring the route that served the request. `None` when no route leads there.
    pub fn proxy_path_for(
        &self,
        served_by: &Route,
        host: Option<&str>,
        location: &Uri,
    ) -> Option<String> {
        let candidates = std::iter::once(served_by).chain(
            self.routes
                .iter()
                .map(|r| &**r)
                .filter(|r| !std::ptr::eq(*r, served_by)),
        );
        for route in candidates {
            // An unresolved Azure ML route's upstream is Resource Manager only as a placeholder: it leads nowhere.
            if matches!(route.auth(), super::route::RouteAuth::AzureMl(_)) {
                continue;
            }
            let same_origin = match (location.scheme(), location.authority()) {
                (Some(scheme), Some(authority)) => route.same_origin(scheme, authority),
                (None, None) => std::ptr::eq(route, served_by),
                _ => false,
            };
            if !same_origin {
                continue;
            }
            if let Some(path) = route.reverse_path(location.path())
                && self
                    .find(host, &path)
                    .is_some_and(|(r, _)| std::ptr::eq(&**r, route))
            {
                return Some(path);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::route::testing::{config, route};

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route(&config(
                "arm",
                "/",
                None,
                false,
                "https://management.azure.com",
            )),
            route(&config(
                "api",
                "/api",
                None,
                true,
                "https://ws.api.azureml.ms/",
            )),
            route(&config(
                "score",
                "/score/my-endpoint",
                None,
                true,
                "https://my-endpoint.eastus.inference.ml.azure.com/score",
            )),
            route(&config(
                "hosted",
                "/api",
                Some("ml.local"),
                false,
                "https://other.example",
            )),
        ])
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = table();
        let name = |host: Option<&str>, path: &str| t.find(host, path).map(|(r, _)| &**r.name());
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
    fn each_route_keeps_its_value() {
        let t = table().map(|r| format!("stack of {}", r.name()));
        assert_eq!(t.len(), 4);
        let (route, value) = t.find(Some("ml.local"), "/api/x").unwrap();
        assert_eq!(&**route.name(), "hosted");
        assert_eq!(value, "stack of hosted");
        let (route, value) = t.find(None, "/score/my-endpoint/x").unwrap();
        assert_eq!(&**route.name(), "score");
        assert_eq!(value, "stack of score");
    }

    #[test]
    fn reverse_mapping_for_location_headers() {
        let t = table();
        let arm = t.find(None, "/x").unwrap().0;
        let api = t.find(None, "/api/x").unwrap().0;
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
        let score = t.find(None, "/score/my-endpoint").unwrap().0;
        assert_eq!(
            back(
                score,
                "https://my-endpoint.eastus.inference.ml.azure.com/other"
            ),
            None,
            "outside the base path"
        );
    }
}
