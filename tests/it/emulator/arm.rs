//! The emulator's ARM and scoring endpoints: a workspace, online endpoints in all three auth modes, keys and AML
//! tokens, ARM's error shapes and RBAC refusals.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{counts, fault, get_with_token, start, token};
use crate::support::{json_body, request, trace_init};

const ARM: &str = "https://management.azure.com/.default";
const ML: &str = "https://ml.azure.com/.default";

/// `POST url` with a bearer token and an optional JSON body.
async fn post(url: &str, token: &str, body: &str) -> (StatusCode, http::HeaderMap, Value) {
    let auth = format!("Bearer {token}");
    let (status, headers, body) = request(
        Method::POST,
        url,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_owned(),
    )
    .await;
    let value = if body.is_empty() {
        Value::Null
    } else {
        json_body(&body)
    };
    (status, headers, value)
}

async fn score(uri: &str, credential: &str) -> (StatusCode, http::HeaderMap, Value) {
    post(uri, credential, r#"{"input_data": [[1, 2]]}"#).await
}

#[tokio::test]
async fn a_workspace_and_endpoints_in_all_three_auth_modes() {
    let _trace = trace_init();
    let emulator = start().await;
    let urls = emulator.urls().clone();
    let arm = &urls.resource_manager;
    let ws = format!("{arm}{}", urls.workspace.id);
    let v = "api-version=2024-04-01";
    let arm_token = token(&emulator, "contoso", ARM).await;

    let (status, headers, body) = get_with_token(&format!("{ws}?{v}"), &arm_token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key("x-ms-correlation-request-id"));
    let workspace = json_body(&body);
    assert_eq!(
        workspace["properties"]["discoveryUrl"],
        urls.workspace.discovery_url
    );
    assert!(
        workspace["properties"]["mlFlowTrackingUri"]
            .as_str()
            .unwrap()
            .starts_with("azureml://")
    );
    // The discovery document (no token needed) points the data plane at the upstream.
    let (status, _, discovery) = crate::support::get(&urls.workspace.discovery_url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_body(&discovery)["api"], urls.upstream.as_str());

    let (_, _, list) = get_with_token(&format!("{ws}/onlineEndpoints?{v}"), &arm_token).await;
    let modes: Vec<(String, String)> = json_body(&list)["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["properties"]["authMode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("ep-aad", "AADToken"),
            ("ep-key", "Key"),
            ("ep-amltoken", "AMLToken")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

    // Key: listKeys (the spec's spelling or the docs' lower case), then score with either key.
    let (status, _, endpoint) =
        get_with_token(&format!("{ws}/onlineEndpoints/ep-key?{v}"), &arm_token).await;
    assert_eq!(status, StatusCode::OK);
    let scoring_uri = json_body(&endpoint)["properties"]["scoringUri"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(scoring_uri, urls.online_endpoints["ep-key"].scoring_uri);
    let (status, _, keys) = post(
        &format!("{ws}/onlineEndpoints/ep-key/listkeys?{v}"),
        &arm_token,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (primary, secondary) = (
        keys["primaryKey"].as_str().unwrap().to_owned(),
        keys["secondaryKey"].as_str().unwrap().to_owned(),
    );
    let (status, headers, echo) = score(&scoring_uri, &primary).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["azureml-model-deployment"], "blue");
    assert_eq!(
        echo["authorization"],
        json!({"scheme": "Bearer", "key": "primary"})
    );
    assert_eq!(echo["body"], r#"{"input_data": [[1, 2]]}"#);
    assert!(
        !echo.to_string().contains(&primary),
        "the key is never echoed"
    );
    assert_eq!(
        score(&scoring_uri, &secondary).await.2["authorization"]["key"],
        "secondary"
    );
    let (status, headers, _) = score(&scoring_uri, "not-a-key").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"ep-key\"");

    // regenerateKeys: 202 with the operation headers; the old primary stops working at once.
    let (status, headers, _) = post(
        &format!("{ws}/onlineEndpoints/ep-key/regenerateKeys?{v}"),
        &arm_token,
        r#"{"keyType": "Primary"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let operation = headers["azure-asyncoperation"].to_str().unwrap().to_owned();
    assert!(operation.starts_with(arm.as_str()), "{operation}");
    let (status, _, op) = get_with_token(&operation, &arm_token).await;
    assert_eq!(
        (status, json_body(&op)["status"].clone()),
        (StatusCode::OK, json!("Succeeded"))
    );
    assert_eq!(
        score(&scoring_uri, &primary).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(score(&scoring_uri, &secondary).await.0, StatusCode::OK);
    let (status, _, body) = post(
        &format!("{ws}/onlineEndpoints/ep-key/regenerateKeys?{v}"),
        &arm_token,
        r#"{"keyType": "Tertiary"}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("BadArgument"))
    );

    // AMLToken: POST …/token gives epoch-second times and a token only that endpoint accepts.
    let aml_uri = &urls.online_endpoints["ep-amltoken"].scoring_uri;
    let (status, _, aml) = post(
        &format!("{ws}/onlineEndpoints/ep-amltoken/token?{v}"),
        &arm_token,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(aml["tokenType"], "Bearer");
    let (expiry, refresh_after) = (
        aml["expiryTimeUtc"].as_i64().unwrap(),
        aml["refreshAfterTimeUtc"].as_i64().unwrap(),
    );
    assert!(refresh_after < expiry, "{aml}");
    assert!(
        (86_000..=86_400).contains(&((expiry - refresh_after) * 2)),
        "{aml}"
    );
    let aml_token = aml["accessToken"].as_str().unwrap();
    let (status, _, echo) = score(aml_uri, aml_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        echo["authorization"]["claims"]["aml_endpoint"],
        "ep-amltoken"
    );
    assert_eq!(
        score(&scoring_uri, aml_token).await.0,
        StatusCode::UNAUTHORIZED,
        "another endpoint"
    );
    // listKeys on a token endpoint is a bad argument.
    let (status, _, _) = post(
        &format!("{ws}/onlineEndpoints/ep-amltoken/listKeys?{v}"),
        &arm_token,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // AADToken: an Entra token for ml.azure.com, not one for ARM.
    let aad_uri = &urls.online_endpoints["ep-aad"].scoring_uri;
    let ml_token = token(&emulator, "contoso", ML).await;
    let (status, _, echo) = score(aad_uri, &ml_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        echo["authorization"]["claims"]["aud"],
        "https://ml.azure.com"
    );
    assert_eq!(score(aad_uri, &arm_token).await.0, StatusCode::UNAUTHORIZED);

    let operations = counts(&emulator, "arm_requests", "operation");
    assert_eq!(operations["list_keys"], 2);
    assert_eq!(operations["token"], 1);
    assert_eq!(
        counts(&emulator, "scoring_requests", "endpoint")["ep-key"],
        6
    );
}

#[tokio::test]
async fn arm_answers_its_own_error_shapes() {
    let _trace = trace_init();
    let emulator = start().await;
    let urls = emulator.urls().clone();
    let arm = &urls.resource_manager;
    let ws = format!("{arm}{}", urls.workspace.id);
    let v = "api-version=2024-04-01";
    let arm_token = token(&emulator, "contoso", ARM).await;

    // No token, a token for another audience, an edited token.
    let (status, headers, body) = crate::support::get(&format!("{ws}?{v}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(&body)["error"]["code"], "AuthenticationFailed");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let ml_token = token(&emulator, "contoso", ML).await;
    let (status, _, body) = get_with_token(&format!("{ws}?{v}"), &ml_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_body(&body)["error"]["code"],
        "InvalidAuthenticationTokenAudience"
    );
    let mut forged = arm_token.clone();
    forged.pop();
    forged.push(if arm_token.ends_with('A') { 'B' } else { 'A' });
    let (status, _, body) = get_with_token(&format!("{ws}?{v}"), &forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_body(&body)["error"]["code"],
        "InvalidAuthenticationToken"
    );

    // No api-version; unknown resources at each level.
    let (status, _, body) = get_with_token(&ws, &arm_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json_body(&body)["error"]["code"],
        "MissingApiVersionParameter"
    );
    let other_sub = ws.replace(
        &urls.workspace.subscription_id,
        "99999999-9999-9999-9999-999999999999",
    );
    let other_rg = ws.replace(&urls.workspace.resource_group, "elsewhere");
    let other_ws = format!("{}-gone", ws);
    for (url, code) in [
        (other_sub, "SubscriptionNotFound"),
        (other_rg, "ResourceGroupNotFound"),
        (other_ws, "ResourceNotFound"),
        (format!("{ws}/onlineEndpoints/nope"), "ResourceNotFound"),
    ] {
        let (status, _, body) = get_with_token(&format!("{url}?{v}"), &arm_token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}");
        assert_eq!(json_body(&body)["error"]["code"], code, "{url}");
    }

    // A deny rule: 403 AuthorizationFailed naming the action; other actions still work.
    emulator.add_fault(fault("deny=listkeys"));
    let (status, _, body) = post(
        &format!("{ws}/onlineEndpoints/ep-key/listKeys?{v}"),
        &arm_token,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "AuthorizationFailed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/listkeys/action'"
        ),
        "{message}"
    );
    assert!(message.contains("/onlineEndpoints/ep-key'"), "{message}");
    assert_eq!(
        post(
            &format!("{ws}/onlineEndpoints/ep-amltoken/token?{v}"),
            &arm_token,
            ""
        )
        .await
        .0,
        StatusCode::OK
    );
    // Throttling in ARM's shape.
    emulator.add_fault(fault("throttle=12,on=arm,count=1"));
    let (status, headers, body) = get_with_token(&format!("{ws}?{v}"), &arm_token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "12");
    assert_eq!(json_body(&body)["error"]["code"], "TooManyRequests");
    // ARM's claims challenge is its recorded form: error="invalid_token" with claims.
    emulator.add_fault(fault("cae,on=arm"));
    let (status, headers, _) = get_with_token(&format!("{ws}?{v}"), &arm_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"invalid_token\"") && challenge.contains("claims=\""),
        "{challenge}"
    );
    // Writes are not emulated.
    let auth = format!("Bearer {arm_token}");
    let (status, _, _) = request(
        Method::DELETE,
        &format!("{ws}?{v}"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
