//! Entra ID's error responses: the fields of an error body, read tolerantly and kept verbatim (they become the
//! `aad` object of the proxy's error responses), and their classification into a [`TokenErrorKind`] by code, never
//! by description text. The client that receives them is `token_endpoint`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TokenErrorKind;
use super::lenient_json;

/// The fields of an Entra ID error response, copied verbatim (the `aad` object of the proxy's error responses). Read tolerantly: a text
/// field given as a number, boolean, array or object is kept as its JSON text (`claims` is documented as a string,
/// but an object is passed on too); codes may be strings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct AadError {
    /// OAuth2 `error`, e.g. `invalid_grant`.
    #[serde(default, deserialize_with = "lenient_json::json_text")]
    pub error: Option<String>,
    /// `error_description` (AADSTS text plus trace/correlation lines).
    #[serde(default, deserialize_with = "lenient_json::json_text")]
    pub error_description: Option<String>,
    /// `error_codes`, e.g. `[53003]`.
    #[serde(default, deserialize_with = "lenient_json::codes")]
    pub error_codes: Vec<i64>,
    /// `suberror`, e.g. `message_only`, `bad_token`.
    #[serde(default, deserialize_with = "lenient_json::json_text")]
    pub suberror: Option<String>,
    /// `trace_id`.
    #[serde(default, deserialize_with = "lenient_json::json_text")]
    pub trace_id: Option<String>,
    /// `correlation_id`.
    #[serde(default, deserialize_with = "lenient_json::json_text")]
    pub correlation_id: Option<String>,
    /// `timestamp`.
    #[serde(default, deserialize_with = "lenient_json::json_text")]
    pub timestamp: Option<String>,
    /// `error_uri`.
    #[serde(default, deserialize_with = "lenient_json::json_text")]
    pub error_uri: Option<String>,
    /// `claims`: a JSON document as a string, passed on untouched.
    #[serde(default, deserialize_with = "lenient_json::json_text")]
    pub claims: Option<String>,
}

/// Conditional Access and device/location/app policy codes.
const CONDITIONAL_ACCESS_CODES: &[i64] = &[50005, 50097, 50129, 50131, 50155];
/// MFA, step-up, consent and re-sign-in codes.
const INTERACTION_CODES: &[i64] = &[
    50072, 50074, 50076, 50078, 50079, 50132, 50133, 50158, 50173, 65001, 70008, 70043, 700020,
    700082,
];
/// Suberrors that mean a person has to act.
const INTERACTION_SUBERRORS: &[&str] = &[
    "basic_action",
    "additional_action",
    "consent_required",
    "user_password_expired",
    "bad_token",
    "token_expired",
];

// === impl AadError ===

impl AadError {
    /// Parses an Entra ID error body. Returns `None` when the body is not a JSON object with at least one of
    /// `error` / `error_codes`. Numbers given as strings are accepted.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let parsed: Self = lenient_json::from_object(body).ok()?;
        (parsed.error.is_some() || !parsed.error_codes.is_empty()).then_some(parsed)
    }

    /// The first line of `error_description`, else `error`, else a generic text — always one line, free of
    /// control characters (it reaches log lines and one-line CLI errors; a bare `\r` or an `error` holding a
    /// newline must not forge a second line).
    pub fn message(&self) -> String {
        let first_line = |text: &str| -> Option<String> {
            text.split(['\r', '\n'])
                .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
                .map(|l| l.trim().to_owned())
                .find(|l| !l.is_empty())
        };
        self.error_description
            .as_deref()
            .and_then(first_line)
            .or_else(|| self.error.as_deref().and_then(first_line))
            .unwrap_or_else(|| "Entra ID refused the token request".to_owned())
    }

    /// The first AADSTS code, if any.
    pub fn first_code(&self) -> Option<i64> {
        self.error_codes.first().copied()
    }

    /// Classifies the failure by `error_codes`, then `error`/`suberror`, then the HTTP status. The description text
    /// is never consulted (Microsoft changes it).
    pub fn classify(&self, status: u16) -> TokenErrorKind {
        let codes = &self.error_codes;
        if codes.iter().any(|&c| is_conditional_access_code(c)) {
            return TokenErrorKind::ConditionalAccessBlocked;
        }
        if codes.iter().any(|c| INTERACTION_CODES.contains(c))
            || self.error.as_deref() == Some("interaction_required")
            || self
                .suberror
                .as_deref()
                .is_some_and(|s| INTERACTION_SUBERRORS.contains(&s))
        {
            return TokenErrorKind::InteractionRequired;
        }
        if status == 429
            || status >= 500
            || matches!(
                self.error.as_deref(),
                Some("temporarily_unavailable" | "server_error")
            )
        {
            return TokenErrorKind::TokenServiceUnavailable;
        }
        TokenErrorKind::CredentialRejected
    }

    /// The fields as a JSON object, only those present (the `aad` object of error responses).
    pub fn to_json(&self) -> Value {
        let mut json = serde_json::to_value(self).unwrap_or_default();
        if let Value::Object(fields) = &mut json {
            fields.retain(|_, v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()));
        }
        json
    }
}

/// AADSTS 53000–53999 and 530000–539999 are Conditional Access, plus the device/app policy codes.
fn is_conditional_access_code(code: i64) -> bool {
    (53_000..=53_999).contains(&code)
        || (530_000..=539_999).contains(&code)
        || CONDITIONAL_ACCESS_CODES.contains(&code)
}

#[cfg(test)]
mod tests;
