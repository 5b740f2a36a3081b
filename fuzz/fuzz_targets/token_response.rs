//! The token-body parser every token source shares (`fuzzing::parse_token_response`, crate-private in normal use):
//! the raw input as a body, and the input's text as `expires_in` / `expires_on` / `refresh_in` of an otherwise
//! valid body.

#![no_main]

use aml_auth_proxy::fuzzing::parse_token_response;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn check(body: &[u8]) {
    match parse_token_response(body) {
        Ok((access, refresh_token)) => {
            let token = access.token.expose();
            assert!(!token.is_empty(), "empty access token accepted");
            assert!(
                http::HeaderValue::from_str(&format!("Bearer {token}")).is_ok(),
                "access token {token:?} cannot go in a header"
            );
            assert!(!access.expires_in.is_zero(), "expired token accepted");
            if let Some(refresh_in) = access.refresh_in {
                assert!(!refresh_in.is_zero(), "zero refresh_in kept");
            }
            if let Some(rt) = &refresh_token {
                assert!(!rt.is_empty(), "empty refresh token kept");
            }
            let v: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => panic!("accepted a body that is not JSON: {e}"),
            };
            assert_eq!(v["access_token"].as_str(), Some(token));
        }
        Err(why) => {
            assert!(!why.is_empty(), "empty error text");
            // Error texts reach logs and responses: they never quote the token. A token that happens to be a
            // word of the fixed message (`expires_in`) proves nothing, so the same body is parsed again with a
            // canary as its token, and the canary must not appear. An input that already holds the canary's text
            // elsewhere (the fuzzer learns it from the comparison below) proves nothing either: error texts may
            // quote fields that are not secret, such as `token_type`.
            const CANARY: &str = "CANARY-7f3c9e1a-token";
            if let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(body)
                && o.get("access_token").is_some_and(Value::is_string)
                && !body.windows(CANARY.len()).any(|w| w == CANARY.as_bytes())
            {
                o.insert("access_token".into(), Value::String(CANARY.into()));
                let again = serde_json::to_vec(&o).unwrap_or_default();
                if let Err(why) = parse_token_response(&again) {
                    assert!(!why.contains(CANARY), "error text {why:?} quotes the token");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // The expiry parsers behind the body: the input's text as each expiry field, string and (if it is one) number.
    let text = String::from_utf8_lossy(data);
    let number: Option<Value> = serde_json::from_str::<Value>(&text)
        .ok()
        .filter(Value::is_number);
    for field in ["expires_in", "expires_on", "refresh_in"] {
        let mut values = vec![Value::String(text.to_string())];
        values.extend(number.clone());
        for value in values {
            let mut body = json!({ "access_token": "x", "token_type": "Bearer" });
            body[field] = value;
            if field == "refresh_in" {
                body["expires_in"] = json!(3600);
            }
            check(body.to_string().as_bytes());
        }
    }
});
