//! Files that would block a reader (a FIFO standing in for a secret, as a hung network mount would) never stall
//! the process: the real binary refuses them at `check-config`, at start-up and on SIGHUP, naming the key and the
//! file, and keeps serving requests, `/healthz` and signals meanwhile. Configuration files too large or too deeply
//! nested to parse cheaply are refused before parsing.
//!
//! A FIFO is the local stand-in for a file whose read never returns: opening it for reading waits for a writer.
//! The proxy refuses it without opening it; reads that do hang (a hung mount) are abandoned after a timeout, which
//! `file_read::tests` proves with a read that blocks on purpose.

use std::path::Path;
use std::time::Duration;

use http::StatusCode;

use crate::support::get;
use crate::support::process::{ChildProc, ClosedPort, RunningProxy, command, free_addr, try_get};
use crate::support::proxy::{CLIENT_ID, TempDir, World, release_fifo};
use crate::support::trace_init;

/// Generous upper bound for a command that must not hang (it turns a hang into a failure; it measures nothing).
const HANG_GUARD: Duration = Duration::from_secs(15);

/// A `client_secret` credential `sp` whose secret is in `file`.
fn sp_with_secret_file(file: &Path) -> String {
    format!(
        "  sp:\n    client_secret: {{ tenant_id: fifo, client_id: {CLIENT_ID}, client_secret_file: {} }}\n",
        file.display()
    )
}

const SECRET_KEY: &str = "credentials.sp.client_secret.client_secret_file";

#[tokio::test(flavor = "multi_thread")]
async fn check_config_and_run_refuse_a_secret_file_that_is_a_fifo_with_exit_64() {
    let _trace = trace_init();
    let world = World::new().await;
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let fifo = dir.fifo("sp-secret");
    let config = world.config(
        &sp_with_secret_file(&fifo),
        &world.route("arm", "/", "sp", ""),
    );
    let file = dir.file("config.yaml", &config, 0o600);
    let expected = format!(
        "{SECRET_KEY}: {} is a FIFO (named pipe), not a regular file",
        fifo.display()
    );
    let (listen, admin) = (free_addr().to_string(), free_addr().to_string());
    for subcommand in [
        vec!["check-config"],
        vec!["run", "--listen", &listen, "--admin-listen", &admin],
    ] {
        let mut cmd = command(dir.path(), &imds);
        cmd.args(&subcommand).arg("--config").arg(&file);
        let mut child = ChildProc::spawn(cmd);
        if child.wait_exit(HANG_GUARD).await.is_none() {
            release_fifo(&fifo);
            panic!(
                "{subcommand:?} blocked on the FIFO: {}",
                child.stderr_so_far()
            );
        }
        let out = child.finish(HANG_GUARD).await;
        assert_eq!(out.code(), Some(64), "{subcommand:?}: {out:#?}");
        assert!(out.stderr.contains(&expected), "{subcommand:?}: {out:#?}");
    }
}

/// One worker thread, as in a one-CPU container: there, a read blocking a worker used to stop everything.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_secret_file_that_is_a_fifo_keeps_serving_and_sigterm_still_stops() {
    let _trace = trace_init();
    let world = World::new().await;
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let secret = dir.file("sp-secret", "fifo-test-secret", 0o600);
    let route = world.route("arm", "/", "sp", "");
    let body = world.config(&sp_with_secret_file(&secret), &route);
    let proxy = RunningProxy::start(&dir, &imds, &body, &["--worker-threads", "1"], &[]).await;
    assert_eq!(get(&proxy.url("/x")).await.0, StatusCode::OK);

    // The same configuration, except that the secret file is now a FIFO nobody writes to.
    let fifo = dir.fifo("sp-secret-fifo");
    let file = proxy.config.clone().unwrap();
    let listeners: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    let next = world.config(&sp_with_secret_file(&fifo), &route);
    std::fs::write(&file, format!("{listeners}{next}")).unwrap();
    kill(&proxy, "-HUP");

    // The reload fails with one error line naming the key and the file.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let refused = loop {
        let stderr = proxy.child.stderr_so_far();
        let lines: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains("configuration reload refused"))
            .map(str::to_owned)
            .collect();
        if !lines.is_empty() {
            break lines;
        }
        if tokio::time::Instant::now() > deadline {
            release_fifo(&fifo);
            panic!("no reload error within {HANG_GUARD:?}: {stderr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains(SECRET_KEY)
            && refused[0].contains(&fifo.display().to_string())
            && refused[0].contains("is a FIFO (named pipe), not a regular file"),
        "{refused:?}"
    );

    // Requests, /healthz and /metrics keep being served on the running configuration.
    for _ in 0..3 {
        let health = try_get(&proxy.admin_url("/healthz")).await;
        let proxied = try_get(&proxy.url("/x")).await;
        if !matches!((&health, &proxied), (Ok(h), Ok(p)) if h.0 == StatusCode::OK && p.0 == StatusCode::OK)
        {
            release_fifo(&fifo);
            panic!("the proxy stopped serving: /healthz {health:?}, /x {proxied:?}");
        }
    }
    let metrics = String::from_utf8(get(&proxy.admin_url("/metrics")).await.2.to_vec()).unwrap();
    assert!(
        metrics.contains("aml_auth_proxy_config_reload_failures_total 1"),
        "{metrics}"
    );

    // SIGTERM stops it promptly, with exit 0.
    let mut child = proxy.child;
    child.sigterm();
    if child.wait_exit(HANG_GUARD).await.is_none() {
        release_fifo(&fifo);
        panic!("SIGTERM did not stop the proxy: {}", child.stderr_so_far());
    }
    let out = child.finish(HANG_GUARD).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

/// Documents the YAML parser would need tens of seconds for (100 000 nested levels) or that are far beyond any
/// configuration (200 MiB, a sparse file) are refused before parsing, with exit 64 and the limit in the message.
#[tokio::test(flavor = "multi_thread")]
async fn check_config_refuses_deep_nesting_and_huge_files_before_parsing() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let n = 100_000;
    let flow = dir.file(
        "flow.yaml",
        &format!("routes: {}{}\n", "[".repeat(n), "]".repeat(n)),
        0o600,
    );
    let flow_map = dir.file(
        "flow-map.yaml",
        &format!("routes:\n  x: {}1{}\n", "{a: ".repeat(n), "}".repeat(n)),
        0o600,
    );
    let block = dir.file(
        "block.yaml",
        &format!("routes:\n{}x\n", "- ".repeat(n)),
        0o600,
    );
    let huge = dir.path().join("huge.yaml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(200 * 1024 * 1024)
        .unwrap();
    for (file, message) in [
        (
            &flow,
            "`[`/`{` collections nest more than 64 levels deep at line 1",
        ),
        (
            &flow_map,
            "`[`/`{` collections nest more than 64 levels deep at line 2",
        ),
        (
            &block,
            "indented collections (or `- ` chains) nest more than 64 levels deep at line 2",
        ),
        (
            &huge,
            "is larger than 1048576 bytes (1 MiB), the limit for a configuration file",
        ),
    ] {
        let mut cmd = command(dir.path(), &imds);
        cmd.arg("check-config").arg("--config").arg(file);
        let out = ChildProc::spawn(cmd).finish(HANG_GUARD).await;
        assert_eq!(out.code(), Some(64), "{}: {out:#?}", file.display());
        assert!(out.stderr.contains(message), "{}: {out:#?}", file.display());
    }
}

fn kill(proxy: &RunningProxy, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(signal)
        .arg(proxy.child.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
