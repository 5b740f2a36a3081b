use serde_json::Value;

use super::*;
use crate::auth::test_support::fixture_json_objects;

/// v2 bodies (numbers), v1 bodies (strings, with `refresh_in`), and user flows' refresh tokens.
#[test]
fn v2_numbers_v1_strings_and_refresh_tokens() {
    for (body, expires_in, refresh_in, refresh_token) in [
        (
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"a"}"#,
            3599,
            None,
            None,
        ),
        (
            r#"{"token_type":"Bearer","expires_in":"3600","ext_expires_in":"3600","expires_on":"1546469802","refresh_in":"1800","access_token":"a"}"#,
            3600,
            Some(1800),
            None,
        ),
        (
            r#"{"token_type":"Bearer","expires_in":60,"access_token":"a","refresh_token":"r1"}"#,
            60,
            None,
            Some("r1"),
        ),
    ] {
        let (token, rt) = parse_token_response(body.as_bytes(), "client_secret").unwrap();
        assert_eq!(token.token.expose(), "a");
        assert_eq!(token.expires_in, Duration::from_secs(expires_in));
        assert_eq!(token.refresh_in, refresh_in.map(Duration::from_secs));
        assert_eq!(&*token.source, "client_secret");
        assert_eq!(rt.as_ref().map(Secret::expose), refresh_token, "{body}");
    }
}

#[test]
fn expires_on_only() {
    let now = expiry::now_unix();
    let body = format!(r#"{{"access_token":"x","expires_on":"{}"}}"#, now + 600);
    let (token, _) = parse_token_response(body.as_bytes(), "entra").unwrap();
    let lifetime = token.expires_in;
    assert!((598..=600).contains(&lifetime.as_secs()), "{lifetime:?}");
}

/// Unusable bodies of every token service are errors, never panics, and never echo the body (it may hold a token).
#[test]
fn bad_bodies_are_errors_that_never_echo_the_body() {
    for body in [
        &b"<html>secret-canary</html>"[..],
        b"",
        b"[]",
        br#"["x", "Bearer", 3600]"#,
        br#"{"expires_in":3600}"#,
        br#"{"expires_in":"3600"}"#,
        br#"{"access_token":"","expires_in":3600}"#,
        br#"{"access_token":"","expires_in":"3600"}"#,
        br#"{"access_token":7,"expires_in":3600}"#,
        br#"{"access_token":"a b","expires_in":3600}"#,
        br#"{"access_token":"x","token_type":"pop","expires_in":3600}"#,
        br#"{"access_token":"secret-canary","token_type":"pop","expires_in":3600}"#,
        br#"{"access_token":"secret-canary"}"#,
        br#"{"access_token":"x","expires_in":"soon"}"#,
        br#"{"access_token":"secret-canary","expires_in":"soon","expires_on":"later"}"#,
        br#"{"access_token":"x","expires_in":0}"#,
        br#"{"access_token":"x","expires_in":-5}"#,
        br#"{"access_token":"x","access_token":"y","expires_in":3600}"#,
        // A byte that is not UTF-8 in a field no token source reads: still not JSON.
        b"{\"access_token\":\"secret-canary\",\"expires_in\":3600,\"client_id\":\"24\x90c\"}",
    ] {
        let e = TokenResponse::parse(body).unwrap_err();
        assert!(!e.contains("canary"), "{e}");
        assert!(
            parse_token_response(body, "entra").is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn refusals_say_why() {
    for (body, why) in [
        ("<html>", "not JSON"),
        ("[]", "not a JSON object"),
        (r#"{"expires_in":3600}"#, "no access_token"),
        (r#"{"access_token":"x","expires_in":0}"#, EXPIRED),
        (r#"{"access_token":"x","expires_on":"1546469802"}"#, EXPIRED),
        (r#"{"access_token":"x","expires_in":"soon"}"#, NO_EXPIRY),
        (
            r#"{"access_token":"x","token_type":"pop","expires_in":1}"#,
            "token_type \"pop\" is not Bearer",
        ),
    ] {
        let e = parse_token_response(body.as_bytes(), "entra").unwrap_err();
        assert_eq!(e, why, "{body}");
    }
}

#[test]
fn fields_of_other_types_count_as_absent() {
    // As before derive: a field of an unexpected type is ignored, not a reason to refuse the body.
    let r = TokenResponse::parse(
        br#"{"access_token":"a","token_type":5,"expires_in":true,"expires_on":4102444800,"refresh_in":[1],"refresh_token":{}}"#,
    )
    .unwrap();
    assert_eq!(
        (r.expires_in, r.expires_on, r.refresh_in),
        (None, Some(4_102_444_800), None)
    );
    assert!(r.refresh_token.is_none());
    // A zero refresh_in or an empty refresh token are not kept either.
    let r = TokenResponse::parse(
        br#"{"access_token":"a","expires_in":60,"refresh_in":0,"refresh_token":""}"#,
    )
    .unwrap();
    assert_eq!(r.refresh_in, None);
    assert!(r.refresh_token.is_none());
    // An unusable `expires_in` falls back to `expires_on`; zero counts as unusable. Numbers may be strings.
    let r =
        TokenResponse::parse(br#"{"access_token":"a","expires_in":"0","expires_on":4102444800}"#)
            .unwrap();
    assert_eq!((r.expires_in, r.expires_on), (None, Some(4_102_444_800)));
    let r = TokenResponse::parse(br#"{"access_token":"a","expires_in":3600,"refresh_in":"1800"}"#)
        .unwrap();
    assert_eq!(r.refresh_in, Some(1800));
}

/// Token-endpoint bodies (v1 strings with `expires_on`, v2 numbers without) give the expiry fields they say.
#[test]
fn token_endpoint_v1_and_v2_bodies() {
    let lines = fixture_json_objects("aad_token_endpoint_v1_vs_v2_success.txt");
    let expiries: Vec<(Option<u64>, Option<u64>)> = lines
        .iter()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("access_token").is_some()))
        .map(|l| {
            let r = TokenResponse::parse(l.as_bytes()).unwrap();
            (r.expires_in, r.expires_on)
        })
        .collect();
    assert_eq!(
        expiries,
        [
            (Some(3600), Some(1_546_469_802)),
            (Some(3600), Some(1_573_001_562)),
            (Some(86399), None),
            (Some(3600), None),
        ]
    );
}
