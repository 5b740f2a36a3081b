//! The Azure CLI credential against fake `az` scripts: the exact argv, both output formats, every failure mode,
//! and the process hygiene (timeout kills and reaps, stdin closed, output bounded).

use std::path::Path;
use std::time::Duration;

use aml_auth_proxy::auth::{
    AzureCliCredential, AzureCliCredentialOptions, CredentialError, TokenCredential, TokenError,
    TokenErrorKind, TokenRequest,
};
use aml_auth_proxy::env::MapEnv;
use tokio::time::Instant;

use crate::support::proxy::TempDir;
use crate::support::{ARM_SCOPE, trace_init};

/// A JWT-shaped canary: it must never show up in an error.
const TOKEN: &str =
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhcm0ifQ.Y2FuYXJ5LXNpZ25hdHVyZQ";

/// Records what the fake `az` saw: argv (NUL-separated, one invocation per line), pid, environment, cwd, stdin.
const PROLOGUE: &str = r#"#!/bin/sh
d=$(dirname "$0")
printf '%s\0' "$@" >> "$d/argv"; printf '\n' >> "$d/argv"
echo "$$" > "$d/pid"
printf '%s' "$AZURE_CORE_NO_COLOR" > "$d/no_color"
printf '%s' "$PATH" > "$d/path"
pwd > "$d/cwd"
readlink "/proc/$$/fd/0" > "$d/stdin"
"#;

/// A fake `az` in its own directory, found through `PATH=<dir>:/usr/bin:/bin`.
struct FakeAz {
    dir: TempDir,
}

impl FakeAz {
    /// `az` runs [`PROLOGUE`] then `body`.
    fn new(body: &str) -> Self {
        let dir = TempDir::new();
        dir.file("az", &format!("{PROLOGUE}{body}\n"), 0o755);
        Self { dir }
    }

    fn path_var(&self) -> String {
        format!("{}:/usr/bin:/bin", self.dir.path().display())
    }

    fn env(&self) -> MapEnv {
        MapEnv::new().with("PATH", self.path_var())
    }

    fn credential(&self, spec: &AzureCliCredentialOptions) -> AzureCliCredential {
        AzureCliCredential::new(spec.clone(), &self.env())
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Every invocation's arguments.
    fn invocations(&self) -> Vec<Vec<String>> {
        self.read("argv")
            .lines()
            .map(|line| {
                let mut args: Vec<String> = line.split('\0').map(String::from).collect();
                assert_eq!(args.pop().as_deref(), Some(""), "NUL-terminated");
                args
            })
            .collect()
    }

    fn pid(&self) -> u32 {
        self.read("pid").trim().parse().unwrap()
    }
}

fn spec(timeout: Duration) -> AzureCliCredentialOptions {
    AzureCliCredentialOptions {
        tenant_id: None,
        subscription: None,
        timeout,
    }
}

fn default_spec() -> AzureCliCredentialOptions {
    spec(Duration::from_secs(10))
}

fn args(extra: &[&str]) -> Vec<String> {
    ["account", "get-access-token", "--output", "json"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// A new-CLI answer expiring in `secs`.
fn new_output(secs: u64) -> String {
    format!(
        r#"now=$(date +%s)
cat <<EOF
{{
  "accessToken": "{TOKEN}",
  "expiresOn": "2020-11-12 13:50:47.114324",
  "expires_on": $((now + {secs})),
  "subscription": "00000000-0000-0000-0000-000000000000",
  "tenant": "00000000-0000-0000-0000-000000000000",
  "tokenType": "Bearer"
}}
EOF"#
    )
}

fn failed(e: CredentialError) -> TokenError {
    match e {
        CredentialError::Failed(e) => {
            assert_eq!(e.source, "azure_cli");
            assert!(!e.message.contains(TOKEN), "token leaked: {}", e.message);
            assert!(!format!("{e:?}").contains(TOKEN), "token leaked in Debug");
            e
        }
        CredentialError::Unavailable(a) => panic!("expected a failure, got unavailable: {a:?}"),
    }
}

fn unavailable(e: CredentialError) -> String {
    match e {
        CredentialError::Unavailable(attempts) => {
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].source, "azure_cli");
            attempts[0].reason.clone()
        }
        CredentialError::Failed(e) => panic!("expected unavailable, got {e}"),
    }
}

/// True once no process `pid` exists (killed and reaped: not even a zombie).
fn is_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn new_cli_output_gives_the_token_and_its_epoch_expiry() {
    let _trace = trace_init();
    let az = FakeAz::new(&new_output(3600));
    let token = az
        .credential(&default_spec())
        .get_token(&TokenRequest::new(ARM_SCOPE))
        .await
        .unwrap();
    assert_eq!(token.token.expose(), TOKEN);
    assert_eq!(&*token.source, "azure_cli");
    assert!(
        (3590..=3600).contains(&token.expires_in.as_secs()),
        "{:?}",
        token.expires_in
    );
    assert_eq!(token.refresh_in, None);
    assert_eq!(az.invocations(), [args(&["--scope", ARM_SCOPE])]);
    // The child's surroundings: no colour codes, the Env's PATH, cwd `/`, stdin /dev/null.
    assert_eq!(az.read("no_color"), "true");
    assert_eq!(az.read("path"), az.path_var());
    assert_eq!(az.read("cwd").trim(), "/");
    assert_eq!(az.read("stdin").trim(), "/dev/null");
}

#[tokio::test]
async fn tenant_and_subscription_are_passed_as_single_arguments() {
    let _trace = trace_init();
    let az = FakeAz::new(&new_output(3600));
    let tenant = AzureCliCredentialOptions {
        tenant_id: Some("contoso.onmicrosoft.com".into()),
        ..default_spec()
    };
    let subscription = AzureCliCredentialOptions {
        subscription: Some("My Sub 01".into()),
        ..default_spec()
    };
    for spec in [&tenant, &subscription] {
        az.credential(spec)
            .get_token(&TokenRequest::new(
                "api://11111111-2222-3333-4444-555555555555/.default",
            ))
            .await
            .unwrap();
    }
    let scope = "api://11111111-2222-3333-4444-555555555555/.default";
    assert_eq!(
        az.invocations(),
        [
            args(&["--scope", scope, "--tenant", "contoso.onmicrosoft.com"]),
            args(&["--scope", scope, "--subscription", "My Sub 01"]),
        ]
    );
}

#[tokio::test]
async fn old_cli_output_is_read_as_local_time() {
    let _trace = trace_init();
    // `expiresOn` only, printed by glibc's `date` in the zone the credential is told about (fixed-offset zones, so
    // no clock change can make the local time ambiguous).
    let mut zones = vec!["UTC", "<+0530>-5:30", "<-03>3"];
    if Path::new("/usr/share/zoneinfo/Asia/Kolkata").exists() {
        zones.push("Asia/Kolkata");
    }
    for tz in zones {
        let az = FakeAz::new(&format!(
            r#"at=$(( $(date +%s) + 3600 ))
local=$(TZ='{tz}' date -d "@$at" '+%Y-%m-%d %H:%M:%S.123456')
printf '{{"accessToken": "{TOKEN}", "expiresOn": "%s", "subscription": "s", "tenant": "t", "tokenType": "Bearer"}}\n' "$local""#
        ));
        let env = az.env().with("TZ", tz);
        let token = AzureCliCredential::new(default_spec(), &env)
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap();
        assert_eq!(token.token.expose(), TOKEN);
        assert!(
            (3590..=3600).contains(&token.expires_in.as_secs()),
            "TZ={tz}: {:?}",
            token.expires_in
        );
    }
}

#[tokio::test]
async fn not_logged_in_is_unavailable() {
    let _trace = trace_init();
    let az = FakeAz::new("echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1");
    let e = az
        .credential(&default_spec())
        .get_token(&TokenRequest::new(ARM_SCOPE))
        .await
        .unwrap_err();
    assert_eq!(unavailable(e), "not logged in: run `az login`");
}

#[tokio::test]
async fn missing_or_unusable_az_is_unavailable() {
    let _trace = trace_init();
    let empty = TempDir::new();
    let env = MapEnv::new().with("PATH", format!("{}:/nonexistent", empty.path().display()));
    let reason = unavailable(
        AzureCliCredential::new(default_spec(), &env)
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert!(
        reason.starts_with("Azure CLI not found on PATH"),
        "{reason}"
    );

    // A non-executable `az` and a directory named `az` are skipped.
    empty.file("az", "#!/bin/sh\necho no\n", 0o644);
    let other = TempDir::new();
    std::fs::create_dir(other.path().join("az")).unwrap();
    let env = MapEnv::new().with(
        "PATH",
        format!("{}:{}", empty.path().display(), other.path().display()),
    );
    let reason = unavailable(
        AzureCliCredential::new(default_spec(), &env)
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert!(
        reason.starts_with("Azure CLI not found on PATH"),
        "{reason}"
    );
}

#[tokio::test]
async fn conditional_access_block_from_the_cli() {
    let _trace = trace_init();
    let az = FakeAz::new(
        r#"cat >&2 <<'EOF'
AADSTS53003: Access has been blocked by Conditional Access policies. The access policy does not allow token issuance. Trace ID: 2f8ccb7a-459e-44fb-b615-232475945800 Correlation ID: 824fc737-3721-428a-adb8-e51aec8c4cce Timestamp: 2026-02-17 18:39:09Z
Run the command below to authenticate interactively; additional arguments may be added as needed:
az logout
az login
EOF
exit 1"#,
    );
    let e = failed(
        az.credential(&default_spec())
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind, TokenErrorKind::ConditionalAccessBlocked);
    assert!(
        e.message
            .starts_with("AADSTS53003: Access has been blocked")
    );
    assert!(
        !e.message.contains("az logout"),
        "one line, not the whole stderr"
    );
    let aad = e.aad.unwrap();
    assert_eq!(aad.error_codes, vec![53003]);
    assert_eq!(
        aad.correlation_id.as_deref(),
        Some("824fc737-3721-428a-adb8-e51aec8c4cce")
    );
}

#[tokio::test]
async fn mfa_required_from_the_cli_names_az_login() {
    let _trace = trace_init();
    let az = FakeAz::new(
        r#"echo "ERROR: AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '797f4846-ba00-4fd7-ba43-dac1f8f63013'. Trace ID: 1 Correlation ID: 2 Timestamp: 2026-01-01 00:00:00Z" >&2
echo "Run the command below to authenticate interactively; additional arguments may be added as needed:" >&2
echo 'az login --tenant "t1"' >&2
exit 1"#,
    );
    let spec = AzureCliCredentialOptions {
        tenant_id: Some("t1".into()),
        ..default_spec()
    };
    let e = failed(
        az.credential(&spec)
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind, TokenErrorKind::InteractionRequired);
    assert!(e.message.starts_with("AADSTS50076: "), "{}", e.message);
    assert!(
        e.message
            .ends_with("(sign in again: run `az login --tenant t1`)"),
        "{}",
        e.message
    );
    assert_eq!(e.aad.unwrap().error_codes, vec![50076]);
}

#[tokio::test]
async fn timeout_kills_and_reaps_az() {
    let _trace = trace_init();
    let az = FakeAz::new("exec sleep 30");
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let e = failed(
        az.credential(&spec(timeout))
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    let elapsed = started.elapsed();
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert_eq!(e.message, "az did not answer within 500ms");
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
    let pid = az.pid();
    assert!(
        is_gone(pid),
        "az (pid {pid}) survived the timeout or is a zombie"
    );
}

#[tokio::test]
async fn dropping_the_request_kills_az() {
    let _trace = trace_init();
    let az = FakeAz::new("exec sleep 30");
    let cred = az.credential(&spec(Duration::from_secs(30)));
    let request = TokenRequest::new(ARM_SCOPE);
    let fetch = cred.get_token(&request);
    let started = Instant::now();
    // Poll the fetch until the script has started, then drop it.
    tokio::select! {
        _ = fetch => panic!("az answered"),
        () = async {
            while az.read("pid").is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } => {}
    }
    let pid = az.pid();
    // kill_on_drop sent SIGKILL; tokio's reaper collects the exit in the background.
    while !is_gone(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "az (pid {pid}) outlived its request"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn scope_rejected_by_an_old_cli_is_retried_with_resource() {
    let _trace = trace_init();
    let az = FakeAz::new(&format!(
        r#"if [ "$5" = "--scope" ]; then
  echo "usage: az [-h] [--verbose] [--debug]" >&2
  echo "az: error: unrecognized arguments: --scope $6" >&2
  exit 2
fi
{}"#,
        new_output(1800)
    ));
    let token = az
        .credential(&default_spec())
        .get_token(&TokenRequest::new(ARM_SCOPE))
        .await
        .unwrap();
    assert!((1790..=1800).contains(&token.expires_in.as_secs()));
    assert_eq!(
        az.invocations(),
        [
            args(&["--scope", ARM_SCOPE]),
            args(&["--resource", "https://management.azure.com"]),
        ]
    );
}

#[tokio::test]
async fn endless_stdout_is_cut_off_and_az_killed() {
    let _trace = trace_init();
    let az = FakeAz::new(&format!("exec yes '{TOKEN}'"));
    let started = Instant::now();
    let e = failed(
        az.credential(&default_spec())
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert_eq!(
        e.message,
        format!(
            "az returned unusable output: more than {} bytes on stdout",
            AzureCliCredential::DEFAULT_OUTPUT_LIMIT
        )
    );
    let pid = az.pid();
    assert!(is_gone(pid), "az (pid {pid}) still exists");

    // A smaller limit applies to an otherwise valid answer.
    let az = FakeAz::new(&new_output(3600));
    let e = failed(
        az.credential(&default_spec())
            .with_output_limit(64)
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "az returned unusable output: more than 64 bytes on stdout"
    );
}

#[tokio::test]
async fn huge_stderr_is_drained_and_summarised() {
    let _trace = trace_init();
    let az = FakeAz::new("yes 'ERROR: boom' | head -c 5000000 >&2\nexit 1");
    let e = failed(
        az.credential(&default_spec())
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    assert_eq!(e.message, "az failed (exit status 1): boom");
}

#[tokio::test]
async fn stdin_is_closed() {
    let _trace = trace_init();
    // An `az` that reads stdin to the end must not hang, and its stdin must be /dev/null. (Under a runner whose own
    // stdin is /dev/null, an inherited stdin looks the same; these checks catch it wherever stdin is a terminal or
    // a pipe.)
    let az = FakeAz::new(&format!("cat > /dev/null\n{}", new_output(3600)));
    let started = Instant::now();
    az.credential(&spec(Duration::from_secs(5)))
        .get_token(&TokenRequest::new(ARM_SCOPE))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(az.read("stdin").trim(), "/dev/null");
}

#[tokio::test]
async fn the_token_never_reaches_an_error() {
    let _trace = trace_init();
    // Failure with the token on stdout and on stderr.
    let az = FakeAz::new(&format!(
        "echo '{{\"accessToken\": \"{TOKEN}\"}}'\necho \"ERROR: unexpected {TOKEN}\" >&2\nexit 1"
    ));
    let e = failed(
        az.credential(&default_spec())
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "az failed (exit status 1): unexpected [redacted]"
    );

    // Success without a usable expiry.
    let az = FakeAz::new(&format!(
        "echo '{{\"accessToken\": \"{TOKEN}\", \"expiresOn\": \"{TOKEN}\"}}'"
    ));
    let e = failed(
        az.credential(&default_spec())
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert_eq!(
        e.message,
        "az returned unusable output: expiresOn is not a date and time"
    );

    // Not JSON at all.
    let az = FakeAz::new(&format!("echo 'accessToken={TOKEN}'"));
    let e = failed(
        az.credential(&default_spec())
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.message, "az returned unusable output: not JSON");

    // Already expired.
    let az = FakeAz::new(&format!(
        "echo '{{\"accessToken\": \"{TOKEN}\", \"expires_on\": 1000000000}}'"
    ));
    let e = failed(
        az.credential(&default_spec())
            .get_token(&TokenRequest::new(ARM_SCOPE))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert!(e.message.contains("already expired"), "{}", e.message);
}

#[tokio::test]
async fn explicit_program_is_used_as_is() {
    let _trace = trace_init();
    let az = FakeAz::new(&new_output(3600));
    let program = az.dir.path().join("az");
    // No PATH at all: the explicit program does not need one.
    let token = AzureCliCredential::new(default_spec(), &MapEnv::new())
        .with_program(&program)
        .get_token(&TokenRequest::new(ARM_SCOPE))
        .await
        .unwrap();
    assert_eq!(token.token.expose(), TOKEN);
    assert_eq!(az.invocations().len(), 1);
}

/// An upstream claims challenge on a route served by the Azure CLI: the CLI cannot request claims, so the caller
/// gets 401 InteractionRequired naming `az login --claims-challenge`, with the claims in `WWW-Authenticate`.
#[tokio::test]
async fn a_claims_challenge_through_the_proxy_names_az_login() {
    let _trace = trace_init();
    let az = FakeAz::new(&new_output(3600));
    let ca = crate::support::TestCa::new();
    let upstream = crate::support::Upstream::builder().tls(&ca).start().await;
    let dir = TempDir::new();
    let ca_file = ca.write_ca_file(dir.path());
    let yaml = format!(
        "tls:\n  extra_ca_file: {}\ncredentials:\n  dev:\n    azure_cli: {{}}\nroutes:\n  - name: arm\n    path_prefix: /\n    upstream: {}\n    scope: {ARM_SCOPE}\n    credential: dev\n",
        ca_file.display(),
        upstream.base_url()
    );
    let proxy =
        crate::support::proxy::TestProxy::start_with(&yaml, az.env(), Default::default()).await;
    let (status, headers, body) =
        crate::support::request(http::Method::GET, &proxy.url("/challenge"), &[], "").await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    assert_eq!(headers["x-aml-auth-proxy-error"], "InteractionRequired");
    let www = headers["www-authenticate"].to_str().unwrap();
    assert!(www.contains("claims=\""), "{www}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("az login") && message.contains("--claims-challenge"),
        "{message}"
    );
    assert!(!String::from_utf8_lossy(&body).contains(TOKEN));
    assert_eq!(upstream.count(), 1, "no replay without a token");
    proxy.stop().await;
}
