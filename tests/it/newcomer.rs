//! What a newcomer trips over, as they see it: the managed-identity example on a VM without a user-assigned
//! identity, a proxy setting (`curl -x`, `HTTPS_PROXY`) pointed at the proxy, a path no route serves, a misspelt
//! key or an unusable scope in the configuration, numbers in the access log, the answer when no credential source
//! is usable, and the Host names the proxy accepts by default.

use std::net::SocketAddr;
use std::path::Path;

use aml_auth_proxy::env::MapEnv;
use aml_auth_proxy::token_cache::CachePolicy;
use http::{Method, StatusCode};
use serde_json::Value;

use crate::support::process::{ClosedPort, RunningProxy, check_config, command, run_to_end};
use crate::support::proxy::{TempDir, TestProxy};
use crate::support::{ARM_SCOPE, MockIdentity, json_body, raw, request, trace_init};

/// A route to an upstream nothing listens on: these tests never get as far as forwarding.
fn route(name: &str, prefix: &str, credential: &str) -> String {
    format!(
        "  - {{ name: {name}, path_prefix: {prefix}, upstream: \"https://127.0.0.1:9\", scope: \"{ARM_SCOPE}\", credential: {credential} }}\n"
    )
}

/// A configuration whose one credential is a chain of sources an empty environment leaves unusable.
fn unusable_chain(routes: &str) -> String {
    format!(
        "credentials:\n  default:\n    chain: [environment, workload_identity]\nroutes:\n{routes}"
    )
}

/// Sends `head` as it is on a fresh connection; returns the status and the JSON body of the answer.
async fn raw_json(addr: SocketAddr, head: &str) -> (u16, Value) {
    let (status, _, body) = raw::send(addr, head).await;
    (status.as_u16(), json_body(&body))
}

// === managed identity ===

/// `config/managed-identity.yaml` exactly as shipped, on a VM (IMDS) with only a system-assigned identity.
async fn token_with_the_managed_identity_example(client_id: Option<&str>) -> (i32, Value, String) {
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let mock = MockIdentity::start().await;
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/managed-identity.yaml");
    let mut cmd = command(dir.path(), &imds);
    cmd.env("AZURE_POD_IDENTITY_AUTHORITY_HOST", mock.base())
        .arg("token")
        .arg("--config")
        .arg(&example)
        .arg("--scope")
        .arg(ARM_SCOPE);
    if let Some(id) = client_id {
        cmd.env("AML_IDENTITY_CLIENT_ID", id);
    }
    let out = run_to_end(cmd).await;
    let code = out.code().unwrap_or(-1);
    let stdout: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(mock.count(), 1, "one token request to IMDS: {out:#?}");
    let query = mock.last().query;
    let identity = ["client_id", "object_id", "msi_res_id", "mi_res_id"]
        .iter()
        .filter_map(|k| query.get(*k).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join("&");
    (code, stdout, identity)
}

#[tokio::test]
async fn the_managed_identity_example_uses_the_system_assigned_identity_when_no_client_id_is_set() {
    let _trace = trace_init();
    let (code, stdout, identity) = token_with_the_managed_identity_example(None).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout["source"], "managed_identity", "{stdout}");
    assert_eq!(
        identity, "",
        "no identity parameter: the system-assigned identity (was the nil GUID)"
    );

    let user_assigned = "7a0e4b3c-1111-2222-3333-444455556666";
    let (code, stdout, identity) =
        token_with_the_managed_identity_example(Some(user_assigned)).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(identity, format!("client_id={user_assigned}"));
}

#[tokio::test]
async fn check_config_says_which_managed_identity_the_example_uses() {
    let _trace = trace_init();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/managed-identity.yaml");
    for (client_id, says) in [
        (None, "credential vm: managed_identity (system-assigned)"),
        (
            Some("7a0e4b3c-1111-2222-3333-444455556666"),
            "credential vm: managed_identity (user-assigned, client_id 7a0e4b3c-1111-2222-3333-444455556666)",
        ),
    ] {
        let (dir, imds) = (TempDir::new(), ClosedPort::new());
        let mut cmd = command(dir.path(), &imds);
        cmd.arg("check-config").arg("--config").arg(&example);
        if let Some(id) = client_id {
            cmd.env("AML_IDENTITY_CLIENT_ID", id);
        }
        let out = run_to_end(cmd).await;
        assert_eq!(out.code(), Some(0), "{out:#?}");
        assert!(out.stdout.contains(says), "{}", out.stdout);
    }
}

#[tokio::test]
async fn check_config_refuses_the_nil_guid_as_a_managed_identity() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let file = dir.file(
        "config.yaml",
        &format!(
            "credentials:\n  vm:\n    managed_identity: {{ client_id: \"${{ID:-00000000-0000-0000-0000-000000000000}}\" }}\nroutes:\n{}",
            route("arm", "/", "vm")
        ),
        0o600,
    );
    let out = check_config(dir.path(), &imds, &file).await;
    assert_eq!(out.code(), Some(64), "{out:#?}");
    assert!(
        out.stderr.contains("credentials.vm.managed_identity.client_id: 00000000-0000-0000-0000-000000000000 is the nil GUID, not an identity; leave the key out (or empty) for the system-assigned identity"),
        "{}",
        out.stderr
    );
}

// === forward-proxy form ===

#[tokio::test]
async fn a_request_sent_as_to_a_forward_proxy_is_told_this_is_a_reverse_proxy_and_how_to_call_it() {
    let _trace = trace_init();
    let proxy = TestProxy::start_with(
        &unusable_chain(&route("arm", "/", "default")),
        MapEnv::new(),
        CachePolicy::default(),
    )
    .await;
    let addr = proxy.addr();
    let how = format!("send plain requests to it instead, as http://{addr}/<path>");

    // `curl -x http://127.0.0.1:8080 http://example.com/x` and HTTP_PROXY send the absolute URL.
    let (status, body) = raw_json(
        addr,
        "GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["error"]["code"], "HostNotAllowed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("this is a reverse proxy, not a forward proxy: it does not fetch URLs of example.com for you"),
        "{message}"
    );
    assert!(
        message.contains("`curl -x`, HTTP_PROXY and HTTPS_PROXY"),
        "{message}"
    );
    assert!(message.contains(&how), "{message}");
    assert!(!message.contains("DNS-rebinding"), "{message}");

    // `curl -x … https://…` and HTTPS_PROXY open a tunnel first.
    let (status, body) = raw_json(
        addr,
        "CONNECT management.azure.com:443 HTTP/1.1\r\nHost: management.azure.com:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["error"]["code"], "HostNotAllowed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("this is a reverse proxy, not a forward proxy: it does not open tunnels to management.azure.com for you"),
        "{message}"
    );
    assert!(message.contains(&how), "{message}");

    // A tunnel to the proxy's own address is no better.
    let (status, body) = raw_json(
        addr,
        &format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "BadRequest");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("CONNECT is not supported: this is a reverse proxy, not a forward proxy"),
        "{body}"
    );

    // A plain request with a foreign Host (what DNS rebinding produces) keeps its own explanation.
    let (status, body) = raw_json(
        addr,
        "GET /x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 421, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("DNS-rebinding"), "{message}");
    assert!(
        message.ends_with("call the proxy as one of: localhost, 127.0.0.1"),
        "only the names something listens on: {message}"
    );
    proxy.stop().await;
}

// === NoRoute ===

#[tokio::test]
async fn no_route_lists_the_configured_path_prefixes() {
    let _trace = trace_init();
    let routes = [
        route("arm", "/arm", "default"),
        route("scoring", "/score/my-endpoint", "default"),
        format!(
            "  - {{ name: local, path_prefix: /api, host: localhost, upstream: \"https://127.0.0.1:9\", scope: \"{ARM_SCOPE}\", credential: default }}\n"
        ),
    ]
    .concat();
    let proxy = TestProxy::start_with(
        &unusable_chain(&routes),
        MapEnv::new(),
        CachePolicy::default(),
    )
    .await;
    let (status, _, body) = request(Method::GET, &proxy.url("/subscriptions"), &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let error = &json_body(&body)["error"];
    assert_eq!(error["code"], "NoRoute");
    assert_eq!(
        error["message"],
        format!(
            "no route matches this path; the configured path prefixes are /arm, /score/my-endpoint, /api (Host \
             localhost); send requests to http://{} followed by one of them",
            proxy.addr()
        )
    );
    proxy.stop().await;
}

// === check-config ===

#[tokio::test]
async fn check_config_suggests_the_nearest_key_and_refuses_scopes_it_cannot_request() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let file = dir.file(
        "config.yaml",
        "allowed_host: [localhost]
credentials:
  sp:
    managed_identity: { clientId: abc }
routes:
  - name: arm
    path_prefix: /
    upstrem: https://management.azure.com
    scope: https://management.azure.com
    credential: sp
  - name: ml
    path_prefix: /ml
    upstream: https://ml.azure.com
    scope: https://ml.azure.com/user_impersonation
    credential: sp
  - name: other
    path_prefix: /other
    upstream: https://ml.azure.com
    scope: ml.azure.com/.default
    credential: sp
",
        0o600,
    );
    let out = check_config(dir.path(), &imds, &file).await;
    assert_eq!(out.code(), Some(64), "{out:#?}");
    assert_eq!(out.stdout, "", "{out:#?}");
    for line in [
        "allowed_host: unknown key `allowed_host` (did you mean `allowed_hosts`?)",
        "credentials.sp.managed_identity.clientId: unknown key `clientId` (did you mean `client_id`?)",
        "routes[0].upstrem: unknown key `upstrem` (did you mean `upstream`?)",
        "routes[0].scope: \"https://management.azure.com\" is a resource, not a scope: write \"https://management.azure.com/.default\"",
        "routes[1].scope: \"https://ml.azure.com/user_impersonation\" names one permission (`user_impersonation`); the proxy asks for a resource's default scope, which carries every permission granted to the identity: write \"https://ml.azure.com/.default\"",
        "routes[2].scope: \"ml.azure.com/.default\": before /.default comes the resource, an https:// or api:// URI or an application id (GUID), like \"https://management.azure.com/.default\"",
    ] {
        assert!(
            out.stderr.contains(line),
            "missing {line:?} in:\n{}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn token_refuses_a_scope_it_cannot_request_before_asking_anyone() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let mut cmd = command(dir.path(), &imds);
    cmd.args(["token", "--scope", "https://ml.azure.com"]);
    let out = run_to_end(cmd).await;
    assert_eq!(out.code(), Some(64), "{out:#?}");
    assert!(
        out.stderr.contains(
            "--scope: \"https://ml.azure.com\" is a resource, not a scope: write \"https://ml.azure.com/.default\""
        ),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

// === log numbers ===

/// Every `duration_ms` of the access lines, as written.
fn durations(stderr: &str, json: bool) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("aml_auth_proxy::access"))
        .map(|line| {
            if json {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(v["duration_ms"].is_number(), "{line}");
                // The number as written in the line, not as re-printed by serde.
                let at = line.find("\"duration_ms\":").unwrap() + "\"duration_ms\":".len();
                line[at..].split([',', '}']).next().unwrap().to_owned()
            } else {
                let at = line.find("duration_ms=").unwrap() + "duration_ms=".len();
                line[at..].split(' ').next().unwrap().to_owned()
            }
        })
        .collect()
}

#[tokio::test]
async fn access_lines_give_durations_to_the_microsecond_in_both_formats() {
    let _trace = trace_init();
    for (format, json) in [("text", false), ("json", true)] {
        let dir = TempDir::new();
        let imds = ClosedPort::new();
        let proxy = RunningProxy::start(
            &dir,
            &imds,
            &unusable_chain(&route("arm", "/arm", "default")),
            &["--log-format", format],
            &[],
        )
        .await;
        for i in 0..20 {
            let path = if i % 2 == 0 { "/nothing" } else { "/arm/x" };
            crate::support::get(&proxy.url(path)).await;
        }
        let out = proxy.stop().await;
        let durations = durations(&out.stderr, json);
        assert_eq!(durations.len(), 20, "{format}: {}", out.stderr);
        for d in durations {
            let decimals = d.split_once('.').map_or(0, |(_, f)| f.len());
            assert!(
                decimals <= 3 && d.parse::<f64>().is_ok(),
                "{format}: duration_ms={d} has float noise"
            );
        }
    }
}

// === CredentialUnavailable ===

#[tokio::test]
async fn credential_unavailable_says_each_reason_once() {
    let _trace = trace_init();
    let proxy = TestProxy::start_with(
        &format!(
            "credentials:\n  inner:\n    chain: [environment, workload_identity]\n  default:\n    chain: [inner, device_code]\nroutes:\n{}",
            route("arm", "/", "default")
        ),
        MapEnv::new(),
        CachePolicy::default(),
    )
    .await;
    let (status, headers, body) = request(Method::GET, &proxy.url("/x"), &[], "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let text = String::from_utf8_lossy(&body).into_owned();
    let error = &json_body(&body)["error"];
    assert_eq!(error["code"], "CredentialUnavailable");
    let details = error["details"].as_array().unwrap();
    let sources: Vec<&str> = details
        .iter()
        .map(|d| d["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        ["environment", "workload_identity", "device_code"],
        "{text}"
    );
    assert_eq!(
        error["message"],
        "no credential source can provide a token; tried environment, workload_identity, device_code (why \
         each could not is in details)"
    );
    for detail in details {
        let reason = detail["message"].as_str().unwrap();
        assert!(!reason.is_empty());
        let escaped = serde_json::to_string(reason).unwrap();
        assert_eq!(
            text.matches(escaped.trim_matches('"')).count(),
            1,
            "{reason:?} is said more than once: {text}"
        );
    }
    proxy.stop().await;
}
