//! Detection, request shapes, the retry schedule, and every managed-identity fixture of tests/fixtures.

use std::time::Duration;

use serde_json::Value;

use super::endpoint::{id_kind, with_query};
use super::error_body::error_description;
use super::*;
use crate::auth::expiry;
use crate::auth::test_support::{
    fixture, fixture_json_objects, fixture_without_comments, owned, pairs,
};
use crate::auth::token_response::{EXPIRED, NO_EXPIRY, TokenResponse};
use crate::env::MapEnv;

const ARM: &str = "https://management.azure.com";

/// IMDS moved to a local port that nothing listens on.
const LOCAL_IMDS: (&str, &str) = ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9");

/// IMDS moved elsewhere, with a trailing slash.
const POD: (&str, &str) = (
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "http://127.0.0.1:2579/",
);

/// Environment variables of one case.
type Vars<'a> = &'a [(&'a str, &'a str)];

fn spec(user_assigned: Option<UserAssignedId>) -> ManagedIdentityCredentialOptions {
    ManagedIdentityCredentialOptions {
        user_assigned,
        arc_key_dir: PathBuf::from("/keys"),
        ..ManagedIdentityCredentialOptions::default()
    }
}

fn detected(
    vars: Vars<'_>,
    options: &ManagedIdentityCredentialOptions,
) -> Result<Endpoint, Unusable> {
    detect(options, &vars.iter().copied().collect::<MapEnv>())
}

/// The query pairs of a request URL, decoded.
fn query(url: &Uri) -> Vec<(String, String)> {
    pairs(url.query().unwrap_or_default())
}

/// Asserts that the source `vars` and `id` select asks for an ARM token with the query of the recorded `url`.
fn assert_sends_recorded(vars: Vars<'_>, id: Option<UserAssignedId>, url: &str) {
    let call = call_of(&detected(vars, &spec(id)).unwrap(), ARM);
    let recorded = pairs(url.split_once('?').unwrap().1);
    assert_eq!(query(call.request.uri()), recorded, "{url}");
}

/// The `expires_in` and `expires_on` of a token response.
fn expiries(r: &TokenResponse) -> (Option<u64>, Option<u64>) {
    (r.expires_in, r.expires_on)
}

fn call_of(endpoint: &Endpoint, resource: &str) -> Call {
    endpoint.call(resource).unwrap()
}

fn unavailable_reason(result: Result<Endpoint, Unusable>) -> String {
    match result {
        Err(Unusable::Unavailable(reason)) => reason,
        other => panic!("expected unavailable, got {other:?}"),
    }
}

// === detection ===

#[test]
fn detection_follows_the_sdk_order() {
    use ManagedIdentitySource::*;
    let ep = ("IDENTITY_ENDPOINT", "http://127.0.0.1:41000/msi/token");
    let header = ("IDENTITY_HEADER", "h");
    let imds_ep = ("IMDS_ENDPOINT", "http://localhost:40342");
    let msi = ("MSI_ENDPOINT", "http://127.0.0.1:50342/oauth2/token");
    let secret = ("MSI_SECRET", "s");
    let table: &[(Vars<'_>, Option<ManagedIdentitySource>)] = &[
        (&[], Some(Imds)),
        (&[POD], Some(Imds)),
        (&[ep, header], Some(AppService)),
        // App Service wins over everything after it (MSAL-node's test: App Service and ML variables both set).
        (&[ep, header, msi, secret], Some(AppService)),
        (&[ep, header, imds_ep], Some(AppService)),
        (&[ep, imds_ep], Some(AzureArc)),
        (&[ep, imds_ep, msi, secret], Some(AzureArc)),
        (&[msi, secret], Some(AzureMl)),
        (&[msi, secret, POD], Some(AzureMl)),
        (&[msi], Some(CloudShell)),
        (&[msi, POD], Some(CloudShell)),
        // IDENTITY_ENDPOINT alone fits no source (azure-identity): unavailable, not IMDS.
        (&[ep], None),
        (&[ep, msi, secret], None),
        // Service Fabric is out of scope.
        (&[ep, header, ("IDENTITY_SERVER_THUMBPRINT", "AB")], None),
        // Empty values count as unset.
        (&[("IDENTITY_ENDPOINT", ""), header, msi], Some(CloudShell)),
        (&[msi, ("MSI_SECRET", "")], Some(CloudShell)),
        (&[ep, ("IDENTITY_HEADER", ""), imds_ep], Some(AzureArc)),
        // IMDS_ENDPOINT without IDENTITY_ENDPOINT means nothing by itself.
        (&[imds_ep], Some(Imds)),
    ];
    for (vars, expected) in table {
        let got = detected(vars, &spec(None)).ok().map(|e| e.kind);
        let names: Vec<&str> = vars.iter().map(|(k, _)| *k).collect();
        assert_eq!(got, *expected, "{names:?}");
    }
}

#[test]
fn detection_urls_and_overrides() {
    let url = |vars: &[(&str, &str)], spec: &ManagedIdentityCredentialOptions| {
        detected(vars, spec).unwrap().url.to_string()
    };
    let imds = "http://169.254.169.254/metadata/identity/oauth2/token";
    assert_eq!(url(&[], &spec(None)), imds);
    let pod_url = "http://127.0.0.1:2579/metadata/identity/oauth2/token";
    assert_eq!(url(&[POD], &spec(None)), pod_url);
    let custom = ManagedIdentityCredentialOptions {
        endpoint: Some("http://127.0.0.1:5000/custom/token".parse().unwrap()),
        ..spec(None)
    };
    // `endpoint` replaces the full token URL of whichever source is detected.
    let ep = ("IDENTITY_ENDPOINT", "http://127.0.0.1:2/x");
    let msi = ("MSI_ENDPOINT", "http://127.0.0.1:4/x");
    for vars in [
        &[][..],
        &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:1")],
        &[ep, ("IDENTITY_HEADER", "h")],
        &[ep, ("IMDS_ENDPOINT", "http://127.0.0.1:3")],
        &[msi, ("MSI_SECRET", "s")],
        &[msi],
    ] {
        assert_eq!(url(vars, &custom), "http://127.0.0.1:5000/custom/token");
    }
    let shell = ("MSI_ENDPOINT", "http://localhost:50342/oauth2/token");
    assert_eq!(url(&[shell], &spec(None)), shell.1);
}

#[test]
fn unsupported_sources_and_identities_are_unavailable_with_a_reason() {
    let ep = ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/x");
    let alone = unavailable_reason(detected(&[ep], &spec(None)));
    assert!(alone.contains("IDENTITY_HEADER"), "{alone}");
    let arc = [
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:40342/x"),
        ("IMDS_ENDPOINT", "http://127.0.0.1:40342"),
    ];
    let shell = [("MSI_ENDPOINT", "http://127.0.0.1:1/x")];
    let ml = [shell[0], ("MSI_SECRET", "s")];
    let client = UserAssignedId::ClientId("c".into());
    let object = UserAssignedId::ObjectId("o".into());
    let resource = UserAssignedId::ResourceId("/subscriptions/s/rg".into());
    for id in [&client, &object, &resource] {
        let reason = unavailable_reason(detected(&arc, &spec(Some(id.clone()))));
        let named = reason.contains("Azure Arc") && reason.contains(id_kind(id));
        assert!(named, "{reason}");
        let reason = unavailable_reason(detected(&shell, &spec(Some(id.clone()))));
        assert!(reason.contains("Cloud Shell"), "{reason}");
    }
    for id in [&object, &resource] {
        let reason = unavailable_reason(detected(&ml, &spec(Some(id.clone()))));
        let named = reason.contains("client_id only") && reason.contains(id_kind(id));
        assert!(named, "{reason}");
    }
    assert!(detected(&ml, &spec(Some(client))).is_ok());
}

#[test]
fn malformed_endpoint_variables_are_configuration_errors() {
    for vars in [
        &[("IDENTITY_ENDPOINT", "not a url"), ("IDENTITY_HEADER", "h")][..],
        &[("IDENTITY_ENDPOINT", "/relative"), ("IMDS_ENDPOINT", "x")][..],
        &[("MSI_ENDPOINT", "ftp://127.0.0.1/x"), ("MSI_SECRET", "s")][..],
        &[("MSI_ENDPOINT", "127.0.0.1:50342")][..],
        &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "nonsense")][..],
    ] {
        match detected(vars, &spec(None)) {
            Err(Unusable::Invalid(reason)) => {
                assert!(reason.contains("is not an absolute http"), "{reason}");
                let value = vars[0].1;
                assert!(!reason.contains(value), "values are not echoed: {reason}");
            }
            other => panic!("{vars:?}: {other:?}"),
        }
    }
}

// === request shapes ===

/// IMDS gets the `Metadata` header alone; App Service's secret header is kept out of the HTTP stack's debug output.
#[test]
fn imds_sends_only_metadata_and_the_app_service_header_is_sensitive() {
    use UserAssignedId::{ClientId, ObjectId, ResourceId};
    let app_service = [
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:41000/msi/token"),
        ("IDENTITY_HEADER", "header-secret"),
    ];
    for id in [
        None,
        Some(ClientId("c".into())),
        Some(ObjectId("o".into())),
        Some(ResourceId("/r".into())),
    ] {
        let imds = call_of(&detected(&[LOCAL_IMDS], &spec(id.clone())).unwrap(), ARM).request;
        assert_eq!(imds.headers().len(), 1, "{:?}", imds.headers().keys());
        assert_eq!(imds.headers()["metadata"], "true");
        let request = call_of(&detected(&app_service, &spec(id)).unwrap(), ARM).request;
        let secret = &request.headers()["x-identity-header"];
        assert!(secret == "header-secret" && secret.is_sensitive());
    }
}

#[test]
fn azure_ml_clientid_defaults_to_the_compute_identity() {
    let base = [
        ("MSI_ENDPOINT", "http://127.0.0.1:46808/MSI/auth"),
        ("MSI_SECRET", "msi-secret"),
    ];
    let with_default = [
        base[0],
        base[1],
        ("DEFAULT_IDENTITY_CLIENT_ID", "default-client"),
    ];
    let cases: [(Vars<'_>, Option<UserAssignedId>, Option<&str>); 3] = [
        (&base, None, None),
        (&with_default, None, Some("default-client")),
        (
            &with_default,
            Some(UserAssignedId::ClientId("explicit".into())),
            Some("explicit"),
        ),
    ];
    for (vars, id, clientid) in cases {
        let request = call_of(&detected(vars, &spec(id)).unwrap(), ARM).request;
        let mut expected = vec![("api-version", "2017-09-01"), ("resource", ARM)];
        expected.extend(clientid.map(|c| ("clientid", c)));
        assert_eq!(query(request.uri()), owned(&expected));
        let secret = &request.headers()["secret"];
        assert!(secret == "msi-secret" && secret.is_sensitive());
    }
}

/// The Arc key, like the other sources' secrets, is kept out of the HTTP stack's debug output.
#[test]
fn the_arc_key_is_a_sensitive_header() {
    let url = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
    let first = call_of(&Endpoint::arc(url.parse().unwrap(), None).unwrap(), ARM);
    let second = arc::answer(&first, &Secret::new("k3y")).unwrap();
    let key = &second.request.headers()[http::header::AUTHORIZATION];
    assert!(key == "Basic k3y" && key.is_sensitive());
}

#[test]
fn a_configured_endpoint_keeps_its_query() {
    let base: Uri = "http://127.0.0.1:1/token?x=1".parse().unwrap();
    let url = with_query(&base, "resource=https%3A%2F%2Fmanagement.azure.com").unwrap();
    assert_eq!(
        url.to_string(),
        "http://127.0.0.1:1/token?x=1&resource=https%3A%2F%2Fmanagement.azure.com"
    );
    assert_eq!(
        without_query(&url),
        "http://127.0.0.1:1/token",
        "messages show no query"
    );
}

#[test]
#[should_panic(expected = "a test tried to contact the real IMDS")]
fn unit_tests_can_never_reach_the_real_imds() {
    let source = detected(&[], &spec(None)).unwrap();
    let _ = call_of(&source, ARM).attempt();
}

// === retry schedule ===

#[test]
fn production_retry_schedule_matches_azure_identity() {
    let retry = ImdsRetry::default();
    let delays_ms = |gone| -> Vec<u128> {
        let delays = (1..=retry.max_retries).map(|n| retry.delay(n, gone));
        delays.map(|d| d.as_millis()).collect()
    };
    assert_eq!(delays_ms(false), [0, 1600, 3200, 6400, 12800]);
    assert_eq!(delays_ms(true), [0, 5000, 10_000, 20_000, 40_000]);
    assert!(delays_ms(true).iter().sum::<u128>() >= 70_000);
    assert_eq!(retry.delay(30, false), Duration::from_secs(60), "capped");
    assert_eq!(
        retry.delay(u32::MAX, true),
        Duration::from_secs(60),
        "no overflow"
    );
}

#[test]
fn retried_statuses_per_source() {
    use ManagedIdentitySource::{AppService, AzureMl, Imds};
    for (source, statuses, retried) in [
        (Imds, &[404, 410, 429, 500, 503, 511, 599][..], true),
        (Imds, &[200, 400, 401, 403, 408], false),
        (AppService, &[408, 429, 500, 502, 503, 504], true),
        (AzureMl, &[400, 401, 404, 410, 501], false),
    ] {
        for &status in statuses {
            assert_eq!(source.retries(status), retried, "{source:?} {status}");
        }
    }
}

// === responses: every managed-identity fixture ===

#[test]
fn fixture_managed_identity_responses_by_source() {
    let blocks = fixture_json_objects("managed_identity_responses_by_source.txt");
    assert_eq!(blocks.len(), 12, "the fixture's JSON blocks changed");
    let parse = |i: usize| TokenResponse::parse(blocks[i].as_bytes());
    let now = expiry::now_unix();

    // The IMDS documented sample (strings; expires_in wins over expires_on) and as recorded by the Azure CLI team;
    // legacy App Service 2017 (expires_on a date string: 2021-11-05 15:18:31 UTC); Azure Arc's token after its
    // challenge (`expires_on` is a placeholder, `expires_in` decides).
    for (i, want, lifetime) in [
        (0, (Some(3599), Some(1_506_484_173)), Ok(3599)),
        (1, (Some(86386), Some(1_605_238_724)), Ok(86386)),
        (2, (None, Some(1_636_125_511)), Err(EXPIRED)),
        (4, (Some(85770), None), Ok(85770)),
    ] {
        let r = parse(i).unwrap();
        assert_eq!(expiries(&r), want, "block {i}");
        let lifetime = lifetime.map(Duration::from_secs).map_err(str::to_owned);
        assert_eq!(r.lifetime(), lifetime, "block {i}");
    }
    assert_eq!(parse(0).unwrap().access_token.expose(), "eyJ0eXAi...");

    // Templates, filled in: App Service 2019-08-01 (expires_on only, an epoch string), Azure ML compute (an
    // epoch string), Service Fabric (not supported as a source, but its format parses: a JSON number).
    for (i, placeholder, seconds, unfilled) in [
        (5, "EXPIRES_ON", 3600, Some(NO_EXPIRY)),
        (7, "<now+1234>", 1234, None),
        (9, "<now+1234>", 1234, Some("not JSON")),
    ] {
        let error = parse(i).unwrap_err();
        if let Some(why) = unfilled {
            assert_eq!(error, why, "block {i}");
        }
        let filled = blocks[i].replace(placeholder, &(now + seconds).to_string());
        let r = TokenResponse::parse(filled.as_bytes()).unwrap();
        assert_eq!(expiries(&r), (None, Some(now + seconds)), "block {i}");
        let lifetime = r.lifetime().unwrap().as_secs();
        assert!(lifetime.abs_diff(seconds) <= 2, "block {i}: {lifetime}s");
    }

    // Error bodies: Arc's 401 challenge, App Service, Azure ML, Service Fabric, and an IMDS error of unknown shape
    // (no description, no panic).
    for (i, description) in [
        (3, Some("Missing Basic Authorization header")),
        (6, Some("error content is undefined")),
        (8, Some("placeholder")),
        (10, Some("Secret is not found in the request headers.")),
        (11, None),
    ] {
        assert!(parse(i).is_err(), "block {i}");
        assert_eq!(
            error_description(blocks[i].as_bytes()).as_deref(),
            description,
            "block {i}"
        );
    }
}

#[test]
fn fixture_imds_probe_400_then_token_200() {
    let recording: Value = serde_json::from_str(&fixture_without_comments(
        "imds_probe_400_then_token_200.json",
    ))
    .unwrap();
    let entries = recording["Entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    // The probe: no Metadata header, IMDS says 400, which proves it is there.
    assert!(entries[0]["RequestHeaders"].get("Metadata").is_none());
    assert_eq!(entries[0]["StatusCode"], 400);
    let probe_body = entries[0]["ResponseBody"].to_string();
    assert_eq!(
        error_description(probe_body.as_bytes()).as_deref(),
        Some("Required metadata header not specified")
    );
    // The token request: the same URL with `Metadata: true`; every number a string.
    assert_eq!(entries[1]["RequestHeaders"]["Metadata"], "true");
    assert_eq!(entries[0]["RequestUri"], entries[1]["RequestUri"]);
    let r = TokenResponse::parse(entries[1]["ResponseBody"].to_string().as_bytes()).unwrap();
    assert_eq!(r.access_token.expose(), "access_token");
    assert_eq!(expiries(&r), (Some(86311), Some(1_643_312_761)));
    assert_eq!(r.lifetime().unwrap(), Duration::from_secs(86311));

    // Our probe and token request have the recording's shape: the same query, Metadata only on the second.
    assert_sends_recorded(
        &[LOCAL_IMDS],
        None,
        entries[1]["RequestUri"].as_str().unwrap(),
    );
}

#[test]
fn fixture_imds_user_assigned_client_id_token_200() {
    let text = fixture("imds_user_assigned_client_id_token_200.json");
    let line = text.lines().find(|l| l.starts_with('{')).unwrap();
    // The recorder replaced the JWT with a description containing spaces: not a sendable token.
    assert_eq!(
        TokenResponse::parse(line.as_bytes()).unwrap_err(),
        "access_token contains characters that cannot be sent in a header"
    );
    let filled = line.replace("<JWT, see decoded below>", "eyJ0eXAiOiJKV1QifQ.e30.c2ln");
    let r = TokenResponse::parse(filled.as_bytes()).unwrap();
    assert_eq!(expiries(&r), (Some(86315), Some(1_643_312_827)));
    // The decoded token's `exp` (1643312827) is the same instant as `expires_on`.
    assert!(text.contains("\"exp\":1643312827"));

    // The recorded request's query is what we send for that user-assigned client id.
    let request = text
        .lines()
        .find(|l| l.starts_with("# Request: GET "))
        .unwrap();
    let url = request.split_whitespace().nth(3).unwrap();
    let client_id = UserAssignedId::ClientId("client-id".into());
    assert_sends_recorded(&[LOCAL_IMDS], Some(client_id), url);
}

#[test]
fn fixture_app_service_legacy_2017_msi_epoch_string() {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&fixture("app_service_legacy_2017_msi_epoch_string.yaml")).unwrap();
    let interaction = &doc["interactions"][0];
    let body = interaction["response"]["body"]["string"].as_str().unwrap();
    let r = TokenResponse::parse(body.as_bytes()).unwrap();
    assert_eq!(r.access_token.expose(), "redacted");
    assert_eq!(expiries(&r), (None, Some(1_646_265_298)));
    assert_eq!(r.lifetime().unwrap_err(), EXPIRED);

    // The original wire request (`url:`) is the Azure ML / legacy MSI shape: 2017-09-01, `clientid`, `secret`.
    let url = interaction["response"]["url"].as_str().unwrap();
    let vars = [
        ("MSI_ENDPOINT", "http://127.0.0.1:8081/msi/token"),
        ("MSI_SECRET", "s"),
    ];
    let client_id = UserAssignedId::ClientId("b48ae5dc-70d0-488a-8ef5-f30d905cd5ec".into());
    assert_sends_recorded(&vars, Some(client_id), url);
    assert!(interaction["request"]["headers"].get("secret").is_some());
}

#[test]
fn error_descriptions_are_one_short_line() {
    let long = "x".repeat(1000);
    let body = format!(r#"{{"error_description":"{long}"}}"#);
    let d = error_description(body.as_bytes()).unwrap();
    assert_eq!(d.chars().count(), 301);
    assert_eq!(
        error_description(br#"{"error":{"code":"ManagedIdentityNotFound"}}"#).as_deref(),
        Some("ManagedIdentityNotFound")
    );
    assert_eq!(
        error_description(br#"{"error":"invalid_request"}"#).as_deref(),
        Some("invalid_request")
    );
    assert_eq!(error_description(b"<html>500</html>"), None);
}
