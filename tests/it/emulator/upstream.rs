//! The emulator's echoing upstream: tokens shown as claims, never as the token; CAE challenges until the demanded
//! claims are carried; the long-running-operation, streaming and status helpers.

use http::{Method, StatusCode};
use serde_json::json;

use super::{client_credentials, counts, fault, get_with_token, start, token};
use crate::support::{get, json_body, request, trace_init};

const ML: &str = "https://ml.azure.com/.default";

#[tokio::test]
async fn the_echo_shows_the_token_as_its_claims_never_the_token() {
    let _trace = trace_init();
    let emulator = start().await;
    let upstream = &emulator.urls().upstream;
    let access = token(&emulator, "contoso", ML).await;
    let auth = format!("Bearer {access}");
    let (status, headers, body) = request(
        Method::POST,
        &format!("{upstream}/echo/hello?x=1"),
        &[
            ("authorization", &auth),
            ("x-ms-authorization-auxiliary", &auth),
            ("x-custom", "kept"),
        ],
        "payload",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("\n  \""), "indented for people: {text}");
    assert!(!text.contains(&access), "the raw token never appears");
    assert!(
        !text.contains(access.split('.').nth(2).unwrap()),
        "not even its signature"
    );
    let echo = json_body(&body);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/hello");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["body"], "payload");
    assert_eq!(echo["body_len"], 7);
    assert_eq!(echo["headers"]["authorization"], "<redacted>");
    assert_eq!(
        echo["headers"]["x-ms-authorization-auxiliary"],
        "<redacted>"
    );
    assert_eq!(echo["headers"]["x-custom"], "kept");
    let authorization = &echo["authorization"];
    assert_eq!(authorization["scheme"], "Bearer");
    assert_eq!(authorization["token_length"], access.len());
    assert_eq!(authorization["claims"]["aud"], "https://ml.azure.com");
    assert_eq!(authorization["claims"]["tid"], "contoso");
    assert!(authorization["expires_in"].as_i64().unwrap() > 3500);

    // Without a token, or with a token another run signed: 401 with WWW-Authenticate.
    let (status, headers, _) = get(&format!("{upstream}/echo")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    let other = super::start().await;
    let foreign = token(&other, "contoso", ML).await;
    let (status, _, body) = get_with_token(&format!("{upstream}/echo"), &foreign).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_body(&body)["error"]["code"],
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn a_cae_rule_challenges_until_a_token_carries_the_demanded_claims() {
    let _trace = trace_init();
    let emulator = start().await;
    let upstream = &emulator.urls().upstream;
    let before = token(&emulator, "contoso", ML).await;
    let id = emulator.add_fault(fault("cae,path=/protected"));
    // Unprotected paths are untouched.
    assert_eq!(
        get_with_token(&format!("{upstream}/open"), &before).await.0,
        StatusCode::OK
    );
    let (status, headers, body) = get_with_token(&format!("{upstream}/protected"), &before).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"\", authorization_uri="),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"insufficient_claims\""),
        "{challenge}"
    );
    assert!(
        json_body(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TokenIssuedBeforeRevocationTimestamp")
    );
    let encoded = challenge
        .split("claims=\"")
        .nth(1)
        .unwrap()
        .trim_end_matches('"');
    let claims = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap(),
    )
    .unwrap();
    let demanded: serde_json::Value = serde_json::from_str(&claims).unwrap();
    assert_eq!(demanded["access_token"]["nbf"]["essential"], true);

    // A token requested with the challenge's claims (merged with CP1, as clients do) is accepted.
    let mut merged = demanded.clone();
    merged["access_token"]["xms_cc"] = json!({"values": ["CP1"]});
    let (status, _, body) =
        client_credentials(&emulator, "contoso", ML, &[("claims", &merged.to_string())]).await;
    assert_eq!(status, StatusCode::OK);
    let answered = body["access_token"].as_str().unwrap();
    assert_eq!(
        get_with_token(&format!("{upstream}/protected"), answered)
            .await
            .0,
        StatusCode::OK
    );
    // The old token stays refused.
    assert_eq!(
        get_with_token(&format!("{upstream}/protected"), &before)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let rule = emulator.stats()["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap();
    assert_eq!(rule["applied"], 2, "two challenges sent: {rule}");

    // An authentication-context step-up: only a token requested with that acrs passes.
    emulator.clear_faults();
    emulator.add_fault(fault("cae=acrs:c1"));
    assert_eq!(
        get_with_token(&format!("{upstream}/x"), answered).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, _, body) = client_credentials(
        &emulator,
        "contoso",
        ML,
        &[(
            "claims",
            r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#,
        )],
    )
    .await;
    let stepped_up = body["access_token"].as_str().unwrap();
    assert_eq!(super::claims(stepped_up)["acrs"], json!(["c1"]));
    assert_eq!(
        get_with_token(&format!("{upstream}/x"), stepped_up).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn long_running_operations_streams_statuses_and_failure_rules() {
    let _trace = trace_init();
    let emulator = start().await;
    let upstream = emulator.urls().upstream.clone();
    let access = token(&emulator, "contoso", ML).await;
    let (status, headers, _) = get_with_token(&format!("{upstream}/jobs/j/lro"), &access).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    for name in ["location", "azure-asyncoperation", "operation-location"] {
        assert!(
            headers[name].to_str().unwrap().starts_with(&upstream),
            "{name}"
        );
    }
    let (status, _, body) =
        get_with_token(headers["azure-asyncoperation"].to_str().unwrap(), &access).await;
    assert_eq!(
        (status, json_body(&body)),
        (StatusCode::OK, json!({"status": "Succeeded"}))
    );
    let (status, headers, body) = get_with_token(
        &format!("{upstream}/stream?chunks=3&interval_ms=1"),
        &access,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(&body[..], b"data: 0\n\ndata: 1\n\ndata: 2\n\n");
    assert_eq!(
        get_with_token(&format!("{upstream}/status/418"), &access)
            .await
            .0,
        StatusCode::IM_A_TEAPOT
    );

    emulator.add_fault(fault("status=502,on=upstream,count=1"));
    emulator.add_fault(fault("throttle=3,on=upstream,path=/busy"));
    assert_eq!(
        get_with_token(&format!("{upstream}/a"), &access).await.0,
        StatusCode::BAD_GATEWAY
    );
    let (status, headers, _) = get_with_token(&format!("{upstream}/busy"), &access).await;
    assert_eq!(
        (status, headers["retry-after"].to_str().unwrap()),
        (StatusCode::TOO_MANY_REQUESTS, "3")
    );
    assert_eq!(
        get_with_token(&format!("{upstream}/a"), &access).await.0,
        StatusCode::OK
    );
    let by_status = counts(&emulator, "upstream_requests", "status");
    assert_eq!((by_status["502"], by_status["429"]), (1, 1));
}
