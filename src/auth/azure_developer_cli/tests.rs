use super::*;
use crate::auth::test_support::{
    self, assert_ends, assert_has, assert_starts, fixture_json_objects, tool_error,
};
use crate::auth::{TokenErrorKind, TokenRequest};

const ARM: &str = "https://management.azure.com/.default";

/// How a run of azd for [`ARM`] that exited with `code` is reported.
fn failure(stderr: &str, code: i32) -> CredentialError {
    Azd::failure(&test_support::output(code, b"", stderr), ARM, None)
}

#[test]
fn the_recorded_success_output_parses_as_utc() {
    let lines = fixture_json_objects("azd_auth_token_outputs.txt");
    let (token, at) = parse_output(lines[0].as_bytes()).unwrap();
    assert_eq!(token.expose(), "***");
    assert_eq!(at, test_support::utc(2038, 1, 18, 0, 0, 0));
    assert_eq!(parse_output(b"{}").err(), Some("no token"));
    assert_eq!(
        parse_output(br#"{"token":"t"}"#).err(),
        Some("no expiresOn")
    );
    assert_eq!(
        parse_output(br#"{"token":"t","expiresOn":"2038-01-18 00:00:00"}"#).err(),
        Some("expiresOn is not an RFC 3339 time")
    );
}

#[test]
fn the_arguments_are_an_argument_vector() {
    let token = [
        "auth",
        "token",
        "--output",
        "json",
        "--no-prompt",
        "--scope",
        ARM,
    ];
    assert_eq!(Azd::args(ARM, None), token);
}

#[test]
fn every_recorded_stderr_form_is_classified() {
    let lines = fixture_json_objects("azd_auth_token_outputs.txt");
    // Legacy generic failure: rejected with the message.
    let e = test_support::failed(failure(&lines[2], 1), SOURCE);
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    assert_eq!(
        e.message,
        "azd failed (exit status 1): fetching token: some error occurred"
    );
    // Two-line MFA error: InteractionRequired by its AADSTS code, naming azd auth login --scope.
    let stderr = format!("{}\n{}\n", lines[3], lines[4]);
    let e = test_support::failed(failure(&stderr, 1), SOURCE);
    assert_eq!(e.kind, TokenErrorKind::InteractionRequired);
    assert_starts(&e.message, "fetching token: AADSTS50079:");
    let sign_in = format!("(sign in again: run `azd auth login --scope {ARM}`)");
    assert_ends(&e.message, &sign_in);
    assert_eq!(e.aad.unwrap().error_codes, vec![50079]);
    // v1.24+ structured form.
    let e = failure(
        r#"{"error":"not logged in, run `azd auth login` to login","suggestion":"run azd auth login"}"#,
        1,
    );
    assert!(matches!(e, CredentialError::Unavailable(_)));
    // Interpreter missing in a wrapper: not installed.
    let e = failure("/usr/bin/env: 'node': No such file or directory", 127);
    let reason = test_support::unavailable(e, SOURCE);
    assert_starts(&reason, "Azure Developer CLI not found on PATH");
}

#[tokio::test]
async fn claims_bad_settings_and_bad_scopes_are_refused_before_anything_runs() {
    // Claims: refused with the command that satisfies them.
    let claims = r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#;
    let request = TokenRequest::new(ARM).with_claims(Some(claims.into()));
    let e = test_support::failed(tool_error::<Azd>(Some("t1"), &request).await, SOURCE);
    assert_eq!(e.kind, TokenErrorKind::InteractionRequired);
    let login = format!("run `azd auth login --scope {ARM} --tenant-id t1`");
    assert_has(&e.message, &login);
    assert!(e.aad.unwrap().claims.is_some());
    let error = async |tenant, scope| tool_error::<Azd>(tenant, &TokenRequest::new(scope)).await;
    let e = test_support::failed(error(Some("-evil"), ARM).await, SOURCE);
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    let e = test_support::failed(error(None, "--scope x").await, SOURCE);
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    // No PATH: unavailable, not installed.
    let e = error(None, ARM).await;
    assert!(test_support::unavailable(e, SOURCE).starts_with("Azure Developer CLI not found"));
}
