use std::os::unix::process::ExitStatusExt;

use base64::Engine;

use super::*;
use crate::auth::developer_tool::{
    MAX_MESSAGE_CHARS, aadsts_codes, clean_line, labelled, labelled_timestamp,
};
use crate::auth::test_support::{self, Section, assert_starts, exit, failed, unavailable, utc};
use crate::auth::{AadError, TokenCredential, TokenErrorKind};
use crate::env::MapEnv;

const ARM: &str = "https://management.azure.com/.default";
/// A token that must never show up in an error.
const CANARY: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-canary";

fn sections() -> Vec<Section> {
    test_support::fixture_sections("az_cli_get_access_token_outputs.txt")
}

fn posix(tz: &str) -> TimeZone {
    expiry::local_zone(Some(tz), Some("/nonexistent-tzdir"))
}

fn spec(tenant: Option<&str>, subscription: Option<&str>) -> AzureCliCredentialOptions {
    AzureCliCredentialOptions {
        tenant_id: tenant.map(String::from),
        subscription: subscription.map(String::from),
        timeout: Duration::from_secs(10),
    }
}

// --- output parsing ---

#[test]
fn every_fixture_output_parses_with_the_expiry_it_implies() {
    let mut checked = 0;
    for section in sections().iter().filter(|s| s.title.contains("stdout")) {
        let body = section.body.as_bytes();
        let label = &section.title;
        if label.starts_with("[C]") {
            // az ≥ 2.54.0: the epoch wins over the (inconsistent, local) expiresOn.
            let (token, at) = parse_output(body, || panic!("zone not needed")).unwrap();
            assert_eq!(token.expose(), "<JWT>");
            assert_eq!(at, 1_605_238_724);
        } else if label.starts_with("[R]") {
            let (token, at) = parse_output(body, || panic!("zone not needed")).unwrap();
            assert_eq!(token.expose(), "***");
            assert_eq!(at, 2_147_385_600, "2038-01-18T00:00:00Z");
        } else if label.starts_with("[G]") {
            // az < 2.54.0: "2001-02-03 04:05:06.000007" is local time.
            let local = utc(2001, 2, 3, 4, 5, 6);
            for (zone, offset) in [
                (TimeZone::UTC, 0),
                (posix("EST5EDT,M3.2.0,M11.1.0"), -5 * 3600),
                (posix("CET-1CEST,M3.5.0,M10.5.0/3"), 3600),
                (posix("<+0530>-5:30"), 5 * 3600 + 1800),
            ] {
                let (token, at) = parse_output(body, || zone).unwrap();
                assert_eq!(token.expose(), "<token>");
                assert_eq!(at, local - offset, "{label}");
            }
            assert_eq!(parse_output(body, || TimeZone::UTC).unwrap().1, 981_173_106);
        } else {
            panic!("fixture section {label:?} has no expected expiry: add one");
        }
        checked += 1;
    }
    assert_eq!(checked, 3, "the fixture's three stdout samples");
}

#[test]
fn expires_on_forms_and_fallbacks() {
    for json in [
        r#"{"accessToken":"t","expires_on":"1700000000"}"#,
        r#"{"accessToken":"t","expires_on":null,"expiresOn":"2023-11-14 22:13:20.000000"}"#,
        r#"{"accessToken":"t","expires_on":"N/A","expiresOn":"2023-11-14 22:13:20"}"#,
    ] {
        let (_, at) = parse_output(json.as_bytes(), || TimeZone::UTC).unwrap();
        assert_eq!(at, 1_700_000_000, "{json}");
    }
}

#[test]
fn unusable_output_never_quotes_the_token() {
    for (json, why) in [
        ("[1,2]", "not a JSON object"),
        (r#"{"expires_on":1}"#, "no accessToken"),
        (r#"{"accessToken":"  ","expires_on":1}"#, "no accessToken"),
        (
            r#"{"accessToken":"TOKEN"}"#,
            "neither expires_on nor expiresOn",
        ),
        (
            r#"{"accessToken":"TOKEN","expires_on":-5}"#,
            "neither expires_on nor expiresOn",
        ),
    ] {
        let json = json.replace("TOKEN", CANARY);
        let err = parse_output(json.as_bytes(), || TimeZone::UTC).unwrap_err();
        assert_eq!(err, why, "{json}");
        assert!(!err.contains("canary"));
    }
}

// --- stderr classification ---

#[test]
fn fixture_stderr_samples_classify() {
    let s = spec(None, None);
    let mut checked = 0;
    for section in sections().iter().filter(|s| s.title.contains("stderr")) {
        let e = failure(&section.body, exit(1), &s, ARM);
        // (The CA sample's title also says "not logged in", so it is matched first.)
        if section.title.contains("Conditional Access") {
            let e = failed(e, SOURCE);
            assert_eq!(e.kind, TokenErrorKind::ConditionalAccessBlocked);
            assert_eq!(
                e.message,
                "AADSTS53003: Access has been blocked by Conditional Access policies. The access policy does not allow token issuance. Trace ID: 2f8ccb7a-459e-44fb-b615-232475945800 Correlation ID: 824fc737-3721-428a-adb8-e51aec8c4cce Timestamp: 2026-02-17 18:39:09Z"
            );
            let aad = AadError {
                error_description: Some(e.message.clone()),
                error_codes: vec![53003],
                trace_id: Some("2f8ccb7a-459e-44fb-b615-232475945800".into()),
                correlation_id: Some("824fc737-3721-428a-adb8-e51aec8c4cce".into()),
                timestamp: Some("2026-02-17 18:39:09Z".into()),
                ..AadError::default()
            };
            assert_eq!(e.aad.as_deref(), Some(&aad), "no claims, nothing else");
        } else if section.title.contains("not logged in") {
            assert_eq!(unavailable(e, SOURCE), "not logged in: run `az login`");
        } else {
            panic!(
                "fixture section {:?} has no expectation: add one",
                section.title
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}

/// `unavailable: <reason>`, or `<kind>: <message>` for a failure.
fn outcome(e: CredentialError) -> String {
    match e {
        CredentialError::Unavailable(_) => format!("unavailable: {}", unavailable(e, SOURCE)),
        CredentialError::Failed(_) => {
            let e = failed(e, SOURCE);
            format!("{:?}: {}", e.kind, e.message)
        }
    }
}

#[test]
fn stderr_classification_table() {
    use TokenErrorKind::*;
    let claims_json = r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#;
    let claims_b64 = base64::engine::general_purpose::STANDARD.encode(claims_json);
    let mfa_with_claims = format!(
        "ERROR: AADSTS50076: Due to a configuration change made by your administrator, you must use multi-factor authentication.\nRun the command below to authenticate interactively; additional arguments may be added as needed:\naz logout\naz login --tenant \"t1\" --scope \"{ARM}\" --claims-challenge \"{claims_b64}\"\n"
    );
    let none = spec(None, None);
    let tenant = spec(Some("t1"), None);
    // With a tenant configured: the login commands name it.
    let cases = [
        (
            "ERROR: User alice@contoso.com does not exist in MSAL token cache. Run `az login`.",
            1,
            "unavailable: not logged in: run `az login --tenant t1`",
        ),
        (
            "You are not logged in.",
            1,
            "unavailable: not logged in: run `az login --tenant t1`",
        ),
        (
            "/usr/bin/az: line 3: python3: command not found",
            127,
            "unavailable: Azure CLI not found on PATH (az exited with status 127: /usr/bin/az: line 3: python3: command not found)",
        ),
        // A Conditional Access code wins over the `az login` advice.
        (
            "ERROR: AADSTS53000: Device is not in required device state: compliant.\naz login\n",
            1,
            "ConditionalAccessBlocked: AADSTS53000: Device is not in required device state: compliant.",
        ),
        (
            "ERROR: AADSTS50076: Due to a configuration change made by your administrator, you must use multi-factor authentication.\naz login --tenant \"t1\"\n",
            1,
            "InteractionRequired: AADSTS50076: Due to a configuration change made by your administrator, you must use multi-factor authentication. (sign in again: run `az login --tenant t1`)",
        ),
        (
            "WARNING: something first\nERROR: AADSTS70043: The refresh token has expired or is invalid due to sign-in frequency checks by conditional access.",
            1,
            "InteractionRequired: AADSTS70043: The refresh token has expired or is invalid due to sign-in frequency checks by conditional access. (sign in again: run `az login --tenant t1`)",
        ),
        // An AADSTS code that means nothing more is a rejection.
        (
            "ERROR: AADSTS90002: Tenant 'nosuch' not found.",
            1,
            "CredentialRejected: AADSTS90002: Tenant 'nosuch' not found.",
        ),
        (
            "ERROR: Subscription 'nope' not found. Check the spelling and casing and try again.",
            1,
            "CredentialRejected: az failed (exit status 1): Subscription 'nope' not found. Check the spelling and casing and try again.",
        ),
        (
            "WARNING: retrying\nERROR: HTTPSConnectionPool(host='login.microsoftonline.com', port=443): Max retries exceeded with url: /organizations/oauth2/v2.0/token",
            1,
            "TokenServiceUnavailable: az failed (exit status 1): HTTPSConnectionPool(host='login.microsoftonline.com', port=443): Max retries exceeded with url: /organizations/oauth2/v2.0/token",
        ),
        (
            "",
            2,
            "CredentialRejected: az failed (exit status 2) without a message",
        ),
        // argparse's error line, after a usage line.
        (
            "usage: az [-h] [--verbose]\naz: error: unrecognized arguments: --resource x\n",
            2,
            "CredentialRejected: az failed (exit status 2): az: error: unrecognized arguments: --resource x",
        ),
        // The first line when there is no `ERROR:` line.
        (
            "\n  Traceback (most recent call last):\n  File x\n",
            1,
            "CredentialRejected: az failed (exit status 1): Traceback (most recent call last):",
        ),
    ];
    for (stderr, code, want) in cases {
        assert_eq!(
            outcome(failure(stderr, exit(code), &tenant, ARM)),
            want,
            "{stderr}"
        );
    }

    // A claims challenge in stderr: the hint carries it, and `aad.claims` the decoded JSON (for WWW-Authenticate).
    let e = failed(failure(&mfa_with_claims, exit(1), &tenant, ARM), SOURCE);
    assert_eq!(e.kind, InteractionRequired);
    assert_eq!(
        e.message,
        format!(
            "AADSTS50076: Due to a configuration change made by your administrator, you must use multi-factor authentication. (sign in again: run `az login --tenant t1 --scope {ARM} --claims-challenge {claims_b64}`)"
        )
    );
    let aad = e.aad.unwrap();
    assert_eq!(aad.error_codes, vec![50076]);
    assert_eq!(aad.claims.as_deref(), Some(claims_json));

    // CA with a claims challenge gets the same hint.
    let ca = mfa_with_claims.replace("AADSTS50076", "AADSTS53003");
    let e = failed(failure(&ca, exit(1), &none, ARM), SOURCE);
    assert_eq!(e.kind, ConditionalAccessBlocked);
    assert!(e.message.ends_with(&format!(
        "(satisfy the policy: run `az login --scope {ARM} --claims-challenge {claims_b64}`)"
    )));

    // Killed by a signal: the service may answer next time.
    let killed = outcome(failure("", ExitStatus::from_raw(9), &none, ARM));
    let want = "TokenServiceUnavailable: az failed (killed by a signal) without a message";
    assert_eq!(killed, want);
}

#[test]
fn stderr_never_leaks_token_like_text() {
    let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwcyJ9.c2lnbmF0dXJl";
    let refresh = "0.AXoAbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEfGhIjKl";
    let stderr = format!("ERROR: unexpected response {jwt} and '{refresh}'");
    let e = failed(failure(&stderr, exit(1), &spec(None, None), ARM), SOURCE);
    assert_eq!(
        e.message,
        "az failed (exit status 1): unexpected response [redacted] and [redacted]"
    );
    // Ids, URLs and paths stay readable.
    let line = clean_line(
        "ERROR: Trace ID: 2f8ccb7a-459e-44fb-b615-232475945800 https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
    );
    assert!(line.contains("2f8ccb7a-459e-44fb-b615-232475945800"));
    assert!(line.contains("https://login.microsoftonline.com/organizations/oauth2/v2.0/token"));
    // Bounded, control characters dropped.
    let long = clean_line(&format!("{}\u{1b}[31m", "word ".repeat(500)));
    assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
    assert!(!long.contains('\u{1b}'));
}

#[test]
fn aadsts_parsing() {
    assert_eq!(
        aadsts_codes("AADSTS50076 x AADSTS53003: y AADSTS50076"),
        vec![50076, 53003]
    );
    assert_eq!(aadsts_codes("AADSTS: nothing AADSTSx"), Vec::<i64>::new());
    assert_eq!(
        labelled("Trace ID: abc-1 Correlation", "Trace ID:").as_deref(),
        Some("abc-1")
    );
    assert_eq!(
        labelled_timestamp("Timestamp: 2026-02-17 18:39:09Z\n").as_deref(),
        Some("2026-02-17 18:39:09Z")
    );
    for (stderr, challenge) in [
        ("az login --claims-challenge 'e30='", Some("e30=")),
        ("az login --claims-challenge \"a;b\"", None),
        ("az login --claims-challenge", None),
    ] {
        assert_eq!(claims_challenge(stderr).as_deref(), challenge, "{stderr}");
    }
    assert_eq!(decode_claims_challenge("e30").as_deref(), Ok("{}"));
    assert!(decode_claims_challenge("bm90IGpzb24=").is_err(), "not JSON");
}

#[test]
fn scope_rejection_is_recognised() {
    assert!(rejects_scope(
        "usage: az [-h] ...\naz: error: unrecognized arguments: --scope https://management.azure.com/.default\n"
    ));
    assert!(!rejects_scope(
        "az: error: unrecognized arguments: --tenant t"
    ));
    assert!(!rejects_scope(
        "ERROR: AADSTS70011: The provided value for the input parameter 'scope' is not valid."
    ));
}

// --- arguments ---

#[test]
fn argument_validation() {
    for (scope, ok) in [
        (ARM, true),
        ("api://11111111-2222-3333-4444-555555555555/.default", true),
        ("https://ml.azure.com/user_impersonation", true),
        ("", false),
        ("-h", false),
        ("--debug", false),
        ("https://x/.default --debug", false),
        ("a;b", false),
        ("a\"b", false),
        ("a'b", false),
        ("$(x)", false),
        ("a\nb", false),
        ("https://x/?a=b", false),
        ("é", false),
    ] {
        let checked = command_line_scope(SOURCE, "az", scope);
        assert_eq!(checked.is_ok(), ok, "{scope:?}");
    }
    for (tenant, subscription, ok) in [
        (Some("contoso.onmicrosoft.com"), None, true),
        (None, Some("My Sub_1.0-x"), true),
        (None, None, true),
        (Some("a b"), None, false),
        (Some("-t"), None, false),
        (Some(""), None, false),
        (Some("t;rm"), None, false),
        (None, Some("a;rm -rf"), false),
        (None, Some("-x"), false),
        (None, Some("   "), false),
        (None, Some("a\"b"), false),
    ] {
        let checked = spec(tenant, subscription).checked();
        assert_eq!(checked.is_ok(), ok, "{tenant:?} {subscription:?}");
    }
    let both = spec(Some("t"), Some("s")).checked().unwrap_err();
    assert!(both.contains("not both"), "{both}");
}

#[tokio::test]
async fn invalid_arguments_and_claims_never_run_az() {
    // The program does not exist: reaching it would be "unavailable", not these failures.
    let error = async |options, request: &TokenRequest| {
        let cred = AzureCliCredential::new(options, &MapEnv::new()).with_program("/nonexistent/az");
        cred.get_token(request).await.unwrap_err()
    };
    let e = outcome(error(spec(None, None), &TokenRequest::new("--debug")).await);
    assert_starts(&e, "CredentialRejected: invalid scope");
    let e = outcome(error(spec(None, Some("a;b")), &TokenRequest::new(ARM)).await);
    assert_starts(&e, "CredentialRejected: invalid subscription");

    let claims = r#"{"access_token":{"acrs":{"essential":true,"value":"c25"}}}"#;
    let request = TokenRequest {
        scope: ARM.into(),
        claims: Some(claims.into()),
        client_capabilities: true,
    };
    let e = failed(error(spec(Some("t1"), None), &request).await, SOURCE);
    assert_eq!(e.kind, TokenErrorKind::InteractionRequired);
    let b64 = base64::engine::general_purpose::STANDARD.encode(claims);
    let command = format!("`az login --tenant t1 --scope {ARM} --claims-challenge {b64}`");
    assert!(e.message.contains(&command), "{}", e.message);
    assert_eq!(e.aad.unwrap().claims.as_deref(), Some(claims));

    // And with valid arguments, a missing program is "unavailable".
    let reason = unavailable(
        error(spec(None, None), &TokenRequest::new(ARM)).await,
        SOURCE,
    );
    assert_starts(&reason, "Azure CLI not found on PATH");
}

#[tokio::test]
async fn az_is_searched_on_the_env_path_only() {
    let cred = |env: MapEnv| AzureCliCredential::new(spec(None, None), &env);
    let reason = unavailable(cred(MapEnv::new()).tool.locate().await.unwrap_err(), SOURCE);
    assert_eq!(reason, "Azure CLI not found on PATH (PATH is not set)");
    let reason = unavailable(
        cred(MapEnv::new().with("PATH", "relative/dir:/nonexistent"))
            .tool
            .locate()
            .await
            .unwrap_err(),
        SOURCE,
    );
    assert!(reason.starts_with("Azure CLI not found on PATH"));
    assert_eq!(cred(MapEnv::new()).kind(), "azure_cli");
}
