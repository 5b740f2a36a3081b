//! Prometheus metrics: one non-global registry; each component gets its own handles, never the registry.
//!
//! Labels are bounded: route names, credential names, source names, status classes, outcomes and error codes
//! all come from configuration or from fixed lists. Never paths, tenants or tokens.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// Latency buckets (seconds) wide enough for inference calls that take minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The label value used for requests that matched no route.
pub const NO_ROUTE: &str = "-";

/// Every metric of the proxy, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Request-path metrics.
    pub proxy: ProxyMetrics,
    /// Token-acquisition metrics.
    pub tokens: TokenMetrics,
    /// The token service's answers.
    pub token_service: TokenServiceMetrics,
    /// Span export counters (`telemetry.otlp`).
    pub spans: crate::telemetry::SpanMetrics,
    /// Configuration reloads that took effect.
    pub config_reloads: IntCounter,
    /// Configuration reloads refused (the running configuration stayed).
    pub config_reload_failures: IntCounter,
}

/// Request-path metric families.
#[derive(Clone)]
pub struct ProxyMetrics {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    /// Requests currently being served (including streaming bodies).
    pub in_flight: IntGauge,
    /// Streams ended by a stall, idle or minimum-rate limit.
    pub stream_timeouts: StreamTimeouts,
}

/// `aml_auth_proxy_stream_timeouts_total{direction,kind}`, one handle per (direction, kind).
#[derive(Clone, Debug)]
pub struct StreamTimeouts {
    /// `direction="response", kind="write_stall"`: a caller accepted no response bytes for `write_stall_timeout`.
    pub write_stall: IntCounter,
    /// `direction="response", kind="idle"`: an upstream sent no body bytes for `stream_idle_timeout`.
    pub response_idle: IntCounter,
    /// `direction="request", kind="idle"`: a caller sent no body bytes for `stream_idle_timeout`.
    pub request_idle: IntCounter,
    /// `direction="request", kind="min_rate"`: a slow upload was evicted to admit a request at `max_in_flight`.
    pub request_min_rate: IntCounter,
}

/// Pre-resolved handles for one route, so the hot path does no label lookups.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [IntCounter; 6],
    /// `aml_auth_proxy_request_duration_seconds{route}`.
    pub request_duration: Histogram,
    /// `aml_auth_proxy_upstream_duration_seconds{route}`.
    pub upstream_duration: Histogram,
}

/// Token-acquisition metric families.
#[derive(Clone)]
pub struct TokenMetrics {
    token_requests: IntCounterVec,
    token_expiry: GaugeVec,
    auth_failures: IntCounterVec,
}

/// `aml_auth_proxy_token_service_requests_total{protocol,identity,outcome}`: the token service's answers. Every
/// label comes from a fixed list or from configuration (`identity` is a `token_service.identities` key or `-`).
#[derive(Clone)]
pub struct TokenServiceMetrics {
    requests: IntCounterVec,
}

// === impl Metrics ===

impl Metrics {
    /// Creates and registers every family in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let proxy = ProxyMetrics::register(&registry)?;
        let tokens = TokenMetrics::register(&registry)?;
        let token_service = TokenServiceMetrics::register(&registry)?;
        let spans = crate::telemetry::SpanMetrics::register(&registry)?;
        let config_reloads = IntCounter::new(
            "aml_auth_proxy_config_reloads_total",
            "Configuration reloads (SIGHUP) that took effect.",
        )?;
        let config_reload_failures = IntCounter::new(
            "aml_auth_proxy_config_reload_failures_total",
            "Configuration reloads refused because the new file was invalid; the running configuration stayed.",
        )?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(config_reload_failures.clone()))?;
        Ok(Self {
            registry,
            proxy,
            tokens,
            token_service,
            spans,
            config_reloads,
            config_reload_failures,
        })
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

// === impl ProxyMetrics ===

impl ProxyMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "aml_auth_proxy_requests_total",
                "Requests answered, by route and status class.",
            ),
            &["route", "status_class"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "aml_auth_proxy_request_duration_seconds",
                "Time from request arrival to the end of the response body.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "aml_auth_proxy_upstream_duration_seconds",
                "Time from sending a request upstream to its response headers.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let in_flight = IntGauge::new(
            "aml_auth_proxy_in_flight_requests",
            "Requests currently being served, including streaming response bodies.",
        )?;
        let stream_timeouts = IntCounterVec::new(
            Opts::new(
                "aml_auth_proxy_stream_timeouts_total",
                "Streams ended because a body stalled, idled or arrived too slowly, by direction and kind.",
            ),
            &["direction", "kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(stream_timeouts.clone()))?;
        let timeouts =
            |direction: &str, kind: &str| stream_timeouts.with_label_values(&[direction, kind]);
        Ok(Self {
            requests,
            request_duration,
            upstream_duration,
            in_flight,
            stream_timeouts: StreamTimeouts {
                write_stall: timeouts("response", "write_stall"),
                response_idle: timeouts("response", "idle"),
                request_idle: timeouts("request", "idle"),
                request_min_rate: timeouts("request", "min_rate"),
            },
        })
    }

    /// Handles for `route` (use [`NO_ROUTE`] for unrouted requests).
    pub fn route(&self, route: &str) -> RouteMetrics {
        let class = |c: &str| self.requests.with_label_values(&[route, c]);
        RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
                class("other"),
            ],
            request_duration: self.request_duration.with_label_values(&[route]),
            upstream_duration: self.upstream_duration.with_label_values(&[route]),
        }
    }
}

// === impl RouteMetrics ===

impl RouteMetrics {
    /// Counts one answered request with `status`.
    pub fn count(&self, status: u16) {
        let i = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.by_class[i].inc();
    }
}

// === impl TokenMetrics ===

impl TokenMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let token_requests = IntCounterVec::new(
            Opts::new(
                "aml_auth_proxy_token_requests_total",
                "Token acquisitions from token services, by credential, source and outcome.",
            ),
            &["credential", "source", "outcome"],
        )?;
        let token_expiry = GaugeVec::new(
            Opts::new(
                "aml_auth_proxy_token_expiry_seconds",
                "Expiry of the cached token as a Unix timestamp; subtract time() for the remaining lifetime.",
            ),
            &["credential", "scope"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "aml_auth_proxy_auth_failures_total",
                "Failed token acquisitions, by credential and error code.",
            ),
            &["credential", "code"],
        )?;
        registry.register(Box::new(token_requests.clone()))?;
        registry.register(Box::new(token_expiry.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        Ok(Self {
            token_requests,
            token_expiry,
            auth_failures,
        })
    }

    /// Counts one acquisition.
    pub fn acquisition(&self, credential: &str, source: &str, outcome: &str) {
        self.token_requests
            .with_label_values(&[credential, source, outcome])
            .inc();
    }

    /// Counts one failure by code.
    pub fn failure(&self, credential: &str, code: &str) {
        self.auth_failures
            .with_label_values(&[credential, code])
            .inc();
    }

    /// Records the expiry (Unix seconds) of the token now cached for (credential, scope).
    pub fn expiry(&self, credential: &str, scope: &str, unix_seconds: f64) {
        self.token_expiry
            .with_label_values(&[credential, scope])
            .set(unix_seconds);
    }
}

// === impl TokenServiceMetrics ===

impl TokenServiceMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "aml_auth_proxy_token_service_requests_total",
                "Token service answers, by protocol, identity and outcome (success or the error code).",
            ),
            &["protocol", "identity", "outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        Ok(Self { requests })
    }

    /// Counts one answer.
    pub fn count(&self, protocol: &str, identity: &str, outcome: &str) {
        self.requests
            .with_label_values(&[protocol, identity, outcome])
            .inc();
    }
}
