//! Developer-tool sessions through the real binary: `azd` and `pwsh` stand-ins on the `PATH` printing the
//! recorded output formats serve requests (exact argument vectors checked), their recorded error texts give
//! `CredentialUnavailable` naming each source, `AZURE_TOKEN_CREDENTIALS` narrows the built-in chain, and a hint that
//! names `aml-auth-proxy login` works when run exactly as printed.

use base64::Engine as _;
use http::StatusCode;
use serde_json::Value;

use crate::emulator::{start, token};
use crate::support::process::{BIN, ClosedPort, RunningProxy, command, run_to_end};
use crate::support::proxy::TempDir;
use crate::support::{expect_proxy_error, get, json_body, trace_init};

const ML: &str = "https://ml.azure.com/.default";

/// Records each invocation's arguments, NUL-separated, one line per run, in `<dir>/<tool>.argv`.
const PROLOGUE: &str = r#"#!/bin/sh
d=$(dirname "$0")
printf '%s\0' "$@" >> "$d/$(basename "$0").argv"; printf '\n' >> "$d/$(basename "$0").argv"
"#;

/// The recorded "not logged in" answers (azd's legacy console message; PowerShell 7's CLIXML).
const AZD_NOT_LOGGED_IN: &str = r#"{"type":"consoleMessage","timestamp":"2038-01-18T00:00:00Z","data":{"message":"\nERROR: not logged in, run `azd auth login` to login\n"}}"#;
const PWSH_NOT_LOGGED_IN: &str = r#"#< CLIXML
<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><S S="Error">_x001B_[91mGet-AzAccessToken: _x000D__x000A_</S><S S="Error">_x001B_[96mLine |_x000D__x000A_</S><S S="Error">_x001B_[96m  11 | _x001B_[0m $token = _x001B_[96mGet-AzAccessToken -ResourceUrl 'scope'_x001B_[0m_x000D__x000A_</S><S S="Error">_x001B_[96m     | _x001B_[91m          ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~_x000D__x000A_</S><S S="Error">_x001B_[91m_x001B_[96m     | _x001B_[91mRun Connect-AzAccount to login._x001B_[0m_x000D__x000A_</S></Objs>"#;
/// Harmless first-use progress records on stderr next to a good answer.
const PWSH_PROGRESS: &str = r#"#< CLIXML
<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj></Objs>"#;

/// Fake tools in one directory, found through `PATH=<dir>:/usr/bin:/bin`.
struct Tools {
    dir: TempDir,
}

impl Tools {
    fn new() -> Self {
        Self {
            dir: TempDir::new(),
        }
    }

    /// `name` runs [`PROLOGUE`], prints `stdout` and `stderr` (verbatim) and exits with `code`.
    fn add(&self, name: &str, stdout: &str, stderr: &str, code: i32) -> &Self {
        let out = self.dir.file(&format!("{name}.stdout"), stdout, 0o600);
        let err = self.dir.file(&format!("{name}.stderr"), stderr, 0o600);
        let body = format!(
            "cat '{}'\ncat '{}' >&2\nexit {code}\n",
            out.display(),
            err.display()
        );
        self.dir.file(name, &format!("{PROLOGUE}{body}"), 0o755);
        self
    }

    fn path_var(&self) -> String {
        format!("{}:/usr/bin:/bin", self.dir.path().display())
    }

    /// Every run of `name`: its arguments.
    fn invocations(&self, name: &str) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.argv")))
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let mut args: Vec<String> = line.split('\0').map(String::from).collect();
                assert_eq!(args.pop().as_deref(), Some(""));
                args
            })
            .collect()
    }
}

/// The script PowerShell was given (`-EncodedCommand`: base64 of UTF-16LE).
fn decoded_script(encoded: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn azd_and_pwsh_stand_ins_serve_requests_through_the_proxy() {
    let _trace = trace_init();
    let emulator = start().await;
    let access = token(&emulator, "contoso", ML).await;
    let tools = Tools::new();
    tools
        .add(
            "azd",
            &format!(r#"{{"token":"{access}","expiresOn":"2099-01-18T00:00:00Z"}}"#),
            "",
            0,
        )
        .add(
            "pwsh",
            &format!(
                "MOTD: Customize your experience: save your profile to $HOME/.config/PowerShell\n\nazsdk%{access}%4070908800\n\n"
            ),
            PWSH_PROGRESS,
            0,
        );
    let dir = TempDir::new();
    let upstream = &emulator.urls().upstream;
    let yaml = format!(
        "credentials:\n  azd:\n    azure_developer_cli: {{ tenant_id: contoso, timeout: 20s }}\n  pwsh:\n    azure_powershell: {{ tenant_id: contoso, timeout: 20s }}\nroutes:\n  - name: azd\n    path_prefix: /azd\n    upstream: {upstream}\n    scope: {ML}\n    credential: azd\n  - name: pwsh\n    path_prefix: /pwsh\n    upstream: {upstream}\n    scope: {ML}\n    credential: pwsh\n"
    );
    let imds = ClosedPort::new();
    let path = tools.path_var();
    let proxy = RunningProxy::start(&dir, &imds, &yaml, &[], &[("PATH", &path)]).await;
    for route in ["/azd/x", "/pwsh/x"] {
        let (status, _, body) = get(&proxy.url(route)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{route}: {}",
            String::from_utf8_lossy(&body)
        );
        let echo = json_body(&body);
        assert_eq!(echo["authorization"]["claims"]["tid"], "contoso", "{route}");
        assert_eq!(
            echo["authorization"]["claims"]["aud"],
            "https://ml.azure.com"
        );
    }
    let out = proxy.stop().await;
    assert!(!out.stderr.contains(&access), "the token is never logged");

    let azd = tools.invocations("azd");
    assert_eq!(
        azd[0],
        [
            "auth",
            "token",
            "--output",
            "json",
            "--no-prompt",
            "--scope",
            ML,
            "--tenant-id",
            "contoso"
        ]
    );
    let pwsh = tools.invocations("pwsh");
    assert_eq!(
        pwsh[0][..3],
        ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    );
    assert_eq!(pwsh[0].len(), 4, "one argument vector, no shell");
    let script = decoded_script(&pwsh[0][3]);
    assert!(
        script.contains(
            "$params = @{ 'ResourceUrl' = 'https://ml.azure.com'; 'WarningAction' = 'Ignore' }"
        ),
        "{script}"
    );
    assert!(script.contains("$tenantId = 'contoso'"), "{script}");
    assert!(script.contains("Write-Output \"`nazsdk%"), "{script}");
}

#[tokio::test(flavor = "multi_thread")]
async fn azd_and_pwsh_error_texts_give_credential_unavailable_naming_each_source() {
    let _trace = trace_init();
    let emulator = start().await;
    let tools = Tools::new();
    tools
        .add("azd", "", AZD_NOT_LOGGED_IN, 1)
        .add("pwsh", "", PWSH_NOT_LOGGED_IN, 1);
    let dir = TempDir::new();
    let yaml = format!(
        "credentials:\n  dev:\n    chain: [azure_developer_cli, azure_powershell]\nroutes:\n  - name: up\n    path_prefix: /\n    upstream: {}\n    scope: {ML}\n    credential: dev\n",
        emulator.urls().upstream
    );
    let imds = ClosedPort::new();
    let path = tools.path_var();
    let proxy = RunningProxy::start(&dir, &imds, &yaml, &[], &[("PATH", &path)]).await;
    let answer = get(&proxy.url("/x")).await;
    let error = expect_proxy_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "CredentialUnavailable",
    );
    // Each source's reason is said once, in `details`; the message names the sources tried.
    let details: Vec<(&str, &str)> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["source"].as_str().unwrap(),
                d["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        details,
        [
            ("azure_developer_cli", "not logged in: run `azd auth login`"),
            ("azure_powershell", "not logged in: run `Connect-AzAccount`"),
        ],
        "{error:#}"
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("tried azure_developer_cli, azure_powershell"),
        "{error:#}"
    );
    proxy.stop().await;
    assert!(!tools.invocations("azd").is_empty());
    assert!(!tools.invocations("pwsh").is_empty());
}

/// `token --scope ML` with the built-in configuration (no file) and `AZURE_TOKEN_CREDENTIALS=<selection>`.
async fn builtin_token(tools: &Tools, selection: &str) -> crate::support::process::Output {
    let home = TempDir::new();
    let imds = ClosedPort::new();
    let mut cmd = command(home.path(), &imds);
    cmd.args(["token", "--scope", ML])
        .env("PATH", tools.path_var())
        .env("AZURE_TOKEN_CREDENTIALS", selection);
    run_to_end(cmd).await
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_token_credentials_selects_the_built_in_chain() {
    let _trace = trace_init();
    let emulator = start().await;
    let access = token(&emulator, "contoso", ML).await;
    let tools = Tools::new();
    tools.add(
        "azd",
        &format!(r#"{{"token":"{access}","expiresOn":"2099-01-18T00:00:00Z"}}"#),
        "",
        0,
    );

    // dev: the developer tools (no `az` here, so azd wins).
    for selection in [
        "dev",
        "  DeV ",
        "AzureDeveloperCliCredential",
        "azure_developer_cli",
    ] {
        let out = builtin_token(&tools, selection).await;
        assert_eq!(out.code(), Some(0), "{selection:?}: {out:#?}");
        let answer: Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(answer["source"], "azure_developer_cli", "{selection:?}");
    }
    let runs = tools.invocations("azd").len();

    // prod: environment, workload identity, managed identity only — never a developer tool.
    let out = builtin_token(&tools, "prod").await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    for source in ["environment", "workload_identity", "managed_identity"] {
        assert!(out.stderr.contains(&format!("{source}:")), "{out:#?}");
    }
    assert!(!out.stderr.contains("azure_developer_cli"), "{out:#?}");
    assert!(!out.stderr.contains("azure_cli"), "{out:#?}");

    // One source: only that one.
    let out = builtin_token(&tools, "AzureCliCredential").await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stderr.contains("azure_cli: Azure CLI not found"),
        "{out:#?}"
    );
    assert!(!out.stderr.contains("environment"), "{out:#?}");
    assert_eq!(tools.invocations("azd").len(), runs, "azd was not asked");

    // Anything else: exit 64 naming the variable and the allowed values.
    let out = builtin_token(&tools, "bogus").await;
    assert_eq!(out.code(), Some(64), "{out:#?}");
    assert!(out.stderr.contains("AZURE_TOKEN_CREDENTIALS"), "{out:#?}");
    assert!(
        out.stderr.contains("expected dev, prod, or one source"),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_printed_login_command_run_as_printed_succeeds() {
    let _trace = trace_init();
    let emulator = start().await;
    // A configured interactive_browser credential, and a chain's built-in interactive_browser source (which keeps
    // its sign-in under $HOME).
    for (credentials, name) in [
        (
            "  me:\n    interactive_browser: { cache_file: tokens.json }\n",
            Some("me"),
        ),
        ("  me:\n    chain: [interactive_browser]\n", None),
    ] {
        let dir = TempDir::new();
        let yaml = format!(
            "authority_host: {}\ncredentials:\n{credentials}routes:\n  - name: up\n    path_prefix: /\n    upstream: {}\n    scope: {ML}\n    credential: me\n",
            emulator.urls().authority_host,
            emulator.urls().upstream,
        );
        dir.file("proxy.yaml", &yaml, 0o600);
        let imds = ClosedPort::new();

        // Not signed in yet: the error names the command, with the configuration file (given relative here).
        let mut cmd = command(dir.path(), &imds);
        cmd.current_dir(dir.path())
            .args(["token", "--config", "proxy.yaml", "--scope", ML]);
        let out = run_to_end(cmd).await;
        assert_eq!(out.code(), Some(1), "{out:#?}");
        let hint = out
            .stderr
            .split('`')
            .find(|s| s.starts_with("aml-auth-proxy login"))
            .unwrap_or_else(|| panic!("no login command in {out:#?}"))
            .to_owned();
        let words: Vec<&str> = hint.split_whitespace().collect();
        let file = dir.path().join("proxy.yaml");
        let mut expected = vec![
            "aml-auth-proxy",
            "login",
            "--config",
            file.to_str().unwrap(),
        ];
        if let Some(name) = name {
            expected.extend(["--credential", name]);
        }
        assert_eq!(words, expected);

        // Run exactly that, from another directory: no browser here, so it signs in with a device code.
        assert_eq!(words[0], BIN.rsplit('/').next().unwrap());
        let mut login = command(dir.path(), &imds);
        login.current_dir("/").args(&words[1..]);
        let out = run_to_end(login).await;
        assert_eq!(out.code(), Some(0), "{hint}: {out:#?}");
        assert!(
            out.stderr.contains("signing in with a device code instead"),
            "{out:#?}"
        );

        // And now the token comes from the saved sign-in.
        let mut cmd = command(dir.path(), &imds);
        cmd.current_dir(dir.path())
            .args(["token", "--config", "proxy.yaml", "--scope", ML]);
        let out = run_to_end(cmd).await;
        assert_eq!(out.code(), Some(0), "{out:#?}");
        let answer: Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(answer["source"], "interactive_browser");
    }
}
