use super::*;
use crate::auth::test_support::assert_starts;

/// A shared fixture without its comment lines (`#`): one JSON document.
fn fixture(name: &str) -> Vec<u8> {
    crate::auth::test_support::fixture_without_comments(name).into_bytes()
}

#[test]
fn mfa_fixture_message_is_the_first_line_of_the_description() {
    let aad = AadError::parse(&fixture(
        "aad_error_50079_interaction_required_with_claims.json",
    ))
    .unwrap();
    assert_starts(&aad.message(), "AADSTS50079: Due to a configuration change");
    assert!(
        !aad.message().contains("Trace ID"),
        "message is the first line only"
    );
}

#[test]
fn classification_table() {
    let with = |error: &str, codes: &[i64], suberror: Option<&str>| AadError {
        error: Some(error.to_owned()),
        error_codes: codes.to_vec(),
        suberror: suberror.map(str::to_owned),
        ..AadError::default()
    };
    use TokenErrorKind::*;
    type Case = (&'static str, Option<i64>, Option<&'static str>, u16);
    let groups: [(TokenErrorKind, &[Case]); 4] = [
        (
            ConditionalAccessBlocked,
            &[
                ("invalid_grant", Some(53000), None, 400),
                ("invalid_grant", Some(53011), None, 400),
                ("invalid_grant", Some(53999), None, 400),
                ("invalid_grant", Some(530032), None, 400),
                ("invalid_grant", Some(530999), None, 400),
                ("invalid_grant", Some(50005), None, 400),
                ("invalid_grant", Some(50097), None, 400),
                ("invalid_grant", Some(50129), None, 400),
                ("invalid_grant", Some(50131), None, 400),
                ("invalid_grant", Some(50155), None, 400),
                // A CA code wins over the OAuth error name (user flows answer CA blocks with interaction_required).
                ("interaction_required", Some(53003), None, 400),
            ],
        ),
        (
            InteractionRequired,
            &[
                ("invalid_grant", Some(50076), None, 400),
                ("invalid_grant", Some(50158), None, 400),
                ("invalid_grant", Some(70043), None, 400),
                ("invalid_grant", Some(700082), None, 400),
                ("invalid_grant", Some(65001), None, 400),
                ("interaction_required", None, None, 400),
                ("invalid_grant", None, Some("consent_required"), 400),
            ],
        ),
        (
            CredentialRejected,
            &[
                ("invalid_client", Some(7000215), None, 401),
                ("invalid_client", Some(7000222), None, 401),
                ("unauthorized_client", Some(700016), None, 400),
                ("invalid_request", Some(90002), None, 400),
                ("invalid_request", None, Some("client_mismatch"), 400),
            ],
        ),
        (
            TokenServiceUnavailable,
            &[
                ("temporarily_unavailable", None, None, 400),
                ("server_error", None, None, 500),
                ("whatever", None, None, 503),
                ("whatever", None, None, 429),
            ],
        ),
    ];
    for (want, cases) in groups {
        for &(error, code, suberror, status) in cases {
            let aad = with(error, code.as_slice(), suberror);
            assert_eq!(aad.classify(status), want, "{aad:?} status {status}");
        }
    }
}

#[test]
fn description_text_is_never_used_for_classification() {
    let aad = AadError {
        error: Some("invalid_client".into()),
        error_description: Some(
            "AADSTS53003: Access has been blocked by Conditional Access policies".into(),
        ),
        error_codes: vec![7000215],
        ..AadError::default()
    };
    assert_eq!(aad.classify(401), TokenErrorKind::CredentialRejected);
}

#[test]
fn tolerant_parsing() {
    let aad =
        AadError::parse(br#"{"error":"invalid_request","error_codes":["90002", 7]}"#).unwrap();
    assert_eq!(aad.error_codes, vec![90002, 7]);
    assert!(AadError::parse(b"not json").is_none());
    assert!(AadError::parse(b"[1,2]").is_none());
    assert!(AadError::parse(br#"{"statusCode":500,"message":"x"}"#).is_none());
    let claims_object = AadError::parse(br#"{"error":"x","claims":{"access_token":{}}}"#).unwrap();
    assert_eq!(
        claims_object.claims.as_deref(),
        Some(r#"{"access_token":{}}"#)
    );
}

#[test]
fn json_keeps_only_present_fields() {
    let aad = AadError::parse(br#"{"error":"invalid_grant","error_codes":[53003],"trace_id":"t"}"#)
        .unwrap();
    assert_eq!(
        aad.to_json(),
        serde_json::json!({"error":"invalid_grant","error_codes":[53003],"trace_id":"t"})
    );
}

#[test]
fn message_is_always_one_line() {
    // Found by the aad_error fuzzer: a newline-only `error`, and a bare `\r` in the description.
    let newline = AadError::parse(b"{\"error\":\"\\n\"}").unwrap();
    assert_eq!(newline.message(), "Entra ID refused the token request");
    let bare_cr = AadError::parse(
        br#"{"error":"invalid_grant","error_description":"AADSTS50000: first\rsecond","error_codes":[50000]}"#,
    )
    .unwrap();
    assert_eq!(bare_cr.message(), "AADSTS50000: first");
    let control = AadError::parse(br#"{"error":"bad\u0007bell"}"#).unwrap();
    assert_eq!(control.message(), "badbell");
}
