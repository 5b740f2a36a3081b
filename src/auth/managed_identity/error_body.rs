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

/// The human-readable text of an error body, in any of the shapes managed-identity endpoints use:
/// `{"error_description"}` (IMDS, Arc), `{"message"}` (App Service, Azure ML), `{"error":{"message"}}`
/// (Cloud Shell, Service Fabric), or a bare `{"error":"code"}`. Only these fields are read, never the whole body;
/// the text is cut to its first line and [`MAX_DESCRIPTION_CHARS`].
pub(super) fn error_description(body: &[u8]) -> Option<String> {
    let body: ErrorBody = lenient_json::from_object(body).ok()?;
    let error = body.error.as_ref();
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let fields = [
        body.error_description,
        body.message,
        body.message_capitalised,
        text(error.and_then(|e| e.get("message"))),
        text(error.and_then(|e| e.get("code"))),
        text(error),
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
