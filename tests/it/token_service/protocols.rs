//! Each protocol's request and answer shapes, with the mock Entra ID's token; the identity mapping.

use http::{Method, StatusCode};

use super::{ARM, SECRET, UAMI, app_service, start, url};
use crate::support::proxy::World;
use crate::support::{json_body, now_unix, request, trace_init};

/// The mock's token for `tenant` and `scope`, and that it is the only one issued for them.
fn only_token_of(world: &World, tenant: &str, scope: &str) -> String {
    let issued: Vec<_> = world
        .aad
        .registry()
        .all()
        .into_iter()
        .filter(|t| t.tenant == tenant && t.scope.as_deref() == Some(scope))
        .collect();
    assert_eq!(issued.len(), 1, "{issued:?}");
    issued[0].token.clone()
}

#[tokio::test]
async fn app_service_answers_the_five_fields_with_the_token_entra_id_issued() {
    let _t = trace_init();
    let world = World::new().await;
    let proxy = start(&world, "ts-app", false).await;
    let answer = app_service(&proxy, ARM, "").await;
    assert_eq!(answer.0, StatusCode::OK, "{:?}", answer.2);
    assert_eq!(answer.1["cache-control"], "no-store");
    assert_eq!(answer.1["content-type"], "application/json");
    let j = json_body(&answer.2);
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{j}");
    for key in [
        "access_token",
        "expires_on",
        "resource",
        "token_type",
        "client_id",
    ] {
        assert!(j.get(key).is_some(), "{key} in {j}");
    }
    assert_eq!(
        j["access_token"],
        only_token_of(&world, "ts-app", "https://management.azure.com/.default")
    );
    assert_eq!(j["resource"], ARM);
    assert_eq!(j["token_type"], "Bearer");
    let expires_on: u64 = j["expires_on"].as_str().unwrap().parse().unwrap();
    let now = now_unix();
    assert!(
        expires_on > now + 3500 && expires_on <= now + 3600,
        "{expires_on} vs {now}"
    );
    // The token was requested for the resource's /.default scope.
    let scopes: Vec<_> = world
        .aad
        .requests_for("ts-app")
        .into_iter()
        .map(|r| r.form["scope"].clone())
        .collect();
    assert_eq!(scopes, ["https://management.azure.com/.default"]);
    proxy.stop().await;
}

#[tokio::test]
async fn azure_ml_takes_the_secret_header_and_clientid() {
    let _t = trace_init();
    let world = World::new().await;
    let proxy = start(&world, "ts-aml", false).await;
    let path =
        format!("/msi/token?api-version=2017-09-01&resource=https://ml.azure.com/&clientid={UAMI}");
    let (status, headers, body) =
        request(Method::GET, &url(&proxy, &path), &[("secret", SECRET)], "").await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(headers["cache-control"], "no-store");
    let j = json_body(&body);
    assert_eq!(
        j["access_token"],
        only_token_of(&world, "uami-tenant", "https://ml.azure.com//.default")
    );
    assert_eq!(j["resource"], "https://ml.azure.com/", "echoed as asked");
    assert_eq!(
        j["client_id"], UAMI,
        "the named client id, the mock's token saying none"
    );
    assert!(j["expires_on"].as_str().unwrap().parse::<u64>().is_ok());
    // The scope keeps the caller's trailing slash (a different audience for Entra ID).
    assert_eq!(
        world.aad.requests_for("uami-tenant")[0].form["scope"],
        "https://ml.azure.com//.default"
    );
    // An empty clientid (clients send it when DEFAULT_IDENTITY_CLIENT_ID is unset) is the default identity.
    let path = "/msi/token?api-version=2017-09-01&resource=https://ml.azure.com&clientid=";
    let (status, _, body) =
        request(Method::GET, &url(&proxy, path), &[("secret", SECRET)], "").await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(
        json_body(&body)["access_token"],
        only_token_of(&world, "ts-aml", "https://ml.azure.com/.default")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn imds_answers_every_field_as_a_string_when_enabled_and_404_when_not() {
    let _t = trace_init();
    let world = World::new().await;
    let proxy = start(&world, "ts-imds", true).await;
    let path = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com";
    let (status, headers, body) =
        request(Method::GET, &url(&proxy, path), &[("metadata", "true")], "").await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(headers["cache-control"], "no-store");
    let j = json_body(&body);
    let object = j.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "client_id",
            "expires_in",
            "expires_on",
            "ext_expires_in",
            "not_before",
            "resource",
            "token_type"
        ]
    );
    assert!(object.values().all(serde_json::Value::is_string), "{j}");
    assert_eq!(
        j["access_token"],
        only_token_of(&world, "ts-imds", "https://management.azure.com/.default")
    );
    let expires_in: u64 = j["expires_in"].as_str().unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&expires_in), "{expires_in}");
    let on: u64 = j["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(on.abs_diff(now_unix() + expires_in) <= 2);
    proxy.stop().await;

    let world = World::new().await;
    let proxy = start(&world, "ts-imds-off", false).await;
    let ml = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://ml.azure.com";
    let answer = request(Method::GET, &url(&proxy, ml), &[("metadata", "true")], "").await;
    super::expect_flat_error(&answer, StatusCode::NOT_FOUND, "NotFound");
    let ml_requests = world
        .aad
        .requests()
        .into_iter()
        .filter(|r| {
            r.form
                .get("scope")
                .is_some_and(|s| s.contains("ml.azure.com"))
        })
        .count();
    assert_eq!(ml_requests, 0, "no token request for the refused call");
    proxy.stop().await;
}

#[tokio::test]
async fn every_identity_parameter_maps_to_its_credential_case_insensitively() {
    let _t = trace_init();
    let world = World::new().await;
    let resource_id = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";
    let credentials = format!(
        "{}{}{}{}",
        World::sp("sp", "map-default"),
        World::sp("by-client", "map-client"),
        World::sp("by-object", "map-object"),
        World::sp("by-resource", "map-resource")
    );
    let identities = format!(
        "    default: sp\n    \"{UAMI}\": by-client\n    \"bbbbbbbb-0000-4000-8000-000000000002\": by-object\n    \"{resource_id}\": by-resource\n"
    );
    let proxy = crate::support::proxy::TestProxy::start(&super::config(
        &world,
        &credentials,
        &identities,
        true,
    ))
    .await;
    let tenant_of = |body: &[u8]| {
        let token = json_body(body)["access_token"].as_str().unwrap().to_owned();
        world.aad.registry().get(&token).unwrap().tenant
    };
    let cases = [
        (String::new(), "map-default"),
        (format!("&client_id={}", UAMI.to_uppercase()), "map-client"),
        (
            "&principal_id=bbbbbbbb-0000-4000-8000-000000000002".to_owned(),
            "map-object",
        ),
        (
            "&object_id=BBBBBBBB-0000-4000-8000-000000000002".to_owned(),
            "map-object",
        ),
        (format!("&mi_res_id={resource_id}"), "map-resource"),
    ];
    for (extra, tenant) in &cases {
        let (status, _, body) = app_service(&proxy, ARM, extra).await;
        assert_eq!(status, StatusCode::OK, "{extra}: {body:?}");
        assert_eq!(tenant_of(&body), *tenant, "{extra}");
    }
    let imds = format!(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}&msi_res_id={resource_id}"
    );
    let (status, _, body) = request(
        Method::GET,
        &url(&proxy, &imds),
        &[("metadata", "true")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(tenant_of(&body), "map-resource");
    proxy.stop().await;
}
