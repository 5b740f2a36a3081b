use serde_json::{Value, json};

use super::*;

fn headers(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(WWW_AUTHENTICATE, v.parse().unwrap());
    }
    h
}

/// The header values of the shared challenge vectors, in file order (comments stripped).
fn vectors() -> Vec<String> {
    let path = format!(
        "{}/tests/fixtures/cae_www_authenticate_challenge_vectors.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split("   #").next().unwrap().trim().to_owned())
        .collect()
}

fn decoded(c: &ClaimsChallenge) -> Value {
    serde_json::from_str(&c.claims).unwrap()
}

#[test]
fn every_shared_vector_has_the_expected_outcome() {
    let v = vectors();
    assert_eq!(v.len(), 15, "{v:#?}");
    let outcome = |i: usize| claims_challenge(&headers(&[&v[i]]));
    // Standard CAE, Digest + Bearer, PoP + Bearer, Graph: handled.
    let standard = json!({"access_token":{"nbf":{"essential":true,"value":"1726077595"},"xms_caeerror":{"value":"10012"}}});
    for i in [0, 1] {
        let c = outcome(i).unwrap_or_else(|| panic!("vector {i}: {}", v[i]));
        assert_eq!(c.error, "insufficient_claims");
        assert_eq!(decoded(&c), standard, "vector {i}");
    }
    assert_eq!(
        decoded(&outcome(2).unwrap()),
        json!({"access_token":{"nbf":{"essential":true,"value":"1726258122"}}})
    );
    assert_eq!(
        decoded(&outcome(3).unwrap()),
        json!({"access_token":{"foo":"bar"}})
    );
    // ARM's older invalid_token + claims (sessions revoked, IP policy unpadded): handled too.
    for (i, nbf) in [(4, "1603742800"), (5, "1611165359"), (6, "1610563006")] {
        let c = outcome(i).unwrap_or_else(|| panic!("vector {i}"));
        assert_eq!(c.error, "invalid_token");
        assert_eq!(decoded(&c)["access_token"]["nbf"]["value"], nbf);
    }
    assert_eq!(
        decoded(&outcome(6).unwrap())["access_token"]["xms_rp_ipaddr"]["value"],
        "1.2.3.4"
    );
    // No claims (plain 401, Key Vault discovery): nothing to do.
    for i in [7, 8, 9] {
        assert_eq!(outcome(i), None, "vector {i}");
    }
    // Undecodable or non-object claims ("ey==" is "{"), two claims challenges at once: passed through.
    for i in [10, 11, 12, 13, 14] {
        assert_eq!(outcome(i), None, "vector {i}: {}", v[i]);
    }
}

#[test]
fn schemes_params_and_token68_are_parsed() {
    let parsed = parse(
        r#"Digest realm="foo@test.com", qop="auth,auth-int", nonce="123456abcdefg", opaque="123456", Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="e30=""#,
    );
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].scheme, "Digest");
    assert_eq!(
        parsed[0].param("qop"),
        Some("auth,auth-int"),
        "commas inside quotes"
    );
    assert_eq!(parsed[1].scheme, "Bearer");
    assert_eq!(parsed[1].param("realm"), Some(""));
    assert_eq!(parsed[1].param("claims"), Some("e30="));
    let parsed = parse("Negotiate YIIGhgYJKoZIhvcSAQICAQBuggZ1==, Basic realm=\"x\", NTLM");
    assert_eq!(parsed.len(), 3);
    assert_eq!(
        parsed[0].token68.as_deref(),
        Some("YIIGhgYJKoZIhvcSAQICAQBuggZ1==")
    );
    assert_eq!(parsed[1].param("realm"), Some("x"));
    assert_eq!(parsed[2].scheme, "NTLM");
    let parsed =
        parse(r#"Bearer error_description="say \"hi\" \\ bye", ERROR=insufficient_claims"#);
    assert_eq!(
        parsed[0].param("error_description"),
        Some(r#"say "hi" \ bye"#)
    );
    assert_eq!(
        parsed[0].param("error"),
        Some("insufficient_claims"),
        "names are case-insensitive"
    );
}

#[test]
fn challenges_across_several_headers_and_schemes() {
    let h = headers(&[
        r#"Basic realm="legacy""#,
        r#"bearer error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZX19fQ""#,
    ]);
    let c = claims_challenge(&h).unwrap();
    assert_eq!(
        decoded(&c),
        json!({"access_token":{"nbf":{"essential":true}}})
    );
    // The same claims challenge in two headers is ambiguous: not handled.
    let one = r#"Bearer error="insufficient_claims", claims="e30=""#;
    assert_eq!(claims_challenge(&headers(&[one, one])), None);
    // URL-safe alphabet.
    let url_safe = r#"Bearer error="insufficient_claims", claims="eyJhIjoiPz4_In0""#;
    assert_eq!(
        decoded(&claims_challenge(&headers(&[url_safe])).unwrap()),
        json!({"a": "?>?"})
    );
    // Other errors with claims are not claims challenges.
    let other = r#"Bearer error="invalid_request", claims="e30=""#;
    assert_eq!(claims_challenge(&headers(&[other])), None);
}

#[test]
fn garbage_never_panics() {
    for junk in [
        "",
        ",",
        "=",
        "\"",
        "Bearer =",
        "Bearer a=\"unterminated",
        "a b c d",
        ",,,Bearer,,,",
        "Bearer x==y, z",
        "\u{1}",
    ] {
        let _ = parse(junk);
    }
}
