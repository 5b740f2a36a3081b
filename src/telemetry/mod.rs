//! Traces: the W3C trace context every proxied request carries to its upstream ([`trace_context`]), and spans
//! for requests and token acquisitions, exported over OTLP when `telemetry.otlp` is configured ([`otlp`]).
//!
//! A span is handed to a [`SpanSink`], which queues it without waiting: when the bounded queue is full the span
//! is dropped and counted. The exporter sends the queue in batches from its own task, off the request path.
//! Spans carry names, ids, times, and attributes from fixed lists (method, path without query, route name,
//! status, error code, credential and source names, scope): never a header value, a query string, a token or a
//! secret.

pub mod otlp;
pub mod trace_context;

use std::time::SystemTime;

use prometheus::{IntCounter, Registry};
use tokio::sync::mpsc;

pub use self::trace_context::{SpanId, TraceContext, TraceId};

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    /// Its trace and ids.
    pub context: TraceContext,
    /// What it measured: `GET arm` (a request on route `arm`), `token acquisition`.
    pub name: String,
    /// Its role.
    pub kind: SpanKind,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Its attributes, each from a fixed list of names.
    pub attributes: Vec<(&'static str, AttributeValue)>,
    /// Set when it failed, with a short reason (an error code).
    pub error: Option<String>,
}

/// The role of a span, as OTLP numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Serving a caller's request.
    Server,
    /// A call to another service (a token service).
    Client,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
}

/// Where spans go: the exporter's bounded queue. Cheap to clone.
#[derive(Clone)]
pub struct SpanSink {
    queue: mpsc::Sender<Span>,
    metrics: SpanMetrics,
}

/// Span export counters.
#[derive(Clone, Debug)]
pub struct SpanMetrics {
    /// Spans sent to the collector and accepted.
    pub exported: IntCounter,
    /// Spans dropped: the queue was full, or the collector refused or missed their batch.
    pub dropped: IntCounter,
}

// === impl SpanSink ===

impl SpanSink {
    /// A sink feeding `queue`, counting into `metrics`.
    pub fn new(queue: mpsc::Sender<Span>, metrics: SpanMetrics) -> Self {
        Self { queue, metrics }
    }

    /// Queues `span` for export without waiting; a full queue drops it (and counts it).
    pub fn record(&self, span: Span) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(span) {
            self.metrics.dropped.inc();
        }
    }
}

impl std::fmt::Debug for SpanSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanSink")
            .field("capacity", &self.queue.max_capacity())
            .finish()
    }
}

// === impl SpanMetrics ===

impl SpanMetrics {
    /// Registers `aml_auth_proxy_spans_exported_total` and `aml_auth_proxy_spans_dropped_total`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let exported = IntCounter::new(
            "aml_auth_proxy_spans_exported_total",
            "Spans the OTLP collector accepted.",
        )?;
        let dropped = IntCounter::new(
            "aml_auth_proxy_spans_dropped_total",
            "Spans dropped: the export queue was full, or the collector refused or missed their batch.",
        )?;
        registry.register(Box::new(exported.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(Self { exported, dropped })
    }
}

// === impl AttributeValue ===

impl From<&str> for AttributeValue {
    fn from(text: &str) -> Self {
        AttributeValue::Text(text.to_owned())
    }
}

impl From<String> for AttributeValue {
    fn from(text: String) -> Self {
        AttributeValue::Text(text)
    }
}

impl From<i64> for AttributeValue {
    fn from(n: i64) -> Self {
        AttributeValue::Int(n)
    }
}
