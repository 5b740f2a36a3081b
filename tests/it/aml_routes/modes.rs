//! Each auth mode scores through the proxy; cold requests share one Resource Manager call; an AML token is
//! refreshed at `refreshAfterTimeUtc` and never used past `expiryTimeUtc`.

use std::time::Duration;

use aml_auth_proxy::emulator::EmulatorOptions;
use http::StatusCode;

use super::{arm_calls, emulator, endpoint_route, header, readyz, score, scoring_status};
use crate::emulator::{fault, start_with};
use crate::support::proxy::TestProxy;
use crate::support::trace_init;

#[tokio::test(flavor = "multi_thread")]
async fn each_auth_mode_scores_with_the_credential_its_mode_needs() {
    let _trace = trace_init();
    let emulator = emulator().await;
    let routes = [
        endpoint_route("ep-aad", "auto", ""),
        endpoint_route("ep-key", "auto", ""),
        endpoint_route(
            "ep-amltoken",
            "aml_token",
            "    allow: { methods: [POST] }\n",
        ),
    ]
    .concat();
    let proxy = TestProxy::start(&format!("{}{routes}", header(&emulator))).await;
    let ready = readyz(&proxy, StatusCode::OK).await;
    assert_eq!(ready["routes"].as_array().unwrap().len(), 3, "{ready}");

    let (status, _, echo) = score(
        &proxy,
        "/endpoints/ep-aad/score",
        r#"{"input_data": [[1]]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["auth_mode"], "AADToken");
    assert_eq!(
        echo["path"], "/score",
        "the prefix is replaced by the scoring origin's /"
    );
    assert_eq!(
        echo["authorization"]["claims"]["aud"],
        "https://ml.azure.com"
    );
    assert_eq!(echo["body"], r#"{"input_data": [[1]]}"#);

    let (status, _, echo) = score(&proxy, "/endpoints/ep-key/score", "{}").await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["auth_mode"], "Key");
    assert_eq!(echo["authorization"]["key"], "primary");

    let (status, _, echo) = score(&proxy, "/endpoints/ep-amltoken/score", "{}").await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["auth_mode"], "AMLToken");
    assert_eq!(
        echo["authorization"]["claims"]["aml_endpoint"],
        "ep-amltoken"
    );

    // The route's policy still applies, before any credential is used.
    let (status, _, _) = crate::support::get(&proxy.url("/endpoints/ep-amltoken/score")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // Each credential was read once: one listKeys, one AML token, three endpoint reads.
    assert_eq!(arm_calls(&emulator, "list_keys"), 1);
    assert_eq!(arm_calls(&emulator, "token"), 1);
    assert_eq!(arm_calls(&emulator, "endpoint_get"), 3);
    assert_eq!(scoring_status(&emulator, 401), 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_cold_requests_cost_one_resource_manager_call_each() {
    let _trace = trace_init();
    let emulator = emulator().await;
    // Resource Manager is slow, so every request arrives before the endpoint is read or its key held.
    emulator.add_fault(fault("latency=400ms,on=arm,endpoint=ep-key"));
    let yaml = format!(
        "{}{}",
        header(&emulator),
        endpoint_route("ep-key", "auto", "")
    );
    let proxy = TestProxy::start(&yaml).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let url = proxy.url("/endpoints/ep-key/score");
        tasks.spawn(async move {
            crate::support::request(http::Method::POST, &url, &[], format!("{{\"i\": {i}}}")).await
        });
    }
    let mut ok = 0;
    while let Some(answer) = tasks.join_next().await {
        let (status, _, body) = answer.unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        ok += 1;
    }
    assert_eq!(ok, 50);
    assert_eq!(
        arm_calls(&emulator, "endpoint_get"),
        1,
        "one read of the endpoint"
    );
    assert_eq!(
        arm_calls(&emulator, "list_keys"),
        1,
        "one listKeys for 50 cold requests"
    );
    assert_eq!(scoring_status(&emulator, 200), 50);
    proxy.stop().await;
}

/// Real time (the emulator's AML tokens carry wall-clock epoch seconds): tokens living 10 s, refresh after 5 s
/// (whole seconds, minus up to 0.5 s of jitter). That a token is never used past its expiry is shown with the
/// paused clock in `azure_ml::secrets`' unit tests.
#[tokio::test(flavor = "multi_thread")]
async fn an_aml_token_is_refreshed_once_after_refresh_after() {
    let _trace = trace_init();
    let emulator = start_with(EmulatorOptions {
        aml_token_lifetime: Duration::from_secs(10),
        ..EmulatorOptions::ephemeral()
    })
    .await;
    let yaml = format!(
        "{}{}",
        header(&emulator),
        endpoint_route("ep-amltoken", "auto", "")
    );
    let proxy = TestProxy::start(&yaml).await;
    readyz(&proxy, StatusCode::OK).await;
    let started = tokio::time::Instant::now();
    let (status, _, first) = score(&proxy, "/endpoints/ep-amltoken/score", "{}").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(arm_calls(&emulator, "token"), 1);

    // Before refreshAfterTimeUtc: the same token.
    tokio::time::sleep_until(started + Duration::from_millis(1000)).await;
    let (_, _, same) = score(&proxy, "/endpoints/ep-amltoken/score", "{}").await;
    assert_eq!(
        same["authorization"]["claims"]["uti"],
        first["authorization"]["claims"]["uti"]
    );
    assert_eq!(arm_calls(&emulator, "token"), 1);

    // After it (3.5 to 5 s), and before the next one (7 s at the earliest): exactly one more token, without any
    // request asking, and requests carry it.
    tokio::time::sleep_until(started + Duration::from_millis(6000)).await;
    assert_eq!(
        arm_calls(&emulator, "token"),
        2,
        "refreshed once after refreshAfterTimeUtc"
    );
    let (status, _, second) = score(&proxy, "/endpoints/ep-amltoken/score", "{}").await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(
        second["authorization"]["claims"]["uti"],
        first["authorization"]["claims"]["uti"]
    );
    assert_eq!(scoring_status(&emulator, 401), 0);
    proxy.stop().await;
}
