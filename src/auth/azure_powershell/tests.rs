use super::*;
use crate::auth::test_support::{self, assert_has, tool_error};
use crate::auth::{TokenErrorKind, TokenRequest};

const ML: &str = "https://ml.azure.com/.default";

/// How a run of `pwsh` that exited with `code` is reported.
fn failure(stdout: &[u8], stderr: &str, code: i32) -> CredentialError {
    AzPowerShell::failure(&test_support::output(code, stdout, stderr), ML, None)
}

/// The fixture's sections whose `## ` heading contains `title`, comments and blank lines dropped.
fn section(title: &str) -> String {
    let name = "azure_powershell_credential_invocation_and_outputs.txt";
    let sections = test_support::fixture_sections(name).into_iter();
    sections
        .filter(|s| s.title.contains(title))
        .map(|s| s.body)
        .collect()
}

#[test]
fn the_encoded_command_is_azure_identitys_script() {
    let args = AzPowerShell::args(ML, None);
    assert_eq!(
        args[..3],
        ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&args[3])
        .unwrap();
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let decoded = String::from_utf16(&units).unwrap();
    let recorded = section("script (decoded");
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(lines(&decoded), lines(&recorded));
    let with_tenant = AzPowerShell::args(ML, Some("contoso"));
    assert_ne!(with_tenant[3], args[3]);
}

#[test]
fn the_azsdk_word_is_found_among_other_output() {
    let stdout = section("stdout parsing");
    let (token, at) = parse_output(stdout.as_bytes()).unwrap().unwrap();
    assert_eq!(token.expose(), "access");
    assert_eq!(at, 1_617_923_581);
    assert!(parse_output(b"MOTD only").is_none());
    assert_eq!(
        parse_output(b"\nazsdk%tok\n").unwrap().err(),
        Some("the azsdk% line has no expiry")
    );
    assert_eq!(
        parse_output(b"azsdk%tok%soon").unwrap().err(),
        Some("the expiry is not a number of seconds")
    );
}

#[test]
fn every_recorded_failure_is_classified() {
    let unavailable = |stdout: &[u8], stderr: &str, code| {
        test_support::unavailable(failure(stdout, stderr, code), SOURCE)
    };
    let failed = |stderr: &str| test_support::failed(failure(b"", stderr, 1), SOURCE);
    assert!(unavailable(NO_MODULE.as_bytes(), "", 0).contains("Az.Accounts"));
    let reason = unavailable(b"", "/bin/sh: 0: Can't open pwsh", 127);
    assert!(reason.starts_with("PowerShell not found on PATH"));
    let reason = unavailable(
        b"",
        "'pwsh' is not recognized as an internal or external command,\r\noperable program or batch file.",
        1,
    );
    assert!(reason.starts_with("PowerShell not found"));
    let stderr = section("not logged in — Windows PowerShell 5.1");
    assert!(stderr.contains("CLIXML"));
    let reason = unavailable(b"", &stderr, 1);
    assert_eq!(reason, "not logged in: run `Connect-AzAccount`");
    let reason = unavailable(
        b"",
        "#< CLIXML\n<Objs Version=\"1.1.0.1\"><S S=\"Error\">Import-Module : AuthorizationManager check failed._x000D__x000A_</S></Objs>",
        1,
    );
    assert!(reason.contains("execution policy"));
    let e = failed(
        "#< CLIXML\n<Objs><S S=\"Error\">Get-AzAccessToken : AADSTS50076: Due to a configuration change made by your administrator, you must use multi-factor authentication._x000D__x000A_</S></Objs>",
    );
    assert_eq!(e.kind, TokenErrorKind::InteractionRequired);
    let sign_in = "(sign in again: run `Connect-AzAccount`)";
    assert!(e.message.ends_with(sign_in), "{}", e.message);
    let e = failed("something odd");
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    let odd = "Get-AzAccessToken failed (exit status 1): something odd";
    assert_eq!(e.message, odd);
}

#[test]
fn harmless_progress_records_are_not_errors() {
    let stderr = section("HARMLESS");
    assert_eq!(error_text(&stderr), "");
    assert_eq!(
        decode_clixml("_x001B_[91mGet-AzAccessToken: _x000D__x000A_"),
        "Get-AzAccessToken: \r\n"
    );
}

#[tokio::test]
async fn claims_are_refused_with_connect_azaccount() {
    let claims = r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#;
    let request = TokenRequest::new(ML).with_claims(Some(claims.into()));
    let e = test_support::failed(
        tool_error::<AzPowerShell>(Some("t1"), &request).await,
        SOURCE,
    );
    assert_eq!(e.kind, TokenErrorKind::InteractionRequired);
    let b64 = base64::engine::general_purpose::STANDARD.encode(claims);
    let login = format!(
        "run `Connect-AzAccount -ClaimsChallenge {b64} -Tenant t1` (Az.Accounts 5.2.0 or newer), then retry"
    );
    assert_has(&e.message, &login);
}
