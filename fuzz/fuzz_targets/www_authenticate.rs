//! `WWW-Authenticate` parsing: `www_authenticate::parse` on arbitrary text, and `claims_challenge` / `challenges` on a
//! header map holding one `WWW-Authenticate` value per input line.

#![no_main]

use aml_auth_proxy::proxy::www_authenticate::{self, Challenge};
use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 `token68` (`[A-Za-z0-9-._~+/]+=*`).
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn check(c: &Challenge) {
    assert!(
        !c.scheme.is_empty() && c.scheme.bytes().all(is_tchar),
        "scheme {:?} is not a token",
        c.scheme
    );
    for (name, _) in &c.params {
        assert!(
            !name.is_empty() && name.bytes().all(is_tchar),
            "param name {name:?} is not a token"
        );
        assert_eq!(
            *name,
            name.to_ascii_lowercase(),
            "param names are lower-case"
        );
    }
    if let Some(t68) = &c.token68 {
        assert!(is_token68(t68), "token68 {t68:?}");
        assert!(c.params.is_empty(), "token68 and params at once: {c:?}");
    }
    // `param` is the first parameter of that name, whatever the case asked for.
    if let Some((name, value)) = c.params.first() {
        assert_eq!(c.param(&name.to_ascii_uppercase()), Some(value.as_str()));
    }
}

/// Writes challenges back as a header value (values always quoted) for a round trip.
fn serialise(challenges: &[Challenge]) -> String {
    let mut out = Vec::new();
    for c in challenges {
        let mut s = c.scheme.clone();
        if let Some(t68) = &c.token68 {
            s.push(' ');
            s.push_str(t68);
        }
        let params: Vec<String> = c
            .params
            .iter()
            .map(|(n, v)| format!("{n}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        if !params.is_empty() {
            s.push(' ');
            s.push_str(&params.join(", "));
        }
        out.push(s);
    }
    out.join(", ")
}

fuzz_target!(|data: &[u8]| {
    // 1. One header value, as text.
    let text = String::from_utf8_lossy(data);
    let parsed = www_authenticate::parse(&text);
    for c in &parsed {
        check(c);
    }
    assert!(parsed.len() <= text.len(), "more challenges than bytes");
    // What was parsed, written back canonically, parses to the same challenges.
    let again = www_authenticate::parse(&serialise(&parsed));
    assert_eq!(parsed, again, "round trip of {text:?}");

    // 2. A response's headers: one WWW-Authenticate value per line; values a header cannot hold are skipped.
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(WWW_AUTHENTICATE, v);
        }
    }
    let all = www_authenticate::challenges(&headers);
    for c in &all {
        check(c);
    }
    let usable = all
        .iter()
        .filter(|c| {
            c.scheme.eq_ignore_ascii_case("bearer")
                && matches!(
                    c.param("error"),
                    Some("insufficient_claims" | "invalid_token")
                )
                && c.param("claims").is_some()
        })
        .count();
    if let Some(cc) = www_authenticate::claims_challenge(&headers) {
        assert_eq!(usable, 1, "a claims challenge from {usable} candidates");
        assert!(
            cc.error == "insufficient_claims" || cc.error == "invalid_token",
            "error {:?}",
            cc.error
        );
        let claims: serde_json::Value = match serde_json::from_str(&cc.claims) {
            Ok(v) => v,
            Err(e) => panic!("claims {:?} are not JSON: {e}", cc.claims),
        };
        assert!(
            claims.is_object(),
            "claims {:?} are not an object",
            cc.claims
        );
        assert_eq!(cc.claims.trim(), cc.claims, "claims are trimmed");
    }
});
