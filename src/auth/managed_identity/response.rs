//! The token responses of every managed-identity endpoint, and the error text their failures carry.
//!
//! Token responses differ by source and age (PROTOCOLS §4.2–4.6): numbers may be JSON strings; there is
//! `expires_in`, `expires_on` or both; `expires_on` is a Unix epoch (number or string) or, from legacy MSI
//! endpoints, a date string (`MM/DD/YYYY HH:MM:SS +00:00`, `M/D/YYYY h:mm:ss AM +00:00`). `expires_in` wins when
//! it parses, as MSAL Python and Go azidentity prefer it.

use std::time::Duration;

use serde_json::Value;

use crate::auth::expiry;
use crate::auth::{AccessToken, Secret};

/// The longest error description carried into a message.
const MAX_DESCRIPTION_CHARS: usize = 300;

/// A parsed token response; the expiry fields are kept apart so tests can check what each format implies.
#[derive(Debug)]
pub(super) struct TokenResponse {
    pub(super) access_token: Secret,
    /// `expires_in`, when it is a usable number of seconds.
    pub(super) expires_in: Option<u64>,
    /// `expires_on` as Unix seconds, when it is a usable epoch or legacy date.
    pub(super) expires_on: Option<u64>,
    /// `refresh_in`, if sent.
    pub(super) refresh_in: Option<u64>,
}

// === impl TokenResponse ===

impl TokenResponse {
    /// The remaining lifetime: `expires_in`, else the time until `expires_on`.
    pub(super) fn lifetime(&self) -> Result<Duration, String> {
        let lifetime = match (self.expires_in, self.expires_on) {
            (Some(secs), _) => Duration::from_secs(secs),
            (None, Some(on)) => expiry::until(on),
            (None, None) => return Err("neither expires_in nor expires_on".to_owned()),
        };
        if lifetime.is_zero() {
            return Err("the token is already expired".to_owned());
        }
        Ok(lifetime)
    }

    /// The token as the credential returns it.
    pub(super) fn into_access_token(self, source: &str) -> Result<AccessToken, String> {
        let expires_in = self.lifetime()?;
        Ok(AccessToken {
            token: self.access_token,
            expires_in,
            refresh_in: self.refresh_in.map(Duration::from_secs),
            source: source.into(),
        })
    }
}

/// Parses a success body. The reasons never contain the body (it may hold a token).
pub(super) fn parse_token(body: &[u8]) -> Result<TokenResponse, String> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "not JSON".to_owned())?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    let access_token = obj
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("no access_token")?;
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("access_token contains characters that cannot be sent in a header".into());
    }
    if let Some(kind) = obj.get("token_type").and_then(Value::as_str)
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(format!("token_type {kind:?} is not Bearer"));
    }
    let expires_in = expiry::seconds(obj.get("expires_in")).filter(|s| *s > 0);
    let expires_on = expiry::expires_on(obj.get("expires_on"));
    if expires_in.is_none() && expires_on.is_none() {
        return Err("neither expires_in nor expires_on".into());
    }
    Ok(TokenResponse {
        access_token: Secret::new(access_token),
        expires_in,
        expires_on,
        refresh_in: expiry::seconds(obj.get("refresh_in")).filter(|s| *s > 0),
    })
}

/// The human-readable text of an error body, in any of the shapes managed-identity endpoints use:
/// `{"error_description"}` (IMDS, Arc), `{"message"}` (App Service, Azure ML), `{"error":{"message"}}`
/// (Cloud Shell, Service Fabric), or a bare `{"error":"code"}`. Only these fields are read, never the whole body;
/// the text is cut to its first line and [`MAX_DESCRIPTION_CHARS`].
pub(super) fn error_description(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let nested = value.get("error").filter(|e| e.is_object());
    let found = text(value.get("error_description"))
        .or_else(|| text(value.get("message")))
        .or_else(|| text(value.get("Message")))
        .or_else(|| text(nested.and_then(|e| e.get("message"))))
        .or_else(|| text(nested.and_then(|e| e.get("code"))))
        .or_else(|| text(value.get("error")))?;
    let line = found.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut clean: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DESCRIPTION_CHARS)
        .collect();
    if line.chars().count() > MAX_DESCRIPTION_CHARS {
        clean.push('…');
    }
    Some(clean)
}

/// A non-blank string field.
fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}
