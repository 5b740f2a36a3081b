//! The access line: one per request ([`crate::proxy::observe`] fills it in when the request ends).
//!
//! With JSON logs, once [`super::init`] has set logging up, the line is written straight into the log writer's
//! queue ([`super::writer`]) instead of going through tracing's event machinery, which visits every field
//! through a trait object and formats numbers and names with `core::fmt`. The bytes are the same either way (a
//! test compares the two). Measured with `benches/profile/callgrind.sh` (user-space instructions per proxied
//! request, JSON access log on): 75.4k before, 65.4k after; the access line had cost 12k of a request.
//!
//! Text logs, and processes that have not called [`super::init`] (tests with their own subscriber), get the
//! line as a tracing event. Whether access lines are written at all is the log filter's decision, as for any
//! event (target `aml_auth_proxy::access`, level `info`); with the direct path it is taken once, at start-up.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::json;
use super::writer::BatchWriter;
use crate::telemetry::TraceId;

/// The tracing target of access lines.
pub const TARGET: &str = "aml_auth_proxy::access";

/// One request, as its access line tells it. Text fields are written as they are (escaped for JSON).
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    /// The route's name (`-` when none matched).
    pub route: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The request path, without the query.
    pub path: &'a str,
    /// `HTTP/1.1` and so on.
    pub version: &'a str,
    /// The status sent to the caller (499 when the caller left first).
    pub status: u16,
    /// The upstream's status, when the response came from the upstream.
    pub upstream_status: Option<u16>,
    /// From the request's arrival to the end of its response body.
    pub duration: Duration,
    /// Response body bytes sent.
    pub bytes: u64,
    /// False when the response did not end normally.
    pub completed: bool,
    /// The proxy's error code, empty when none.
    pub error_code: &'a str,
    /// The upstream's `x-ms-request-id`, empty when none.
    pub x_ms_request_id: &'a str,
    /// The upstream's `x-ms-correlation-request-id`, empty when none.
    pub x_ms_correlation_request_id: &'a str,
    /// The request's trace.
    pub trace_id: Option<TraceId>,
}

/// Where access lines go when they bypass tracing: `None` when the log filter turns them off.
static DIRECT: OnceLock<Option<BatchWriter>> = OnceLock::new();

thread_local! {
    /// The line being written, reused from request to request.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A line longer than this (a long path) gives its buffer back afterwards.
const KEPT_CAPACITY: usize = 4096;

/// Sends access lines straight to `writer` from now on, or nowhere if the installed subscriber's filter does not
/// let them through. Called by [`super::init`] after it installed the JSON subscriber writing to `writer`.
pub(super) fn write_directly_to(writer: BatchWriter) {
    let enabled = tracing::enabled!(target: TARGET, tracing::Level::INFO);
    let _ = DIRECT.set(enabled.then_some(writer));
}

impl AccessLine<'_> {
    /// Writes the line.
    pub fn emit(&self) {
        match DIRECT.get() {
            Some(Some(writer)) => self.write_to(writer),
            Some(None) => {}
            None => self.event(),
        }
    }

    fn write_to(&self, writer: &BatchWriter) {
        let write = |line: &mut String| {
            line.clear();
            if self.json(line, SystemTime::now()).is_ok() {
                writer.write_line(line.as_bytes());
            }
        };
        let reused = LINE.try_with(|line| {
            let mut line = line.try_borrow_mut().ok()?;
            write(&mut line);
            if line.capacity() > KEPT_CAPACITY {
                *line = String::new();
            }
            Some(())
        });
        if !matches!(reused, Ok(Some(()))) {
            // Only while the thread is being torn down: a fresh buffer.
            write(&mut String::new());
        }
    }

    /// The JSON line as `super::json::JsonLines` writes the tracing event of [`Self::event`], timestamped `at`.
    fn json(&self, out: &mut impl Write, at: SystemTime) -> fmt::Result {
        out.write_str("{\"timestamp\":\"")?;
        json::timestamp(out, at)?;
        out.write_str("\",\"level\":\"INFO\",\"message\":\"request\"")?;
        for (prefix, value) in [
            (",\"route\":", self.route),
            (",\"method\":", self.method),
            (",\"path\":", self.path),
            (",\"version\":", self.version),
        ] {
            text_field(out, prefix, value)?;
        }
        let mut digits = itoa::Buffer::new();
        raw_field(out, ",\"status\":", digits.format(self.status))?;
        if let Some(status) = self.upstream_status {
            raw_field(out, ",\"upstream_status\":", digits.format(status))?;
        }
        out.write_str(",\"duration_ms\":")?;
        json::millis(out, micros(self.duration))?;
        raw_field(out, ",\"bytes\":", digits.format(self.bytes))?;
        raw_field(
            out,
            ",\"completed\":",
            if self.completed { "true" } else { "false" },
        )?;
        for (prefix, value) in [
            (",\"error_code\":", self.error_code),
            (",\"x_ms_request_id\":", self.x_ms_request_id),
            (
                ",\"x_ms_correlation_request_id\":",
                self.x_ms_correlation_request_id,
            ),
        ] {
            text_field(out, prefix, value)?;
        }
        out.write_str(",\"trace_id\":\"")?;
        if let Some(trace_id) = self.trace_id {
            write!(out, "{trace_id}")?;
        }
        out.write_char('"')?;
        text_field(out, ",\"target\":", TARGET)?;
        out.write_str("}\n")
    }

    /// The line as a tracing event. Names and codes are `Display`ed so that text logs show them bare
    /// (`route=arm`); JSON quotes them either way.
    fn event(&self) {
        tracing::info!(
            target: "aml_auth_proxy::access",
            route = %self.route,
            method = %self.method,
            path = self.path,
            version = %self.version,
            status = self.status,
            upstream_status = self.upstream_status,
            duration_ms = micros(self.duration) as f64 / 1000.0,
            bytes = self.bytes,
            completed = self.completed,
            error_code = %self.error_code,
            x_ms_request_id = %self.x_ms_request_id,
            x_ms_correlation_request_id = %self.x_ms_correlation_request_id,
            trace_id = %TraceIdText(self.trace_id),
            "request"
        );
    }
}

/// `prefix` (`,"name":`, written whole: one write instead of three) and `value` as it is (a number, a literal, or
/// the start of what follows).
fn raw_field(out: &mut impl Write, prefix: &str, value: &str) -> fmt::Result {
    out.write_str(prefix)?;
    out.write_str(value)
}

/// `prefix` (`,"name":`) and `value` as a JSON string.
fn text_field(out: &mut impl Write, prefix: &str, value: &str) -> fmt::Result {
    out.write_str(prefix)?;
    json::string(out, value)
}

/// `duration` in whole microseconds: the log's resolution.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A trace id for the access line (empty without one), written without allocating.
struct TraceIdText(Option<TraceId>);

impl fmt::Display for TraceIdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(trace_id) => fmt::Display::fmt(trace_id, f),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::capture::json_lines;

    /// The line as the tracing event, through the JSON formatter.
    fn through_tracing(line: &AccessLine<'_>) -> String {
        json_lines(|| line.event())
    }

    fn direct(line: &AccessLine<'_>) -> String {
        let mut out = String::new();
        line.json(&mut out, SystemTime::now()).unwrap();
        out
    }

    /// The line without its timestamp (the two paths read the clock at different moments).
    fn untimed(line: &str) -> &str {
        let end = line.find("\",\"level\"").unwrap();
        &line[end..]
    }

    fn sample() -> AccessLine<'static> {
        AccessLine {
            route: "arm",
            method: "POST",
            path: "/score",
            version: "HTTP/1.1",
            status: 200,
            upstream_status: Some(200),
            duration: Duration::from_micros(4_499),
            bytes: 16,
            completed: true,
            error_code: "",
            x_ms_request_id: "2d5c1e2a-0f4e-4a43-9d6b-6c1f0f2b3a4d",
            x_ms_correlation_request_id: "",
            trace_id: Some(TraceId([0xab; 16])),
        }
    }

    #[test]
    fn the_direct_line_is_byte_for_byte_the_tracing_events_line() {
        let base = sample();
        let variants = [
            base,
            AccessLine {
                upstream_status: None,
                status: 503,
                error_code: "AAP_TOKEN_UNAVAILABLE",
                completed: false,
                trace_id: None,
                x_ms_request_id: "",
                ..base
            },
            AccessLine {
                route: "-",
                status: 499,
                duration: Duration::from_micros(12_000_000),
                bytes: u64::MAX,
                ..base
            },
            AccessLine {
                path: "/a \"quoted\"\\path\u{1}\u{7f}é✓",
                method: "M-SEARCH",
                version: "HTTP/2.0",
                duration: Duration::ZERO,
                ..base
            },
            AccessLine {
                duration: Duration::from_nanos(1_234_567_891),
                x_ms_correlation_request_id: "corr\tid",
                ..base
            },
        ];
        for line in variants {
            let (traced, direct) = (through_tracing(&line), direct(&line));
            assert_eq!(untimed(&direct), untimed(&traced), "{line:?}");
            let v: serde_json::Value = serde_json::from_str(&direct).unwrap();
            assert_eq!(v["path"], line.path);
            assert_eq!(v["status"], line.status);
        }
    }

    #[test]
    fn milliseconds_are_written_as_the_float_formatting_writes_them() {
        let mut rng = fastrand::Rng::with_seed(7);
        let samples = (0..2000u64)
            .chain([999, 1000, 1001, 10_000, 100_100, 123_450])
            .chain((0..40_000).map(|i| rng.u64(..if i % 2 == 0 { 1 << 40 } else { 1 << 51 })))
            .chain([(1 << 50) - 1, 1 << 50, (1 << 53) - 1, u64::MAX]);
        for micros in samples {
            let mut exact = String::new();
            json::millis(&mut exact, micros).unwrap();
            let value = micros as f64 / 1000.0;
            let float = if value.fract() == 0.0 && value < 1e16 {
                format!("{value:.1}")
            } else {
                format!("{value}")
            };
            assert_eq!(exact, float, "{micros} µs");
        }
    }

    #[test]
    fn timestamps_match_humantime_across_second_boundaries() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_400_000);
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..5000 {
            let at = start + Duration::from_micros(rng.u64(..5_000_000_000));
            let mut ours = String::new();
            json::timestamp(&mut ours, at).unwrap();
            assert_eq!(ours, humantime::format_rfc3339_micros(at).to_string());
        }
        let mut far_future = String::new();
        let year_10000 = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert!(
            json::timestamp(&mut far_future, year_10000).is_err(),
            "beyond humantime's range: an error, not a panic"
        );
        let mut before_epoch = String::new();
        json::timestamp(
            &mut before_epoch,
            SystemTime::UNIX_EPOCH - Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(before_epoch, "1970-01-01T00:00:00.000000Z");
    }
}
