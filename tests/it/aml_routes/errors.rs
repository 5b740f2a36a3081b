//! Resource Manager's refusals as the proxy's answers: a denied action is 403 `AuthorizationFailed` naming it, a
//! missing endpoint or workspace 404 `ResourceNotFound`, throttling 503 `TokenServiceUnavailable` with
//! `Retry-After`; `/readyz` names the endpoint or workspace and why.

use http::StatusCode;

use super::{emulator, endpoint_route, header, readyz, score, workspace_route};
use crate::emulator::fault;
use crate::support::proxy::TestProxy;
use crate::support::{expect_proxy_error, get, request, retry_after_secs, trace_init};

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_list_keys_is_403_authorization_failed_naming_the_action() {
    let _trace = trace_init();
    let emulator = emulator().await;
    emulator.add_fault(fault("deny=listkeys,endpoint=ep-key"));
    let yaml = format!(
        "{}{}",
        header(&emulator),
        endpoint_route("ep-key", "auto", "")
    );
    let proxy = TestProxy::start(&yaml).await;
    let answer = request(
        http::Method::POST,
        &proxy.url("/endpoints/ep-key/score"),
        &[],
        "{}",
    )
    .await;
    let error = expect_proxy_error(&answer, StatusCode::FORBIDDEN, "AuthorizationFailed");
    let message = error["message"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        message.contains(
            "microsoft.machinelearningservices/workspaces/onlineendpoints/listkeys/action"
        ),
        "{error}"
    );
    assert!(
        message.contains("listkeys of online endpoint ep-key"),
        "{error}"
    );
    assert_eq!(error["source"], "resource_manager");
    assert!(answer.1.get("retry-after").is_none());

    let ready = readyz(&proxy, StatusCode::SERVICE_UNAVAILABLE).await;
    let missing = &ready["missing"][0];
    assert_eq!(missing["route"], "ep-key", "{ready}");
    assert_eq!(missing["code"], "AuthorizationFailed", "{ready}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_names_an_endpoint_whose_mode_could_not_be_read() {
    let _trace = trace_init();
    let emulator = emulator().await;
    emulator.add_fault(fault("deny=read,endpoint=ep-aad"));
    let routes = [
        endpoint_route("ep-aad", "auto", ""),
        endpoint_route("ep-key", "auto", ""),
    ]
    .concat();
    let proxy = TestProxy::start(&format!("{}{routes}", header(&emulator))).await;
    let mut ready = readyz(&proxy, StatusCode::SERVICE_UNAVAILABLE).await;
    for _ in 0..100 {
        if ready["missing"].as_array().is_some_and(|m| m.len() == 1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        ready = crate::support::json_body(&get(&proxy.admin_url("/readyz")).await.2);
    }
    let missing = ready["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{ready}");
    assert_eq!(missing[0]["route"], "ep-aad");
    assert_eq!(missing[0]["code"], "AuthorizationFailed");
    let message = missing[0]["message"].as_str().unwrap();
    assert!(
        message.contains("online endpoint ep-aad: reading its authMode"),
        "{message}"
    );
    assert_eq!(
        ready["routes"][0]["route"], "ep-key",
        "the other endpoint is ready: {ready}"
    );
    let answer = request(
        http::Method::POST,
        &proxy.url("/endpoints/ep-aad/score"),
        &[],
        "{}",
    )
    .await;
    expect_proxy_error(&answer, StatusCode::FORBIDDEN, "AuthorizationFailed");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_endpoint_or_workspace_is_404_resource_not_found() {
    let _trace = trace_init();
    let emulator = emulator().await;
    let routes = [
        endpoint_route("ep-gone", "auto", ""),
        workspace_route("other-ws"),
    ]
    .concat();
    let proxy = TestProxy::start(&format!("{}{routes}", header(&emulator))).await;
    let answer = request(
        http::Method::POST,
        &proxy.url("/endpoints/ep-gone/score"),
        &[],
        "{}",
    )
    .await;
    let error = expect_proxy_error(&answer, StatusCode::NOT_FOUND, "ResourceNotFound");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("online endpoint ep-gone"),
        "{error}"
    );
    let answer = get(&proxy.url("/ws/anything")).await;
    let error = expect_proxy_error(&answer, StatusCode::NOT_FOUND, "ResourceNotFound");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("workspace other-ws"),
        "{error}"
    );
    let ready = readyz(&proxy, StatusCode::SERVICE_UNAVAILABLE).await;
    let codes: Vec<_> = ready["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes, ["ResourceNotFound", "ResourceNotFound"], "{ready}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resource_manager_throttling_is_token_service_unavailable_with_retry_after() {
    let _trace = trace_init();
    let emulator = emulator().await;
    emulator.add_fault(fault("throttle=17,on=arm"));
    let yaml = format!(
        "{}{}",
        header(&emulator),
        endpoint_route("ep-aad", "auto", "")
    );
    let proxy = TestProxy::start(&yaml).await;
    let answer = score(&proxy, "/endpoints/ep-aad/score", "{}").await;
    let (status, headers, body) = answer;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["x-aml-auth-proxy-error"], "TokenServiceUnavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("throttling"),
        "{body}"
    );
    let retry = retry_after_secs(&headers);
    assert!((1..=17).contains(&retry), "Retry-After {retry}");
    proxy.stop().await;
}
