//! What the developer-tool credentials that print a token (`azure_developer_cli`, `azure_powershell`) share: how
//! an Entra ID error in the tool's own output is classified, how a claims challenge is refused with the command
//! that satisfies it, and how a printed token becomes an [`AccessToken`]. Running the tool is `process`'s job;
//! the Azure CLI has its own, older variant of these rules (`azure_cli`), whose text helpers are reused here.

use base64::Engine;

use super::azure_cli::{
    aadsts_codes, clean_line, is_network_failure, is_valid_scope, labelled, labelled_timestamp,
};
use super::{AadError, AccessToken, CredentialError, Secret, TokenError, TokenErrorKind, expiry};

/// An Entra ID error a tool printed (AADSTS codes in `text`), classified by code like a token-endpoint error. A
/// person-must-act failure names `login` (the command that signs the tool in again). `None` without codes.
pub(super) fn aad_failure(source: &str, text: &str, login: &str) -> Option<TokenError> {
    let codes = aadsts_codes(text);
    let first = codes.first()?;
    let line = text
        .lines()
        .find(|l| aadsts_codes(l).contains(first))
        .map(clean_line)
        .unwrap_or_default();
    let aad = AadError {
        error_description: Some(line.clone()),
        error_codes: codes,
        trace_id: labelled(text, "Trace ID:"),
        correlation_id: labelled(text, "Correlation ID:"),
        timestamp: labelled_timestamp(text),
        ..AadError::default()
    };
    let kind = aad.classify(400);
    let message = match kind {
        TokenErrorKind::InteractionRequired => format!("{line} (sign in again: run `{login}`)"),
        _ => line,
    };
    let mut e = TokenError::new(kind, source, message);
    e.aad = Some(Box::new(aad));
    Some(e)
}

/// A tool cannot request a token with claims: `InteractionRequired` naming `command` (which signs in again with
/// the challenge; `note` follows it, e.g. the version needed), carrying the claims so that the caller's 401 has
/// them.
pub(super) fn claims_unsupported(
    source: &str,
    display: &str,
    command: &str,
    note: &str,
    claims: &str,
) -> CredentialError {
    let mut e = TokenError::new(
        TokenErrorKind::InteractionRequired,
        source,
        format!(
            "{display} cannot answer a claims challenge itself: run `{command}`{note}, then retry"
        ),
    );
    e.aad = Some(Box::new(AadError {
        claims: Some(claims.to_owned()),
        ..AadError::default()
    }));
    CredentialError::Failed(e)
}

/// `claims` as the base64 a `--claims-challenge`-style argument takes.
pub(super) fn base64_claims(claims: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(claims.as_bytes())
}

/// The token a tool printed, expiring at `expires_on` (Unix seconds). An expiry already past is refused (the
/// clock or the tool is wrong).
pub(super) fn access_token(
    source: &'static str,
    tool: &str,
    token: Secret,
    expires_on: i64,
) -> Result<AccessToken, CredentialError> {
    let expires_in = expiry::until(u64::try_from(expires_on).unwrap_or(0));
    if expires_in.is_zero() {
        return Err(CredentialError::service_unavailable(
            source,
            format!("{tool} returned a token that has already expired (check the clock)"),
        ));
    }
    tracing::debug!(
        source,
        expires_in = expires_in.as_secs(),
        "the tool returned a token"
    );
    Ok(AccessToken {
        token,
        expires_in,
        refresh_in: None,
        source: source.into(),
    })
}

/// The error for a tool run that ended without a token: `what` (`az`, `azd`, `Get-AzAccessToken`) failed, named
/// with its exit status and `line`, the summary of its output. A tool killed by a signal, or a network failure in
/// the line, is a transient outage; anything else rejects the credential.
pub(super) fn exit_failure(
    source: &str,
    what: &str,
    status: std::process::ExitStatus,
    line: &str,
) -> CredentialError {
    let how = match status.code() {
        Some(0) => "no token in its output".to_owned(),
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    };
    let message = if line.is_empty() {
        format!("{what} failed ({how}) without a message")
    } else {
        format!("{what} failed ({how}): {line}")
    };
    let kind = if status.code().is_none() || is_network_failure(line) {
        TokenErrorKind::TokenServiceUnavailable
    } else {
        TokenErrorKind::CredentialRejected
    };
    CredentialError::Failed(TokenError::new(kind, source, message))
}

/// `scope`, if it can go on the tool's command line as one argument; otherwise the credential is rejected, naming
/// `tool` and the characters allowed.
pub(super) fn command_line_scope<'a>(
    source: &str,
    tool: &str,
    scope: &'a str,
) -> Result<&'a str, CredentialError> {
    if is_valid_scope(scope) {
        return Ok(scope);
    }
    Err(CredentialError::rejected(
        source,
        format!(
            "invalid scope {scope:?} for {tool}: use letters, digits, `_`, `.`, `:`, `/` and `-`"
        ),
    ))
}
