//! Entra ID's error bodies as recorded from the real service (or, for `invalid_scope`, as its reference documents
//! them), answered with fresh trace and correlation ids and the current time, so a client sees exactly the shape
//! (field names, `\r\n` separators, `suberror`, `claims` as a JSON string) it will meet in production.
//!
//! The unit test below checks each body against the copy of the recording under `tests/fixtures/`.

use serde_json::{Map, Value};

/// AADSTS53003, a client-credentials request blocked by Conditional Access (HTTP 400, `suberror: message_only`,
/// `claims` naming the policy).
pub(crate) const BLOCKED_BY_CONDITIONAL_ACCESS: &str = r#"{"error":"invalid_grant","error_description":"AADSTS53003: Access has been blocked by Conditional Access policies. The access policy does not allow token issuance. Trace ID: 11223344-5566-7788-9900-aabbccddeeff Correlation ID: ffeeddcc-bbaa-9988-7766-554433221100 Timestamp: 2025-03-07 21:25:44Z","error_codes":[53003],"timestamp":"2025-03-07 21:25:44Z","trace_id":"11223344-5566-7788-9900-aabbccddeeff","correlation_id":"ffeeddcc-bbaa-9988-7766-554433221100","error_uri":"https://login.microsoftonline.com/error?code=53003","suberror":"message_only","claims":"{\"access_token\":{\"capolids\":{\"essential\":true,\"values\":[\"01234567-89ab-cdef-fedc-ba9876543210\"]}}}"}"#;

/// AADSTS50079, multi-factor authentication required, with the `claims` to send back (HTTP 400).
pub(crate) const MFA_REQUIRED: &str = r#"{"error": "interaction_required", "error_description": "AADSTS50079: Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multifactor authentication to access 'bf8d80f9-9098-4972-b203-500f535113b1'.\r\nTrace ID: b72a68c3-0926-4b8e-bc35-3150069c2800\r\nCorrelation ID: 73d656cf-54b1-4eb2-b429-26d8165a52d7\r\nTimestamp: 2017-05-01 22:43:20Z", "error_codes": [50079], "timestamp": "2017-05-01 22:43:20Z", "trace_id": "b72a68c3-0926-4b8e-bc35-3150069c2800", "correlation_id": "73d656cf-54b1-4eb2-b429-26d8165a52d7", "claims": "{\"access_token\":{\"polids\":{\"essential\":true,\"values\":[\"9ab03e19-ed42-4168-b6b7-7001fb3e933a\"]}}}"}"#;

/// AADSTS50173, a revoked refresh token (HTTP 400, `suberror: bad_token`).
pub(crate) const REFRESH_TOKEN_REVOKED: &str = r#"{"error": "invalid_grant", "error_description": "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '2021-01-20T17:49:09.5646304Z' and the TokensValidFrom date (before which tokens are not valid) for this user is '2021-01-20T17:49:18.0000000Z'.\r\nTrace ID: fb266710-409a-4c3e-a217-551bf350d700\r\nCorrelation ID: 2a23310f-0df8-4f45-a7f9-80345ed363f0\r\nTimestamp: 2021-01-20 17:56:00Z", "error_codes": [50173], "timestamp": "2021-01-20 17:56:00Z", "trace_id": "fb266710-409a-4c3e-a217-551bf350d700", "correlation_id": "2a23310f-0df8-4f45-a7f9-80345ed363f0", "error_uri": "https://login.microsoftonline.com/error?code=50173", "suberror": "bad_token"}"#;

/// AADSTS70011, a scope Entra ID cannot issue a token for (HTTP 400).
pub(crate) const INVALID_SCOPE: &str = r#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided value for the input parameter 'scope' isn't valid. The scope https://example.contoso.com/activity.read isn't valid.\r\nTrace ID: 0000aaaa-11bb-cccc-dd33-eeeeee333333\r\nCorrelation ID: aaaa0000-bb11-2222-33cc-444444dddddd\r\nTimestamp: 2016-01-09 02:02:12Z","error_codes":[70011],"timestamp":"2016-01-09 02:02:12Z","trace_id":"0000aaaa-11bb-cccc-dd33-eeeeee333333","correlation_id":"aaaa0000-bb11-2222-33cc-444444dddddd","error_uri":"https://login.microsoftonline.com/error?code=70011"}"#;

/// AADSTS70016, a device-code poll before the user has signed in (HTTP 400).
pub(crate) const AUTHORIZATION_PENDING: &str = r#"{"error": "authorization_pending", "error_description": "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.\r\nTrace ID: e9b0989d-88df-4b2b-9059-6ebaf060b401\r\nCorrelation ID: 68ba2961-0b13-4411-8f91-adf1a39530b9\r\nTimestamp: 2021-01-20 17:49:04Z", "error_codes": [70016], "timestamp": "2021-01-20 17:49:04Z", "trace_id": "e9b0989d-88df-4b2b-9059-6ebaf060b401", "correlation_id": "68ba2961-0b13-4411-8f91-adf1a39530b9", "error_uri": "https://login.microsoftonline.com/error?code=70016"}"#;

/// A recorded body with fresh `trace_id`, `correlation_id` and `timestamp` (also inside `error_description`).
/// `error` replaces the recorded `error` when given (Entra ID answers a Conditional Access block of a user flow with
/// `interaction_required`, of a service principal with `invalid_grant`).
pub(crate) fn render(recorded: &str, error: Option<&str>) -> Value {
    let Ok(Value::Object(mut body)) = serde_json::from_str::<Value>(recorded) else {
        return Value::Null;
    };
    let ids = Ids::fresh();
    let old = |body: &Map<String, Value>, key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (old_trace, old_correlation, old_time) = (
        old(&body, "trace_id"),
        old(&body, "correlation_id"),
        old(&body, "timestamp"),
    );
    if let Some(Value::String(text)) = body.get_mut("error_description") {
        for (from, to) in [
            (&old_trace, &ids.trace_id),
            (&old_correlation, &ids.correlation_id),
            (&old_time, &ids.timestamp),
        ] {
            if !from.is_empty() {
                *text = text.replace(from.as_str(), to);
            }
        }
    }
    body.insert("trace_id".into(), ids.trace_id.into());
    body.insert("correlation_id".into(), ids.correlation_id.into());
    body.insert("timestamp".into(), ids.timestamp.into());
    if let Some(error) = error {
        body.insert("error".into(), error.into());
    }
    Value::Object(body)
}

/// An Entra-shaped error for a condition no recording covers (throttling, outages, bad requests): the canonical
/// field set Entra ID's reference documents for every token-endpoint error.
pub(crate) fn entra_error(error: &str, code: Option<u32>, text: &str) -> Value {
    let ids = Ids::fresh();
    let prefix = code.map(|c| format!("AADSTS{c}: ")).unwrap_or_default();
    let mut body = Map::new();
    body.insert("error".into(), error.into());
    body.insert(
        "error_description".into(),
        format!(
            "{prefix}{text}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
            ids.trace_id, ids.correlation_id, ids.timestamp
        )
        .into(),
    );
    body.insert(
        "error_codes".into(),
        Value::Array(code.into_iter().map(Value::from).collect()),
    );
    body.insert("timestamp".into(), ids.timestamp.into());
    body.insert("trace_id".into(), ids.trace_id.into());
    body.insert("correlation_id".into(), ids.correlation_id.into());
    if let Some(code) = code {
        body.insert(
            "error_uri".into(),
            format!("https://login.microsoftonline.com/error?code={code}").into(),
        );
    }
    Value::Object(body)
}

/// The per-response ids Entra ID puts in every error.
struct Ids {
    trace_id: String,
    correlation_id: String,
    timestamp: String,
}

impl Ids {
    fn fresh() -> Self {
        let now = jiff::Timestamp::now();
        Self {
            trace_id: uuid::Uuid::new_v4().to_string(),
            correlation_id: uuid::Uuid::new_v4().to_string(),
            timestamp: now.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first JSON object of a fixture file (comment lines start with `#`).
    fn fixture(text: &str) -> Value {
        let start = text
            .lines()
            .position(|l| l.trim_start().starts_with('{'))
            .unwrap();
        let rest: Vec<&str> = text.lines().skip(start).collect();
        let text = rest.join("\n");
        let mut stream = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
        stream.next().unwrap().unwrap()
    }

    macro_rules! recording {
        ($file:literal) => {
            fixture(include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/",
                $file
            )))
        };
    }

    #[test]
    fn the_bodies_are_the_recordings() {
        let pairs = [
            (
                BLOCKED_BY_CONDITIONAL_ACCESS,
                recording!("aad_error_53003_blocked_by_conditional_access.json"),
            ),
            (
                MFA_REQUIRED,
                recording!("aad_error_50079_interaction_required_with_claims.json"),
            ),
            (
                REFRESH_TOKEN_REVOKED,
                recording!("aad_error_invalid_grant_50173_revoked_refresh_token.json"),
            ),
            (
                INVALID_SCOPE,
                recording!("aad_error_scope_invalid_70011_documented.json"),
            ),
        ];
        for (ours, recorded) in pairs {
            assert_eq!(serde_json::from_str::<Value>(ours).unwrap(), recorded);
        }
        let device = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/aad_device_code_flow_recorded.txt"
        ));
        assert!(device.lines().any(|l| l == AUTHORIZATION_PENDING));
    }

    #[test]
    fn rendering_keeps_the_shape_with_fresh_ids() {
        let recorded: Value = serde_json::from_str(BLOCKED_BY_CONDITIONAL_ACCESS).unwrap();
        let fresh = render(BLOCKED_BY_CONDITIONAL_ACCESS, None);
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&fresh), keys(&recorded));
        for key in ["error", "error_codes", "suberror", "claims", "error_uri"] {
            assert_eq!(fresh[key], recorded[key], "{key}");
        }
        assert_ne!(fresh["trace_id"], recorded["trace_id"]);
        let text = fresh["error_description"].as_str().unwrap();
        assert!(
            text.starts_with(
                "AADSTS53003: Access has been blocked by Conditional Access policies."
            )
        );
        assert!(text.contains(fresh["trace_id"].as_str().unwrap()), "{text}");
        assert!(
            text.contains(fresh["correlation_id"].as_str().unwrap()),
            "{text}"
        );
        assert!(
            text.contains(fresh["timestamp"].as_str().unwrap()),
            "{text}"
        );
        assert_eq!(
            render(BLOCKED_BY_CONDITIONAL_ACCESS, Some("interaction_required"))["error"],
            "interaction_required"
        );
        let made = entra_error("temporarily_unavailable", None, "Too many requests.");
        assert_eq!(made["error_codes"], serde_json::json!([]));
        assert!(made.get("error_uri").is_none());
    }
}
