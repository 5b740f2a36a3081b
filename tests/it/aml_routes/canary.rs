//! An endpoint key and AML tokens are secrets: with the real binary logging at trace level, a canary key (set by
//! regenerateKeys) and every token never appear in its log, its metrics, `/readyz` or its answers — through a
//! rotation, a refusal and an error.

use http::{Method, StatusCode};

use super::{arm_action, emulator, endpoint_route, header};
use crate::emulator::fault;
use crate::support::process::{ClosedPort, RunningProxy};
use crate::support::proxy::TempDir;
use crate::support::{get, request, trace_init};

const CANARY_KEY: &str = "canary-ENDPOINT-KEY-7f3a9c";
const NEXT_CANARY_KEY: &str = "canary-ENDPOINT-KEY-rotated-1b2d";

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_keys_and_aml_tokens_never_appear_in_logs_metrics_or_answers() {
    let _trace = trace_init();
    let emulator = emulator().await;
    let set_key = |value: &'static str| {
        let emulator = &emulator;
        async move {
            let body = format!(r#"{{"keyType": "Primary", "keyValue": "{value}"}}"#);
            let (status, _) = arm_action(emulator, "ep-key", "regenerateKeys", &body).await;
            assert_eq!(status, StatusCode::ACCEPTED);
        }
    };
    set_key(CANARY_KEY).await;
    let dir = TempDir::new();
    let yaml = format!(
        "{}{}{}",
        header(&emulator),
        endpoint_route("ep-key", "key", ""),
        endpoint_route("ep-amltoken", "auto", "")
    );
    let imds = ClosedPort::new();
    let proxy = RunningProxy::start(
        &dir,
        &imds,
        &yaml,
        &["--log-level", "trace,aml_auth_proxy=trace"],
        &[],
    )
    .await;
    let mut answers = String::new();
    let mut post = async |path: &str| {
        let (status, headers, body) = request(Method::POST, &proxy.url(path), &[], "{}").await;
        answers.push_str(&format!(
            "{status} {headers:?} {}\n",
            String::from_utf8_lossy(&body)
        ));
        status
    };
    let mut ok = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        ok = post("/endpoints/ep-key/score").await;
        if ok == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ok, StatusCode::OK, "{answers}");
    assert_eq!(
        post("/endpoints/ep-amltoken/score").await,
        StatusCode::OK,
        "{answers}"
    );
    // A rotation (the 401 and the re-read), then a refused re-read.
    set_key(NEXT_CANARY_KEY).await;
    assert_eq!(
        post("/endpoints/ep-key/score").await,
        StatusCode::OK,
        "{answers}"
    );
    emulator.add_fault(fault("deny=listkeys,on=arm"));
    set_key(CANARY_KEY).await;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await; // past the 5 s damping of refusals
    let refused = post("/endpoints/ep-key/score").await;
    assert!(
        refused == StatusCode::FORBIDDEN || refused == StatusCode::UNAUTHORIZED,
        "{answers}"
    );
    let metrics = String::from_utf8_lossy(&get(&proxy.admin_url("/metrics")).await.2).into_owned();
    let ready = String::from_utf8_lossy(&get(&proxy.admin_url("/readyz")).await.2).into_owned();
    let out = proxy.stop().await;
    // Every crate logs at trace level, the proxy's own events included.
    assert!(out.stderr.contains("TRACE"), "trace logging is on");
    assert!(
        out.stderr.contains("resource manager call"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("endpoint refused its key or token"),
        "{}",
        out.stderr
    );
    for (what, text) in [
        ("log", &out.all()),
        ("metrics", &metrics),
        ("readyz", &ready),
        ("answers", &answers),
    ] {
        for key in [CANARY_KEY, NEXT_CANARY_KEY] {
            assert!(
                !text.contains(key),
                "the key leaked into the {what}:\n{text}"
            );
        }
        // Every token the emulator issues (Entra ID's and the AML tokens) is a JWT: `eyJ…`.
        assert!(
            !text.contains("eyJ"),
            "a token leaked into the {what}:\n{text}"
        );
    }
}
