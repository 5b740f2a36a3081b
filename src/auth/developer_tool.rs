//! What the developer tools that print a token share: the credential for the tools that take a tenant and a scope
//! ([`DeveloperToolCredential`], parameterised by a [`DeveloperTool`]: azd, Azure PowerShell), and the rules the
//! Azure CLI's own credential follows too: argument checks, AADSTS errors in the tool's output classified like Entra
//! ID's, claims challenges refused with the command that satisfies them, and the one stderr line an error quotes,
//! redacted and bounded. Running the tool is `process`'s job.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use base64::Engine;
use tokio::time::Instant;

use super::process::{Output, Tool};
use super::{
    AadError, AccessToken, Credential, CredentialError, Secret, TokenError, TokenErrorKind,
    TokenRequest, expiry,
};
use crate::env::Env;

/// Longest stderr excerpt put in an error message.
pub(super) const MAX_MESSAGE_CHARS: usize = 500;

/// What one developer tool brings to a [`DeveloperToolCredential`]: its process, argument vector, output format
/// and error texts.
pub trait DeveloperTool: fmt::Debug + Send + Sync {
    /// The credential kind (`TOOL.source`).
    const KIND: &'static str;
    /// The tool, as `process` runs it.
    const TOOL: Tool;
    /// How a bad tenant or scope names the tool (`azd`, `Azure PowerShell`).
    const ARGUMENTS_OF: &'static str;
    /// The command a failed run or unusable output names (`azd`, `Get-AzAccessToken`).
    const COMMAND: &'static str;

    /// The arguments that ask for a token for `scope`, in `tenant` when given (both checked).
    fn args(scope: &str, tenant: Option<&str>) -> Vec<String>;

    /// The refusal of a claims challenge (the tool cannot request claims), naming the command that satisfies it.
    fn claims_unsupported(scope: &str, tenant: Option<&str>, claims: &str) -> CredentialError;

    /// The token and its expiry (Unix seconds) in a successful run's stdout: `None` when there is none, an error
    /// when it is malformed. Reasons never quote the output.
    fn parse_output(stdout: &[u8]) -> Option<Result<(Secret, i64), &'static str>>;

    /// How a run that left no token is reported.
    fn failure(output: &Output, scope: &str, tenant: Option<&str>) -> CredentialError;
}

/// Settings of a developer-tool credential that takes a tenant (`azure_developer_cli: { tenant_id, timeout }`,
/// `azure_powershell: { tenant_id, timeout }` in configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeveloperToolCredentialOptions {
    /// The tenant to ask for (`--tenant-id`, `-TenantId`); the tool's current account's when not given.
    pub tenant_id: Option<String>,
    /// Time allowed for the tool to answer (PowerShell is slow to start).
    pub timeout: Duration,
}

/// A credential that runs `T`'s tool for each token (`azure_developer_cli`, `azure_powershell`).
#[derive(Debug)]
pub struct DeveloperToolCredential<T> {
    /// The checked tenant, or why it is unusable.
    tenant_id: Result<Option<String>, String>,
    tool: Tool,
    timeout: Duration,
    kind: PhantomData<T>,
}

// === impl DeveloperToolCredential ===

impl<T: DeveloperTool> DeveloperToolCredential<T> {
    /// `options` (a bad tenant fails every request with `CredentialRejected`) and `PATH` from `env`.
    pub fn new(options: DeveloperToolCredentialOptions, env: &dyn Env) -> Self {
        let checked = check_tenant_arg(options.tenant_id.as_deref(), T::ARGUMENTS_OF);
        Self {
            tenant_id: checked.map(|()| options.tenant_id),
            tool: Tool {
                search_path: env.var("PATH"),
                ..T::TOOL
            },
            timeout: options.timeout,
            kind: PhantomData,
        }
    }

    /// Runs `program` instead of searching the tool on the `PATH` (tests, unusual installs).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.tool.program = Some(program.into());
        self
    }
}

impl<T: DeveloperTool> Credential for DeveloperToolCredential<T> {
    const KIND: &'static str = T::KIND;

    async fn token(&self, request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        let source = T::TOOL.source;
        let tenant = self
            .tenant_id
            .as_ref()
            .map_err(|why| CredentialError::rejected(source, why.clone()))?
            .as_deref();
        let scope = command_line_scope(source, T::ARGUMENTS_OF, &request.scope)?;
        if let Some(claims) = &request.claims {
            return Err(T::claims_unsupported(scope, tenant, claims));
        }
        let program = self.tool.locate().await?;
        let args = T::args(scope, tenant);
        let output = self
            .tool
            .run(&program, &args, deadline(self.timeout), self.timeout)
            .await?;
        let parsed = output
            .status
            .success()
            .then(|| T::parse_output(&output.stdout))
            .flatten();
        match parsed {
            Some(parsed) => access_token(source, T::COMMAND, "the clock", parsed),
            None => Err(T::failure(&output, scope, tenant)),
        }
    }
}

// === impl DeveloperToolCredentialOptions ===

impl DeveloperToolCredentialOptions {
    /// How long the tool may take unless configured otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for DeveloperToolCredentialOptions {
    /// No tenant (the tool's current account), [`Self::DEFAULT_TIMEOUT`].
    fn default() -> Self {
        Self {
            tenant_id: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// When a run that may take `timeout` must end: `timeout` from now (a year when that overflows).
pub(super) fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400))
}

/// An Entra ID error a tool printed (AADSTS codes in `text`), classified by code like a token-endpoint error,
/// carrying `claims` (a challenge the tool printed). A person-must-act failure names `sign_in` (the command that
/// signs the tool in again); a blocking policy names `satisfy` when there is one. `None` without codes.
pub(super) fn aad_failure(
    source: &str,
    text: &str,
    sign_in: &str,
    claims: Option<String>,
    satisfy: Option<&str>,
) -> Option<TokenError> {
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
        claims,
        ..AadError::default()
    };
    let kind = aad.classify(400);
    let message = match (kind, satisfy) {
        (TokenErrorKind::InteractionRequired, _) => {
            format!("{line} (sign in again: run `{sign_in}`)")
        }
        (TokenErrorKind::ConditionalAccessBlocked, Some(command)) => {
            format!("{line} (satisfy the policy: run `{command}`)")
        }
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
    let message = format!(
        "{display} cannot answer a claims challenge itself: run `{command}`{note}, then retry"
    );
    let mut e = TokenError::new(TokenErrorKind::InteractionRequired, source, message);
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

/// The token `tool` printed, with its expiry in Unix seconds, or why its output is unusable (never quoting it): a
/// transient failure. An expiry already past is refused too: `check` (the clock, or the time zone) or the tool is
/// wrong.
pub(super) fn access_token(
    source: &'static str,
    tool: &str,
    check: &str,
    parsed: Result<(Secret, i64), &str>,
) -> Result<AccessToken, CredentialError> {
    let returned =
        |what| CredentialError::service_unavailable(source, format!("{tool} returned {what}"));
    let (token, expires_on) = parsed.map_err(|why| returned(format!("unusable output: {why}")))?;
    let expires_in = expiry::until(u64::try_from(expires_on).unwrap_or(0));
    if expires_in.is_zero() {
        return Err(returned(format!(
            "a token that has already expired (check {check})"
        )));
    }
    tracing::debug!(
        source,
        expires_in = expires_in.as_secs(),
        "{tool} returned a token"
    );
    Ok(AccessToken {
        token,
        expires_in,
        refresh_in: None,
        source: source.into(),
    })
}

/// The tool is not signed in: unavailable (a chain moves on), naming `login`, the command that signs it in.
pub(super) fn not_logged_in(source: &str, login: &str) -> CredentialError {
    CredentialError::unavailable(source, format!("not logged in: run `{login}`"))
}

/// How a run that left no token is reported when nothing more specific is known: a wrapper that exited 127 (its
/// interpreter is missing) means the tool is not installed; otherwise `what` (`az`, `azd`, `Get-AzAccessToken`)
/// failed, named with its exit status and the summary line of `text`. A tool killed by a signal, or a network
/// failure in the line, is a transient outage; anything else rejects the credential.
pub(super) fn exit_failure(
    tool: &Tool,
    what: &str,
    status: ExitStatus,
    text: &str,
) -> CredentialError {
    let line = summary_line(text);
    let how = match status.code() {
        Some(0) => "no token in its output".to_owned(),
        Some(127) => {
            let why = format!("{} exited with status 127: {line}", tool.name);
            return tool.not_installed(&why);
        }
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    };
    let message = if line.is_empty() {
        format!("{what} failed ({how}) without a message")
    } else {
        format!("{what} failed ({how}): {line}")
    };
    let kind = if status.code().is_none() || is_network_failure(&line) {
        TokenErrorKind::TokenServiceUnavailable
    } else {
        TokenErrorKind::CredentialRejected
    };
    CredentialError::Failed(TokenError::new(kind, tool.source, message))
}

/// `scope`, if it can go on `tool`'s command line (see [`check_arg`]); otherwise the credential is rejected.
pub(super) fn command_line_scope<'a>(
    source: &str,
    tool: &str,
    scope: &'a str,
) -> Result<&'a str, CredentialError> {
    check_arg("scope", scope, tool, b"_.:/-", "`_`, `.`, `:`, `/` and `-`")
        .map(|()| scope)
        .map_err(|why| CredentialError::rejected(source, why))
}

/// A tenant `tool` may be given: letters, digits, `.` and `-` (see [`check_arg`]).
pub(super) fn check_tenant_arg(tenant: Option<&str>, tool: &str) -> Result<(), String> {
    tenant.map_or(Ok(()), |t| {
        check_arg("tenant id", t, tool, b".-", "`.` and `-`")
    })
}

/// Checks `value`, the `what` of a `tool` command line: one argument of letters, digits and `allowed` (`listed` in
/// the refusal), not blank, not starting with `-` (it would read as an option).
pub(super) fn check_arg(
    what: &str,
    value: &str,
    tool: &str,
    allowed: &[u8],
    listed: &str,
) -> Result<(), String> {
    let ok = !value.trim().is_empty()
        && !value.starts_with('-')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || allowed.contains(&b));
    if ok {
        return Ok(());
    }
    Err(format!(
        "invalid {what} {value:?} for {tool}: use letters, digits, {listed}"
    ))
}

/// Every `AADSTS<digits>` code in `text`, first occurrence order, without repeats.
pub(super) fn aadsts_codes(text: &str) -> Vec<i64> {
    let mut codes = Vec::new();
    for (at, _) in text.match_indices("AADSTS") {
        let digits: String = text[at + 6..]
            .chars()
            .take_while(char::is_ascii_digit)
            .take(10)
            .collect();
        if let Ok(code) = digits.parse::<i64>()
            && !codes.contains(&code)
        {
            codes.push(code);
        }
    }
    codes
}

/// The value after `label` (`Trace ID: <uuid>`): one word of id characters.
pub(super) fn labelled(text: &str, label: &str) -> Option<String> {
    let at = text.find(label)? + label.len();
    let value: String = text[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    (!value.is_empty()).then_some(value)
}

/// `Timestamp: 2026-02-17 18:39:09Z` → `2026-02-17 18:39:09Z`.
pub(super) fn labelled_timestamp(text: &str) -> Option<String> {
    let at = text.find("Timestamp:")? + "Timestamp:".len();
    let mut words = text[at..].split_whitespace();
    let date = words.next()?;
    let time = words
        .next()
        .filter(|t| t.starts_with(|c: char| c.is_ascii_digit()));
    let value = time.map_or_else(|| date.to_owned(), |time| format!("{date} {time}"));
    let ok = value.len() <= 40
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " :-.+".contains(c));
    ok.then_some(value)
}

/// The line that best says what went wrong: the CLI's first `ERROR:` line, else argparse's `az: error: …`, else the
/// first non-blank line; cleaned.
fn summary_line(stderr: &str) -> String {
    let lines = || stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .find(|l| l.starts_with("ERROR:"))
        .or_else(|| lines().find(|l| l.contains("error:")))
        .or_else(|| lines().next())
        .map(clean_line)
        .unwrap_or_default()
}

/// One stderr line fit for an error message: the CLI's `ERROR:` label dropped, control characters removed,
/// token-like words redacted, length bounded.
pub(super) fn clean_line(line: &str) -> String {
    let line = line.trim();
    let line = line.strip_prefix("ERROR:").unwrap_or(line).trim();
    let words: Vec<&str> = line
        .split_whitespace()
        .map(|w| if looks_like_token(w) { "[redacted]" } else { w })
        .collect();
    let mut text: String = words
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        text = text.chars().take(MAX_MESSAGE_CHARS).collect();
        text.push('…');
    }
    text
}

/// A JWT (`eyJ…`) or a long run of base64 / base64url characters (refresh tokens, secrets).
fn looks_like_token(word: &str) -> bool {
    let core = word.trim_matches(|c: char| "\"'`,;()[]{}<>".contains(c));
    core.contains("eyJ")
        || (core.len() >= 40
            && core
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+=".contains(&b)))
}

/// Connection-level failures the CLI reports in plain text (no AADSTS code): retrying later may work.
fn is_network_failure(line: &str) -> bool {
    const HINTS: &[&str] = &[
        "connection",
        "timed out",
        "temporary failure in name resolution",
        "name or service not known",
        "network is unreachable",
        "max retries exceeded",
        "service unavailable",
        "too many requests",
        "proxyerror",
    ];
    let lower = line.to_ascii_lowercase();
    HINTS.iter().any(|h| lower.contains(h))
}
