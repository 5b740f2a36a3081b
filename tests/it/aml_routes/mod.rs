//! Azure ML routes (`online_endpoint:`, `workspace:`) end to end, against aml-azure-emulator in process (its Entra
//! ID, Resource Manager, workspace data plane and one scoring listener per auth mode), and the real binary where
//! the command line or its output is the subject.

mod canary;
mod cli;
mod errors;
mod modes;
mod rotation;
mod workspace;

use std::time::Duration;

use aml_auth_proxy::emulator::{Emulator, EmulatorOptions};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::emulator::{counts, start_with, token};
use crate::support::proxy::{CLIENT_ID, TestProxy};
use crate::support::{get, json_body, request};

/// The emulated workspace.
pub(crate) const SUBSCRIPTION: &str = "00000000-1111-2222-3333-444444444444";
pub(crate) const RESOURCE_GROUP: &str = "emulator-rg";
pub(crate) const WORKSPACE: &str = "emulator-ws";
/// The Resource Manager scope.
pub(crate) const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// An emulator with its default endpoints (`ep-aad`, `ep-key`, `ep-amltoken`) on ephemeral ports.
pub(crate) async fn emulator() -> Emulator {
    start_with(EmulatorOptions::ephemeral()).await
}

/// The configuration header for `emulator`: its Entra ID and Resource Manager, a `default` client-secret
/// credential, then `routes:`.
pub(crate) fn header(emulator: &Emulator) -> String {
    let urls = emulator.urls();
    format!(
        "authority_host: {}\nresource_manager: {}\ncredentials:\n  default:\n    client_secret: {{ tenant_id: contoso, client_id: {CLIENT_ID}, client_secret: route-secret }}\nroutes:\n",
        urls.authority_host, urls.resource_manager
    )
}

/// A route `/endpoints/{name}` for the emulated endpoint `name` with `auth`, then `extra` lines.
pub(crate) fn endpoint_route(name: &str, auth: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    path_prefix: /endpoints/{name}\n    online_endpoint: {{ subscription_id: {SUBSCRIPTION}, resource_group: {RESOURCE_GROUP}, workspace: {WORKSPACE}, name: {name}, auth: {auth} }}\n{extra}"
    )
}

/// A route `/ws` for the emulated workspace named `name`.
pub(crate) fn workspace_route(name: &str) -> String {
    format!(
        "  - name: ws\n    path_prefix: /ws\n    workspace: {{ subscription_id: {SUBSCRIPTION}, resource_group: {RESOURCE_GROUP}, name: {name} }}\n"
    )
}

/// `POST` a JSON body through the proxy.
pub(crate) async fn score(
    proxy: &TestProxy,
    path: &str,
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let (status, headers, body) = request(
        Method::POST,
        &proxy.url(path),
        &[("content-type", "application/json")],
        body.to_owned(),
    )
    .await;
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, value)
}

/// How many times the emulator's Resource Manager answered `operation` (`list_keys`, `token`, `endpoint_get`, …).
pub(crate) fn arm_calls(emulator: &Emulator, operation: &str) -> u64 {
    counts(emulator, "arm_requests", "operation")
        .get(operation)
        .copied()
        .unwrap_or(0)
}

/// How many scoring requests (of every endpoint) were answered with `status`.
pub(crate) fn scoring_status(emulator: &Emulator, status: u16) -> u64 {
    emulator.stats()["scoring_requests"]["by_status"][status.to_string()]
        .as_u64()
        .unwrap_or(0)
}

/// A Resource Manager `POST` on endpoint `name`'s `action` with a token of the test harness.
pub(crate) async fn arm_action(
    emulator: &Emulator,
    name: &str,
    action: &str,
    body: &str,
) -> (StatusCode, Value) {
    let urls = emulator.urls();
    let token = token(emulator, "harness", ARM_SCOPE).await;
    let auth = format!("Bearer {token}");
    let (status, _, body) = request(
        Method::POST,
        &format!(
            "{}{}/onlineEndpoints/{name}/{action}?api-version=2024-04-01",
            urls.resource_manager, urls.workspace.id
        ),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_owned(),
    )
    .await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Polls `/readyz` until it answers `status` (at most 10 s); returns its JSON.
pub(crate) async fn readyz(proxy: &TestProxy, status: StatusCode) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        let (got, _, body) = get(&proxy.admin_url("/readyz")).await;
        last = json_body(&body);
        if got == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("/readyz did not answer {status}: {last}");
}
