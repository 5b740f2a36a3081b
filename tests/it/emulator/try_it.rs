//! `docs/try-it-without-azure.md`, followed literally: the two `cargo run` commands and the `curl` are read out of
//! the page, run with the real binaries (this test target's builds of both), and the answer is compared with the
//! page's expected output. When the page changes, this test runs what it says; when the product changes, the
//! page's output must change with it.
//!
//! The page's fixed ports are used when they are free. On a busy machine (another proxy on 8080, a parallel
//! run of this test) the same commands run on free ports instead, with a copy of the configuration whose
//! addresses are moved there, and the answer's port numbers are mapped back before comparing.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use http::StatusCode;
use serde_json::Value;
use tokio::process::Command;

use super::binary::{EMULATOR, RunningEmulator};
use crate::support::process::{BIN, ChildProc, EXIT_TIMEOUT, free_addr, try_get};
use crate::support::proxy::TempDir;
use crate::support::trace_init;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PAGE: &str = "docs/try-it-without-azure.md";
const CONFIG: &str = "config/local-emulator.yaml";

/// The emulator's ports in the page's setup: Entra ID, ARM, upstream, three scoring endpoints.
const EMULATOR_PORTS: std::ops::RangeInclusive<u16> = 8181..=8186;
const PROXY_PORT: u16 = 8080;
const ADMIN_PORT: u16 = 9464;

/// Claims that differ on every run.
const VOLATILE_CLAIMS: [&str; 5] = ["iat", "nbf", "exp", "aio", "uti"];

/// What the page says to do and to expect.
struct Page {
    emulator: Vec<String>,
    proxy: Vec<String>,
    url: String,
    expected: Value,
}

/// Fenced code blocks: (info string, text).
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(current.take()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

fn words(command: &str) -> Vec<String> {
    command.split_whitespace().map(str::to_owned).collect()
}

/// Reads the commands (the `sh` lines before the expected output) and the expected output (the first `json` block).
fn read_page() -> Page {
    let text = std::fs::read_to_string(Path::new(ROOT).join(PAGE)).unwrap();
    let blocks = code_blocks(&text);
    let json_at = blocks
        .iter()
        .position(|(info, _)| info == "json")
        .expect("the page shows the expected output in a ```json block");
    let commands: Vec<String> = blocks[..json_at]
        .iter()
        .filter(|(info, _)| info == "sh")
        .flat_map(|(_, body)| body.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let [emulator, proxy, curl] = commands.as_slice() else {
        panic!(
            "the page gives exactly two commands and one curl before its expected output: {commands:#?}"
        );
    };
    let emulator = words(emulator);
    assert_eq!(
        emulator[..5],
        ["cargo", "run", "--release", "--bin", "aml-azure-emulator"],
        "the emulator command: {emulator:?}"
    );
    let emulator_args = match emulator.get(5).map(String::as_str) {
        None => Vec::new(),
        Some("--") => emulator[6..].to_vec(),
        Some(other) => panic!("unexpected `{other}` in the emulator command"),
    };
    let proxy = words(proxy);
    assert_eq!(
        proxy[..4],
        ["cargo", "run", "--release", "--"],
        "the proxy command: {proxy:?}"
    );
    let curl = words(curl);
    let [curl_word, silent, url] = curl.as_slice() else {
        panic!("the curl command is `curl -s URL`: {curl:?}");
    };
    assert_eq!((curl_word.as_str(), silent.as_str()), ("curl", "-s"));
    let expected = serde_json::from_str(&blocks[json_at].1)
        .unwrap_or_else(|e| panic!("the expected output is not JSON: {e}"));
    Page {
        emulator: emulator_args,
        proxy: proxy[4..].to_vec(),
        url: url.clone(),
        expected,
    }
}

/// Whether every one of `ports` can be bound on 127.0.0.1 right now.
fn free(ports: impl IntoIterator<Item = u16>) -> bool {
    let held: Result<Vec<TcpListener>, _> = ports
        .into_iter()
        .map(|p| TcpListener::bind(("127.0.0.1", p)))
        .collect();
    held.is_ok()
}

/// Six consecutive free ports (for the emulator's listeners).
fn free_block() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + fastrand::u16(..40_000);
        if free(base..base + 6) {
            return base;
        }
    }
    panic!("no block of six free ports");
}

/// Port substitutions (page's → used), empty when the page's own ports are free.
fn port_plan() -> Vec<(u16, u16)> {
    let page_ports: Vec<u16> = EMULATOR_PORTS.chain([PROXY_PORT, ADMIN_PORT]).collect();
    if free(page_ports.iter().copied()) {
        return Vec::new();
    }
    let base = free_block();
    let mut plan: Vec<(u16, u16)> = EMULATOR_PORTS.zip(base..).collect();
    plan.push((PROXY_PORT, free_addr().port()));
    plan.push((ADMIN_PORT, free_addr().port()));
    plan
}

fn replace_ports(text: &str, plan: &[(u16, u16)], backwards: bool) -> String {
    plan.iter().fold(text.to_owned(), |text, (page, used)| {
        let (from, to) = if backwards {
            (used, page)
        } else {
            (page, used)
        };
        text.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"))
    })
}

fn object_keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

/// `curl -s URL` with the real curl when it is installed; else the same request (`Accept: */*`, a curl
/// User-Agent) from this process. Returns the status and the body.
async fn curl(url: &str) -> (StatusCode, String) {
    let run = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .output()
        .await;
    if let Ok(out) = run
        && out.status.success()
    {
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        return (code.parse().unwrap(), body.to_owned());
    }
    let (status, _, body) = crate::support::request(
        http::Method::GET,
        url,
        &[("accept", "*/*"), ("user-agent", "curl/8")],
        "",
    )
    .await;
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_try_it_without_azure_page_works_as_written() {
    let _trace = trace_init();
    let page = read_page();
    let config = std::fs::read_to_string(Path::new(ROOT).join(CONFIG)).unwrap();
    // The configuration's own header shows the same commands.
    for command in [
        "cargo run --release --bin aml-azure-emulator",
        "cargo run --release -- --config config/local-emulator.yaml",
    ] {
        assert!(
            config.contains(command),
            "{CONFIG} does not mention `{command}`"
        );
    }
    let dir = TempDir::new();
    let plan = port_plan();

    // Terminal 1.
    let mut emulator_args = page.emulator.clone();
    if let Some((_, base)) = plan.first() {
        emulator_args.extend(["--port".to_owned(), base.to_string()]);
    }
    let mut cmd = Command::new(EMULATOR);
    cmd.current_dir(ROOT)
        .env_clear()
        .env("HOME", dir.path())
        .args(&emulator_args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let emulator = RunningEmulator::spawn(cmd).await;
    assert_eq!(
        emulator.urls["authority_host"],
        replace_ports("http://127.0.0.1:8181", &plan, false)
    );

    // Terminal 2: the page's arguments, the configuration moved to the free ports when needed.
    let mut proxy_args = page.proxy.clone();
    if !plan.is_empty() {
        let moved = dir.file(
            "local-emulator.yaml",
            &replace_ports(&config, &plan, false),
            0o600,
        );
        for arg in &mut proxy_args {
            if arg == CONFIG {
                *arg = moved.display().to_string();
            }
        }
    }
    let mut cmd = Command::new(BIN);
    cmd.current_dir(ROOT)
        .env_clear()
        .env("HOME", dir.path())
        .env("PATH", "/nonexistent-dir")
        .args(&proxy_args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut proxy = ChildProc::spawn(cmd);
    let admin: SocketAddr = replace_ports("127.0.0.1:9464", &plan, false)
        .parse()
        .unwrap();
    let healthz = format!("http://{admin}/healthz");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = proxy.try_exit() {
            panic!("the proxy exited ({status}): {}", proxy.stderr_so_far());
        }
        if matches!(try_get(&healthz).await, Ok((StatusCode::OK, _, _))) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy did not start: {}",
            proxy.stderr_so_far()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Terminal 3: one curl.
    let url = replace_ports(&page.url, &plan, false);
    let (status, text) = curl(&url).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{text}\nproxy: {}",
        proxy.stderr_so_far()
    );
    let got: Value = serde_json::from_str(&replace_ports(&text, &plan, true)).unwrap();
    let want = &page.expected;

    // The token was injected: the upstream verified it and shows its claims.
    let claims = &got["authorization"]["claims"];
    assert_eq!(claims["aud"], "https://ml.azure.com");
    assert!(config.contains(&format!("tenant_id: {}", claims["tid"].as_str().unwrap())));
    assert!(config.contains(&format!("client_id: {}", claims["appid"].as_str().unwrap())));
    assert!(claims["exp"].as_i64().unwrap() > jiff::Timestamp::now().as_second());

    // And the answer is the page's, but for what changes on every run.
    assert_eq!(object_keys(&got), object_keys(want), "top-level fields");
    for field in [
        "method",
        "path",
        "query",
        "version",
        "authority",
        "body",
        "body_len",
        "body_sha256",
    ] {
        assert_eq!(got[field], want[field], "{field}");
    }
    assert_eq!(
        object_keys(&got["authorization"]),
        object_keys(&want["authorization"])
    );
    assert_eq!(
        got["authorization"]["scheme"],
        want["authorization"]["scheme"]
    );
    assert_eq!(
        object_keys(claims),
        object_keys(&want["authorization"]["claims"]),
        "claim names"
    );
    for (name, value) in claims.as_object().unwrap() {
        if !VOLATILE_CLAIMS.contains(&name.as_str()) {
            assert_eq!(
                value, &want["authorization"]["claims"][name],
                "claim {name}"
            );
        }
    }
    assert_eq!(
        object_keys(&got["headers"]),
        object_keys(&want["headers"]),
        "header names"
    );
    assert_eq!(got["headers"]["authorization"], "<redacted>");
    assert_eq!(got["headers"]["host"], want["headers"]["host"]);

    proxy.sigterm();
    let proxy_out = proxy.finish(EXIT_TIMEOUT).await;
    assert_eq!(proxy_out.code(), Some(0), "{proxy_out:#?}");
    let emulator_out = emulator.stop().await;
    assert_eq!(emulator_out.code(), Some(0), "{emulator_out:#?}");
}

/// The `sh` commands of `markdown` before its first `json` block (or all of them), comments removed.
fn commands_before_the_output(markdown: &str) -> Vec<String> {
    let blocks = code_blocks(markdown);
    let end = blocks
        .iter()
        .position(|(info, _)| info == "json")
        .unwrap_or(blocks.len());
    blocks[..end]
        .iter()
        .filter(|(info, _)| info == "sh")
        .flat_map(|(_, body)| body.lines())
        .map(|line| line.split(" #").next().unwrap_or(line).trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The README's "Try it without Azure" section gives exactly the commands the page gives (and the test above runs),
/// so following the README literally is following the page.
#[test]
fn the_readme_gives_the_same_commands_as_the_page() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let start = readme
        .find("\n## Try it without Azure\n")
        .expect("README has a \"Try it without Azure\" section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let page = std::fs::read_to_string(Path::new(ROOT).join(PAGE)).unwrap();
    let from_readme = commands_before_the_output(section);
    assert_eq!(from_readme, commands_before_the_output(&page));
    assert_eq!(from_readme.len(), 3, "{from_readme:#?}");
}
