//! The emulator's managed-identity endpoints: IMDS, App Service (2019-08-01) and Azure ML (2017-09-01).

use http::{Method, StatusCode};
use serde_json::json;

use super::{claims, counts, fault, start};
use crate::support::{json_body, request, trace_init};

const SECRET: &str = aml_auth_proxy::emulator::DEFAULT_IDENTITY_SECRET;

#[tokio::test]
async fn imds_needs_the_metadata_header_and_refuses_forwarded_requests() {
    let _trace = trace_init();
    let emulator = start().await;
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com",
        emulator.urls().managed_identity.imds
    );
    // The probe DefaultAzureCredential sends: no header, the recorded 400.
    let (status, _, body) = request(Method::GET, &url, &[], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json_body(&body),
        json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})
    );
    let (status, _, _) = request(
        Method::GET,
        &url,
        &[("metadata", "true"), ("x-forwarded-for", "10.0.0.9")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a forwarded request");
    let (status, _, _) = request(
        Method::GET,
        &format!("{url}&resource=x"),
        &[("metadata", "true")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a repeated parameter");

    let (status, _, body) = request(Method::GET, &url, &[("metadata", "true")], "").await;
    assert_eq!(status, StatusCode::OK);
    let body = json_body(&body);
    for field in [
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
    ] {
        assert!(
            body[field].is_string(),
            "IMDS sends {field} as a string: {body}"
        );
    }
    assert_eq!(
        body["expires_in"], "86399",
        "about a day, as Azure issues them"
    );
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "https://management.azure.com");
    assert_eq!(c["ver"], "1.0");
    assert_eq!(c["tid"], aml_auth_proxy::emulator::DEFAULT_TENANT);
    assert_eq!(c["appid"], body["client_id"]);
    assert!(c.get("xms_mirid").is_none(), "system-assigned");

    // A user-assigned identity by client id.
    let (status, _, body) = request(
        Method::GET,
        &format!("{url}&client_id=aaaaaaaa-0000-0000-0000-000000000001"),
        &[("metadata", "true")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let c = claims(json_body(&body)["access_token"].as_str().unwrap());
    assert_eq!(c["appid"], "aaaaaaaa-0000-0000-0000-000000000001");
    assert!(
        c["xms_mirid"]
            .as_str()
            .unwrap()
            .contains("/userAssignedIdentities/")
    );

    // Throttling with Retry-After, in IMDS's shape.
    emulator.add_fault(fault("throttle=9,on=imds"));
    let (status, headers, body) = request(Method::GET, &url, &[("metadata", "true")], "").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "9");
    assert!(json_body(&body)["error"].is_string());
    assert_eq!(
        counts(&emulator, "managed_identity_requests", "protocol")["imds"],
        6
    );
}

#[tokio::test]
async fn app_service_and_azure_ml_protocols_check_their_secret_header() {
    let _trace = trace_init();
    let emulator = start().await;
    let endpoint = &emulator.urls().managed_identity.identity_endpoint;
    assert_eq!(emulator.urls().managed_identity.identity_header, SECRET);

    // App Service: X-IDENTITY-HEADER, expires_on as a string of epoch seconds.
    let app_service = format!("{endpoint}?api-version=2019-08-01&resource=https://ml.azure.com");
    let (status, _, body) = request(
        Method::GET,
        &app_service,
        &[("x-identity-header", "wrong")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(&body)["statusCode"], 401);
    let (status, _, body) = request(
        Method::GET,
        &app_service,
        &[("x-identity-header", SECRET)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let body = json_body(&body);
    assert!(
        body["expires_on"].as_str().unwrap().parse::<i64>().is_ok(),
        "{body}"
    );
    assert_eq!(body["resource"], "https://ml.azure.com");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["aud"],
        "https://ml.azure.com"
    );

    // Azure ML: `secret` header and `clientid`; a wrong secret gets the plain-text answer.
    let azure_ml = format!(
        "{endpoint}?api-version=2017-09-01&resource=https://ml.azure.com/&clientid=bbbbbbbb-0000-0000-0000-000000000002"
    );
    let (status, headers, body) = request(Method::GET, &azure_ml, &[("secret", "nope")], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(&body[..], b"Invalid secret token header: .");
    let (status, _, body) = request(Method::GET, &azure_ml, &[("secret", SECRET)], "").await;
    assert_eq!(status, StatusCode::OK);
    let body = json_body(&body);
    assert_eq!(body["client_id"], "bbbbbbbb-0000-0000-0000-000000000002");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["aud"],
        "https://ml.azure.com"
    );

    // Another api-version is neither protocol.
    let (status, _, _) = request(
        Method::GET,
        &format!("{endpoint}?api-version=2020-01-01&resource=x"),
        &[("secret", SECRET)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // An outage rule answers in App Service's error shape.
    emulator.add_fault(fault("status=503,on=msi"));
    let (status, _, body) = request(
        Method::GET,
        &app_service,
        &[("x-identity-header", SECRET)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_body(&body)["statusCode"], 503);
    let by_protocol = counts(&emulator, "managed_identity_requests", "protocol");
    assert_eq!(
        (by_protocol["app_service"], by_protocol["azure_ml"]),
        (3, 2)
    );
}
