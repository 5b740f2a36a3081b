//! Micro-benchmarks of the per-request hot path: route match, header rewrite, the token lookup on a cache hit,
//! and error-body rendering. Run with `cargo bench --bench hot_path`; `-- --sample-count 20` for a quick pass.
//!
//! Setup (route table, header maps, a primed token cache, a tokio runtime) happens once per benchmark, outside
//! the timed loop. The numbers are for comparing changes on one machine, not for absolute claims.

#![allow(
    clippy::expect_used,
    reason = "benchmark setup: a broken fixture must stop the run loudly"
)]

fn main() {
    divan::main();
}

/// `RouteTable::find(host, path)`, once per request in the router.
mod routes {
    use std::path::Path;
    use std::sync::Arc;

    use aml_auth_proxy::config::{self, ConfigOrigin};
    use aml_auth_proxy::env::MapEnv;
    use aml_auth_proxy::metrics::Metrics;
    use aml_auth_proxy::proxy::route::{Route, RouteAuth};
    use aml_auth_proxy::proxy::route_table::RouteTable;
    use divan::{Bencher, black_box};

    /// Six routes in the shapes the documentation shows: ARM at `/`, the workspace data plane, MLflow, two online
    /// endpoints, and a host-specific data-plane route (tried first).
    const ROUTES: &str = r#"
credentials:
  compute:
    managed_identity: {}
routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
    credential: compute
  - name: workspace
    path_prefix: /ws
    strip_prefix: true
    upstream: https://eastus.api.azureml.ms
    scope: https://ml.azure.com/.default
    credential: compute
  - name: mlflow
    path_prefix: /mlflow
    upstream: https://eastus.api.azureml.ms
    scope: https://ml.azure.com/.default
    credential: compute
  - name: scoring
    path_prefix: /score/my-endpoint
    strip_prefix: true
    upstream: https://my-endpoint.eastus.inference.ml.azure.com/score
    scope: https://ml.azure.com/.default
    credential: compute
    allow: { methods: [POST] }
  - name: scoring-eu
    path_prefix: /score/other-endpoint
    strip_prefix: true
    upstream: https://other-endpoint.westeurope.inference.ml.azure.com/score
    scope: https://ml.azure.com/.default
    credential: compute
  - name: hosted
    host: ml.local
    path_prefix: /ws
    strip_prefix: true
    upstream: https://westeurope.api.azureml.ms
    scope: https://ml.azure.com/.default
    credential: compute
"#;

    fn table(yaml: &str) -> RouteTable {
        let config =
            config::from_yaml_str(yaml, &MapEnv::new(), ConfigOrigin::BuiltIn, Path::new("."))
                .expect("the benchmark route table is valid configuration");
        let metrics = Metrics::new().expect("metrics register in a fresh registry");
        let routes = config.routes.iter().map(|r| {
            let metrics = metrics.proxy.route(&r.name);
            Arc::new(Route::new(r, RouteAuth::PassThrough(None), metrics))
        });
        RouteTable::new(routes.collect())
    }

    #[derive(Debug, Clone, Copy)]
    enum Case {
        /// An ARM resource path: every more specific route is tried before `/`.
        Arm,
        /// A workspace data-plane path (`/ws/...`).
        Workspace,
        /// An online endpoint's scoring path.
        Scoring,
        /// The host-specific route, first in match order.
        HostSpecific,
        /// No route: the same table without the ARM `/` route.
        Miss,
    }

    const CASES: [Case; 5] = [
        Case::Arm,
        Case::Workspace,
        Case::Scoring,
        Case::HostSpecific,
        Case::Miss,
    ];

    #[divan::bench(args = CASES)]
    fn find(bencher: Bencher<'_, '_>, case: Case) {
        let full = table(ROUTES);
        let without_arm = {
            let (head, tail) = ROUTES
                .split_once("  - name: arm\n")
                .expect("the ARM route is in the table");
            let (_, rest) = tail
                .split_once("  - name: workspace\n")
                .expect("the workspace route follows ARM");
            table(&format!("{head}  - name: workspace\n{rest}"))
        };
        let (table, host, path) = match case {
            Case::Arm => (
                &full,
                "localhost",
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ws1/onlineEndpoints/my-endpoint",
            ),
            Case::Workspace => (
                &full,
                "localhost",
                "/ws/history/v1.0/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ws1/experiments",
            ),
            Case::Scoring => (&full, "localhost", "/score/my-endpoint"),
            Case::HostSpecific => (&full, "ml.local", "/ws/assetstore/v1.0/assets"),
            Case::Miss => (
                &without_arm,
                "localhost",
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg",
            ),
        };
        let expect_hit = !matches!(case, Case::Miss);
        assert_eq!(
            table.find(Some(host), path).is_some(),
            expect_hit,
            "{case:?}"
        );
        bencher.bench(|| {
            black_box(table)
                .find(black_box(Some(host)), black_box(path))
                .map(|(r, _)| black_box(Arc::as_ptr(r)))
        });
    }
}

/// `check_path`, once per request before routing: plain ASCII segments are judged in place; a segment with `%` or
/// non-ASCII characters is decoded and mapped to its lenient-server reading first.
mod paths {
    use aml_auth_proxy::proxy::admission::check_path;
    use divan::{Bencher, black_box};
    use http::Method;

    const PATHS: [&str; 3] = [
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/my-endpoint",
        "/mlflow/v2.0/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ws/api/2.0/mlflow-artifacts/artifacts/model/MLmodel",
        "/history/v1.0/experiments/my%20experiment/runs/caf%C3%A9%20r%C3%A9sum%C3%A9/artifacts/%E6%97%A5%E6%9C%AC.csv",
    ];

    #[divan::bench(args = PATHS)]
    fn check(bencher: Bencher<'_, '_>, path: &str) {
        assert!(check_path(&Method::GET, path).is_ok(), "{path}");
        bencher.bench(|| check_path(&Method::GET, black_box(path)).is_ok());
    }
}

/// Request header hygiene in the router: `strip_hop_by_hop` and `strip_caller_metadata`, against cloning the map.
mod headers {
    use aml_auth_proxy::proxy::headers::{strip_caller_metadata, strip_hop_by_hop};
    use divan::{Bencher, black_box};
    use http::{HeaderMap, HeaderName, HeaderValue};

    #[derive(Debug, Clone, Copy)]
    enum Case {
        /// Ten headers an Azure SDK client sends, none hop-by-hop and none spoofable.
        Typical,
        /// The same plus Connection (naming a custom header), Keep-Alive, TE, Proxy-Connection, that custom
        /// header, X-Forwarded-For/-Proto, Forwarded and Metadata: 19 headers, 9 of them removed.
        Dirty,
    }

    const CASES: [Case; 2] = [Case::Typical, Case::Dirty];

    const TYPICAL: [(&str, &str); 10] = [
        ("host", "localhost:8080"),
        (
            "user-agent",
            "azsdk-python-ai-ml/1.26.0 Python/3.12.3 (Linux-6.8.0-x86_64-with-glibc2.39)",
        ),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("content-type", "application/json"),
        ("content-length", "1834"),
        (
            "x-ms-client-request-id",
            "6c5f0c8e-4a4f-4b8e-9c1e-2f7d0f3b9a11",
        ),
        ("x-ms-return-client-request-id", "true"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("azureml-model-deployment", "blue"),
    ];

    const HOP_BY_HOP_AND_SPOOFABLE: [(&str, &str); 9] = [
        ("connection", "keep-alive, te, x-request-hop"),
        ("keep-alive", "timeout=5, max=1000"),
        ("te", "trailers"),
        ("proxy-connection", "keep-alive"),
        ("x-request-hop", "1"),
        ("x-forwarded-for", "10.0.0.7"),
        ("x-forwarded-proto", "http"),
        ("forwarded", "for=10.0.0.7;proto=http"),
        ("metadata", "true"),
    ];

    fn map(case: Case) -> HeaderMap {
        let extra: &[(&str, &str)] = match case {
            Case::Typical => &[],
            Case::Dirty => &HOP_BY_HOP_AND_SPOOFABLE,
        };
        TYPICAL
            .iter()
            .chain(extra)
            .map(|&(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    /// The baseline: one clone of the map (what each strip below gets as its input, untimed).
    #[divan::bench(args = CASES)]
    fn clone(bencher: Bencher<'_, '_>, case: Case) {
        let headers = map(case);
        bencher.bench(|| black_box(black_box(&headers).clone()));
    }

    #[divan::bench(args = CASES)]
    fn hop_by_hop(bencher: Bencher<'_, '_>, case: Case) {
        let headers = map(case);
        let mut stripped = headers.clone();
        strip_hop_by_hop(&mut stripped);
        let removed = match case {
            Case::Typical => 0,
            Case::Dirty => 5,
        };
        assert_eq!(stripped.len(), headers.len() - removed, "{case:?}");
        bencher
            .with_inputs(|| headers.clone())
            .bench_local_refs(|h| strip_hop_by_hop(black_box(h)));
    }

    #[divan::bench(args = CASES)]
    fn caller_metadata(bencher: Bencher<'_, '_>, case: Case) {
        let headers = map(case);
        let mut stripped = headers.clone();
        strip_caller_metadata(&mut stripped, &[]);
        let removed = match case {
            Case::Typical => 0,
            Case::Dirty => 4,
        };
        assert_eq!(stripped.len(), headers.len() - removed, "{case:?}");
        bencher
            .with_inputs(|| headers.clone())
            .bench_local_refs(|h| strip_caller_metadata(black_box(h), &[]));
    }
}

/// The bearer on a cache hit: `TokenSource::header_value`, which `InjectToken` awaits on every request.
mod token {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use aml_auth_proxy::auth::{
        AccessToken, BoxFuture, CredentialError, Secret, TokenCredential, TokenRequest,
    };
    use aml_auth_proxy::metrics::Metrics;
    use aml_auth_proxy::token_cache::{CacheKey, CachePolicy, TokenCache, TokenSource};
    use divan::{Bencher, black_box};
    use tokio::runtime::Runtime;

    /// Hands out one-hour tokens at once; only the priming fetch calls it.
    #[derive(Debug)]
    struct Fixed;

    impl TokenCredential for Fixed {
        fn get_token<'a>(
            &'a self,
            _: &'a TokenRequest,
        ) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
            Box::pin(std::future::ready(Ok(AccessToken {
                // A JWT-sized opaque token (real Entra ID access tokens are 1.5–2.5 KB).
                token: Secret::new("x".repeat(1800)),
                expires_in: Duration::from_secs(3600),
                refresh_in: None,
                source: "fixed".into(),
            })))
        }

        fn kind(&self) -> &'static str {
            "fixed"
        }
    }

    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    }

    /// A cache with one primed entry, as a route sees it after the start-up fetch.
    fn primed(rt: &Runtime) -> (TokenCache, TokenSource) {
        let metrics = Metrics::new().expect("a metrics registry");
        let cache = TokenCache::new(metrics.tokens, CachePolicy::default());
        let key = CacheKey {
            credential: "compute".into(),
            tenant: None,
            scope: "https://ml.azure.com/.default".into(),
            claims: None,
        };
        let source = cache.source(key, Arc::new(Fixed), false);
        rt.block_on(source.token()).expect("the priming fetch");
        (cache, source)
    }

    /// The baseline: `block_on` of a future that is ready at once.
    #[divan::bench]
    fn block_on_ready(bencher: Bencher<'_, '_>) {
        let rt = runtime();
        bencher.bench_local(|| rt.block_on(std::future::ready(black_box(1_u64))));
    }

    /// A hit as the request path sees it, driven by `block_on` (compare with `block_on_ready`).
    #[divan::bench]
    fn header_value_block_on(bencher: Bencher<'_, '_>) {
        let rt = runtime();
        let (_cache, source) = primed(&rt);
        bencher.bench_local(|| {
            rt.block_on(black_box(&source).header_value())
                .expect("a cache hit")
        });
    }

    /// The same hit, its future polled once with a no-op waker and no runtime: the lookup alone.
    #[divan::bench]
    fn header_value_poll(bencher: Bencher<'_, '_>) {
        let rt = runtime();
        let (_cache, source) = primed(&rt);
        let mut cx = Context::from_waker(Waker::noop());
        bencher.bench_local(|| {
            let future = pin!(black_box(&source).header_value());
            match future.poll(&mut cx) {
                Poll::Ready(value) => black_box(value.expect("a cache hit")),
                Poll::Pending => unreachable!("a cache hit is ready at once"),
            }
        });
    }
}

/// Error answers: `proxy_error` and `token_error` build the JSON body and headers of the proxy's error answers
/// (`docs/errors.md`).
mod respond {
    use std::time::Duration;

    use aml_auth_proxy::auth::{AadError, Attempt, TokenError, TokenErrorKind};
    use aml_auth_proxy::proxy::error::ProxyError;
    use aml_auth_proxy::proxy::respond::{proxy_error, token_error};
    use divan::{Bencher, black_box};
    use http::Method;

    #[derive(Debug, Clone, Copy)]
    enum ProxyCase {
        /// 404 `NoRoute`: the shortest answer.
        NoRoute,
        /// 405 `MethodNotAllowed` with an `Allow` header.
        MethodNotAllowed,
        /// 502 `UpstreamUnavailable` with a connect-error message.
        UpstreamUnavailable,
    }

    #[divan::bench(args = [ProxyCase::NoRoute, ProxyCase::MethodNotAllowed, ProxyCase::UpstreamUnavailable])]
    fn proxy(bencher: Bencher<'_, '_>, case: ProxyCase) {
        let error = match case {
            ProxyCase::NoRoute => ProxyError::NoRoute("no route matches this path".into()),
            ProxyCase::MethodNotAllowed => ProxyError::MethodNotAllowed {
                method: Method::DELETE,
                allowed: vec![Method::GET, Method::POST],
            },
            ProxyCase::UpstreamUnavailable => ProxyError::UpstreamUnavailable(
                "cannot connect to my-endpoint.eastus.inference.ml.azure.com:443: connection refused"
                    .into(),
            ),
        };
        bencher.bench(|| black_box(proxy_error(black_box(&error))));
    }

    /// Entra ID's AADSTS53003 answer to a service principal blocked by Conditional Access.
    const CA_BLOCKED: &str = r#"{"error":"invalid_grant","error_description":"AADSTS53003: Access has been blocked by Conditional Access policies. The access policy does not allow token issuance. Trace ID: 11223344-5566-7788-9900-aabbccddeeff Correlation ID: ffeeddcc-bbaa-9988-7766-554433221100 Timestamp: 2025-03-07 21:25:44Z","error_codes":[53003],"timestamp":"2025-03-07 21:25:44Z","trace_id":"11223344-5566-7788-9900-aabbccddeeff","correlation_id":"ffeeddcc-bbaa-9988-7766-554433221100","error_uri":"https://login.microsoftonline.com/error?code=53003","suberror":"message_only","claims":"{\"access_token\":{\"capolids\":{\"essential\":true,\"values\":[\"01234567-89ab-cdef-fedc-ba9876543210\"]}}}"}"#;

    #[derive(Debug, Clone, Copy)]
    enum TokenCase {
        /// 403 `ConditionalAccessBlocked` carrying Entra ID's error fields.
        ConditionalAccess,
        /// 503 `TokenServiceUnavailable` with `Retry-After`.
        ServiceUnavailable,
        /// 503 `CredentialUnavailable` from a chain, with one detail per source tried.
        ChainUnavailable,
    }

    #[divan::bench(args = [TokenCase::ConditionalAccess, TokenCase::ServiceUnavailable, TokenCase::ChainUnavailable])]
    fn token(bencher: Bencher<'_, '_>, case: TokenCase) {
        let (error, retry_after) = match case {
            TokenCase::ConditionalAccess => {
                let aad = AadError::parse(CA_BLOCKED.as_bytes()).expect("a parsable AAD error");
                let mut e = TokenError::new(aad.classify(400), "client_secret", aad.message())
                    .with_credential("training-sp");
                e.aad = Some(Box::new(aad));
                (e, None)
            }
            TokenCase::ServiceUnavailable => (
                TokenError::service_unavailable(
                    "managed_identity",
                    "the token endpoint answered 503",
                )
                .with_credential("compute"),
                Some(Duration::from_secs(5)),
            ),
            TokenCase::ChainUnavailable => {
                let mut e = TokenError::new(
                    TokenErrorKind::CredentialUnavailable,
                    "chain",
                    "no credential source is available here",
                )
                .with_credential("default");
                e.attempts = vec![
                    Attempt {
                        source: "environment".into(),
                        reason: "AZURE_TENANT_ID, AZURE_CLIENT_ID are not set".into(),
                    },
                    Attempt {
                        source: "workload_identity".into(),
                        reason: "AZURE_FEDERATED_TOKEN_FILE is not set".into(),
                    },
                    Attempt {
                        source: "managed_identity".into(),
                        reason: "no IMDS endpoint answered".into(),
                    },
                ];
                (e, Some(Duration::from_secs(5)))
            }
        };
        bencher.bench(|| black_box(token_error(black_box(&error), black_box(retry_after))));
    }
}
