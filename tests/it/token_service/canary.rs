//! The canary, with the real binary at trace level: neither a token the token service handed out nor its
//! secret (nor a near miss of it) appears in a log line, a metric or an error answer. Each issuance is one info
//! line naming identity, resource, credential and expiry.

use http::{Method, StatusCode};
use serde_json::Value;

use super::{SECRET, UAMI};
use crate::support::process::{ClosedPort, RunningProxy, free_addr};
use crate::support::proxy::World;
use crate::support::{Behavior, get, json_body, request, trace_init};

/// One request: path and query, headers, the expected status.
type Call<'a> = (String, Vec<(&'a str, &'a str)>, StatusCode);

#[tokio::test]
async fn no_token_or_secret_reaches_a_log_line_a_metric_or_an_error_body() {
    let _t = trace_init();
    let world = World::new().await;
    world.aad.set_behavior(
        "canary-blocked",
        Behavior::fixture(
            StatusCode::BAD_REQUEST,
            "aad_error_53003_blocked_by_conditional_access.json",
        ),
    );
    let ts_addr = free_addr();
    let secret_file = world.dir.file("identity-secret", SECRET, 0o600);
    let credentials = format!(
        "{}{}",
        World::sp("sp", "canary-ts"),
        World::sp("blocked", "canary-blocked")
    );
    let yaml = format!(
        "{}token_service:\n  listen: {ts_addr}\n  secret_file: {}\n  imds: true\n  identities:\n    default: sp\n    \"{UAMI}\": blocked\n  allowed_resources: [https://management.azure.com, https://ml.azure.com]\n",
        world.config(&credentials, &world.route("arm", "/", "sp", "")),
        secret_file.display()
    );
    let imds = ClosedPort::new();
    let proxy = RunningProxy::start(&world.dir, &imds, &yaml, &["--log-level", "trace"], &[]).await;
    let base = format!("http://{ts_addr}");
    let near_miss = format!("{}!", &SECRET[..SECRET.len() - 1]);

    let mut tokens = Vec::new();
    let mut error_bodies = Vec::new();
    let calls: [Call<'_>; 7] = [
        (
            "/msi/token?api-version=2019-08-01&resource=https://management.azure.com".into(),
            vec![("x-identity-header", SECRET)],
            StatusCode::OK,
        ),
        (
            "/msi/token?api-version=2017-09-01&resource=https://ml.azure.com".into(),
            vec![("secret", SECRET)],
            StatusCode::OK,
        ),
        (
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://ml.azure.com"
                .into(),
            vec![("metadata", "true")],
            StatusCode::OK,
        ),
        (
            "/msi/token?api-version=2019-08-01&resource=https://management.azure.com".into(),
            vec![("x-identity-header", near_miss.as_str())],
            StatusCode::UNAUTHORIZED,
        ),
        (
            format!(
                "/msi/token?api-version=2019-08-01&resource=https://management.azure.com&client_id={UAMI}"
            ),
            vec![("x-identity-header", SECRET)],
            StatusCode::FORBIDDEN,
        ),
        (
            "/msi/token?api-version=2019-08-01&resource=https://vault.azure.net".into(),
            vec![("x-identity-header", SECRET)],
            StatusCode::FORBIDDEN,
        ),
        (
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://ml.azure.com"
                .into(),
            vec![("x-forwarded-for", "10.0.0.1"), ("metadata", "true")],
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, headers, status) in &calls {
        let (got, _, body) = request(Method::GET, &format!("{base}{path}"), headers, "").await;
        assert_eq!(got, *status, "{path}: {body:?}");
        let j = json_body(&body);
        match j.get("access_token").and_then(Value::as_str) {
            Some(token) => tokens.push(token.to_owned()),
            None => error_bodies.push(String::from_utf8_lossy(&body).into_owned()),
        }
    }
    assert_eq!(tokens.len(), 3);
    let (_, _, metrics) = get(&proxy.admin_url("/metrics")).await;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(metrics.contains("aml_auth_proxy_token_service_requests_total{identity=\"default\",outcome=\"success\",protocol=\"imds\"} 1"), "{metrics}");
    let out = proxy.stop().await;
    let logs = out.all();

    let mut secrets: Vec<String> = world
        .aad
        .registry()
        .all()
        .into_iter()
        .map(|t| t.token)
        .collect();
    secrets.extend(tokens.iter().cloned());
    secrets.push(SECRET.to_owned());
    secrets.push(near_miss.clone());
    secrets.push(SECRET[..16].to_owned());
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "{secret} in the logs");
        assert!(
            !metrics.contains(secret.as_str()),
            "{secret} in the metrics"
        );
        for body in &error_bodies {
            assert!(!body.contains(secret.as_str()), "{secret} in {body}");
        }
    }
    let issued: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["message"] == "token service: token issued")
        .collect();
    assert_eq!(issued.len(), 3, "one line per issuance: {issued:?}");
    for line in &issued {
        assert_eq!(line["level"], "INFO");
        for field in [
            "identity",
            "resource",
            "credential",
            "expires_on",
            "protocol",
        ] {
            assert!(line.get(field).is_some(), "{field} in {line}");
        }
        assert_eq!(line["credential"], "sp");
    }
}
