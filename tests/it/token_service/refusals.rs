//! Refusals, each with its status and flat error body — and none of them costs a token request.

use http::{Method, StatusCode};

use super::{SECRET, UAMI, expect_flat_error, start, url};
use crate::support::proxy::World;
use crate::support::{request, trace_init};

const MSI: &str = "/msi/token?api-version=2019-08-01&resource=https://management.azure.com";
const IMDS: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com";

#[tokio::test]
async fn a_missing_or_wrong_secret_is_401_whichever_protocol() {
    let _t = trace_init();
    let world = World::new().await;
    let proxy = start(&world, "ts-secret", false).await;
    let near_miss = format!("{}x", &SECRET[..SECRET.len() - 1]);
    let aml = "/msi/token?api-version=2017-09-01&resource=https://management.azure.com";
    let cases: [(&str, Vec<(&str, &str)>); 9] = [
        (MSI, vec![]),
        (MSI, vec![("x-identity-header", "")]),
        (MSI, vec![("x-identity-header", near_miss.as_str())]),
        (
            MSI,
            vec![
                ("x-identity-header", SECRET),
                ("x-identity-header", "other"),
            ],
        ),
        // The right secret twice, or in both headers while the version is unknown: one value is asked for.
        (
            MSI,
            vec![("x-identity-header", SECRET), ("x-identity-header", SECRET)],
        ),
        (
            "/msi/token?api-version=2018-02-01&resource=https://management.azure.com",
            vec![("x-identity-header", SECRET), ("secret", SECRET)],
        ),
        // The other protocol's header does not count.
        (MSI, vec![("secret", SECRET)]),
        (aml, vec![("x-identity-header", SECRET)]),
        // An unknown api-version: refused as unauthenticated before its version is judged.
        (
            "/msi/token?api-version=2018-02-01&resource=https://management.azure.com",
            vec![],
        ),
    ];
    for (path, headers) in &cases {
        let answer = request(Method::GET, &url(&proxy, path), headers, "").await;
        let j = expect_flat_error(&answer, StatusCode::UNAUTHORIZED, "CallerNotAuthenticated");
        assert!(!j.to_string().contains(&SECRET[..12]), "{j}");
    }
    assert_eq!(
        world.aad.count("ts-secret"),
        1,
        "only the route's pre-fetch"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn bad_requests_resources_and_identities_are_refused_before_any_token_request() {
    let _t = trace_init();
    let world = World::new().await;
    let proxy = start(&world, "ts-refuse", true).await;
    let secret = [("x-identity-header", SECRET)];
    let bad = [
        "/msi/token?api-version=2019-08-01",
        "/msi/token?api-version=2019-08-01&resource=",
        "/msi/token?resource=https://management.azure.com&api-version=2019-08-01&resource=https://ml.azure.com",
        "/msi/token?api-version=2019-08-01&resource=https://management.azure.com&client_id=a&object_id=b",
        // An identity parameter only another protocol takes: refused, not answered for the default identity.
        "/msi/token?api-version=2019-08-01&resource=https://management.azure.com&msi_res_id=x",
        "/msi/token?api-version=2019-08-01&resource=https://management.azure.com&clientid=x",
    ];
    for path in bad {
        expect_flat_error(
            &request(Method::GET, &url(&proxy, path), &secret, "").await,
            StatusCode::BAD_REQUEST,
            "BadRequest",
        );
    }
    // A version that is not the App Service or Azure ML one, once authenticated: 400.
    let path = "/msi/token?api-version=2018-02-01&resource=https://management.azure.com";
    let answer = request(Method::GET, &url(&proxy, path), &secret, "").await;
    expect_flat_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");

    for resource in [
        "https://vault.azure.net",
        "https://management.azure.com.evil.example",
        "https://graph.microsoft.com/.default",
    ] {
        let path = format!("/msi/token?api-version=2019-08-01&resource={resource}");
        let answer = request(Method::GET, &url(&proxy, &path), &secret, "").await;
        let j = expect_flat_error(&answer, StatusCode::FORBIDDEN, "ResourceNotAllowed");
        assert_eq!(j["error"], "invalid_resource");
    }

    let answer = request(
        Method::GET,
        &url(
            &proxy,
            &format!("{MSI}&client_id=99999999-0000-0000-0000-000000000000"),
        ),
        &secret,
        "",
    )
    .await;
    let j = expect_flat_error(&answer, StatusCode::BAD_REQUEST, "IdentityNotFound");
    assert!(
        j["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Identity not found")
    );
    let answer = request(
        Method::GET,
        &url(
            &proxy,
            &format!("{IMDS}&client_id=99999999-0000-0000-0000-000000000000"),
        ),
        &[("metadata", "true")],
        "",
    )
    .await;
    let j = expect_flat_error(&answer, StatusCode::BAD_REQUEST, "IdentityNotFound");
    assert_eq!(j["error"], "invalid_request");
    assert_eq!(
        j["error_description"], "Identity not found",
        "IMDS's own text"
    );

    // Only GET; only the two paths.
    let answer = request(Method::POST, &url(&proxy, MSI), &secret, "").await;
    expect_flat_error(&answer, StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
    let answer = request(
        Method::GET,
        &url(&proxy, "/msi/token/../admin"),
        &secret,
        "",
    )
    .await;
    assert_ne!(answer.0, StatusCode::OK);
    let answer = request(
        Method::GET,
        &url(&proxy, "/oauth2/token?resource=x"),
        &secret,
        "",
    )
    .await;
    expect_flat_error(&answer, StatusCode::NOT_FOUND, "NotFound");
    assert_eq!(
        world.aad.count("ts-refuse"),
        1,
        "only the route's pre-fetch"
    );
    assert_eq!(world.aad.count("uami-tenant"), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn imds_needs_metadata_true_and_refuses_forwarded_requests() {
    let _t = trace_init();
    let world = World::new().await;
    let proxy = start(&world, "ts-imds-rules", true).await;
    for headers in [
        vec![],
        vec![("metadata", "True")],
        vec![("metadata", "false")],
    ] {
        let answer = request(Method::GET, &url(&proxy, IMDS), &headers, "").await;
        let j = expect_flat_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");
        assert_eq!(j["error"], "invalid_request");
        assert_eq!(
            j["error_description"],
            "Required metadata header not specified"
        );
    }
    let answer = request(
        Method::GET,
        &url(&proxy, IMDS),
        &[("metadata", "true"), ("x-forwarded-for", "10.1.2.3")],
        "",
    )
    .await;
    expect_flat_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");
    let old = "/metadata/identity/oauth2/token?api-version=2017-12-01&resource=https://management.azure.com";
    let answer = request(Method::GET, &url(&proxy, old), &[("metadata", "true")], "").await;
    expect_flat_error(&answer, StatusCode::BAD_REQUEST, "BadRequest");
    assert_eq!(
        world.aad.count("ts-imds-rules"),
        1,
        "only the route's pre-fetch"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn foreign_hosts_and_browsers_get_the_proxy_listeners_answers() {
    let _t = trace_init();
    let world = World::new().await;
    let proxy = start(&world, "ts-host", true).await;
    let with_secret =
        |extra: (&'static str, &'static str)| vec![("x-identity-header", SECRET), extra];
    let answer = request(
        Method::GET,
        &url(&proxy, MSI),
        &with_secret(("host", "attacker.example")),
        "",
    )
    .await;
    expect_flat_error(&answer, StatusCode::MISDIRECTED_REQUEST, "HostNotAllowed");
    let answer = request(
        Method::GET,
        &url(&proxy, IMDS),
        &[("metadata", "true"), ("host", "rebound.example:8081")],
        "",
    )
    .await;
    expect_flat_error(&answer, StatusCode::MISDIRECTED_REQUEST, "HostNotAllowed");
    let answer = request(
        Method::GET,
        &url(&proxy, MSI),
        &with_secret(("origin", "https://attacker.example")),
        "",
    )
    .await;
    expect_flat_error(&answer, StatusCode::FORBIDDEN, "OriginNotAllowed");
    let answer = request(
        Method::GET,
        &url(&proxy, IMDS),
        &[("metadata", "true"), ("sec-fetch-site", "cross-site")],
        "",
    )
    .await;
    expect_flat_error(&answer, StatusCode::FORBIDDEN, "OriginNotAllowed");
    // `localhost` is an allowed host, as on the proxy listener.
    let (status, _, _) = request(
        Method::GET,
        &url(&proxy, &format!("{MSI}&client_id={UAMI}")),
        &with_secret(("host", "localhost:8081")),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(world.aad.count("uami-tenant"), 1);
    proxy.stop().await;
}
