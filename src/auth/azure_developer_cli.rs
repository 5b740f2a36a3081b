//! The Azure Developer CLI's signed-in account: `azd auth token --output json --no-prompt --scope <scope>
//! [--tenant-id T]`, run as `process` runs every tool, with `NO_COLOR=true`. It prints
//! `{"token":"…","expiresOn":"2038-01-18T00:00:00Z"}` (RFC 3339, read as UTC).
//!
//! Failures: azd writes them to stderr as JSON lines whose shape changed between versions
//! (`{"error","message","suggestion"}` from 1.24; `{"type":"consoleMessage","data":{"message"}}` before), or as
//! plain text. Their messages are read out, then:
//! - `azd` missing, or "not logged in, run `azd auth login`" (no AADSTS code) → unavailable, naming the command;
//! - AADSTS codes → classified like an Entra ID error; a person-must-act failure names `azd auth login --scope …`;
//! - anything else → `CredentialRejected` with the first message line (`TokenServiceUnavailable` for network
//!   failures).
//!
//! A claims challenge is not sent to azd: the credential answers `InteractionRequired` naming
//! `azd auth login --scope …`, which signs in again and so satisfies the policy. stdout is never echoed.

use serde::Deserialize;
use serde_json::Value;

use super::developer_tool::{
    DeveloperTool, DeveloperToolCredential, DeveloperToolCredentialOptions, aad_failure,
    claims_unsupported, clean_line, exit_failure, not_logged_in,
};
use super::lenient_json::{self, WireError};
use super::process::{Output, Tool};
use super::{CredentialError, Secret, words};

const SOURCE: &str = "azure_developer_cli";

/// The `azure_developer_cli` credential.
pub type AzureDeveloperCliCredential = DeveloperToolCredential<Azd>;

/// Settings of an [`AzureDeveloperCliCredential`].
pub type AzureDeveloperCliCredentialOptions = DeveloperToolCredentialOptions;

/// What is azd's own: its arguments, its JSON output and its error texts.
#[derive(Debug)]
pub struct Azd;

/// What `azd auth token --output json` prints. No `Debug`: it holds the token.
#[derive(Deserialize)]
struct AzdToken {
    #[serde(default, deserialize_with = "lenient_json::text")]
    token: Option<String>,
    #[serde(default, rename = "expiresOn", deserialize_with = "lenient_json::text")]
    expires_on: Option<String>,
}

// === impl Azd ===

impl DeveloperTool for Azd {
    const KIND: &'static str = SOURCE;
    const TOOL: Tool = Tool::new(
        SOURCE,
        "azd",
        "Azure Developer CLI",
        &[("NO_COLOR", "true")],
    );
    const ARGUMENTS_OF: &'static str = "azd";
    const COMMAND: &'static str = "azd";

    /// `auth token --output json --no-prompt --scope S [--tenant-id T]`.
    fn args(scope: &str, tenant: Option<&str>) -> Vec<String> {
        let flags = [("--scope", Some(scope)), ("--tenant-id", tenant)];
        words(
            &["auth", "token", "--output", "json", "--no-prompt"],
            &flags,
        )
    }

    fn claims_unsupported(scope: &str, tenant: Option<&str>, claims: &str) -> CredentialError {
        let command = login_command(Some(scope), tenant);
        claims_unsupported(SOURCE, "the Azure Developer CLI", &command, "", claims)
    }

    fn parse_output(stdout: &[u8]) -> Option<Result<(Secret, i64), &'static str>> {
        Some(parse_output(stdout))
    }

    /// See the module docs.
    fn failure(output: &Output, scope: &str, tenant: Option<&str>) -> CredentialError {
        let text = messages(&output.stderr);
        let sign_in = login_command(Some(scope), tenant);
        if let Some(e) = aad_failure(SOURCE, &text, &sign_in, None, None) {
            return CredentialError::Failed(e);
        }
        let lower = text.to_ascii_lowercase();
        if lower.contains("not logged in") || lower.contains("azd auth login") {
            return not_logged_in(SOURCE, &login_command(None, tenant));
        }
        exit_failure(&Self::TOOL, Self::COMMAND, output.status, &text)
    }
}

/// `azd auth login [--scope S] [--tenant-id T]`, the command that lets azd serve again.
fn login_command(scope: Option<&str>, tenant: Option<&str>) -> String {
    let flags = [("--scope", scope), ("--tenant-id", tenant)];
    words(&["azd", "auth", "login"], &flags).join(" ")
}

/// Reads `azd auth token --output json`: the token and its expiry in Unix seconds (`expiresOn`, RFC 3339).
/// The reasons never quote the output (it holds the token).
fn parse_output(stdout: &[u8]) -> Result<(Secret, i64), &'static str> {
    let output: AzdToken = lenient_json::from_object(stdout).map_err(WireError::reason)?;
    let token = match output.token {
        Some(t) if !t.trim().is_empty() => Secret::new(t.trim()),
        _ => return Err("no token"),
    };
    let expires_on = output.expires_on.ok_or("no expiresOn")?;
    let at: jiff::Timestamp = expires_on
        .trim()
        .parse()
        .map_err(|_| "expiresOn is not an RFC 3339 time")?;
    Ok((token, at.as_second()))
}

/// The messages of azd's stderr, one per line: the `error` (else `message`) and `suggestion` of JSON lines, the
/// `data.message` of console-message lines, other lines as they are; `ERROR:` labels and blank lines dropped.
fn messages(stderr: &str) -> String {
    let mut out = Vec::new();
    for line in stderr.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parsed = line
            .starts_with('{')
            .then(|| serde_json::from_str::<Value>(line).ok())
            .flatten();
        let Some(json) = parsed else {
            out.push(line.to_owned());
            continue;
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let found = [
            text(json.get("error")).or_else(|| text(json.get("message"))),
            text(json.get("suggestion")),
            text(json.pointer("/data/message")),
        ];
        for message in found.into_iter().flatten() {
            out.extend(message.lines().map(clean_line).filter(|l| !l.is_empty()));
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests;
