//! OTLP/HTTP export of spans, JSON-encoded: `POST <endpoint>` (by default `…/v1/traces`) with an
//! `ExportTraceServiceRequest`, in batches, from a task of its own.
//!
//! The request is built with serde from a few derived structs and sent with the same small hyper client the token
//! services use, so tracing adds no crate to the build (the `opentelemetry-otlp` exporter would bring the
//! OpenTelemetry SDK, and for gRPC tonic and prost). Every OpenTelemetry Collector, Jaeger, Tempo and most vendors
//! accept OTLP/HTTP with JSON.
//!
//! Batching: the exporter waits for a first span, gathers more for up to `export_interval` or until it has
//! `batch_size`, and sends them. A batch the collector refuses or does not answer within `timeout` is dropped and
//! counted (no retry: traces are best effort, and the queue keeps filling meanwhile). Spans still queued when the
//! proxy's configuration is replaced are sent; those queued at exit may be lost.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Uri};
use http_body_util::Full;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{AttributeValue, Span, SpanKind, SpanMetrics, SpanSink};
use crate::auth::{HttpClientOptions, TokenHttpClient};

/// `telemetry.otlp`: where spans go and how they are batched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The URL spans are POSTed to (`http://127.0.0.1:4318/v1/traces`).
    pub endpoint: Uri,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// The most spans in one export request.
    pub batch_size: usize,
    /// The most spans waiting for export; beyond it new spans are dropped.
    pub queue_size: usize,
    /// How long a batch may gather spans before it is sent.
    pub export_interval: Duration,
    /// Time limit for one export request.
    pub timeout: Duration,
}

/// The exporter task's state.
struct Exporter {
    client: TokenHttpClient,
    endpoint: Uri,
    service_name: String,
    batch_size: usize,
    export_interval: Duration,
    metrics: SpanMetrics,
    /// True while exports fail (one warning per streak).
    failing: bool,
}

// === impl OtlpConfig ===

impl OtlpConfig {
    /// Default `service_name`.
    pub const DEFAULT_SERVICE_NAME: &'static str = "aml-auth-proxy";
    /// Default `batch_size`.
    pub const DEFAULT_BATCH_SIZE: usize = 512;
    /// Default `queue_size`.
    pub const DEFAULT_QUEUE_SIZE: usize = 2048;
    /// Default `export_interval`.
    pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(5);
    /// Default `timeout`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The path added to an endpoint given without one.
    pub const TRACES_PATH: &'static str = "/v1/traces";

    /// Starts the exporter task (on the current tokio runtime) and returns the sink that feeds it. The task ends
    /// once every clone of the sink is gone and the queue is sent.
    pub fn start(&self, tls: Arc<rustls::ClientConfig>, metrics: SpanMetrics) -> SpanSink {
        let (queue, spans) = mpsc::channel(self.queue_size.max(1));
        let options = HttpClientOptions {
            connect_timeout: self
                .timeout
                .min(HttpClientOptions::default().connect_timeout),
            attempt_timeout: self.timeout,
        };
        let exporter = Exporter {
            client: TokenHttpClient::new(tls, &options),
            endpoint: self.endpoint.clone(),
            service_name: self.service_name.clone(),
            batch_size: self.batch_size.max(1),
            export_interval: self.export_interval,
            metrics: metrics.clone(),
            failing: false,
        };
        tokio::spawn(exporter.run(spans));
        SpanSink::new(queue, metrics)
    }
}

// === impl Exporter ===

impl Exporter {
    async fn run(mut self, mut spans: mpsc::Receiver<Span>) {
        let mut batch = Vec::with_capacity(self.batch_size);
        loop {
            // At least one span (none: every sink is gone and the queue is empty).
            if spans.recv_many(&mut batch, self.batch_size).await == 0 {
                return;
            }
            let deadline = tokio::time::Instant::now() + self.export_interval;
            let mut closed = false;
            while batch.len() < self.batch_size {
                let room = self.batch_size - batch.len();
                match tokio::time::timeout_at(deadline, spans.recv_many(&mut batch, room)).await {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            self.export(&batch).await;
            batch.clear();
            if closed {
                return;
            }
        }
    }

    /// Sends one batch; counts it as exported or dropped.
    async fn export(&mut self, batch: &[Span]) {
        let count = batch.len() as u64;
        let body = encode(&self.service_name, batch);
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let outcome = match request {
            Ok(request) => match self.client.send(request).await {
                Ok(response) if response.status.is_success() => Ok(()),
                Ok(response) => Err(format!("the collector answered {}", response.status)),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                self.metrics.exported.inc_by(count);
                if self.failing {
                    tracing::info!(endpoint = %self.endpoint, "span export works again");
                }
                self.failing = false;
            }
            Err(reason) => {
                self.metrics.dropped.inc_by(count);
                if !self.failing {
                    tracing::warn!(endpoint = %self.endpoint, error = %reason, spans = count, "span export failed; dropping the batch");
                }
                self.failing = true;
            }
        }
    }
}

// === OTLP/JSON encoding ===

/// `ExportTraceServiceRequest` with one resource and one instrumentation scope.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource<'a> {
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Serialize)]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: Vec<OtlpSpan<'a>>,
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

/// A span; ids are hex strings and times decimal strings of nanoseconds, as OTLP/JSON writes them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OtlpSpan<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    flags: u32,
    name: &'a str,
    kind: u8,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: Vec<KeyValue<'a>>,
    status: Status<'a>,
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: AnyValue<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum AnyValue<'a> {
    StringValue(&'a str),
    /// int64 values are decimal strings in OTLP/JSON.
    IntValue(String),
}

#[derive(Serialize)]
struct Status<'a> {
    /// 0 unset, 2 error.
    code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// The JSON body of one export request.
fn encode(service_name: &str, spans: &[Span]) -> Vec<u8> {
    let request = ExportRequest {
        resource_spans: [ResourceSpans {
            resource: Resource {
                attributes: vec![
                    text("service.name", service_name),
                    text("service.version", env!("CARGO_PKG_VERSION")),
                ],
            },
            scope_spans: [ScopeSpans {
                scope: Scope {
                    name: env!("CARGO_PKG_NAME"),
                    version: env!("CARGO_PKG_VERSION"),
                },
                spans: spans.iter().map(otlp_span).collect(),
            }],
        }],
    };
    serde_json::to_vec(&request).unwrap_or_default()
}

fn otlp_span(span: &Span) -> OtlpSpan<'_> {
    OtlpSpan {
        trace_id: span.context.trace_id.to_string(),
        span_id: span.context.span_id.to_string(),
        parent_span_id: span.context.parent_span_id.map(|id| id.to_string()),
        // The W3C trace flags, and bits 8–9 saying whether the parent is remote (a caller's span).
        flags: u32::from(span.context.flags)
            | if span.context.parent_span_id.is_some() {
                0x300
            } else {
                0x100
            },
        name: &span.name,
        kind: match span.kind {
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        },
        start_time_unix_nano: unix_nanos(span.start),
        end_time_unix_nano: unix_nanos(span.end),
        attributes: span
            .attributes
            .iter()
            .map(|(key, value)| KeyValue {
                key,
                value: match value {
                    AttributeValue::Text(t) => AnyValue::StringValue(t),
                    AttributeValue::Int(n) => AnyValue::IntValue(n.to_string()),
                },
            })
            .collect(),
        status: match &span.error {
            Some(reason) => Status {
                code: 2,
                message: Some(reason),
            },
            None => Status {
                code: 0,
                message: None,
            },
        },
    }
}

fn text<'a>(key: &'a str, value: &'a str) -> KeyValue<'a> {
    KeyValue {
        key,
        value: AnyValue::StringValue(value),
    }
}

fn unix_nanos(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::telemetry::TraceContext;

    #[test]
    fn spans_are_encoded_as_otlp_json() {
        let context = TraceContext::root(true);
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let span = Span {
            context,
            name: "GET arm".into(),
            kind: SpanKind::Server,
            start,
            end: start + Duration::from_millis(5),
            attributes: vec![
                ("http.request.method", "GET".into()),
                ("http.response.status_code", 503.into()),
            ],
            error: Some("CredentialUnavailable".into()),
        };
        let body: Value = serde_json::from_slice(&encode("svc", &[span])).unwrap();
        let resource = &body["resourceSpans"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "svc"}})
        );
        let span = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], context.trace_id.to_string());
        assert_eq!(span["spanId"], context.span_id.to_string());
        assert!(span.get("parentSpanId").is_none());
        assert_eq!(span["name"], "GET arm");
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(span["endTimeUnixNano"], "1700000000128456789");
        assert_eq!(
            span["attributes"][1],
            serde_json::json!({"key": "http.response.status_code", "value": {"intValue": "503"}})
        );
        assert_eq!(
            span["status"],
            serde_json::json!({"code": 2, "message": "CredentialUnavailable"})
        );
    }
}
