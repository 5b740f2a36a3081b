//! A small Resource Manager client for Azure ML routes: GET a resource, POST an action without a body, with the
//! route's management token, and every failure classified for the caller.
//!
//! | Resource Manager answer | error code (status) |
//! |---|---|
//! | 403 (`AuthorizationFailed`) | `AuthorizationFailed` (403), the message naming the missing action |
//! | 404 (`ResourceNotFound`, `ResourceGroupNotFound`, …) | `ResourceNotFound` (404) |
//! | 429, 5xx, no answer in time, connection failure | `TokenServiceUnavailable` (503, with its `Retry-After`) |
//! | 401 (the management token refused) | `CredentialRejected` (502); the token is dropped so the next try fetches another |
//! | anything else | `CredentialRejected` (502) with Resource Manager's code and message |
//!
//! Bodies are never logged: `listKeys` and `token` answers carry secrets, and are parsed straight into
//! [`Secret`](crate::secret::Secret)s by their callers.

use std::fmt;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use crate::auth::{TokenError, TokenErrorKind, TokenHttpClient, retry_after};
use crate::config::HttpsOrigin;
use crate::token_cache::TokenSource;

/// The API version of every Resource Manager call (stable; online endpoints, keys, tokens and workspaces).
pub const API_VERSION: &str = "2024-04-01";

/// The `source` of errors from Resource Manager.
pub const SOURCE: &str = "resource_manager";

/// Resource Manager, reached with a route's management token.
#[derive(Clone)]
pub struct ArmClient {
    http: TokenHttpClient,
    base: HttpsOrigin,
    tokens: TokenSource,
}

/// What a call does, for messages and for naming the RBAC action a 403 is about.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// What is being read or done, e.g. `reading online endpoint my-endpoint`.
    pub what: &'a str,
    /// The RBAC action the identity needs.
    pub action: &'a str,
}

/// Resource Manager's error body.
#[derive(Debug, Deserialize)]
struct ArmErrorBody {
    error: Option<ArmError>,
}

#[derive(Debug, Deserialize)]
struct ArmError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

// === impl ArmClient ===

impl ArmClient {
    /// A client for Resource Manager at `base`, authorizing with `tokens` (a management-scope entry).
    pub fn new(http: TokenHttpClient, base: HttpsOrigin, tokens: TokenSource) -> Self {
        Self { http, base, tokens }
    }

    /// Where Resource Manager is.
    pub fn base(&self) -> &HttpsOrigin {
        &self.base
    }

    /// The management token entry this client uses.
    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    /// `GET {path}?api-version=…`: the JSON body of a 2xx answer.
    pub async fn get(&self, path: &str, call: Call<'_>) -> Result<Bytes, TokenError> {
        self.send(Method::GET, path, call).await
    }

    /// `POST {path}?api-version=…` without a body (`listKeys`, `token`): the body of a 2xx answer.
    pub async fn post(&self, path: &str, call: Call<'_>) -> Result<Bytes, TokenError> {
        self.send(Method::POST, path, call).await
    }

    async fn send(&self, method: Method, path: &str, call: Call<'_>) -> Result<Bytes, TokenError> {
        let token = self.tokens.header_value().await.map_err(|unavailable| {
            let mut error = (*unavailable.error).clone();
            error.message = format!("{}: {}", call.what, error.message);
            error.retry_after = Some(unavailable.retry_after);
            error
        })?;
        let uri = format!("{}{path}?api-version={API_VERSION}", self.base);
        let request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, token.clone());
        let request = if method == Method::POST {
            request.header(CONTENT_LENGTH, "0")
        } else {
            request
        };
        let request = request.body(Full::new(Bytes::new())).map_err(|_| {
            TokenError::new(
                TokenErrorKind::CredentialRejected,
                SOURCE,
                format!("{}: the Resource Manager URL is not valid", call.what),
            )
        })?;
        let response = self.http.send(request).await.map_err(|e| {
            TokenError::service_unavailable(
                SOURCE,
                format!("{}: Resource Manager {}: {e}", call.what, self.base),
            )
        })?;
        tracing::debug!(
            %method,
            path,
            status = response.status.as_u16(),
            "resource manager call"
        );
        if response.status.is_success() {
            return Ok(response.body);
        }
        if response.status == StatusCode::UNAUTHORIZED {
            self.tokens
                .invalidate(&token, "resource manager refused the token");
        }
        Err(classify(
            response.status,
            &response.headers,
            &response.body,
            call,
        ))
    }
}

impl fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArmClient")
            .field("base", &format_args!("{}", self.base))
            .field("tokens", &self.tokens)
            .finish()
    }
}

/// The classified failure for a non-2xx Resource Manager answer (module table).
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    call: Call<'_>,
) -> TokenError {
    let arm = serde_json::from_slice::<ArmErrorBody>(body)
        .ok()
        .and_then(|b| b.error);
    let (code, message) = match &arm {
        Some(e) => (e.code.as_str(), one_line(&e.message)),
        None => ("", String::new()),
    };
    let detail = match (code.is_empty(), message.is_empty()) {
        (true, true) => format!("HTTP {}", status.as_u16()),
        (false, true) => code.to_owned(),
        (true, false) => message.clone(),
        (false, false) => format!("{code}: {message}"),
    };
    let (kind, text) = match status {
        StatusCode::FORBIDDEN => {
            let mut text = format!("{}: {detail}", call.what);
            if !message
                .to_ascii_lowercase()
                .contains(&call.action.to_ascii_lowercase())
            {
                text.push_str(&format!(" (the identity needs {})", call.action));
            }
            (TokenErrorKind::AuthorizationFailed, text)
        }
        StatusCode::NOT_FOUND => (
            TokenErrorKind::ResourceNotFound,
            format!("{}: {detail}", call.what),
        ),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => (
            TokenErrorKind::TokenServiceUnavailable,
            format!("{}: Resource Manager is throttling: {detail}", call.what),
        ),
        s if s.is_server_error() => (
            TokenErrorKind::TokenServiceUnavailable,
            format!("{}: Resource Manager failed: {detail}", call.what),
        ),
        StatusCode::UNAUTHORIZED => (
            TokenErrorKind::CredentialRejected,
            format!(
                "{}: Resource Manager refused the token: {detail}",
                call.what
            ),
        ),
        _ => (
            TokenErrorKind::CredentialRejected,
            format!("{}: {detail}", call.what),
        ),
    };
    TokenError::new(kind, SOURCE, text).with_retry_after(retry_after(headers))
}

/// The first line of `text`, without control characters, at most 1,000 characters.
fn one_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(1000)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::header::RETRY_AFTER;

    use super::*;

    const LIST_KEYS: Call<'static> = Call {
        what: "listKeys of online endpoint e",
        action: "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/listkeys/action",
    };

    #[test]
    fn a_denied_action_is_authorization_failed_naming_it() {
        let body = br#"{"error":{"code":"AuthorizationFailed","message":"The client 'x' with object id 'y' does not have authorization to perform action 'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/listKeys/action' over scope '/s' or the scope is invalid."}}"#;
        let e = classify(StatusCode::FORBIDDEN, &HeaderMap::new(), body, LIST_KEYS);
        assert_eq!(e.kind, TokenErrorKind::AuthorizationFailed);
        assert!(
            e.message.contains("onlineEndpoints/listKeys/action"),
            "{}",
            e.message
        );
        assert!(
            !e.message.contains("the identity needs"),
            "named once: {}",
            e.message
        );
        // A 403 whose message does not name the action gets it added.
        let bare = br#"{"error":{"code":"AuthorizationFailed","message":"denied"}}"#;
        let e = classify(StatusCode::FORBIDDEN, &HeaderMap::new(), bare, LIST_KEYS);
        assert!(
            e.message
                .ends_with(&format!("(the identity needs {})", LIST_KEYS.action))
        );
    }

    #[test]
    fn missing_throttled_and_failing() {
        let body =
            br#"{"error":{"code":"ResourceNotFound","message":"The Resource 'x' was not found."}}"#;
        let e = classify(StatusCode::NOT_FOUND, &HeaderMap::new(), body, LIST_KEYS);
        assert_eq!(e.kind, TokenErrorKind::ResourceNotFound);
        assert!(
            e.message
                .contains("ResourceNotFound: The Resource 'x' was not found.")
        );
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "17".parse().unwrap());
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &headers, b"", LIST_KEYS);
        assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(17)));
        let e = classify(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>",
            LIST_KEYS,
        );
        assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
        assert!(e.message.contains("HTTP 502"), "{}", e.message);
        let e = classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), b"{}", LIST_KEYS);
        assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    }
}
