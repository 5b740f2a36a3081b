//! The command line, black box: the real binary as a child process with a clean environment,
//! talking over loopback to the in-process mocks. Exit codes: 0 success / clean shutdown, 64 bad usage or
//! configuration, 1 start-up or runtime failure; stdout carries only a command's result.

// clippy's `allow-*-in-tests` covers `#[test]` functions only, not the helpers of an integration-test crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a broken expectation must fail the test loudly"
)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::support::process::{
    ClosedPort, EXIT_TIMEOUT, Output, POLL, RunningProxy, check_config, command, free_addr,
    refuses_connections, run_to_end, try_get,
};
use crate::support::proxy::{CANARY_SECRET, CLIENT_ID, TempDir, World};
use crate::support::{ARM_SCOPE, Behavior, MockAad, trace_init};

const CA_FIXTURE: &str = "aad_error_53003_blocked_by_conditional_access.json";

/// Every command the binary has.
const COMMANDS: [&str; 8] = [
    "run",
    "check-config",
    "token",
    "login",
    "probe",
    "env",
    "completions",
    "man",
];

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts `out` exited with `code`.
#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.code(), Some(code), "unexpected exit: {out:#?}");
}

/// Asserts the canary secret appears nowhere in the child's output.
#[track_caller]
fn assert_no_secret(out: &Output) {
    assert!(
        !out.all().contains(CANARY_SECRET),
        "the secret leaked into the output: {out:#?}"
    );
}

/// stderr lines that are not JSON log records (the failure reasons `fail()` prints).
fn plain_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| serde_json::from_str::<serde_json::Map<String, Value>>(l).is_err())
        .collect()
}

/// A `client_secret` credential reading its secret from `file`.
fn sp_from_file(name: &str, tenant: &str, file: &std::path::Path) -> String {
    format!(
        "  {name}:\n    client_secret: {{ tenant_id: {tenant}, client_id: {CLIENT_ID}, client_secret_file: {} }}\n",
        file.display()
    )
}

/// A valid configuration with three kinds of secret (inline, `${VAR}`, 0600 file). No network is needed to
/// check it.
fn good_config(dir: &TempDir) -> std::path::PathBuf {
    let secret = dir.file("sp-secret", &format!("{CANARY_SECRET}\n"), 0o600);
    let text = format!(
        "credentials:
  sp:
    client_secret: {{ tenant_id: contoso, client_id: {CLIENT_ID}, client_secret: {CANARY_SECRET} }}
  envsp:
    client_secret: {{ tenant_id: contoso, client_id: \"${{AML_TEST_CLIENT_ID}}\", client_secret: \"${{AML_TEST_SECRET}}\" }}
{file_sp}  default:
    chain: [environment, sp]
routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: {ARM_SCOPE}
    credential: default
  - name: scoring
    path_prefix: /score/my-endpoint
    strip_prefix: true
    upstream: https://my-endpoint.eastus.inference.ml.azure.com/score
    scope: https://ml.azure.com/.default
    credential: filesp
    allow: {{ methods: [POST] }}
  - name: workspace
    path_prefix: /ws
    upstream: https://eastus.api.azureml.ms
    scope: https://ml.azure.com/.default
    credential: envsp
",
        file_sp = sp_from_file("filesp", "contoso", &secret),
    );
    dir.file("good.yaml", &text, 0o600)
}

/// A minimal valid configuration without listen addresses: `/` → ARM with an `environment`-only chain.
const MINIMAL: &str = "credentials:
  default:
    chain: [environment]
routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
    credential: default
";

// === help, version, usage errors ===

#[tokio::test(flavor = "multi_thread")]
async fn help_lists_every_command_and_exits_0() {
    let _trace = trace_init();
    let (home, imds) = (TempDir::new(), ClosedPort::new());
    let mut cmd = command(home.path(), &imds);
    cmd.arg("--help");
    let out = run_to_end(cmd).await;
    assert_exit(&out, 0);
    let listed: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for sub in COMMANDS {
        assert!(
            listed.contains(&sub),
            "--help does not list {sub}: {out:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn version_prints_the_package_version_and_build_info_and_exits_0() {
    let _trace = trace_init();
    let (home, imds) = (TempDir::new(), ClosedPort::new());
    let mut cmd = command(home.path(), &imds);
    cmd.arg("-V");
    let out = run_to_end(cmd).await;
    assert_exit(&out, 0);
    let short = format!("aml-auth-proxy {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(out.stdout.trim(), short, "{out:#?}");

    let mut cmd = command(home.path(), &imds);
    cmd.arg("--version");
    let out = run_to_end(cmd).await;
    assert_exit(&out, 0);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some(short.as_str()), "{out:#?}");
    let info: Vec<&str> = lines.collect();
    assert!(
        info.iter()
            .any(|l| l.starts_with("target: x86_64-") || l.starts_with("target: aarch64-")),
        "{out:#?}"
    );
    assert!(
        info.iter().any(|l| l.starts_with("rustc: rustc ")),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_and_man_pages_are_generated_from_the_cli() {
    let _trace = trace_init();
    let (home, imds) = (TempDir::new(), ClosedPort::new());
    let shells = [
        ("bash", "complete -F _aml__auth__proxy"),
        ("zsh", "#compdef aml-auth-proxy"),
        ("fish", "complete -c aml-auth-proxy"),
    ];
    for (shell, marker) in shells {
        let mut cmd = command(home.path(), &imds);
        cmd.args(["completions", shell]);
        let out = run_to_end(cmd).await;
        assert_exit(&out, 0);
        assert!(out.stdout.contains(marker), "{shell}: {out:#?}");
        for sub in COMMANDS {
            assert!(out.stdout.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(out.stderr.is_empty(), "{out:#?}");
    }
    let mut cmd = command(home.path(), &imds);
    cmd.args(["completions", "tcsh"]);
    assert_exit(&run_to_end(cmd).await, 64);

    let mut cmd = command(home.path(), &imds);
    cmd.arg("man");
    let out = run_to_end(cmd).await;
    assert_exit(&out, 0);
    assert!(out.stdout.contains("\n.TH aml-auth-proxy 1 "), "{out:#?}");
    assert!(out.stdout.contains(".SH ENVIRONMENT"), "{out:#?}");

    let dir = home.path().join("man1");
    let mut cmd = command(home.path(), &imds);
    cmd.arg("man").arg("--out-dir").arg(&dir);
    let out = run_to_end(cmd).await;
    assert_exit(&out, 0);
    let listed: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(listed.len(), 1 + COMMANDS.len(), "{out:#?}");
    for sub in COMMANDS {
        let page = dir.join(format!("aml-auth-proxy-{sub}.1"));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".SH SYNOPSIS"), "{}", page.display());
    }
    let main = std::fs::read_to_string(dir.join("aml-auth-proxy.1")).unwrap();
    assert!(main.contains(".SH \"EXIT STATUS\""), "{main}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_usage_exits_64_with_a_reason_on_stderr() {
    let _trace = trace_init();
    let (home, imds) = (TempDir::new(), ClosedPort::new());
    let cases: [&[&str]; 4] = [
        &["--no-such-flag"],
        &["run", "--no-such-flag"],
        &["token"], // --scope is required
        &["probe"], // URL is required
    ];
    for args in cases {
        let mut cmd = command(home.path(), &imds);
        cmd.args(args);
        let out = run_to_end(cmd).await;
        assert_exit(&out, 64);
        assert!(out.stdout.is_empty(), "{args:?}: {out:#?}");
        assert!(!out.stderr.trim().is_empty(), "{args:?}: {out:#?}");
    }
}

// === check-config ===

#[tokio::test(flavor = "multi_thread")]
async fn check_config_accepts_a_good_file_and_prints_a_secret_free_summary() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let file = good_config(&dir);
    let mut cmd = command(dir.path(), &imds);
    cmd.arg("check-config").arg("--config").arg(&file);
    cmd.env("AML_TEST_CLIENT_ID", CLIENT_ID)
        .env("AML_TEST_SECRET", CANARY_SECRET);
    let out = run_to_end(cmd).await;
    assert_exit(&out, 0);
    assert_no_secret(&out);
    for name in [
        "arm",
        "scoring",
        "workspace",
        "sp",
        "envsp",
        "filesp",
        "default",
    ] {
        assert!(out.stdout.contains(name), "summary lacks {name}: {out:#?}");
    }
    assert!(out.stdout.contains("management.azure.com"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_takes_the_file_from_aml_auth_proxy_config() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let file = good_config(&dir);
    let with_env = |cmd: &mut tokio::process::Command| {
        cmd.env("AML_TEST_CLIENT_ID", CLIENT_ID)
            .env("AML_TEST_SECRET", CANARY_SECRET);
    };
    let mut by_flag = command(dir.path(), &imds);
    by_flag.arg("check-config").arg("--config").arg(&file);
    with_env(&mut by_flag);
    let mut by_env = command(dir.path(), &imds);
    by_env
        .arg("check-config")
        .env("AML_AUTH_PROXY_CONFIG", &file);
    with_env(&mut by_env);
    let (by_flag, by_env) = (run_to_end(by_flag).await, run_to_end(by_env).await);
    assert_exit(&by_env, 0);
    assert_no_secret(&by_env);
    assert_eq!(by_env.stdout, by_flag.stdout);

    // The variable names a bad file: the same exit 64 as with --config.
    let bad = dir.file("bad.yaml", "listen_typo: 1\n", 0o600);
    let mut cmd = command(dir.path(), &imds);
    cmd.arg("check-config").env("AML_AUTH_PROXY_CONFIG", &bad);
    let out = run_to_end(cmd).await;
    assert_exit(&out, 64);
    assert!(out.stderr.contains("listen_typo"), "{out:#?}");
}

/// A secret in an environment variable, put under the wrong keys through `${VAR}`: every problem names the
/// variable, and the value appears nowhere in the output.
#[tokio::test(flavor = "multi_thread")]
async fn check_config_never_shows_a_value_from_the_environment_put_in_the_wrong_key() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let text = format!(
        "limits: {{ drain_timeout: \"${{AML_SECRET}}\" }}
credentials:
  sp:
    client_secret: {{ tenant_id: \"${{AML_SECRET}}@x\", client_id: {CLIENT_ID}, client_secret: \"${{AML_SECRET}}\" }}
routes:
  - name: a
    path_prefix: /
    upstream: \"${{AML_SECRET}}\"
    scope: {ARM_SCOPE}
    credential: sp
"
    );
    let file = dir.file("wrong-keys.yaml", &text, 0o600);
    for secret in [CANARY_SECRET, "canary SECRET with spaces/and?query"] {
        let mut cmd = command(dir.path(), &imds);
        cmd.arg("check-config")
            .arg("--config")
            .arg(&file)
            .env("AML_SECRET", secret);
        let out = run_to_end(cmd).await;
        assert_exit(&out, 64);
        assert!(
            !out.all().to_ascii_lowercase().contains("canary"),
            "an environment value leaked: {out:#?}"
        );
        for key in [
            "limits.drain_timeout",
            "credentials.sp.client_secret.tenant_id",
            "routes[0].upstream",
        ] {
            let line = out
                .stderr
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{key}: ")))
                .unwrap_or_else(|| panic!("no problem for {key}: {out:#?}"));
            assert!(line.contains("${AML_SECRET}"), "{line}");
        }
    }
}

/// IMDS in spellings that URL parsers and the system resolver accept (the connector does not resolve IP
/// literals, so `[::ffff:169.254.169.254]` would otherwise be connected to directly): exit 64 naming the key.
#[tokio::test(flavor = "multi_thread")]
async fn check_config_refuses_every_spelling_of_a_link_local_address() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    for host in [
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]",
        "[64:ff9b::a9fe:a9fe]",
        "[fe80::1]",
        "0xa9fea9fe",
        "2852039166",
        "169.254.43518",
        "169.254.169.254.",
    ] {
        let text = format!(
            "authority_host: https://{host}
credentials:
  sp:
    azure_cli: {{}}
routes:
  - name: imds
    path_prefix: /
    upstream: https://{host}
    scope: {ARM_SCOPE}
    credential: sp
"
        );
        let file = dir.file("imds.yaml", &text, 0o600);
        let out = check_config(dir.path(), &imds, &file).await;
        assert_exit(&out, 64);
        for key in ["authority_host", "routes[0].upstream"] {
            assert!(
                out.stderr.contains(&format!("\n  {key}: ")),
                "{host}: {key} not named: {out:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_lists_every_problem_with_its_key_path_and_never_the_secret() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    // Readable by group and others: must be refused, by path, without being read out.
    let shared = dir.file("shared-secret", &format!("{CANARY_SECRET}\n"), 0o644);
    let text = format!(
        "listen_typo: 1
credentials:
  inline:
    client_secret: {{ tenant_id: contoso, client_id: {CLIENT_ID}, client_secret: {CANARY_SECRET}, bogus_key: 1 }}
{file_sp}  envsp:
    client_secret: {{ tenant_id: \"${{AML_TEST_UNSET_TENANT}}\", client_id: {CLIENT_ID}, client_secret: {CANARY_SECRET} }}
routes:
  - name: a
    path_prefix: /
    upstream: http://example.com
    scope: {ARM_SCOPE}
    credential: inline
  - name: b
    path_prefix: /b
    upstream: https://management.azure.com
    scope: {ARM_SCOPE}
    credential: nosuch
  - name: c
    path_prefix: /c
    upstream: https://management.azure.com
    scope: {ARM_SCOPE}
    credential: filesp
  - name: c
    path_prefix: /d
    upstream: https://management.azure.com
    scope: {ARM_SCOPE}
    credential: inline
",
        file_sp = sp_from_file("filesp", "contoso", &shared),
    );
    let file = dir.file("bad.yaml", &text, 0o600);
    let shared_shown = shared.display().to_string();
    // (key path, words the problem's line must contain)
    let expected: [(&str, &[&str]); 7] = [
        ("listen_typo", &["unknown key"]),
        (
            "credentials.inline.client_secret.bogus_key",
            &["unknown key"],
        ),
        (
            "credentials.filesp.client_secret.client_secret_file",
            &[&shared_shown, "0644"],
        ),
        (
            "credentials.envsp.client_secret.tenant_id",
            &["AML_TEST_UNSET_TENANT"],
        ),
        ("routes[0].upstream", &["http", "example.com"]),
        ("routes[1].credential", &["nosuch"]),
        ("routes[3].name", &["duplicate", "\"c\""]),
    ];

    for subcommand in ["check-config", "run"] {
        let mut cmd = command(dir.path(), &imds);
        cmd.arg(subcommand).arg("--config").arg(&file);
        let out = run_to_end(cmd).await;
        assert_exit(&out, 64);
        assert_no_secret(&out);
        assert!(out.stdout.is_empty(), "{subcommand}: {out:#?}");
        assert!(
            out.stderr.contains(file.to_str().unwrap()),
            "{subcommand}: the file is not named: {out:#?}"
        );
        for (path, words) in expected {
            let line = out
                .stderr
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{path}:")))
                .unwrap_or_else(|| panic!("{subcommand}: no problem reported at {path}: {out:#?}"));
            for word in words {
                assert!(
                    line.contains(word),
                    "{subcommand}: problem at {path} lacks {word:?}: {line}"
                );
            }
        }
    }
}

/// check-config lists EVERY problem. A route name reused after a route that has another problem
/// is a problem of its own, and must be reported in the same run.
#[tokio::test(flavor = "multi_thread")]
async fn check_config_reports_a_duplicate_route_name_even_when_the_first_route_is_invalid() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let text = format!(
        "credentials:
  default:
    chain: [environment]
routes:
  - name: a
    path_prefix: /
    upstream: http://example.com
    scope: {ARM_SCOPE}
    credential: default
  - name: a
    path_prefix: /b
    upstream: https://management.azure.com
    scope: {ARM_SCOPE}
    credential: default
"
    );
    let file = dir.file("dup.yaml", &text, 0o600);
    let out = check_config(dir.path(), &imds, &file).await;
    assert_exit(&out, 64);
    assert!(
        out.stderr.contains("routes[0].upstream:"),
        "the upstream problem is reported: {out:#?}"
    );
    assert!(
        out.stderr.contains("routes[1].name:"),
        "the duplicate name is not reported: {out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_without_a_readable_file_exits_64() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let missing = dir.path().join("no-such-config.yaml");
    let out = check_config(dir.path(), &imds, &missing).await;
    assert_exit(&out, 64);
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(
        out.stderr.contains(missing.to_str().unwrap()),
        "the missing file is not named: {out:#?}"
    );

    // No file at all: check-config has nothing to check.
    let mut cmd = command(dir.path(), &imds);
    cmd.arg("check-config");
    let out = run_to_end(cmd).await;
    assert_exit(&out, 64);
    assert!(out.stdout.is_empty(), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_worker_thread_count_exits_64_naming_the_setting() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    for value in ["0", "two", "-1", "100000"] {
        let mut by_env = command(dir.path(), &imds);
        by_env
            .arg("run")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("AML_AUTH_PROXY_WORKER_THREADS", value);
        let mut by_flag = command(dir.path(), &imds);
        by_flag
            .arg("run")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg(format!("--worker-threads={value}"));
        for cmd in [by_env, by_flag] {
            let out = run_to_end(cmd).await;
            assert_exit(&out, 64);
            assert!(
                out.stderr.contains("AML_AUTH_PROXY_WORKER_THREADS")
                    && out.stderr.contains("--worker-threads")
                    && out.stderr.contains("1 to 1024"),
                "{value}: {out:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_listener_is_served_by_the_number_of_threads_asked_for() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let file = dir.file("config.yaml", MINIMAL, 0o600);
    // 1 (what the sidecar manifests set) and 3 (unlike the CPU count of a 1- or 2-CPU machine).
    for workers in [1, 3] {
        let proxy = RunningProxy::start_with(|listen, admin| {
            let mut cmd = command(dir.path(), &imds);
            cmd.arg("run")
                .arg("--config")
                .arg(&file)
                .arg("--listen")
                .arg(listen.to_string())
                .arg("--admin-listen")
                .arg(admin.to_string())
                .env("AML_AUTH_PROXY_WORKER_THREADS", workers.to_string());
            (cmd, None)
        })
        .await;
        // Several connections, so that every proxy thread is likely to accept one; each is answered.
        for _ in 0..8 {
            let (status, headers, _) = try_get(&proxy.url("/")).await.unwrap();
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                headers.get("x-aml-auth-proxy-error").unwrap(),
                "CredentialUnavailable"
            );
        }
        // The proxy listener is served by that many threads of its own, named proxy-0, proxy-1, …
        let mut threads = proxy_thread_names(proxy.child.pid());
        threads.sort();
        let expected: Vec<String> = (0..workers).map(|i| format!("proxy-{i}")).collect();
        assert_eq!(threads, expected);
        let out = proxy.stop().await;
        assert_exit(&out, 0);
        let listening: Vec<Value> = out
            .stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "listening")
            .collect();
        assert_eq!(listening.len(), 1, "{out:#?}");
        assert_eq!(listening[0]["workers"], workers, "{out:#?}");
    }
}

/// The names of process `pid`'s threads that start with `proxy-`.
fn proxy_thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .filter(|name| name.starts_with("proxy-"))
        .collect()
}

// === token ===

/// A World whose configuration has `sp` (tenant `tokentenant`) and `blocked` (tenant `cablocked`, which the
/// mock answers with the recorded AADSTS53003 Conditional Access refusal).
async fn token_world() -> (World, std::path::PathBuf) {
    let world = World::new().await;
    world.aad.set_behavior(
        "cablocked",
        Behavior::fixture(StatusCode::BAD_REQUEST, CA_FIXTURE),
    );
    let credentials = format!(
        "{}{}",
        World::sp("sp", "tokentenant"),
        World::sp("blocked", "cablocked")
    );
    let text = world.config(&credentials, &world.route("arm", "/", "sp", ""));
    let file = world.dir.file("token.yaml", &text, 0o600);
    (world, file)
}

fn token_command(
    world: &World,
    imds: &ClosedPort,
    file: &std::path::Path,
    args: &[&str],
) -> tokio::process::Command {
    let mut cmd = command(world.dir.path(), imds);
    cmd.arg("token")
        .arg("--config")
        .arg(file)
        .args(["--scope", ARM_SCOPE])
        .args(args);
    cmd
}

/// Asserts no token the mock issued appears in `text`.
#[track_caller]
fn assert_no_issued_token(aad: &MockAad, text: &str) {
    for t in aad.registry().all() {
        assert!(!text.contains(&t.token), "token {} leaked: {text}", t.token);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_prints_one_json_document_and_the_token_only_when_asked() {
    let _trace = trace_init();
    let (world, file) = token_world().await;
    let imds = ClosedPort::new();

    let out = run_to_end(token_command(&world, &imds, &file, &["--credential", "sp"])).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_exit(&out, 0);
    assert_no_secret(&out);
    assert_eq!(world.aad.count("tokentenant"), 1);
    assert_no_issued_token(&world.aad, &out.all());
    assert_eq!(
        out.stdout.trim().lines().count(),
        1,
        "one JSON document: {out:#?}"
    );
    let doc = json(out.stdout.trim());
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["credential", "expires_on", "scope", "source", "token_type"],
        "{doc}"
    );
    assert_eq!(doc["credential"], "sp");
    assert_eq!(doc["source"], "client_secret");
    assert_eq!(doc["scope"], ARM_SCOPE);
    assert_eq!(doc["token_type"], "Bearer");
    let expires_on = doc["expires_on"]
        .as_u64()
        .unwrap_or_else(|| panic!("expires_on is not an integer: {doc}"));
    assert!(
        expires_on.abs_diff(now + 3600) <= 120,
        "expires_on {expires_on} is not about now + 3600 ({now})"
    );

    let out = run_to_end(token_command(
        &world,
        &imds,
        &file,
        &["--credential", "sp", "--show-token"],
    ))
    .await;
    assert_exit(&out, 0);
    assert_no_secret(&out);
    assert_eq!(out.stdout.trim().lines().count(), 1, "{out:#?}");
    let doc = json(out.stdout.trim());
    let token = doc["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token with --show-token: {doc}"));
    let issued = world
        .aad
        .registry()
        .get(token)
        .unwrap_or_else(|| panic!("{token} was not issued by the mock"));
    assert_eq!(issued.tenant, "tokentenant");
    assert_eq!(issued.scope.as_deref(), Some(ARM_SCOPE));
    assert!(
        !out.stderr.contains(token),
        "the token is on stderr: {out:#?}"
    );
    // Both requests carried the secret to the token endpoint, and nowhere else.
    for r in world.aad.requests_for("tokentenant") {
        assert_eq!(
            r.form.get("client_secret").map(String::as_str),
            Some(CANARY_SECRET)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_blocked_by_conditional_access_exits_1_with_a_one_line_reason() {
    let _trace = trace_init();
    let (world, file) = token_world().await;
    let imds = ClosedPort::new();
    let out = run_to_end(token_command(
        &world,
        &imds,
        &file,
        &["--credential", "blocked"],
    ))
    .await;
    assert_exit(&out, 1);
    assert_no_secret(&out);
    assert!(out.stdout.is_empty(), "{out:#?}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {out:#?}");
    assert!(
        lines[0].contains("ConditionalAccessBlocked") || lines[0].contains("AADSTS53003"),
        "{out:#?}"
    );
    assert_eq!(world.aad.count("cablocked"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_with_an_unknown_credential_exits_64() {
    let _trace = trace_init();
    let (world, file) = token_world().await;
    let imds = ClosedPort::new();
    let out = run_to_end(token_command(
        &world,
        &imds,
        &file,
        &["--credential", "nosuch"],
    ))
    .await;
    assert_exit(&out, 64);
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(out.stderr.contains("nosuch"), "{out:#?}");
    assert_eq!(
        world.aad.total_count(),
        0,
        "no token request for a usage error"
    );
}

// === probe ===

#[tokio::test(flavor = "multi_thread")]
async fn probe_exits_0_on_2xx_and_1_on_404() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let proxy = RunningProxy::start(&dir, &imds, MINIMAL, &[], &[]).await;
    let probe = |url: String| {
        let mut cmd = command(dir.path(), &imds);
        cmd.arg("probe").arg(url);
        run_to_end(cmd)
    };
    let out = probe(proxy.admin_url("/healthz")).await;
    assert_exit(&out, 0);
    assert!(out.stdout.is_empty(), "{out:#?}");
    let out = probe(proxy.admin_url("/no-such-admin-path")).await;
    assert_exit(&out, 1);
    assert!(out.stderr.contains("404"), "{out:#?}");
    assert_eq!(plain_lines(&out.stderr).len(), 1, "{out:#?}");
    let out = proxy.stop().await;
    assert_exit(&out, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_exits_1_on_a_closed_port_and_64_on_an_invalid_url() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let closed = ClosedPort::new();
    let mut cmd = command(dir.path(), &imds);
    cmd.arg("probe")
        .arg(format!("http://{}/healthz", closed.addr()));
    let out = run_to_end(cmd).await;
    assert_exit(&out, 1);
    assert_eq!(plain_lines(&out.stderr).len(), 1, "{out:#?}");

    let mut cmd = command(dir.path(), &imds);
    cmd.arg("probe").arg("http://bad host/healthz");
    let out = run_to_end(cmd).await;
    assert_exit(&out, 64);
    assert_eq!(plain_lines(&out.stderr).len(), 1, "{out:#?}");
}

// === run: start-up ===

#[tokio::test(flavor = "multi_thread")]
async fn run_exits_1_naming_the_address_when_a_port_is_taken() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();

    // The proxy port, from the configuration file.
    let text = format!(
        "listen: {taken_addr}\nadmin_listen: {}\n{MINIMAL}",
        free_addr()
    );
    let file = dir.file("taken.yaml", &text, 0o600);
    let mut cmd = command(dir.path(), &imds);
    cmd.arg("run").arg("--config").arg(&file);
    let out = run_to_end(cmd).await;
    assert_exit(&out, 1);
    assert!(out.stdout.is_empty(), "{out:#?}");
    let reasons = plain_lines(&out.stderr);
    assert_eq!(reasons.len(), 1, "one-line reason: {out:#?}");
    assert!(reasons[0].contains(&taken_addr.to_string()), "{out:#?}");

    // The admin port, from the command line.
    let mut cmd = command(dir.path(), &imds);
    cmd.arg("run")
        .arg("--config")
        .arg(&file)
        .arg("--listen")
        .arg(free_addr().to_string())
        .arg("--admin-listen")
        .arg(taken_addr.to_string());
    let out = run_to_end(cmd).await;
    assert_exit(&out, 1);
    let reasons = plain_lines(&out.stderr);
    assert_eq!(reasons.len(), 1, "one-line reason: {out:#?}");
    assert!(reasons[0].contains(&taken_addr.to_string()), "{out:#?}");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_without_a_config_serves_the_builtin_default_and_explains_missing_credentials() {
    let _trace = trace_init();
    let (home, imds) = (TempDir::new(), ClosedPort::new());
    // No subcommand at all: `run` is the default. No Azure variables, no `az` on PATH, IMDS closed.
    let proxy = RunningProxy::start_with(|listen, admin| {
        let mut cmd = command(home.path(), &imds);
        cmd.arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string());
        (cmd, None)
    })
    .await;
    let (status, headers, body) = try_get(&proxy.url("/subscriptions?api-version=2022-12-01"))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert_eq!(
        headers.get("x-aml-auth-proxy-error").unwrap(),
        "CredentialUnavailable"
    );
    assert!(
        headers.contains_key(http::header::RETRY_AFTER),
        "{headers:?}"
    );
    assert_eq!(
        json(&text)["error"]["code"],
        "CredentialUnavailable",
        "{text}"
    );
    for source in [
        "environment",
        "workload_identity",
        "managed_identity",
        "azure_cli",
    ] {
        assert!(
            text.contains(source),
            "the answer does not mention {source}: {text}"
        );
    }
    let out = proxy.stop().await;
    assert_exit(&out, 0);
    assert!(
        out.stdout.is_empty(),
        "run writes nothing to stdout: {out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_listen_flags_override_the_configuration() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    // The file names two addresses nobody listens on; the flags win.
    let (file_listen, file_admin) = (ClosedPort::new(), ClosedPort::new());
    let text = format!(
        "listen: {}\nadmin_listen: {}\n{MINIMAL}",
        file_listen.addr(),
        file_admin.addr()
    );
    let file = dir.file("config.yaml", &text, 0o600);
    let proxy = RunningProxy::start_with(|listen, admin| {
        let mut cmd = command(dir.path(), &imds);
        cmd.arg("run")
            .arg("--config")
            .arg(&file)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string());
        (cmd, None)
    })
    .await;
    let (status, headers, _) = try_get(&proxy.url("/")).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers.get("x-aml-auth-proxy-error").unwrap(),
        "CredentialUnavailable"
    );
    // The file's addresses are held here by bound sockets, so had the child tried them it would have failed to
    // start (exit 1, "cannot listen on"); it serves, so the flags won.
    let out = proxy.stop().await;
    assert_exit(&out, 0);
    assert!(plain_lines(&out.stderr).is_empty(), "{out:#?}");
}

// === run: graceful shutdown ===

/// Opens a fresh HTTP/1.1 connection to `addr` and sends `GET path`; returns the response (body streaming).
async fn open_stream(addr: SocketAddr, path: &str) -> http::Response<hyper::body::Incoming> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, format!("127.0.0.1:{}", addr.port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap()
}

/// Polls until `addr` refuses new connections (at most 10 s).
async fn wait_until_refused(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !refuses_connections(addr).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} still accepts new requests after SIGTERM"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A running proxy (child) with one route `/` → the World's upstream, and `limits` if given.
async fn drain_proxy(world: &World, imds: &ClosedPort, limits: &str) -> RunningProxy {
    let yaml = format!(
        "{limits}{}",
        world.config(
            &World::sp("sp", "drain"),
            &world.route("arm", "/", "sp", "")
        )
    );
    RunningProxy::start(&world.dir, imds, &yaml, &[], &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_in_flight_stream_refuses_new_connections_and_exits_0() {
    let _trace = trace_init();
    let world = World::new().await;
    let imds = ClosedPort::new();
    let proxy = drain_proxy(&world, &imds, "").await;

    let resp = open_stream(proxy.listen, "/stream?chunks=20&interval_ms=100").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: 0\n\n");
    let rest = tokio::spawn(async move { body.collect().await.map(|b| b.to_bytes()) });

    proxy.child.sigterm();
    wait_until_refused(proxy.listen).await;
    let rest = tokio::time::timeout(Duration::from_secs(20), rest)
        .await
        .expect("the stream did not finish")
        .unwrap()
        .expect("the stream was cut");
    let mut all = first.to_vec();
    all.extend_from_slice(&rest);
    let expected: String = (0..20).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&all), expected);
    // Still refused after the drain, until the process is gone.
    assert!(refuses_connections(proxy.listen).await);

    let out = proxy.child.finish(EXIT_TIMEOUT).await;
    assert_exit(&out, 0);
    assert!(out.stdout.is_empty(), "{out:#?}");
    let streams = world
        .upstream
        .requests()
        .iter()
        .filter(|r| r.path == "/stream")
        .count();
    assert_eq!(streams, 1, "the stream was requested once, and not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_ends_a_long_drain_at_once() {
    let _trace = trace_init();
    let world = World::new().await;
    let imds = ClosedPort::new();
    let proxy = drain_proxy(&world, &imds, "limits: { drain_timeout: 30s }\n").await;
    let resp = open_stream(proxy.listen, "/stream?chunks=1000&interval_ms=100").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: 0\n\n");
    let rest = tokio::spawn(async move { body.collect().await.map(|b| b.to_bytes().len()) });

    let RunningProxy {
        mut child, listen, ..
    } = proxy;
    child.sigterm();
    // The first signal has been handled once new connections are refused; only then send the second, so
    // the two cannot be coalesced into one.
    wait_until_refused(listen).await;
    assert!(
        child.try_exit().is_none(),
        "the proxy exited on the first SIGTERM with a stream in flight"
    );
    child.sigterm();
    let started = tokio::time::Instant::now();
    let status = child.wait_exit(Duration::from_secs(10)).await;
    let waited = started.elapsed();
    let out = match status {
        Some(_) => child.finish(EXIT_TIMEOUT).await,
        None => panic!(
            "still draining {waited:?} after the second SIGTERM; stderr:\n{}",
            child.stderr_so_far()
        ),
    };
    assert_exit(&out, 0);
    // The cut stream ends (with an error or early) instead of hanging.
    let rest = tokio::time::timeout(Duration::from_secs(10), rest)
        .await
        .expect("the client stream did not end after the proxy exited")
        .unwrap();
    let whole: usize = (0..1000).map(|i| format!("data: {i}\n\n").len()).sum();
    if let Ok(len) = rest {
        assert!(len < whole, "the whole 100 s stream was delivered");
    }
}

/// `token` goes through the same credential builder as `run`: a workload identity from the environment, and the
/// chain's managed-identity source (IMDS pointed at a closed loopback port) skipped on the way.
#[tokio::test(flavor = "multi_thread")]
async fn token_works_with_a_chain_and_workload_identity() {
    let _trace = trace_init();
    let world = World::new().await;
    let imds = ClosedPort::new();
    let federated = world
        .dir
        .file("federated-token", "federated-assertion", 0o600);
    let text = world.config(
        "  default:\n    chain: [environment, managed_identity, workload_identity]\n",
        &world.route("arm", "/", "default", ""),
    );
    let file = world.dir.file("wi.yaml", &text, 0o600);
    let mut cmd = command(world.dir.path(), &imds);
    cmd.arg("token")
        .arg("--config")
        .arg(&file)
        .args(["--scope", ARM_SCOPE])
        .env("AZURE_TENANT_ID", "witenant")
        .env("AZURE_CLIENT_ID", "22222222-0000-0000-0000-000000000002")
        .env("AZURE_FEDERATED_TOKEN_FILE", &federated);
    let out = run_to_end(cmd).await;
    assert_exit(&out, 0);
    let doc = json(out.stdout.trim());
    assert_eq!(doc["credential"], "default");
    assert_eq!(doc["source"], "workload_identity");
    let form = world.aad.requests_for("witenant").pop().unwrap().form;
    assert_eq!(form["client_assertion"], "federated-assertion");
}
