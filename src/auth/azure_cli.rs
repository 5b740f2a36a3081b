//! The Azure CLI's signed-in account: `az account get-access-token --output json --scope <scope> [--tenant T]
//! [--subscription S]`, run as `process` runs every tool, with `AZURE_CORE_NO_COLOR=true`. Every argument is
//! checked before it can reach the process. CLIs older than `--scope` (“unrecognized arguments: --scope”) are asked
//! once more with `--resource`, within the same timeout.
//!
//! - exit 0 → the token; the expiry is `expires_on` (Unix seconds, az ≥ 2.54.0), else `expiresOn`, a naive local
//!   time in the local time zone ([`expiry::local_zone`]). Unusable output → `TokenServiceUnavailable`.
//! - `az` missing, or “not logged in” (stderr names `az login`, no AADSTS code) → unavailable (a chain moves on).
//! - AADSTS codes in stderr → classified like an Entra ID error ([`AadError::classify`]), the AADSTS line as the
//!   message; a person-must-act failure names the `az login` that fixes it, with the CLI's `--claims-challenge`.
//! - anything else → `CredentialRejected` with the summary line of stderr (asking again will not change the CLI's
//!   mind), or `TokenServiceUnavailable` when that line says the network failed.
//! - a claims challenge from an upstream → `InteractionRequired`: the CLI cannot request claims, the user must run
//!   `az login --claims-challenge …`.
//!
//! stdout is never echoed: it holds the token. stderr lines are scrubbed of anything that looks like a token.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::claims::decode_claims_challenge;
use super::developer_tool::{
    aad_failure, access_token, base64_claims, check_arg, check_tenant_arg, claims_unsupported,
    command_line_scope, deadline, exit_failure, not_logged_in,
};
use super::lenient_json::{self, WireError};
use super::process::{self, Tool};
use super::{
    AccessToken, Credential, CredentialError, Secret, TokenRequest, expiry, scope_to_resource,
    words,
};
use crate::env::Env;
use crate::file_read;

const SOURCE: &str = "azure_cli";

/// `az`, as `process` runs it: searched on the `PATH` unless an explicit program is given.
const AZ: Tool = Tool::new(
    SOURCE,
    "az",
    "Azure CLI",
    &[("AZURE_CORE_NO_COLOR", "true")],
);

/// The `azure_cli` credential.
#[derive(Debug)]
pub struct AzureCliCredential {
    /// The options, checked, or why their `--tenant` / `--subscription` are unusable.
    settings: Result<AzureCliCredentialOptions, String>,
    /// `az`, with `PATH` from the [`Env`].
    tool: Tool,
    /// `TZ` and `TZDIR` from the [`Env`], for CLIs that print only a local expiry time.
    tz: Option<String>,
    tzdir: Option<String>,
}

/// Settings of an [`AzureCliCredential`] (`azure_cli: { tenant_id, subscription, timeout }` in configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureCliCredentialOptions {
    /// `--tenant`.
    pub tenant_id: Option<String>,
    /// `--subscription`.
    pub subscription: Option<String>,
    /// Time allowed for `az` to answer.
    pub timeout: Duration,
}

/// What `az account get-access-token --output json` prints (the fields read). No `Debug`: it holds the token.
#[derive(Deserialize)]
struct CliToken {
    #[serde(
        default,
        rename = "accessToken",
        deserialize_with = "lenient_json::text"
    )]
    access_token: Option<String>,
    /// Unix seconds (az ≥ 2.54.0).
    #[serde(default, deserialize_with = "lenient_json::seconds")]
    expires_on: Option<u64>,
    /// A naive local date-time (every version).
    #[serde(default, rename = "expiresOn", deserialize_with = "lenient_json::text")]
    expires_on_local: Option<String>,
}

// === impl AzureCliCredential ===

impl AzureCliCredential {
    /// The most stdout accepted unless [`Self::with_output_limit`] says otherwise: a token response is a few KiB.
    pub const DEFAULT_OUTPUT_LIMIT: usize = process::OUTPUT_LIMIT;

    /// `--tenant` and `--subscription` from `options` (checked here; a bad one fails every request with
    /// `CredentialRejected`), the timeout from `options`, and `PATH`, `TZ` and `TZDIR` from `env`.
    pub fn new(options: AzureCliCredentialOptions, env: &dyn Env) -> Self {
        Self {
            settings: options.checked(),
            tool: Tool {
                search_path: env.var("PATH"),
                ..AZ
            },
            tz: env.var("TZ"),
            tzdir: env.non_empty("TZDIR"),
        }
    }

    /// Runs `program` instead of searching `az` on the `PATH` (tests, unusual installs).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.tool.program = Some(program.into());
        self
    }

    /// Accepts at most `bytes` of stdout instead of [`Self::DEFAULT_OUTPUT_LIMIT`].
    pub fn with_output_limit(mut self, bytes: usize) -> Self {
        self.tool.output_limit = bytes;
        self
    }

    /// The token and its lifetime from `az`'s stdout. Off the async workers: an old `az` reports a local time, and
    /// reading the time zone file is file I/O.
    async fn read_token(&self, stdout: Zeroizing<Vec<u8>>) -> Result<AccessToken, CredentialError> {
        let (tz, tzdir) = (self.tz.clone(), self.tzdir.clone());
        let parsed = file_read::off_thread_async(
            Path::new("the time zone file"),
            file_read::READ_TIMEOUT,
            move || {
                parse_output(&stdout, || {
                    expiry::local_zone(tz.as_deref(), tzdir.as_deref())
                })
            },
        )
        .await
        .map_err(|e| {
            CredentialError::service_unavailable(SOURCE, format!("az output: {}", e.reason()))
        })?;
        access_token(SOURCE, "az", "the clock and time zone", parsed)
    }
}

impl Credential for AzureCliCredential {
    const KIND: &'static str = SOURCE;

    async fn token(&self, request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        let settings = self
            .settings
            .as_ref()
            .map_err(|why| CredentialError::rejected(SOURCE, why.clone()))?;
        let scope = command_line_scope(SOURCE, "az", &request.scope)?;
        if let Some(claims) = &request.claims {
            let command = settings.login_command(Some(scope), Some(&base64_claims(claims)));
            let (cli, note) = ("the Azure CLI", " (Azure CLI 2.76.0 or newer)");
            return Err(claims_unsupported(SOURCE, cli, &command, note, claims));
        }
        let program = self.tool.locate().await?;
        // One deadline for both attempts (`--scope`, then `--resource`).
        let deadline = deadline(settings.timeout);
        let run = async |audience| {
            let args = settings.args(audience);
            self.tool
                .run(&program, &args, deadline, settings.timeout)
                .await
        };
        let mut output = run(("--scope", scope)).await?;
        if !output.status.success() && rejects_scope(&output.stderr) {
            tracing::debug!(
                source = SOURCE,
                "az does not know --scope; asking again with --resource"
            );
            output = run(("--resource", scope_to_resource(scope))).await?;
        }
        if !output.status.success() {
            return Err(failure(&output.stderr, output.status, settings, scope));
        }
        self.read_token(output.stdout).await
    }
}

// === impl AzureCliCredentialOptions ===

impl Default for AzureCliCredentialOptions {
    /// No `--tenant` or `--subscription` (the CLI's current account), [`Self::DEFAULT_TIMEOUT`].
    fn default() -> Self {
        Self {
            tenant_id: None,
            subscription: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

impl AzureCliCredentialOptions {
    /// How long `az` may take unless configured otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Checks the configured arguments. az refuses `--tenant` together with `--subscription` ("Please specify only
    /// one of subscription and tenant, not both"), so that combination is refused here, with the reason.
    fn checked(self) -> Result<Self, String> {
        check_tenant_arg(self.tenant_id.as_deref(), "az")?;
        if let Some(subscription) = &self.subscription {
            let listed = "`_`, `.`, `-` and spaces";
            check_arg("subscription", subscription, "az", b"_. -", listed)?;
        }
        if self.tenant_id.is_some() && self.subscription.is_some() {
            return Err("azure_cli: give tenant_id or subscription, not both (az accepts only one; a subscription already selects its tenant)".to_owned());
        }
        Ok(self)
    }

    /// `account get-access-token --output json <audience> [--tenant T] [--subscription S]`, the audience being
    /// `--scope S` (az ≥ 2.26) or `--resource R` (older CLIs).
    fn args(&self, (flag, audience): (&str, &str)) -> Vec<String> {
        let flags = [
            (flag, Some(audience)),
            ("--tenant", self.tenant_id.as_deref()),
            ("--subscription", self.subscription.as_deref()),
        ];
        words(&["account", "get-access-token", "--output", "json"], &flags)
    }

    /// `az login [--tenant T] [--scope S] [--claims-challenge C]`, the command that lets the CLI serve again.
    fn login_command(&self, scope: Option<&str>, claims_challenge: Option<&str>) -> String {
        let flags = [
            ("--tenant", self.tenant_id.as_deref()),
            ("--scope", scope),
            ("--claims-challenge", claims_challenge),
        ];
        words(&["az", "login"], &flags).join(" ")
    }
}

/// True when `az` refused `--scope` (CLIs before 2.26): argparse's "unrecognized arguments: --scope …".
fn rejects_scope(stderr: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.contains("unrecognized arguments") && l.contains("--scope"))
}

/// Reads `az account get-access-token --output json`: the token and its expiry in Unix seconds. `expires_on`
/// (az ≥ 2.54.0) wins; otherwise `expiresOn` (`YYYY-MM-DD HH:MM:SS.ffffff`) is a local time in `zone()`.
/// The reasons never quote the output (it holds the token).
fn parse_output(
    stdout: &[u8],
    zone: impl FnOnce() -> TimeZone,
) -> Result<(Secret, i64), &'static str> {
    let output: CliToken = lenient_json::from_object(stdout).map_err(WireError::reason)?;
    let token = match output.access_token {
        Some(t) if !t.trim().is_empty() => Secret::new(t.trim()),
        _ => return Err("no accessToken"),
    };
    if let Some(epoch) = output.expires_on {
        let epoch = i64::try_from(epoch).map_err(|_| "expires_on is out of range")?;
        return Ok((token, epoch));
    }
    let local = output
        .expires_on_local
        .ok_or("neither expires_on nor expiresOn")?;
    let naive = expiry::naive_datetime(&local).ok_or("expiresOn is not a date and time")?;
    expiry::local_to_unix(&zone(), naive)
        .ok_or("expiresOn is out of range")
        .map(|at| (token, at))
}

/// How a non-zero exit of `az` is reported (see the module docs). A person-must-act failure names the `az login`
/// that fixes it; with the `--claims-challenge` the CLI printed, the challenge is repeated there and its claims
/// decoded into `aad.claims`, and a blocking policy names the same command.
fn failure(
    stderr: &str,
    status: ExitStatus,
    settings: &AzureCliCredentialOptions,
    scope: &str,
) -> CredentialError {
    let challenge = claims_challenge(stderr);
    let challenge = challenge.as_deref();
    let claims = challenge.and_then(|c| decode_claims_challenge(c).ok());
    let sign_in = settings.login_command(challenge.map(|_| scope), challenge);
    let satisfy = challenge.map(|_| sign_in.as_str());
    if let Some(e) = aad_failure(SOURCE, stderr, &sign_in, claims, satisfy) {
        return CredentialError::Failed(e);
    }
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("az login") || lower.contains("not logged in") {
        return not_logged_in(SOURCE, &settings.login_command(None, None));
    }
    exit_failure(&AZ, "az", status, stderr)
}

/// The base64 claims after `--claims-challenge` in the login command the CLI suggests.
fn claims_challenge(stderr: &str) -> Option<String> {
    let at = stderr.find("--claims-challenge")? + "--claims-challenge".len();
    let word = stderr[at..].split_whitespace().next()?;
    let value = word.trim_matches(|c| c == '"' || c == '\'');
    let ok = !value.is_empty()
        && value.len() <= 8 * 1024
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b));
    ok.then(|| value.to_owned())
}

#[cfg(test)]
mod tests;
