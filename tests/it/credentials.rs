//! Credential sources against the mock Entra ID: workload identity, the sdk-auth file, the environment.

use std::time::Duration;

use aml_auth_proxy::auth::{
    CredentialError, SdkAuthFileCredential, SdkAuthFileCredentialOptions, TokenCredential,
    TokenErrorKind, TokenRequest, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use aml_auth_proxy::env::MapEnv;
use http::StatusCode;

use crate::support::proxy::{CANARY_SECRET, TempDir, TestProxy, World, release_fifo};
use crate::support::{ARM_SCOPE, Behavior, MockAad, get, trace_init};

fn wi_env(file: &std::path::Path) -> MapEnv {
    MapEnv::new()
        .with("AZURE_TENANT_ID", "wi")
        .with("AZURE_CLIENT_ID", "22222222-0000-0000-0000-000000000002")
        .with("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string())
}

#[tokio::test]
async fn workload_identity_sends_the_federated_token_as_client_assertion() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let file = dir.file(
        "token",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln\n",
        0o644,
    );
    let cred = WorkloadIdentityCredential::new(
        WorkloadIdentityCredentialOptions::default(),
        &wi_env(&file),
        aad.entra_client(),
    );
    let token = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert_eq!(&*token.source, "workload_identity");
    let form = aad.last_request().unwrap().form;
    assert_eq!(
        form["client_assertion"],
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln"
    );
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(form["client_id"], "22222222-0000-0000-0000-000000000002");
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], ARM_SCOPE);
    assert!(!form.contains_key("client_secret"));
    assert_eq!(aad.requests_for("wi").len(), 1);
}

#[tokio::test]
async fn workload_identity_config_keys_override_the_environment() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let file = dir.file("token", "from-config", 0o600);
    let spec = WorkloadIdentityCredentialOptions {
        tenant_id: Some("configured".into()),
        client_id: Some("33333333-0000-0000-0000-000000000003".into()),
        token_file: Some(file),
    };
    let env = wi_env(std::path::Path::new("/nonexistent"));
    let cred = WorkloadIdentityCredential::new(spec, &env, aad.entra_client());
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    let last = aad.last_request().unwrap();
    assert_eq!(last.tenant, "configured");
    assert_eq!(last.form["client_assertion"], "from-config");
    assert_eq!(
        last.form["client_id"],
        "33333333-0000-0000-0000-000000000003"
    );
}

#[tokio::test]
async fn workload_identity_rereads_the_file_after_a_while_and_when_the_assertion_expired() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let file = dir.file("token", "assertion-1", 0o600);
    let cred = WorkloadIdentityCredential::new(
        WorkloadIdentityCredentialOptions::default(),
        &wi_env(&file),
        aad.entra_client(),
    )
    .with_reread_after(Duration::from_millis(300));
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    // Rotated on disk: within the re-read interval the copy in memory is still used.
    std::fs::write(&file, "assertion-2").unwrap();
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert_eq!(
        aad.last_request().unwrap().form["client_assertion"],
        "assertion-1"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert_eq!(
        aad.last_request().unwrap().form["client_assertion"],
        "assertion-2"
    );
    // Entra ID rejects an expired assertion (AADSTS700024): the file is read again at once and the request retried.
    std::fs::write(&file, "assertion-3").unwrap();
    let expired = r#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range.","error_codes":[700024]}"#;
    aad.script("wi", [Behavior::json(StatusCode::BAD_REQUEST, expired)]);
    let before = aad.count("wi");
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    let requests = aad.requests_for("wi");
    assert_eq!(
        aad.count("wi") - before,
        2,
        "one rejected exchange, one retry with the fresh file"
    );
    assert_eq!(
        requests.last().unwrap().form["client_assertion"],
        "assertion-3"
    );
}

#[tokio::test]
async fn workload_identity_without_its_settings_or_file_is_unavailable() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let cred = WorkloadIdentityCredential::new(
        WorkloadIdentityCredentialOptions::default(),
        &MapEnv::new(),
        aad.entra_client(),
    );
    let Err(CredentialError::Unavailable(attempts)) =
        cred.get_token(&TokenRequest::new(ARM_SCOPE)).await
    else {
        panic!("expected unavailable");
    };
    assert!(
        attempts[0].reason.contains("AZURE_FEDERATED_TOKEN_FILE"),
        "{attempts:?}"
    );
    let env = wi_env(std::path::Path::new("/nonexistent/token"));
    let cred = WorkloadIdentityCredential::new(
        WorkloadIdentityCredentialOptions::default(),
        &env,
        aad.entra_client(),
    );
    let Err(CredentialError::Unavailable(attempts)) =
        cred.get_token(&TokenRequest::new(ARM_SCOPE)).await
    else {
        panic!("expected unavailable");
    };
    assert!(
        attempts[0].reason.contains("/nonexistent/token"),
        "{attempts:?}"
    );
    assert_eq!(aad.total_count(), 0);
}

#[tokio::test]
async fn workload_identity_token_file_that_is_a_fifo_is_refused_without_blocking() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let fifo = dir.fifo("token");
    let cred = WorkloadIdentityCredential::new(
        WorkloadIdentityCredentialOptions::default(),
        &wi_env(&fifo),
        aad.entra_client(),
    );
    let request = TokenRequest::new(ARM_SCOPE);
    let Ok(result) = tokio::time::timeout(Duration::from_secs(10), cred.get_token(&request)).await
    else {
        release_fifo(&fifo);
        panic!("reading the federated token file blocked on a FIFO");
    };
    let Err(CredentialError::Unavailable(attempts)) = result else {
        panic!("expected unavailable, got {result:?}");
    };
    assert_eq!(
        attempts[0].reason,
        format!(
            "federated token file {}: a FIFO (named pipe), not a regular file",
            fifo.display()
        )
    );
    assert_eq!(aad.total_count(), 0);
}

#[tokio::test]
async fn workload_identity_file_that_disappears_is_a_transient_failure() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let file = dir.file("token", "assertion", 0o600);
    let cred = WorkloadIdentityCredential::new(
        WorkloadIdentityCredentialOptions::default(),
        &wi_env(&file),
        aad.entra_client(),
    )
    .with_reread_after(Duration::ZERO);
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    std::fs::remove_file(&file).unwrap();
    let Err(CredentialError::Failed(e)) = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await
    else {
        panic!("expected a failure");
    };
    assert_eq!(
        e.kind,
        TokenErrorKind::TokenServiceUnavailable,
        "retried with backoff while the cached token serves"
    );
}

#[tokio::test]
async fn sdk_auth_file_uses_its_secret_and_authority() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let json = serde_json::json!({
        "clientId": "44444444-0000-0000-0000-000000000004", "clientSecret": CANARY_SECRET,
        "subscriptionId": "sub", "tenantId": "sdkauth", "activeDirectoryEndpointUrl": aad.base_url(),
        "resourceManagerEndpointUrl": "https://management.azure.com/"
    });
    let file = dir.file("sdk-auth.json", &json.to_string(), 0o600);
    // The client's own authority is elsewhere: the file's activeDirectoryEndpointUrl wins.
    let other = MockAad::start().await;
    let cred = SdkAuthFileCredential::from_file(
        SdkAuthFileCredentialOptions { path: file.clone() },
        &other.entra_client(),
    );
    let token = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert_eq!(&*token.source, "sdk_auth_file");
    let form = aad.last_request().unwrap().form;
    assert_eq!(form["client_secret"], CANARY_SECRET);
    assert_eq!(form["client_id"], "44444444-0000-0000-0000-000000000004");
    assert_eq!(other.total_count(), 0);
}

#[tokio::test]
async fn sdk_auth_file_problems_name_the_file_never_the_secret() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    for (name, body) in [
        (
            "no-tenant.json",
            serde_json::json!({"clientId": "c", "clientSecret": CANARY_SECRET}),
        ),
        (
            "plain-http.json",
            serde_json::json!({"clientId": "c", "clientSecret": CANARY_SECRET, "tenantId": "t", "activeDirectoryEndpointUrl": "http://login.example.com"}),
        ),
        (
            "no-secret.json",
            serde_json::json!({"clientId": "c", "tenantId": "t"}),
        ),
    ] {
        let file = dir.file(name, &body.to_string(), 0o600);
        let cred = SdkAuthFileCredential::from_file(
            SdkAuthFileCredentialOptions { path: file.clone() },
            &aad.entra_client(),
        );
        let Err(CredentialError::Failed(e)) = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await
        else {
            panic!("{name}: expected a failure");
        };
        assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
        assert!(e.message.contains(name), "{}", e.message);
        assert!(!format!("{e:?}").contains(CANARY_SECRET));
    }
    let missing = SdkAuthFileCredential::from_file(
        SdkAuthFileCredentialOptions {
            path: dir.path().join("missing.json"),
        },
        &aad.entra_client(),
    );
    assert!(matches!(
        missing.get_token(&TokenRequest::new(ARM_SCOPE)).await,
        Err(CredentialError::Unavailable(_))
    ));
    assert_eq!(aad.total_count(), 0);
}

#[tokio::test]
async fn chains_fall_through_to_workload_identity_and_environment_auth_location() {
    let _trace = trace_init();
    let world = World::new().await;
    let dir = TempDir::new();
    let file = dir.file("token", "federated", 0o600);
    let routes = world.route("arm", "/", "chained", "");
    let yaml = world.config(
        "  chained:\n    chain: [environment, workload_identity]\n",
        &routes,
    );
    let proxy = TestProxy::start_with(&yaml, wi_env(&file), Default::default()).await;
    let (status, _, body) = get(&proxy.url("/x")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        world.aad.last_request().unwrap().form["client_assertion"],
        "federated"
    );
    proxy.stop().await;

    let json = serde_json::json!({"clientId": "c", "clientSecret": CANARY_SECRET, "tenantId": "authfile",
        "activeDirectoryEndpointUrl": world.aad.base_url()});
    let auth = dir.file("auth.json", &json.to_string(), 0o600);
    let env = MapEnv::new().with("AZURE_AUTH_LOCATION", auth.display().to_string());
    let yaml = world.config(
        "  env:\n    chain: [environment]\n",
        &world.route("arm", "/", "env", ""),
    );
    let proxy = TestProxy::start_with(&yaml, env, Default::default()).await;
    let (status, _, _) = get(&proxy.url("/x")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(world.aad.requests_for("authfile").len(), 1);
    proxy.stop().await;
}
