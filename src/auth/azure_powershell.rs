//! Azure PowerShell's signed-in account: `Get-AzAccessToken`, run as azure-identity runs it —
//! `pwsh -NoProfile -NonInteractive -EncodedCommand <base64 of the UTF-16LE script>`, an argument vector, no shell.
//!
//! The script imports Az.Accounts ≥ 2.2.0 (printing `NO_AZ_ACCOUNT_MODULE` when it is missing), calls
//! `Get-AzAccessToken -ResourceUrl <scope without /.default> [-TenantId T]` (with `-AsSecureString` for the
//! Az.Accounts versions that need it, converted back) and writes `azsdk%<token>%<expires on, Unix seconds>`. The
//! first whitespace-separated word of stdout starting with `azsdk%` is the answer; anything else on stdout (a
//! profile's banner) is ignored. `pwsh` is run as `process` runs every tool (bounded output, process group killed
//! at the timeout).
//!
//! Failures (stderr is PowerShell's CLIXML; its `<S S="Error">` texts are read out):
//! - `pwsh` missing, or Az.Accounts missing → unavailable; "Run Connect-AzAccount to login" → unavailable, naming
//!   `Connect-AzAccount`; an execution policy that blocks the module ("AuthorizationManager check failed") →
//!   unavailable, saying so;
//! - AADSTS codes → classified like an Entra ID error;
//! - anything else → `CredentialRejected` with the first error line.
//!
//! A claims challenge is not sent to PowerShell: the credential answers `InteractionRequired` naming
//! `Connect-AzAccount -ClaimsChallenge <base64>` (Az.Accounts 5.2.0 or newer).

use base64::Engine;

use super::developer_tool::{
    DeveloperTool, DeveloperToolCredential, DeveloperToolCredentialOptions, aad_failure,
    base64_claims, claims_unsupported, clean_line, exit_failure, not_logged_in,
};
use super::process::{Output, Tool};
use super::{CredentialError, Secret, contains, scope_to_resource, words};

const SOURCE: &str = "azure_powershell";

/// What the script prints when Az.Accounts is missing.
const NO_MODULE: &str = "NO_AZ_ACCOUNT_MODULE";

/// The `azure_powershell` credential.
pub type AzurePowerShellCredential = DeveloperToolCredential<AzPowerShell>;

/// Settings of an [`AzurePowerShellCredential`].
pub type AzurePowerShellCredentialOptions = DeveloperToolCredentialOptions;

/// What is Azure PowerShell's own: its script, its `azsdk%` output and its CLIXML errors.
#[derive(Debug)]
pub struct AzPowerShell;

// === impl AzPowerShell ===

impl DeveloperTool for AzPowerShell {
    const KIND: &'static str = SOURCE;
    const TOOL: Tool = Tool::new(SOURCE, "pwsh", "PowerShell", &[]);
    const ARGUMENTS_OF: &'static str = "Azure PowerShell";
    const COMMAND: &'static str = "Get-AzAccessToken";

    /// `-NoProfile -NonInteractive -EncodedCommand <script>` (scope and tenant are checked: no quote can reach the
    /// script).
    fn args(scope: &str, tenant: Option<&str>) -> Vec<String> {
        let script = script(scope_to_resource(scope), tenant.unwrap_or_default());
        let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(utf16);
        words(
            &["-NoProfile", "-NonInteractive", "-EncodedCommand", &encoded],
            &[],
        )
    }

    fn claims_unsupported(_scope: &str, tenant: Option<&str>, claims: &str) -> CredentialError {
        let command = login_command(Some(&base64_claims(claims)), tenant);
        let note = " (Az.Accounts 5.2.0 or newer)";
        claims_unsupported(SOURCE, "Azure PowerShell", &command, note, claims)
    }

    fn parse_output(stdout: &[u8]) -> Option<Result<(Secret, i64), &'static str>> {
        parse_output(stdout)
    }

    /// See the module docs.
    fn failure(output: &Output, _scope: &str, tenant: Option<&str>) -> CredentialError {
        let status = output.status;
        if status.success() && contains(&output.stdout, NO_MODULE.as_bytes()) {
            return CredentialError::unavailable(
                SOURCE,
                "the Az.Accounts module (2.2.0 or newer) is not installed: run `Install-Module Az.Accounts`",
            );
        }
        let text = error_text(&output.stderr);
        let sign_in = login_command(None, tenant);
        if let Some(e) = aad_failure(SOURCE, &text, &sign_in, None, None) {
            return CredentialError::Failed(e);
        }
        if text.contains("Run Connect-AzAccount to login") {
            return not_logged_in(SOURCE, &sign_in);
        }
        if text.contains("AuthorizationManager check failed") {
            return CredentialError::unavailable(
                SOURCE,
                "the execution policy prevented PowerShell from loading Az.Accounts",
            );
        }
        if text.contains("' is not recognized") {
            return CredentialError::unavailable(SOURCE, "PowerShell not found on PATH");
        }
        exit_failure(&Self::TOOL, Self::COMMAND, status, &text)
    }
}

/// `Connect-AzAccount [-ClaimsChallenge C] [-Tenant T]`, the command that lets PowerShell serve again.
fn login_command(claims_challenge: Option<&str>, tenant: Option<&str>) -> String {
    let flags = [("-ClaimsChallenge", claims_challenge), ("-Tenant", tenant)];
    words(&["Connect-AzAccount"], &flags).join(" ")
}

/// The script azure-identity runs, for `resource` and `tenant` (empty: the current context's).
fn script(resource: &str, tenant: &str) -> String {
    format!(
        r#"$ErrorActionPreference = 'Stop'
[version]$minimumVersion = '2.2.0'

$m = Import-Module Az.Accounts -MinimumVersion $minimumVersion -PassThru -ErrorAction SilentlyContinue

if (! $m) {{
    Write-Output {NO_MODULE}
    exit
}}

$params = @{{ 'ResourceUrl' = '{resource}'; 'WarningAction' = 'Ignore' }}

$tenantId = '{tenant}'
if ($tenantId.Length -gt 0) {{
    $params['TenantId'] = $tenantId
}}

if ($m.Version -ge [version]'2.17.0' -and $m.Version -lt [version]'5.0.0') {{
    $params['AsSecureString'] = $true
}}

$token = Get-AzAccessToken @params
$tokenValue = $token.Token
if ($tokenValue -is [System.Security.SecureString]) {{
    if ($PSVersionTable.PSVersion.Major -lt 7) {{
        $ssPtr = [System.Runtime.InteropServices.Marshal]::SecureStringToBSTR($tokenValue)
        try {{
            $tokenValue = [System.Runtime.InteropServices.Marshal]::PtrToStringBSTR($ssPtr)
        }}
        finally {{
            [System.Runtime.InteropServices.Marshal]::ZeroFreeBSTR($ssPtr)
        }}
    }}
    else {{
        $tokenValue = $tokenValue | ConvertFrom-SecureString -AsPlainText
    }}
}}
Write-Output "`nazsdk%$($tokenValue)%$($token.ExpiresOn.ToUnixTimeSeconds())`n"
"#
    )
}

/// The `azsdk%<token>%<expires_on>` word of stdout: `None` when there is none, an error when it is malformed.
/// Reasons never quote the output.
fn parse_output(stdout: &[u8]) -> Option<Result<(Secret, i64), &'static str>> {
    let text = String::from_utf8_lossy(stdout);
    let word = text.split_whitespace().find(|w| w.starts_with("azsdk%"))?;
    let mut parts = word.splitn(3, '%').skip(1);
    let (Some(token), Some(expires_on)) = (parts.next(), parts.next()) else {
        return Some(Err("the azsdk% line has no expiry"));
    };
    if token.is_empty() {
        return Some(Err("the azsdk% line has no token"));
    }
    let Ok(expires_on) = expires_on.trim().parse::<i64>() else {
        return Some(Err("the expiry is not a number of seconds"));
    };
    Some(Ok((Secret::new(token), expires_on)))
}

/// The error text of PowerShell's stderr: the `<S S="Error">` strings of CLIXML (with `_xHHHH_` escapes decoded
/// and terminal colour sequences removed), or the text itself when it is not CLIXML; cleaned line by line.
fn error_text(stderr: &str) -> String {
    let raw = if stderr.contains("#< CLIXML") || stderr.contains("<Objs ") {
        let errors = stderr.split("<S S=\"Error\">").skip(1);
        errors
            .map(|piece| decode_clixml(piece.split("</S>").next().unwrap_or_default()))
            .collect()
    } else {
        stderr.to_owned()
    };
    raw.lines()
        .map(clean_line)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `_x000D__x000A_` → CR LF, `_x001B_[91m` → (dropped), XML entities → characters.
fn decode_clixml(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find("_x") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let code = after
            .get(..5)
            .filter(|c| c.ends_with('_'))
            .and_then(|c| u32::from_str_radix(&c[..4], 16).ok());
        match code.and_then(char::from_u32) {
            Some('\u{1b}') => {
                // An ANSI sequence: ESC [ parameters letter.
                let seq = &after[5..];
                let end = seq
                    .char_indices()
                    .find(|(i, c)| *i > 0 && c.is_ascii_alphabetic())
                    .map_or(0, |(i, c)| i + c.len_utf8());
                rest = &seq[end..];
            }
            Some(c) => {
                out.push(c);
                rest = &after[5..];
            }
            None => {
                out.push_str("_x");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests;
