//! Claims: the JSON documents that claims challenges carry and token requests send, and client capabilities.
//!
//! A token request advertises client capabilities (`CP1`: "this client handles claims challenges") by sending
//! `claims={"access_token":{"xms_cc":{"values":["CP1"]}}}`; a challenge's own claims are deep-merged with that
//! (challenge keys kept, `xms_cc` added under `access_token`), as MSAL does.

use base64::Engine;
use serde_json::{Map, Value, json};

/// The capability that makes Azure send claims challenges (continuous access evaluation) instead of failing.
pub const CP1: &str = "CP1";

/// Why a claims challenge value is unusable. The message never quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the claims challenge {0}")]
pub struct ClaimsChallengeError(&'static str);

/// Decodes a claims challenge: base64 in the standard or URL alphabet, padding optional, of a JSON object.
/// Returns the JSON text as sent (it is passed on untouched).
pub fn decode_claims_challenge(encoded: &str) -> Result<String, ClaimsChallengeError> {
    let trimmed = encoded.trim();
    if trimmed.is_empty() {
        return Err(ClaimsChallengeError("is empty"));
    }
    let standard = trimmed.replace('-', "+").replace('_', "/");
    let bytes = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
        .decode(standard.as_bytes())
        .map_err(|_| ClaimsChallengeError("is not valid base64"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ClaimsChallengeError("does not decode to UTF-8 text"))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(_)) => Ok(text.trim().to_owned()),
        _ => Err(ClaimsChallengeError("does not decode to a JSON object")),
    }
}

/// The `claims` parameter for a token request: the challenge's claims (if any) with `capabilities` merged into
/// `access_token.xms_cc.values`. `None` when there is nothing to send. Claims that are not a JSON object are sent
/// as given (Entra ID will say what is wrong with them).
pub fn with_capabilities(claims: Option<&str>, capabilities: &[&str]) -> Option<String> {
    if capabilities.is_empty() {
        return claims.map(str::to_owned);
    }
    let mut root = match claims.map(serde_json::from_str::<Value>) {
        None => Map::new(),
        Some(Ok(Value::Object(root))) => root,
        Some(_) => return claims.map(str::to_owned),
    };
    let access = root.entry("access_token").or_insert_with(|| json!({}));
    if !access.is_object() {
        *access = json!({});
    }
    // `access` is an object: indexing inserts a missing `xms_cc` as null, which is then replaced.
    let xms_cc = &mut access["xms_cc"];
    if !xms_cc.get("values").is_some_and(Value::is_array) {
        *xms_cc = json!({ "values": [] });
    }
    if let Some(Value::Array(values)) = xms_cc.get_mut("values") {
        for c in capabilities {
            if !values.iter().any(|v| v == c) {
                values.push(json!(c));
            }
        }
    }
    Some(Value::Object(root).to_string())
}

/// The `claims` parameter of a request for `claims` that advertises [`CP1`] when `cp1` is set.
pub(crate) fn parameter(claims: Option<&str>, cp1: bool) -> Option<String> {
    with_capabilities(claims, if cp1 { &[CP1] } else { &[] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_merged_into_the_challenge_claims() {
        let merged = |claims| -> Value {
            serde_json::from_str(&with_capabilities(Some(claims), &[CP1]).unwrap()).unwrap()
        };
        let cae = r#"{"access_token":{"nbf":{"essential":true,"value":"1726077595"},"xms_caeerror":{"value":"10012"}}}"#;
        let acrs =
            r#"{"access_token":{"acrs":{"essential":true,"value":"c25"}},"id_token":{"x":1}}"#;
        let already = r#"{"access_token":{"xms_cc":{"values":["CP1","CP2"]}}}"#;
        for (claims, want) in [
            (
                cae,
                json!({"access_token": {"nbf": {"essential": true, "value": "1726077595"}, "xms_caeerror": {"value": "10012"}, "xms_cc": {"values": ["CP1"]}}}),
            ),
            // Other claims are kept.
            (
                acrs,
                json!({"access_token": {"acrs": {"essential": true, "value": "c25"}, "xms_cc": {"values": ["CP1"]}}, "id_token": {"x": 1}}),
            ),
            // No duplicate.
            (
                already,
                json!({"access_token": {"xms_cc": {"values": ["CP1", "CP2"]}}}),
            ),
        ] {
            assert_eq!(merged(claims), want, "{claims}");
        }
        assert_eq!(
            with_capabilities(None, &[CP1]).as_deref(),
            Some(r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#)
        );
        assert_eq!(with_capabilities(None, &[]), None);
        let not_json = with_capabilities(Some("not json"), &[CP1]);
        assert_eq!(not_json.as_deref(), Some("not json"));
        let untouched = with_capabilities(Some(cae), &[]);
        assert_eq!(untouched.as_deref(), Some(cae), "no capabilities");
    }

    #[test]
    fn claims_challenges_decode_from_either_alphabet_with_or_without_padding() {
        let claims = r#"{"v":"???>>>"}"#;
        let standard = base64::engine::general_purpose::STANDARD.encode(claims);
        assert!(standard.contains('/') && standard.contains('+') && standard.ends_with('='));
        let url = standard.replace('+', "-").replace('/', "_");
        // A recorded challenge, and a continuous access evaluation one.
        let recorded = r#"{"access_token":{"nbf":{"essential":true,"value":"1610563006"},"xms_rp_ipaddr":{"value":"1.2.3.4"}}}"#;
        let recorded_b64 = "eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwidmFsdWUiOiIxNjEwNTYzMDA2In0sInhtc19ycF9pcGFkZHIiOnsidmFsdWUiOiIxLjIuMy40In19fQ";
        let cae = r#"{"access_token":{"nbf":{"essential":true,"value":"1726077595"},"xms_caeerror":{"value":"10012"}}}"#;
        let cae_b64 = "eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwidmFsdWUiOiIxNzI2MDc3NTk1In0sInhtc19jYWVlcnJvciI6eyJ2YWx1ZSI6IjEwMDEyIn19fQ==";
        for (encoded, json) in [
            (standard.clone(), claims),
            (standard.trim_end_matches('=').to_owned(), claims),
            (url.clone(), claims),
            (url.trim_end_matches('=').to_owned(), claims),
            (format!("  {standard}\n"), claims),
            (recorded_b64.to_owned(), recorded),
            (format!("{recorded_b64}=="), recorded),
            (cae_b64.to_owned(), cae),
        ] {
            assert_eq!(
                decode_claims_challenge(&encoded).unwrap(),
                json,
                "{encoded}"
            );
        }
    }

    #[test]
    fn bad_claims_challenges_are_refused_without_echoing_them() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for (input, why) in [
            (String::new(), "is empty"),
            ("not base64 at all!".to_owned(), "is not valid base64"),
            (b64("hello"), "does not decode to a JSON object"),
            (b64("[1,2]"), "does not decode to a JSON object"),
            (
                base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe]),
                "does not decode to UTF-8 text",
            ),
        ] {
            let e = decode_claims_challenge(&input).unwrap_err();
            assert_eq!(e.to_string(), format!("the claims challenge {why}"));
        }
        for bad in ["not base64!", "ey==", "ey", "WzFd"] {
            assert!(decode_claims_challenge(bad).is_err(), "{bad}");
        }
    }
}
