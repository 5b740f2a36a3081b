//! `telemetry:` — span export. `telemetry.otlp.endpoint` turns OTLP export on; everything else has a default.

use std::str::FromStr;

use http::Uri;
use serde_yaml::Value;

use super::walk::{Field, Walker, child};
use crate::origin::UrlRule;
use crate::telemetry::otlp::OtlpConfig;

/// `telemetry: { otlp: {…} }`; `Some(None)` when no exporter is configured, `None` when invalid.
pub(super) fn section(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<Option<OtlpConfig>> {
    let mut otlp = Field::Absent;
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "otlp" => otlp.set(otlp_section(w, p, v)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return None;
    }
    otlp.optional()
}

/// `otlp: { endpoint, service_name, batch_size, queue_size, export_interval, timeout }`; `endpoint` is required.
fn otlp_section(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<OtlpConfig> {
    let (mut endpoint, mut service_name, mut batch_size, mut queue_size) =
        (Field::Absent, Field::Absent, Field::Absent, Field::Absent);
    let (mut export_interval, mut timeout) = (Field::Absent, Field::Absent);
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "endpoint" => endpoint.set(traces_url(w, p, v)),
            "service_name" => service_name.set(w.checked(p, v, |name| {
                if name.trim().is_empty() || name.chars().any(char::is_control) {
                    Err("must be a non-empty name without control characters".to_owned())
                } else {
                    Ok(())
                }
            })),
            "batch_size" => batch_size.set(bounded(w, p, v, 1, 10_000)),
            "queue_size" => queue_size.set(bounded(w, p, v, 1, 1_000_000)),
            "export_interval" => export_interval.set(w.positive_duration(p, v)),
            "timeout" => timeout.set(w.positive_duration(p, v)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return None;
    }
    let endpoint = endpoint.required(w, &child(path, "endpoint"));
    Some(OtlpConfig {
        endpoint: endpoint?,
        service_name: service_name.or(OtlpConfig::DEFAULT_SERVICE_NAME.to_owned())?,
        batch_size: batch_size.or(OtlpConfig::DEFAULT_BATCH_SIZE)?,
        queue_size: queue_size.or(OtlpConfig::DEFAULT_QUEUE_SIZE)?,
        export_interval: export_interval.or(OtlpConfig::DEFAULT_EXPORT_INTERVAL)?,
        timeout: timeout.or(OtlpConfig::DEFAULT_TIMEOUT)?,
    })
}

/// The collector's traces URL: `https://` (plain `http://` only for loopback hosts), no query. A URL without a
/// path gets OTLP/HTTP's `/v1/traces`; one with a path is used as written.
fn traces_url(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<Uri> {
    let url = w.url(path, value, UrlRule::Endpoint)?;
    let url_path = match url.path.as_str() {
        "" | "/" => OtlpConfig::TRACES_PATH,
        given => given,
    };
    let text = format!("{}{url_path}", url.origin);
    Uri::from_str(&text)
        .map_err(|_| w.problem(path, format!("is not a valid URL (got {text:?})")))
        .ok()
}

/// A whole number from `min` to `max`.
fn bounded(w: &mut Walker<'_>, path: &str, value: &Value, min: u64, max: u64) -> Option<usize> {
    let n = w.count(path, value)?;
    if !(min..=max).contains(&n) {
        w.problem(path, format!("must be from {min} to {max} (got {n})"));
        return None;
    }
    usize::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::load::test_support::{ok, problems, with_defaults};
    use crate::telemetry::otlp::OtlpConfig;

    #[test]
    fn otlp_export_is_off_unless_an_endpoint_is_given() {
        assert_eq!(ok(&with_defaults("")).telemetry, None);
        assert_eq!(ok(&with_defaults("telemetry: {}")).telemetry, None);
        let config = ok(&with_defaults(
            "telemetry:\n  otlp:\n    endpoint: http://127.0.0.1:4318",
        ));
        assert_eq!(
            config.telemetry,
            Some(OtlpConfig {
                endpoint: "http://127.0.0.1:4318/v1/traces".parse().unwrap(),
                service_name: "aml-auth-proxy".into(),
                batch_size: 512,
                queue_size: 2048,
                export_interval: Duration::from_secs(5),
                timeout: Duration::from_secs(10),
            })
        );
        let config = ok(&with_defaults(
            "telemetry:\n  otlp: { endpoint: \"https://otel.example.com/custom/traces\", service_name: sidecar-a, \
             batch_size: 10, queue_size: 100, export_interval: 250ms, timeout: 2s }",
        ));
        let otlp = config.telemetry.unwrap();
        assert_eq!(otlp.endpoint, "https://otel.example.com/custom/traces");
        assert_eq!(
            (otlp.service_name.as_str(), otlp.batch_size, otlp.queue_size),
            ("sidecar-a", 10, 100)
        );
        assert_eq!(otlp.export_interval, Duration::from_millis(250));
    }

    #[test]
    fn otlp_settings_are_checked_with_their_key_paths() {
        assert_eq!(
            problems(&with_defaults(
                "telemetry:\n  otlp: { endpoint: \"http://collector.example.com:4318\", batch_size: 0, queue_size: x, \
                 export_interval: 0s, timeout: 5, endpoit: x }\n  otpl: {}",
            )),
            [
                "telemetry.otlp.endpoint: plain http is only allowed for loopback hosts (got \"http://collector.example.com:4318\")",
                "telemetry.otlp.batch_size: must be from 1 to 10000 (got 0)",
                "telemetry.otlp.queue_size: expected a non-negative integer (got \"x\")",
                "telemetry.otlp.export_interval: must be greater than zero",
                "telemetry.otlp.timeout: a duration needs a unit, like \"5s\" (got 5)",
                "telemetry.otlp.endpoit: unknown key `endpoit` (did you mean `endpoint`?)",
                "telemetry.otpl: unknown key `otpl` (did you mean `otlp`?)",
            ]
        );
        assert_eq!(
            problems(&with_defaults("telemetry:\n  otlp: { service_name: x }")),
            ["telemetry.otlp.endpoint: required key is missing"]
        );
    }
}
