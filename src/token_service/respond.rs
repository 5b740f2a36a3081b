//! The token service's answers: the success body is each protocol's own; every error is one flat JSON object in
//! which each SDK's parser finds its fields — `error` and `error_description` (OAuth, IMDS and MSAL readers),
//! `statusCode` and `message` (MSAL's App Service reader), and the proxy's own `code` (also in the
//! `x-aml-auth-proxy-error` header) with the `aad` object of Entra ID's refusal. Entra ID's AADSTS code, trace id
//! and correlation id appear in both `error_description` and `message`. Every answer has `Cache-Control: no-store`.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::auth::{TokenError, TokenErrorKind};
use crate::proxy::body::ResponseBody;
use crate::proxy::error::ProxyError;
use crate::proxy::respond::{ERROR_HEADER, proxy_error, token_error};
use crate::token_cache::TokenUnavailable;

/// A request the token service refuses before any token is involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status.
    pub status: StatusCode,
    /// The proxy's error code.
    pub code: &'static str,
    /// The OAuth-style `error`.
    pub error: &'static str,
    /// What was wrong; never a secret or what the caller sent as one.
    pub description: String,
}

// === impl Refusal ===

impl Refusal {
    /// 400 `BadRequest`.
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "invalid_request",
            description,
        )
    }

    /// 401 `CallerNotAuthenticated`: the secret header is missing or wrong.
    pub fn not_authenticated(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "CallerNotAuthenticated",
            "unauthorized_client",
            description,
        )
    }

    /// 403 `ResourceNotAllowed`.
    pub fn resource_not_allowed(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "ResourceNotAllowed",
            "invalid_resource",
            description,
        )
    }

    /// 400 `IdentityNotFound`.
    pub fn identity_not_found(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "IdentityNotFound",
            "invalid_request",
            description,
        )
    }

    /// 404 `NotFound`.
    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "invalid_request",
            description,
        )
    }

    /// 405 `MethodNotAllowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "invalid_request",
            "the token service answers GET",
        )
    }

    fn new(
        status: StatusCode,
        code: &'static str,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            error,
            description: description.into(),
        }
    }

    /// The answer.
    pub fn response(&self) -> Response<ResponseBody> {
        let mut response = flat(
            self.status,
            self.code,
            self.error,
            &self.description,
            Map::new(),
        );
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("GET"));
        }
        response
    }
}

/// The answer for an error of the proxy's admission rules (Host, Origin, caller key): the proxy's status and
/// headers, with the flat body.
pub fn admission_error(e: &ProxyError) -> Response<ResponseBody> {
    let error = match e {
        ProxyError::CallerNotAuthenticated { .. } => "unauthorized_client",
        ProxyError::OriginNotAllowed(_) => "access_denied",
        _ => "invalid_request",
    };
    with_flat_body(proxy_error(e), e.code(), error, &e.to_string(), Map::new())
}

/// The answer for a token failure: the status, `Retry-After` and `WWW-Authenticate` the proxy path gives it, with
/// the flat body carrying Entra ID's details.
pub fn token_failure(e: &TokenUnavailable) -> Response<ResponseBody> {
    let error = &e.error;
    let mut extra = Map::new();
    if !error.credential.is_empty() {
        extra.insert("credential".into(), Value::String(error.credential.clone()));
    }
    extra.insert("source".into(), Value::String(error.source.clone()));
    if let Some(aad) = &error.aad {
        extra.insert("aad".into(), aad.to_json());
    }
    if !error.attempts.is_empty() {
        let details = error
            .attempts
            .iter()
            .map(|a| json!({"source": a.source, "message": a.reason}))
            .collect();
        extra.insert("details".into(), Value::Array(details));
    }
    with_flat_body(
        token_error(error, Some(e.retry_after)),
        error.kind.code(),
        oauth_error(error),
        &describe(error),
        extra,
    )
}

/// The OAuth `error` of a token failure: Entra ID's own, else one that fits the kind.
fn oauth_error(e: &TokenError) -> &str {
    if let Some(error) = e.aad.as_ref().and_then(|a| a.error.as_deref()) {
        return error;
    }
    match e.kind {
        TokenErrorKind::ConditionalAccessBlocked => "invalid_grant",
        TokenErrorKind::InteractionRequired => "interaction_required",
        TokenErrorKind::CredentialRejected => "invalid_client",
        TokenErrorKind::CredentialUnavailable | TokenErrorKind::TokenServiceUnavailable => {
            "temporarily_unavailable"
        }
        // Resource Manager's refusals (Azure ML routes); the token service does not meet them, but a kind is
        // never left without an OAuth error.
        TokenErrorKind::AuthorizationFailed => "unauthorized_client",
        TokenErrorKind::ResourceNotFound => "invalid_resource",
    }
}

/// One line saying what failed: the message (Entra ID's first line, with its AADSTS code), then Entra ID's trace
/// id, correlation id and timestamp, which SDKs print from `error_description` or `message`.
fn describe(e: &TokenError) -> String {
    let mut text = e.message.clone();
    if let Some(aad) = &e.aad {
        for (label, value) in [
            ("Trace ID", &aad.trace_id),
            ("Correlation ID", &aad.correlation_id),
            ("Timestamp", &aad.timestamp),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !text.contains(*v)) {
                let value: String = value.chars().filter(|c| !c.is_control()).collect();
                text.push_str(&format!(" {label}: {value}"));
            }
        }
    }
    if !e.credential.is_empty() {
        text.push_str(&format!(
            " (credential {}, source {})",
            e.credential, e.source
        ));
    }
    text
}

/// `response` with its body replaced by the flat one (its status and headers kept).
fn with_flat_body(
    response: Response<ResponseBody>,
    code: &'static str,
    error: &str,
    description: &str,
    extra: Map<String, Value>,
) -> Response<ResponseBody> {
    let (parts, _) = response.into_parts();
    let flat = flat(parts.status, code, error, description, extra);
    let (flat_parts, body) = flat.into_parts();
    let mut response = Response::from_parts(parts, body);
    for (name, value) in &flat_parts.headers {
        response.headers_mut().insert(name, value.clone());
    }
    response
}

/// The flat error answer.
fn flat(
    status: StatusCode,
    code: &'static str,
    error: &str,
    description: &str,
    extra: Map<String, Value>,
) -> Response<ResponseBody> {
    let mut body = Map::with_capacity(extra.len() + 5);
    body.insert("error".into(), Value::String(error.into()));
    body.insert(
        "error_description".into(),
        Value::String(description.into()),
    );
    body.insert("statusCode".into(), Value::from(status.as_u16()));
    body.insert("message".into(), Value::String(description.into()));
    body.insert("code".into(), Value::String(code.into()));
    body.extend(extra);
    let mut response = json(status, &Value::Object(body));
    response
        .headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(code));
    response
}

/// A JSON answer that no cache may keep.
pub fn json(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(
        serde_json::to_vec(value).unwrap_or_default(),
    ));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;
    use crate::auth::AadError;

    async fn body_of(response: Response<ResponseBody>) -> Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_token_failure_is_flat_with_entra_ids_ids_in_both_texts() {
        let aad = AadError {
            error: Some("invalid_grant".into()),
            error_description: Some("AADSTS53003: Access has been blocked.".into()),
            error_codes: vec![53003],
            trace_id: Some("trace-1".into()),
            correlation_id: Some("corr-1".into()),
            ..AadError::default()
        };
        let mut error = TokenError::new(
            TokenErrorKind::ConditionalAccessBlocked,
            "client_secret",
            aad.message(),
        )
        .with_credential("sp");
        error.aad = Some(Box::new(aad));
        let unavailable = TokenUnavailable {
            error: Arc::new(error),
            retry_after: Duration::from_secs(5),
        };
        let response = token_failure(&unavailable);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[ERROR_HEADER], "ConditionalAccessBlocked");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let j = body_of(response).await;
        assert_eq!(j["error"], "invalid_grant");
        assert_eq!(j["statusCode"], 403);
        assert_eq!(j["code"], "ConditionalAccessBlocked");
        assert_eq!(j["aad"]["error_codes"], serde_json::json!([53003]));
        for field in ["error_description", "message"] {
            let text = j[field].as_str().unwrap();
            assert!(
                text.starts_with("AADSTS53003")
                    && text.contains("Trace ID: trace-1")
                    && text.contains("Correlation ID: corr-1"),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn an_outage_is_503_with_retry_after_and_a_refusal_has_the_oauth_fields() {
        let error = TokenError::service_unavailable("client_secret", "token service unreachable");
        let response = token_failure(&TokenUnavailable {
            error: Arc::new(error),
            retry_after: Duration::from_millis(2500),
        });
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "3");
        assert_eq!(body_of(response).await["error"], "temporarily_unavailable");

        let response = Refusal::identity_not_found("Identity not found").response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let j = body_of(response).await;
        assert_eq!(
            (
                j["error"].as_str(),
                j["error_description"].as_str(),
                j["code"].as_str()
            ),
            (
                Some("invalid_request"),
                Some("Identity not found"),
                Some("IdentityNotFound")
            )
        );
        let response = Refusal::method_not_allowed().response();
        assert_eq!(response.headers()[http::header::ALLOW], "GET");
    }
}
