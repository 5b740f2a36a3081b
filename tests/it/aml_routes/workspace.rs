//! Workspace routes: read from a `config.json` (the file `Workspace.from_config()` reads), resolved to the data
//! plane the discovery document names; not ready with the reason until resolved; resolved again on reload
//! (SIGHUP).

use http::StatusCode;

use super::{RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, arm_calls, emulator, header, readyz};
use crate::emulator::fault;
use crate::support::proxy::{TempDir, TestProxy};
use crate::support::{expect_proxy_error, get, json_body, trace_init};

/// A `/ws` route reading `config.json` in `dir`.
fn config_json_route(dir: &TempDir, json: &str) -> String {
    let file = dir.file("config.json", json, 0o644);
    format!(
        "  - name: ws\n    path_prefix: /ws\n    workspace: {{ config_file: {} }}\n",
        file.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_route_from_config_json_forwards_to_the_discovered_data_plane() {
    let _trace = trace_init();
    let emulator = emulator().await;
    let dir = TempDir::new();
    let json = format!(
        r#"{{"subscription_id": "{SUBSCRIPTION}", "resource_group": "{RESOURCE_GROUP}", "workspace_name": "{WORKSPACE}"}}"#
    );
    let yaml = format!("{}{}", header(&emulator), config_json_route(&dir, &json));
    let proxy = TestProxy::start(&yaml).await;
    readyz(&proxy, StatusCode::OK).await;

    let (status, _, body) = get(&proxy.url("/ws/history/v1.0/runs?x=1")).await;
    let echo = json_body(&body);
    assert_eq!(status, StatusCode::OK, "{echo}");
    let upstream = emulator
        .urls()
        .upstream
        .trim_start_matches("http://")
        .to_owned();
    assert_eq!(
        echo["authority"], upstream,
        "the discovery document's api origin"
    );
    assert_eq!(echo["path"], "/history/v1.0/runs");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(
        echo["authorization"]["claims"]["aud"],
        "https://management.azure.com"
    );

    // The workspace's MLflow tracking service, under the tracking path Resource Manager gave.
    let tracking = format!(
        "/ws/mlflow/v1.0/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
    );
    let (status, _, body) = get(&proxy.url(&format!(
        "{tracking}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    )))
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["experiment"]["experiment_id"], "0");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scope_form_of_config_json_works_too() {
    let _trace = trace_init();
    let emulator = emulator().await;
    let dir = TempDir::new();
    let json = format!(
        r#"{{"Scope": "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"}}"#
    );
    let proxy = TestProxy::start(&format!(
        "{}{}",
        header(&emulator),
        config_json_route(&dir, &json)
    ))
    .await;
    readyz(&proxy, StatusCode::OK).await;
    assert_eq!(get(&proxy.url("/ws/x")).await.0, StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn not_ready_with_the_reason_until_resolved_and_resolved_again_on_reload() {
    let _trace = trace_init();
    let emulator = emulator().await;
    let rule = emulator.add_fault(fault("deny=read,on=arm"));
    let yaml = format!("{}{}", header(&emulator), super::workspace_route(WORKSPACE));
    let proxy = TestProxy::start(&yaml).await;
    let ready = readyz(&proxy, StatusCode::SERVICE_UNAVAILABLE).await;
    let mut missing = ready["missing"][0].clone();
    for _ in 0..100 {
        if missing["code"] == "AuthorizationFailed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        missing = json_body(&get(&proxy.admin_url("/readyz")).await.2)["missing"][0].clone();
    }
    assert_eq!(missing["route"], "ws");
    assert_eq!(missing["code"], "AuthorizationFailed", "{missing}");
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("workspace emulator-ws"),
        "{missing}"
    );
    let answer = get(&proxy.url("/ws/x")).await;
    expect_proxy_error(&answer, StatusCode::FORBIDDEN, "AuthorizationFailed");
    let reads = arm_calls(&emulator, "workspace_get");

    // The permission is granted; a reload (what SIGHUP does) resolves at once, without waiting for the retry.
    emulator.remove_fault(rule);
    proxy.reload(&yaml).await.unwrap();
    readyz(&proxy, StatusCode::OK).await;
    assert_eq!(get(&proxy.url("/ws/x")).await.0, StatusCode::OK);
    assert_eq!(
        arm_calls(&emulator, "workspace_get"),
        reads + 1,
        "one read after the reload"
    );
    proxy.stop().await;
}

/// The real binary and a real SIGHUP: a route whose workspace could not be read is resolved again at once.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_resolves_azure_ml_routes_again() {
    let _trace = trace_init();
    let emulator = emulator().await;
    let rule = emulator.add_fault(fault("deny=read,on=arm"));
    let dir = TempDir::new();
    let yaml = format!("{}{}", header(&emulator), super::workspace_route(WORKSPACE));
    let proxy = crate::support::process::RunningProxy::start_in(&dir, &yaml).await;
    let mut refused = false;
    for _ in 0..500 {
        let (status, _, body) = get(&proxy.admin_url("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        if json_body(&body)["missing"][0]["code"] == "AuthorizationFailed" {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "/readyz never reported the refusal");

    emulator.remove_fault(rule);
    let reads = arm_calls(&emulator, "workspace_get");
    proxy.child.signal("HUP");
    let mut ready = false;
    for _ in 0..150 {
        if get(&proxy.admin_url("/readyz")).await.0 == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ready, "not ready within 3 s of SIGHUP");
    assert_eq!(
        arm_calls(&emulator, "workspace_get"),
        reads + 1,
        "resolved again by the reload"
    );
    assert_eq!(get(&proxy.url("/ws/x")).await.0, StatusCode::OK);
    let out = proxy.stop().await;
    assert!(
        out.stderr.contains("configuration reloaded"),
        "{}",
        out.stderr
    );
}
