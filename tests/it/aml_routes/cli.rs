//! The command line with Azure ML routes: `env` prints working lines (the real binary, against the emulator in
//! process), and `check-config` lists every problem of the new blocks with its key path (exit 64).

use std::path::Path;

use http::StatusCode;

use super::{RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, emulator, endpoint_route, header};
use crate::support::process::{
    ClosedPort, Output, RunningProxy, check_config, command, run_to_end,
};
use crate::support::proxy::TempDir;
use crate::support::{get, json_body, request, trace_init};

/// `aml-auth-proxy env --config FILE --route ROUTE`, run to its end with `dir` as home.
async fn env(dir: &TempDir, imds: &ClosedPort, file: &Path, route: &str) -> Output {
    let mut cmd = command(dir.path(), imds);
    cmd.arg("env")
        .arg("--config")
        .arg(file)
        .arg("--route")
        .arg(route);
    run_to_end(cmd).await
}

/// The `export NAME='value'` lines of `env`'s output, as pairs.
fn exports(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .map(|line| {
            let rest = line.strip_prefix("export ").expect("export lines only");
            let (name, value) = rest.split_once('=').unwrap();
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn env_prints_a_working_mlflow_tracking_uri_and_scoring_uri() {
    let _trace = trace_init();
    let emulator = emulator().await;
    let dir = TempDir::new();
    let yaml = format!(
        "{}{}{}",
        header(&emulator),
        super::workspace_route(WORKSPACE),
        endpoint_route("ep-key", "auto", "")
    );
    let proxy = RunningProxy::start_in(&dir, &yaml).await;
    let file = proxy.config.clone().unwrap();
    let imds = ClosedPort::new();

    let out = env(&dir, &imds, &file, "ws").await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    let lines = exports(&out.stdout);
    let base = format!("http://{}", proxy.listen);
    let tracking = format!(
        "{base}/ws/mlflow/v1.0/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
    );
    assert_eq!(
        lines,
        [
            ("AML_AUTH_PROXY_URL".to_owned(), format!("{base}/ws")),
            ("MLFLOW_TRACKING_URI".to_owned(), tracking.clone()),
        ]
    );
    // The printed URI works: MLflow's REST API through the proxy.
    let (status, _, body) = get(&format!(
        "{tracking}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["experiment"]["name"], "Default");

    let out = env(&dir, &imds, &file, "ep-key").await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    let lines = exports(&out.stdout);
    assert_eq!(lines[1].0, "SCORING_URI");
    assert_eq!(lines[1].1, format!("{base}/endpoints/ep-key/score"));
    let (status, _, body) = request(http::Method::POST, &lines[1].1, &[], "{}").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    // An unknown route is a usage error naming the routes.
    let out = env(&dir, &imds, &file, "nope").await;
    assert_eq!(out.code(), Some(64), "{out:#?}");
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("no route named \"nope\" (routes: ws, ep-key)"),
        "{out:#?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn env_reports_a_resource_manager_refusal_with_exit_1() {
    let _trace = trace_init();
    let emulator = emulator().await;
    emulator.add_fault(crate::emulator::fault("deny=read,on=arm"));
    let dir = TempDir::new();
    let yaml = format!(
        "listen: 127.0.0.1:8080\n{}{}",
        header(&emulator),
        super::workspace_route(WORKSPACE)
    );
    let file = dir.file("config.yaml", &yaml, 0o600);
    let out = env(&dir, &ClosedPort::new(), &file, "ws").await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("env: route ws: AuthorizationFailed: workspace emulator-ws"),
        "{out:#?}"
    );
    assert!(
        out.stderr
            .contains("Microsoft.MachineLearningServices/workspaces/read"),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_lists_every_problem_of_the_azure_ml_blocks() {
    let _trace = trace_init();
    let dir = TempDir::new();
    let yaml = format!(
        r#"resource_manager: http://management.example.com
credentials:
  default: {{ azure_cli: {{}} }}
routes:
  - name: a
    path_prefix: /a
    online_endpoint: {{ subscription_id: {SUBSCRIPTION}, resource_group: rg, workspace: ws, auth: password }}
  - name: b
    path_prefix: /b
    upstream: https://example.com
    scope: https://ml.azure.com/.default
    online_endpoint: {{ subscription_id: "a/b", resource_group: rg, workspace: ws, name: e }}
  - name: c
    path_prefix: /c
    workspace: {{ config_file: ./missing.json }}
  - name: d
    path_prefix: /d
    workspace: {{ config_file: ./config.json, name: ws }}
  - name: e
    path_prefix: /e
    workspace: {{ subscription_id: s, resource_group: rg }}
    strip_prefix: false
  - name: f
    path_prefix: /f
    workspace: {{ config_file: ./partial.json }}
"#
    );
    dir.file("config.json", "{}", 0o644);
    dir.file("partial.json", r#"{"subscription_id": "s"}"#, 0o644);
    let file = dir.file("config.yaml", &yaml, 0o600);
    let out = check_config(dir.path(), &ClosedPort::new(), &file).await;
    assert_eq!(out.code(), Some(64), "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    for expected in [
        "resource_manager: plain http is only allowed for loopback hosts",
        "routes[0].online_endpoint.auth: unknown auth \"password\" (expected auto, key, aml_token or aad_token)",
        "routes[0].online_endpoint.name: required key is missing",
        "routes[1].upstream: not allowed with online_endpoint",
        "routes[1].scope: not allowed with online_endpoint",
        "routes[1].online_endpoint.subscription_id: invalid name \"a/b\"",
        "routes[2].workspace.config_file: cannot open",
        "routes[3].workspace.config_file: give either config_file or subscription_id, resource_group and name, not both",
        "routes[4].workspace.name: required key is missing",
        "routes[4].strip_prefix: not allowed with workspace",
        "routes[5].workspace.config_file:",
        "must contain subscription_id, resource_group and workspace_name (or Scope)",
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            out.stderr
        );
    }
}
