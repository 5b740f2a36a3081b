//! The error text that managed-identity endpoints' failures carry. Their success bodies are token responses like
//! every token service's, read by [`crate::auth::token_response`].

use serde::Deserialize;
use serde_json::Value;

use crate::auth::lenient_json;

/// The longest error description carried into a message.
const MAX_DESCRIPTION_CHARS: usize = 300;

/// The fields of an error body that can say what went wrong, in every shape the endpoints use.
#[derive(Deserialize)]
struct ErrorBody {
    /// IMDS, Arc.
    #[serde(default, deserialize_with = "lenient_json::text")]
    error_description: Option<String>,
    /// App Service, Azure ML.
    #[serde(default, deserialize_with = "lenient_json::text")]
    message: Option<String>,
    /// App Service, capitalised.
    #[serde(default, rename = "Message", deserialize_with = "lenient_json::text")]
    message_capitalised: Option<String>,
    /// A bare code (`"error":"invalid_request"`), or Cloud Shell's and Service Fabric's `{"message", "code"}`.
    #[serde(default)]
    error: Option<Value>,
}

/// `error` as an object.
#[derive(Deserialize)]
struct NestedError {
    #[serde(default, deserialize_with = "lenient_json::text")]
    message: Option<String>,
    #[serde(default, deserialize_with = "lenient_json::text")]
    code: Option<String>,
}

/// The human-readable text of an error body, in any of the shapes managed-identity endpoints use:
/// `{"error_description"}` (IMDS, Arc), `{"message"}` (App Service, Azure ML), `{"error":{"message"}}`
/// (Cloud Shell, Service Fabric), or a bare `{"error":"code"}`. Only these fields are read, never the whole body;
/// the text is cut to its first line and [`MAX_DESCRIPTION_CHARS`].
pub(super) fn error_description(body: &[u8]) -> Option<String> {
    let body: ErrorBody = lenient_json::from_object(body).ok()?;
    let (nested, code) = match body.error {
        Some(Value::String(code)) => (None, Some(code)),
        Some(object @ Value::Object(_)) => (NestedError::deserialize(object).ok(), None),
        _ => (None, None),
    };
    let (nested_message, nested_code) = nested.map_or((None, None), |n| (n.message, n.code));
    let fields = [
        body.error_description,
        body.message,
        body.message_capitalised,
        nested_message,
        nested_code,
        code,
    ];
    let first_line = |s: String| Some(s.lines().map(str::trim).find(|l| !l.is_empty())?.to_owned());
    let line = fields.into_iter().flatten().find_map(first_line)?;
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
