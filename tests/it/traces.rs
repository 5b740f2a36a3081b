//! Traces through the proxy: the W3C `traceparent` the upstream receives (the caller's trace kept, an invalid one
//! replaced, a new one created), the trace id in the access line, and the spans exported over OTLP/HTTP JSON to an
//! in-process collector on 127.0.0.1:0 — names, attributes, parent/child ids, no token anywhere, and a full
//! queue that drops spans without slowing a request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::support::metrics::series_at;
use crate::support::process::{ClosedPort, RunningProxy};
use crate::support::proxy::{CANARY_SECRET, TempDir, TestProxy, World};
use crate::support::{
    BoxBody, ServeOptions, Server, ServerHandle, eventually, full, request, trace_init,
};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn caller_traceparent(flags: &str) -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}")
}

/// (version, trace id, parent id, flags) of a `traceparent` the upstream received, checked for W3C form.
fn fields(traceparent: &str) -> (String, String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert!(
        parts[0] == "00"
            && lower_hex(parts[1], 32)
            && lower_hex(parts[2], 16)
            && lower_hex(parts[3], 2)
            && parts[1] != "0".repeat(32)
            && parts[2] != "0".repeat(16),
        "{traceparent}"
    );
    (
        parts[0].to_owned(),
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

/// The `traceparent` (and `tracestate`) of the last request the upstream received.
fn upstream_trace_headers(world: &World) -> (String, Option<String>) {
    let last = world
        .upstream
        .last_request()
        .expect("the upstream got a request");
    let header = |name: &str| {
        last.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let all: Vec<_> = last.headers.get_all("traceparent").iter().collect();
    assert_eq!(all.len(), 1, "one traceparent upstream");
    (header("traceparent").unwrap(), header("tracestate"))
}

// === traceparent ===

#[tokio::test]
async fn the_upstream_gets_the_callers_trace_with_the_proxys_span_as_parent() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("trace-kept").await;
    for flags in ["01", "00"] {
        let (status, _, _) = request(
            Method::GET,
            &proxy.url("/subscriptions"),
            &[
                ("traceparent", &caller_traceparent(flags)),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (traceparent, tracestate) = upstream_trace_headers(&world);
        let (_, trace, parent, sent_flags) = fields(&traceparent);
        assert_eq!(trace, CALLER_TRACE, "the caller's trace is kept");
        assert_ne!(
            parent, CALLER_SPAN,
            "the proxy's own span is the upstream's parent"
        );
        assert_eq!(sent_flags, flags, "the caller's sampled flag is kept");
        assert_eq!(tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_invalid_traceparent_is_replaced_and_a_missing_one_created() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("trace-new").await;
    let mut seen = Vec::new();
    let invalid = [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "garbage",
    ];
    for value in invalid.iter().map(|v| Some(*v)).chain([None]) {
        let mut headers = vec![("tracestate", "congo=t61rcWkgMzE")];
        if let Some(value) = value {
            headers.push(("traceparent", value));
        }
        let (status, _, _) = request(Method::GET, &proxy.url("/x"), &headers, "").await;
        assert_eq!(status, StatusCode::OK);
        let (traceparent, tracestate) = upstream_trace_headers(&world);
        let (_, trace, parent, flags) = fields(&traceparent);
        assert_ne!(trace, CALLER_TRACE, "{value:?}");
        assert_ne!(parent, CALLER_SPAN, "{value:?}");
        // A new trace: not sampled (no spans are exported here), trace id random.
        assert_eq!(flags, "02", "{value:?}");
        assert_eq!(
            tracestate, None,
            "the tracestate of a trace not continued: {value:?}"
        );
        seen.push(trace);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        invalid.len() + 1,
        "every new trace has its own id"
    );
    proxy.stop().await;
}

/// One route to a closed port; the tests below only need the proxy's own answers and its log.
const ONE_ROUTE: &str = "credentials:\n  default:\n    chain: [environment]\nroutes:\n  - { name: arm, path_prefix: /arm, upstream: \"https://127.0.0.1:9\", scope: \"https://management.azure.com/.default\", credential: default }\n";

#[tokio::test]
async fn the_access_line_names_the_trace() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let proxy = RunningProxy::start(&dir, &imds, ONE_ROUTE, &["--log-format", "json"], &[]).await;
    let (status, _, _) = request(
        Method::GET,
        &proxy.url("/nothing"),
        &[("traceparent", &caller_traceparent("01"))],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = request(Method::GET, &proxy.url("/nothing-either"), &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let out = proxy.stop().await;
    let lines: Vec<Value> = out
        .stderr
        .lines()
        .filter(|l| l.contains("aml_auth_proxy::access"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert_eq!(lines[0]["trace_id"], CALLER_TRACE);
    let new = lines[1]["trace_id"].as_str().unwrap();
    assert!(
        new.len() == 32 && new != CALLER_TRACE && new != "0".repeat(32),
        "{new}"
    );
}

#[tokio::test]
async fn the_log_filter_turns_json_access_lines_off() {
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let proxy = RunningProxy::start(
        &dir,
        &imds,
        ONE_ROUTE,
        &[
            "--log-format",
            "json",
            "--log-level",
            "info,aml_auth_proxy::access=off",
        ],
        &[],
    )
    .await;
    let (status, _, _) = request(Method::GET, &proxy.url("/nothing"), &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let out = proxy.stop().await;
    let lines: Vec<Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"),
        "other info lines are still written: {}",
        out.stderr
    );
    assert!(
        lines
            .iter()
            .all(|l| l["target"] != "aml_auth_proxy::access"),
        "{}",
        out.stderr
    );
}

// === OTLP export ===

/// An in-process OTLP/HTTP collector: records every `POST /v1/traces` body and answers `answer`.
struct Collector {
    bodies: Arc<Mutex<Vec<(String, String, Bytes)>>>,
    _server: ServerHandle,
    addr: std::net::SocketAddr,
}

impl Collector {
    async fn start(stall: bool) -> Self {
        let bodies: Arc<Mutex<Vec<(String, String, Bytes)>>> = Arc::default();
        let server = Server::bind().await;
        let addr = server.addr();
        let shutdown = server.shutdown();
        let recorded = Arc::clone(&bodies);
        let handle = server.spawn(ServeOptions::default(), move |req| {
            let recorded = Arc::clone(&recorded);
            let shutdown = shutdown.clone();
            async move {
                let path = req.uri().path().to_owned();
                let content_type = req
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or("").to_owned())
                    .unwrap_or_default();
                let body = req.into_body().collect().await?.to_bytes();
                recorded.lock().unwrap().push((path, content_type, body));
                if stall {
                    shutdown.wait().await;
                }
                let response: Response<BoxBody> = Response::new(full("{}"));
                Ok(response)
            }
        });
        Self {
            bodies,
            _server: handle,
            addr,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, _, body)| {
                let v: Value = serde_json::from_slice(body).unwrap();
                v["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    fn raw_bodies(&self) -> String {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

/// The attribute `key` of an exported span, as text (`stringValue`, or `intValue` which OTLP/JSON writes as a
/// string).
fn attribute(span: &Value, key: &str) -> Option<String> {
    span["attributes"].as_array()?.iter().find_map(|kv| {
        (kv["key"] == key).then(|| {
            let v = &kv["value"];
            v["stringValue"]
                .as_str()
                .or(v["intValue"].as_str())
                .unwrap_or("")
                .to_owned()
        })
    })
}

fn telemetry(collector: &Collector, extra: &str) -> String {
    format!(
        "telemetry:\n  otlp:\n    endpoint: {}\n    export_interval: 50ms\n    service_name: proxy-under-test\n{extra}",
        collector.endpoint()
    )
}

#[tokio::test]
async fn requests_and_token_acquisitions_are_exported_as_linked_spans_without_tokens() {
    let _trace = trace_init();
    let world = World::new().await;
    let collector = Collector::start(false).await;
    let yaml = format!(
        "{}{}",
        telemetry(&collector, ""),
        world.config(
            &World::sp("sp", "trace-otlp"),
            &world.route("arm", "/", "sp", "")
        )
    );
    let proxy = TestProxy::start(&yaml).await;
    proxy.wait_ready().await;
    let (status, _, _) = request(
        Method::GET,
        &proxy.url("/subscriptions?api-version=2024-04-01&sig=query-canary"),
        &[("traceparent", &caller_traceparent("01"))],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (traceparent, _) = upstream_trace_headers(&world);
    let (_, _, upstream_parent, _) = fields(&traceparent);
    // A request without a traceparent starts a sampled trace of its own (spans are exported).
    let (status, _, _) = request(Method::POST, &proxy.url("/jobs"), &[], "{}").await;
    assert_eq!(status, StatusCode::OK);
    let (new_traceparent, _) = upstream_trace_headers(&world);
    let (_, new_trace, new_parent, new_flags) = fields(&new_traceparent);
    assert_eq!(
        new_flags, "03",
        "new traces are sampled while spans are exported"
    );

    let arrived = eventually(Duration::from_secs(10), || {
        let spans = collector.spans();
        let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
        names
            .iter()
            .filter(|n| **n == "GET arm" || **n == "POST arm")
            .count()
            == 2
            && names.contains(&"token acquisition")
    })
    .await;
    assert!(arrived.is_some(), "spans received: {:?}", collector.spans());
    let spans = collector.spans();
    {
        let bodies = collector.bodies.lock().unwrap();
        assert!(
            bodies
                .iter()
                .all(|(path, ct, _)| path == "/v1/traces" && ct == "application/json"),
            "OTLP/HTTP JSON to /v1/traces"
        );
        let body: Value = serde_json::from_slice(&bodies[0].2).unwrap();
        let resource = &body["resourceSpans"][0]["resource"]["attributes"];
        assert!(
            resource
                .as_array()
                .unwrap()
                .iter()
                .any(|kv| kv["key"] == "service.name"
                    && kv["value"]["stringValue"] == "proxy-under-test"),
            "{body}"
        );
    }

    let get = spans.iter().find(|s| s["name"] == "GET arm").unwrap();
    assert_eq!(get["traceId"], CALLER_TRACE);
    assert_eq!(
        get["parentSpanId"], CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(
        get["spanId"],
        upstream_parent.as_str(),
        "the upstream's parent is this span"
    );
    assert_eq!(get["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(
        attribute(get, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(get, "url.path").as_deref(),
        Some("/subscriptions")
    );
    assert_eq!(attribute(get, "http.route").as_deref(), Some("arm"));
    assert_eq!(
        attribute(get, "http.response.status_code").as_deref(),
        Some("200")
    );
    let (start, end) = (
        get["startTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap(),
        get["endTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap(),
    );
    assert!(start > 1_600_000_000_000_000_000 && end >= start, "{get}");

    let post = spans.iter().find(|s| s["name"] == "POST arm").unwrap();
    assert_eq!(post["traceId"], new_trace.as_str());
    assert_eq!(post["spanId"], new_parent.as_str());
    assert!(post.get("parentSpanId").is_none(), "a root span: {post}");

    let token = spans
        .iter()
        .find(|s| s["name"] == "token acquisition")
        .unwrap();
    assert_eq!(token["kind"], 3, "SPAN_KIND_CLIENT");
    assert_eq!(
        attribute(token, "aml_auth_proxy.credential").as_deref(),
        Some("sp")
    );
    assert_eq!(
        attribute(token, "aml_auth_proxy.source").as_deref(),
        Some("client_secret")
    );
    assert_eq!(
        attribute(token, "aml_auth_proxy.scope").as_deref(),
        Some("https://management.azure.com/.default")
    );
    assert_eq!(
        attribute(token, "aml_auth_proxy.outcome").as_deref(),
        Some("success")
    );

    // Nothing secret: no token Entra ID issued, no client secret, no query string.
    let raw = collector.raw_bodies();
    let issued = world.aad.registry().all();
    assert!(!issued.is_empty());
    for token in issued {
        assert!(!raw.contains(&token.token), "a token was exported");
    }
    assert!(
        !raw.contains(CANARY_SECRET) && !raw.contains("query-canary"),
        "{raw}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_failed_token_acquisition_is_an_error_span_and_unsampled_callers_are_not_exported() {
    let _trace = trace_init();
    let world = World::new().await;
    let collector = Collector::start(false).await;
    world.aad.set_behavior(
        "trace-blocked",
        crate::support::Behavior::fixture(
            StatusCode::BAD_REQUEST,
            "aad_error_53003_blocked_by_conditional_access.json",
        ),
    );
    let yaml = format!(
        "{}{}",
        telemetry(&collector, ""),
        world.config(
            &World::sp("sp", "trace-blocked"),
            &world.route("arm", "/", "sp", "")
        )
    );
    let proxy = TestProxy::start(&yaml).await;
    let (status, _, _) = request(
        Method::GET,
        &proxy.url("/x"),
        &[("traceparent", &caller_traceparent("00"))],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = request(Method::DELETE, &proxy.url("/y"), &[], "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let arrived = eventually(Duration::from_secs(10), || {
        let spans = collector.spans();
        spans.iter().any(|s| s["name"] == "DELETE arm")
            && spans.iter().any(|s| s["name"] == "token acquisition")
    })
    .await;
    assert!(arrived.is_some(), "spans received: {:?}", collector.spans());
    let spans = collector.spans();
    assert!(
        !spans.iter().any(|s| s["traceId"] == CALLER_TRACE),
        "the caller did not sample its trace: no span of it is exported"
    );
    let token = spans
        .iter()
        .find(|s| s["name"] == "token acquisition")
        .unwrap();
    assert_eq!(
        attribute(token, "aml_auth_proxy.outcome").as_deref(),
        Some("ConditionalAccessBlocked")
    );
    assert_eq!(token["status"]["code"], 2, "STATUS_CODE_ERROR");
    let delete = spans.iter().find(|s| s["name"] == "DELETE arm").unwrap();
    assert_eq!(
        attribute(delete, "error.type").as_deref(),
        Some("ConditionalAccessBlocked")
    );
    assert_eq!(
        attribute(delete, "http.response.status_code").as_deref(),
        Some("403")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_full_export_queue_drops_and_counts_spans_without_slowing_requests() {
    let _trace = trace_init();
    let world = World::new().await;
    // The collector takes the first batch and never answers; the exporter waits on it (up to its timeout).
    let collector = Collector::start(true).await;
    let yaml = format!(
        "{}{}",
        telemetry(
            &collector,
            "    batch_size: 1\n    queue_size: 2\n    timeout: 60s\n"
        ),
        world.config(
            &World::sp("sp", "trace-full"),
            &world.route("arm", "/", "sp", "")
        )
    );
    let proxy = TestProxy::start(&yaml).await;
    proxy.wait_ready().await;
    for _ in 0..20 {
        let (status, _, _) = request(Method::GET, &proxy.url("/x"), &[], "").await;
        assert_eq!(status, StatusCode::OK);
    }
    let dropped = series_at(
        &proxy.admin_url("/metrics"),
        "aml_auth_proxy_spans_dropped_total",
    )
    .await
    .unwrap();
    // 20 request spans and one token span; at most one in the stalled export and two queued.
    assert!(dropped >= 18.0, "dropped {dropped}");
    let exported = series_at(
        &proxy.admin_url("/metrics"),
        "aml_auth_proxy_spans_exported_total",
    )
    .await;
    assert_eq!(exported, Some(0.0));
    proxy.stop().await;
}
