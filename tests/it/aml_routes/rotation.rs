//! A rotated key: the endpoint's 401 makes the proxy read the keys once more and replay a kept request once; a
//! body that could not be kept is not replayed.

use http::{Method, StatusCode};

use super::{
    arm_action, arm_calls, emulator, endpoint_route, header, readyz, score, scoring_status,
};
use crate::support::proxy::TestProxy;
use crate::support::{request, trace_init};

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_costs_one_list_keys_and_one_replay() {
    let _trace = trace_init();
    let emulator = emulator().await;
    let yaml = format!(
        "{}{}",
        header(&emulator),
        endpoint_route("ep-key", "key", "")
    );
    let proxy = TestProxy::start(&yaml).await;
    readyz(&proxy, StatusCode::OK).await;
    let (status, _, _) = score(&proxy, "/endpoints/ep-key/score", "{}").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(arm_calls(&emulator, "list_keys"), 1);

    // The primary key is regenerated: the proxy's key stops working at once.
    let (status, _) = arm_action(
        &emulator,
        "ep-key",
        "regenerateKeys",
        r#"{"keyType": "Primary"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let (status, _, echo) = score(
        &proxy,
        "/endpoints/ep-key/score",
        r#"{"after": "rotation"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["authorization"]["key"], "primary");
    assert_eq!(
        echo["body"], r#"{"after": "rotation"}"#,
        "the replay carries the same body"
    );
    assert_eq!(
        arm_calls(&emulator, "list_keys"),
        2,
        "exactly one more listKeys"
    );
    assert_eq!(scoring_status(&emulator, 401), 1, "one refused attempt");
    assert_eq!(scoring_status(&emulator, 200), 2, "then the replay");

    // The new key is held: no further reads.
    for _ in 0..5 {
        assert_eq!(
            score(&proxy, "/endpoints/ep-key/score", "{}").await.0,
            StatusCode::OK
        );
    }
    assert_eq!(arm_calls(&emulator, "list_keys"), 2);
    assert_eq!(scoring_status(&emulator, 401), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_could_not_be_kept_is_not_replayed_but_the_key_is_read_again() {
    let _trace = trace_init();
    let emulator = emulator().await;
    let yaml = format!(
        "limits: {{ replay_buffer_bytes: 64 }}\n{}{}",
        header(&emulator),
        endpoint_route("ep-key", "key", "")
    );
    let proxy = TestProxy::start(&yaml).await;
    readyz(&proxy, StatusCode::OK).await;
    let (status, _) = arm_action(
        &emulator,
        "ep-key",
        "regenerateKeys",
        r#"{"keyType": "Primary"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // 1 KiB does not fit the 64-byte replay buffer: it streams once, and the endpoint's 401 goes back as it is.
    let big = format!("{{\"data\": \"{}\"}}", "x".repeat(1024));
    let (status, headers, body) = request(
        Method::POST,
        &proxy.url("/endpoints/ep-key/score"),
        &[("content-type", "application/json")],
        big,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        headers.get("x-aml-auth-proxy-error").is_none(),
        "the endpoint's own answer"
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=")
    );
    assert_eq!(scoring_status(&emulator, 401), 1, "not replayed");

    // The refused key was dropped and read again; the next request succeeds without another read.
    crate::support::eventually(std::time::Duration::from_secs(5), || {
        arm_calls(&emulator, "list_keys") == 2
    })
    .await
    .expect("the key is read again after the 401");
    let (status, _, echo) = score(&proxy, "/endpoints/ep-key/score", "{}").await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(arm_calls(&emulator, "list_keys"), 2);
    assert_eq!(scoring_status(&emulator, 401), 1);
    proxy.stop().await;
}
