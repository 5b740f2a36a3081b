//! Managed identity against in-process mocks of every supported endpoint: IMDS (probe, retries, errors),
//! App Service, Azure ML compute, Cloud Shell and Azure Arc (challenge and key-file checks).
//!
//! Every credential here is built by [`credential`], which refuses any endpoint that is not 127.0.0.1: nothing in
//! these tests may ever send traffic to the real IMDS at 169.254.169.254.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aml_auth_proxy::auth::{
    AccessToken, CredentialError, HttpClientOptions, ImdsRetry, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, ManagedIdentitySource, TokenCredential, TokenError,
    TokenErrorKind, TokenRequest, UserAssignedId,
};
use aml_auth_proxy::env::MapEnv;
use http::Method;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::mock_identity::{Handler, IdentityRequest, Issuer};
use crate::support::proxy::TempDir;
use crate::support::{ARM_SCOPE, MockIdentity, Reply, token_http_client, trace_init};

const ARM: &str = "https://management.azure.com";
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

// === helpers ===

/// The shortened schedule: the production shape (5 retries, doubling) in milliseconds.
fn fast_retry() -> ImdsRetry {
    ImdsRetry {
        max_retries: 5,
        backoff: Duration::from_millis(1),
        gone_backoff: Duration::from_millis(2),
        max_delay: Duration::from_millis(50),
    }
}

/// How a test reaches the endpoint: fast retries, no real Arc key directory.
fn options(in_chain: bool) -> ManagedIdentityCredentialOptions {
    ManagedIdentityCredentialOptions {
        in_chain,
        retry: fast_retry(),
        arc_key_dir: "/nonexistent/aml-auth-proxy-test/arc-keys".into(),
        ..ManagedIdentityCredentialOptions::default()
    }
}

/// Which identity a test asks for (as configuration gives it).
fn spec(user_assigned: Option<UserAssignedId>) -> ManagedIdentityCredentialOptions {
    ManagedIdentityCredentialOptions {
        user_assigned,
        ..ManagedIdentityCredentialOptions::default()
    }
}

/// Builds the credential for the identity and endpoint of `spec`, reached as `options` says, and fails the test
/// unless its endpoint is on loopback (or no source is usable, so nothing is ever sent).
fn credential(
    spec: &ManagedIdentityCredentialOptions,
    env: &MapEnv,
    options: ManagedIdentityCredentialOptions,
) -> ManagedIdentityCredential {
    let options = ManagedIdentityCredentialOptions {
        user_assigned: spec.user_assigned.clone(),
        endpoint: spec.endpoint.clone(),
        ..options
    };
    let cred = ManagedIdentityCredential::new(
        options,
        env,
        token_http_client(&HttpClientOptions::default()),
    );
    if let Some(url) = cred.endpoint() {
        assert_eq!(
            url.host(),
            Some("127.0.0.1"),
            "tests must point managed identity at loopback, never at 169.254.169.254: {url}"
        );
    }
    cred
}

/// IMDS at `base` (through `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
fn imds_env(base: &str) -> MapEnv {
    MapEnv::new().with("AZURE_POD_IDENTITY_AUTHORITY_HOST", base)
}

async fn token(cred: &ManagedIdentityCredential) -> Result<AccessToken, CredentialError> {
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await
}

#[track_caller]
fn failed(result: Result<AccessToken, CredentialError>) -> TokenError {
    match result {
        Err(CredentialError::Failed(e)) => e,
        Err(other) => panic!("expected a failure, got {other}"),
        Ok(t) => panic!("expected a failure, got a token from {}", t.source),
    }
}

#[track_caller]
fn unavailable(result: Result<AccessToken, CredentialError>) -> String {
    match result {
        Err(CredentialError::Unavailable(attempts)) => {
            assert_eq!(attempts.len(), 1, "{attempts:?}");
            assert_eq!(attempts[0].source, "managed_identity");
            attempts[0].reason.clone()
        }
        Err(other) => panic!("expected unavailable, got {other}"),
        Ok(t) => panic!("expected unavailable, got a token from {}", t.source),
    }
}

#[track_caller]
fn assert_lifetime(token: &AccessToken, expected_secs: u64) {
    let got = token.expires_in.as_secs();
    assert!(
        got.abs_diff(expected_secs) <= 2,
        "lifetime {got}s, expected about {expected_secs}s"
    );
}

/// A loopback port with nothing listening.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    listener.local_addr().unwrap()
}

/// A listener that accepts connections and never answers; dropping the handle closes everything.
async fn silent_listener() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

/// A handler answering every request with `reply`.
fn always(reply: Reply) -> Handler {
    Arc::new(move |_: &IdentityRequest, _: &Issuer| reply.clone())
}

/// `unix` as a legacy MSI date: `MM/DD/YYYY HH:MM:SS +00:00`, or the Windows `M/D/YYYY h:mm:ss AM +00:00`.
fn msi_date(unix: u64, windows: bool) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let text = if windows {
        let (h12, meridiem) = match hour {
            0 => (12, "AM"),
            1..=11 => (hour, "AM"),
            12 => (12, "PM"),
            _ => (hour - 12, "PM"),
        };
        format!("{month}/{day}/{year} {h12}:{minute:02}:{second:02} {meridiem} +00:00")
    } else {
        format!("{month:02}/{day:02}/{year} {hour:02}:{minute:02}:{second:02} +00:00")
    };
    assert_eq!(
        aml_auth_proxy::fuzzing::msi_date(&text),
        Some(unix),
        "{text}"
    );
    text
}

// === IMDS ===

#[tokio::test]
async fn imds_system_assigned_request_and_token() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    let cred = credential(&spec(None), &imds_env(&imds.base()), options(false));
    assert_eq!(cred.source(), Some(ManagedIdentitySource::Imds));
    assert_eq!(cred.kind(), "managed_identity");
    let token = token(&cred).await.unwrap();
    assert_eq!(token.token.expose(), "mi.1");
    assert_eq!(&*token.source, "managed_identity");
    assert_eq!(
        token.expires_in,
        Duration::from_secs(86399),
        "expires_in wins"
    );
    assert_eq!(imds.count(), 1, "no probe outside a chain");
    let r = imds.last();
    assert_eq!(r.method, Method::GET);
    assert_eq!(r.path, TOKEN_PATH);
    assert_eq!(
        r.query.get("api-version").map(String::as_str),
        Some("2018-02-01")
    );
    assert_eq!(r.query.get("resource").map(String::as_str), Some(ARM));
    assert_eq!(r.query.len(), 2, "{:?}", r.query);
    assert_eq!(r.header("metadata"), Some("true"));
    for absent in [
        "x-forwarded-for",
        "forwarded",
        "authorization",
        "x-identity-header",
        "secret",
    ] {
        assert!(r.header(absent).is_none(), "{absent} must not be sent");
    }
}

#[tokio::test]
async fn imds_user_assigned_identity_parameters() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    let rid = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id";
    for (id, name, value) in [
        (
            UserAssignedId::ClientId("cid-1".into()),
            "client_id",
            "cid-1",
        ),
        (
            UserAssignedId::ObjectId("oid-1".into()),
            "object_id",
            "oid-1",
        ),
        (UserAssignedId::ResourceId(rid.into()), "msi_res_id", rid),
    ] {
        let cred = credential(&spec(Some(id)), &imds_env(&imds.base()), options(false));
        token(&cred).await.unwrap();
        let r = imds.last();
        assert_eq!(
            r.query.get(name).map(String::as_str),
            Some(value),
            "{:?}",
            r.query
        );
        assert_eq!(r.query.len(), 3, "{:?}", r.query);
    }
}

#[tokio::test]
async fn imds_endpoint_override_replaces_the_whole_url() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    let spec = ManagedIdentityCredentialOptions {
        endpoint: Some(imds.url("/custom/token").parse().unwrap()),
        ..spec(None)
    };
    let cred = credential(&spec, &MapEnv::new(), options(false));
    token(&cred).await.unwrap();
    let r = imds.last();
    assert_eq!(r.path, "/custom/token");
    assert_eq!(
        r.query.get("api-version").map(String::as_str),
        Some("2018-02-01")
    );
}

#[tokio::test]
async fn imds_probe_in_a_chain_happens_once() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    let cred = credential(&spec(None), &imds_env(&imds.base()), options(true));
    token(&cred).await.unwrap();
    token(&cred).await.unwrap();
    let requests = imds.requests();
    assert_eq!(requests.len(), 3, "one probe, then two token requests");
    let (probe, first) = (&requests[0], &requests[1]);
    assert!(
        probe.header("metadata").is_none(),
        "the probe has no Metadata header"
    );
    assert_eq!(probe.path, TOKEN_PATH);
    assert_eq!(
        probe.raw_query, first.raw_query,
        "the probe asks the same URL"
    );
    assert_eq!(first.header("metadata"), Some("true"));
    assert_eq!(requests[2].header("metadata"), Some("true"));
}

#[tokio::test]
async fn imds_probe_any_answer_counts() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    // Even a 503 to the probe proves something answers at the address.
    imds.script([Reply::json(503, "{}")]);
    let cred = credential(&spec(None), &imds_env(&imds.base()), options(true));
    token(&cred).await.unwrap();
    assert_eq!(imds.count(), 2);
}

#[tokio::test]
async fn imds_probe_on_a_closed_port_is_unavailable_at_once() {
    let _trace = trace_init();
    let addr = closed_port().await;
    let base = format!("http://{addr}");
    let cred = credential(&spec(None), &imds_env(&base), options(true));
    let started = Instant::now();
    let reason = unavailable(token(&cred).await);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        reason.starts_with(&format!("no response from IMDS at {base}{TOKEN_PATH}")),
        "{reason}"
    );
    // A failed probe is not remembered as success: the next call probes (and fails) again.
    unavailable(token(&cred).await);
}

#[tokio::test]
async fn imds_probe_of_a_silent_endpoint_gives_up_after_about_a_second() {
    let _trace = trace_init();
    let (addr, listener) = silent_listener().await;
    let cred = credential(
        &spec(None),
        &imds_env(&format!("http://{addr}")),
        options(true),
    );
    let started = Instant::now();
    let reason = unavailable(token(&cred).await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
    assert!(reason.contains("no response from IMDS"), "{reason}");
    listener.abort();
}

#[tokio::test]
async fn imds_unreachable_outside_a_chain_is_a_service_outage() {
    let _trace = trace_init();
    let addr = closed_port().await;
    let cred = credential(
        &spec(None),
        &imds_env(&format!("http://{addr}")),
        options(false),
    );
    let e = failed(token(&cred).await);
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert!(e.message.contains("IMDS at"), "{}", e.message);
}

#[tokio::test]
async fn imds_gone_after_a_successful_probe_is_a_service_outage() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    let cred = credential(&spec(None), &imds_env(&imds.base()), options(true));
    token(&cred).await.unwrap();
    drop(imds);
    let e = failed(token(&cred).await);
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable, "{e}");
}

#[tokio::test]
async fn imds_retries_transient_statuses_with_the_schedule() {
    let _trace = trace_init();
    for status in [500, 503, 404, 410, 429] {
        let imds = MockIdentity::start_with(always(Reply::error(
            status,
            "unknown",
            "Failed to retrieve token from the Active directory",
        )))
        .await;
        let cred = credential(&spec(None), &imds_env(&imds.base()), options(false));
        let e = failed(token(&cred).await);
        assert_eq!(imds.count(), 6, "HTTP {status}: 1 attempt + 5 retries");
        assert_eq!(
            e.kind,
            TokenErrorKind::TokenServiceUnavailable,
            "HTTP {status}"
        );
        assert!(
            e.message.contains(&format!("HTTP {status}"))
                && e.message.contains("Failed to retrieve token"),
            "{}",
            e.message
        );
    }
}

#[tokio::test]
async fn imds_recovers_within_the_retries() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    imds.script([
        Reply::error(429, "throttled", "too many requests"),
        Reply::error(410, "gone", "IMDS is going through updates"),
        Reply::error(500, "unknown", "x"),
    ]);
    let cred = credential(&spec(None), &imds_env(&imds.base()), options(false));
    let t = token(&cred).await.unwrap();
    assert_eq!(t.token.expose(), "mi.1");
    assert_eq!(imds.count(), 4);
}

#[tokio::test]
async fn imds_other_client_errors_are_not_retried() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    imds.script([Reply::error(401, "unknown_source", "Unknown Source")]);
    let cred = credential(&spec(None), &imds_env(&imds.base()), options(false));
    let e = failed(token(&cred).await);
    assert_eq!(imds.count(), 1);
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    assert!(
        e.message.contains("HTTP 401: Unknown Source"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn imds_retry_after_beyond_the_schedule_ends_the_retries() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    imds.script([Reply::error(429, "throttled", "slow down").with_header("retry-after", "3600")]);
    let cred = credential(&spec(None), &imds_env(&imds.base()), options(false));
    let e = failed(token(&cred).await);
    assert_eq!(
        imds.count(),
        1,
        "no retry when asked to wait longer than max_delay"
    );
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert_eq!(e.retry_after, Some(Duration::from_secs(3600)));
}

#[tokio::test]
async fn imds_retry_after_longer_than_the_backoff_is_honoured() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    imds.script([Reply::error(503, "busy", "busy").with_header("retry-after", "1")]);
    let mut opts = options(false);
    opts.retry.max_delay = Duration::from_secs(2);
    let cred = credential(&spec(None), &imds_env(&imds.base()), opts);
    let started = Instant::now();
    token(&cred).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(imds.count(), 2);
}

#[tokio::test]
async fn imds_400_identity_not_assigned_is_unavailable() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    imds.script([Reply::error(
        400,
        "invalid_request",
        "Identity not found\r\nTrace ID: abc",
    )]);
    let id = UserAssignedId::ClientId("cid-missing".into());
    let cred = credential(&spec(Some(id)), &imds_env(&imds.base()), options(false));
    let reason = unavailable(token(&cred).await);
    assert_eq!(imds.count(), 1, "400 is not retried");
    assert!(
        reason.contains(
            "HTTP 400 for the user-assigned identity client_id=cid-missing: Identity not found"
        ),
        "{reason}"
    );
    assert!(!reason.contains("Trace ID"), "one line only: {reason}");
    assert!(
        reason.contains("user-assigned identity is not assigned"),
        "{reason}"
    );
}

#[tokio::test]
async fn imds_403_unreachable_from_docker_desktop_is_unavailable() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    imds.script([
        Reply::json(
            403,
            "connecting to 169.254.169.254:80: connecting to 169.254.169.254:80: dial tcp 169.254.169.254:80: connectex: A socket operation was attempted to an unreachable network.",
        ),
        Reply::error(403, "forbidden", "no"),
    ]);
    let cred = credential(&spec(None), &imds_env(&imds.base()), options(false));
    let reason = unavailable(token(&cred).await);
    assert!(reason.contains("unreachable"), "{reason}");
    // Any other 403 is a rejection.
    let e = failed(token(&cred).await);
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    assert_eq!(imds.count(), 2);
}

#[tokio::test]
async fn imds_unusable_success_bodies_are_service_outages_without_echo() {
    let _trace = trace_init();
    let imds = MockIdentity::start().await;
    imds.script([
        Reply::json(200, "<html>secret-canary</html>"),
        Reply::json(
            200,
            r#"{"access_token":"secret-canary","token_type":"Bearer"}"#,
        ),
        Reply::json(200, r#"{"expires_in":"3600"}"#),
    ]);
    let cred = credential(&spec(None), &imds_env(&imds.base()), options(false));
    for why in [
        "not JSON",
        "neither expires_in nor expires_on",
        "no access_token",
    ] {
        let e = failed(token(&cred).await);
        assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
        assert!(
            e.message.contains("unusable token response"),
            "{}",
            e.message
        );
        assert!(e.message.contains(why), "{}", e.message);
        assert!(!e.message.contains("secret-canary"), "{}", e.message);
    }
    assert_eq!(imds.count(), 3, "a 200 is never retried");
}

#[tokio::test]
async fn imds_dropped_connection_is_a_service_outage() {
    let _trace = trace_init();
    let imds = MockIdentity::start_with(always(Reply::Close)).await;
    let cred = credential(&spec(None), &imds_env(&imds.base()), options(false));
    let e = failed(token(&cred).await);
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
}

// === App Service ===

fn app_service_env(mock: &MockIdentity) -> MapEnv {
    MapEnv::new()
        .with("IDENTITY_ENDPOINT", mock.url("/msi/token"))
        .with("IDENTITY_HEADER", "x-id-header-secret")
}

#[tokio::test]
async fn app_service_request_and_expires_on_only_token() {
    let _trace = trace_init();
    let expires_on = (crate::support::now_unix() + 3600).to_string();
    let on = expires_on.clone();
    let mock = MockIdentity::start_with(Arc::new(move |_: &IdentityRequest, issuer: &Issuer| {
        Reply::expires_on_token(&issuer.next(), &on)
    }))
    .await;
    let rid = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id";
    for (id, param) in [
        (None, None),
        (
            Some(UserAssignedId::ClientId("cid".into())),
            Some(("client_id", "cid")),
        ),
        (
            Some(UserAssignedId::ObjectId("oid".into())),
            Some(("principal_id", "oid")),
        ),
        (
            Some(UserAssignedId::ResourceId(rid.into())),
            Some(("mi_res_id", rid)),
        ),
    ] {
        let cred = credential(&spec(id), &app_service_env(&mock), options(true));
        assert_eq!(cred.source(), Some(ManagedIdentitySource::AppService));
        let t = token(&cred).await.unwrap();
        assert_lifetime(&t, 3600);
        let r = mock.last();
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.path, "/msi/token");
        assert_eq!(r.header("x-identity-header"), Some("x-id-header-secret"));
        assert_eq!(r.header("metadata"), Some("true"));
        assert_eq!(
            r.query.get("api-version").map(String::as_str),
            Some("2019-08-01")
        );
        assert_eq!(r.query.get("resource").map(String::as_str), Some(ARM));
        match param {
            Some((name, value)) => {
                assert_eq!(r.query.get(name).map(String::as_str), Some(value));
                assert_eq!(r.query.len(), 3, "{:?}", r.query);
            }
            None => assert_eq!(r.query.len(), 2, "{:?}", r.query),
        }
    }
    assert_eq!(
        mock.count(),
        4,
        "no IMDS probe for App Service, even in a chain"
    );
}

#[tokio::test]
async fn app_service_errors_are_classified() {
    let _trace = trace_init();
    let mock = MockIdentity::start_with(always(Reply::json(
        500,
        r#"{"statusCode": 500, "message": "error content is undefined"}"#,
    )))
    .await;
    let cred = credential(&spec(None), &app_service_env(&mock), options(false));
    let e = failed(token(&cred).await);
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert_eq!(mock.count(), 6, "500 is retried");
    assert!(
        e.message.contains("error content is undefined"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("x-id-header-secret"));

    let mock = MockIdentity::start().await;
    mock.script([Reply::json(
        400,
        r#"{"statusCode": 400, "message": "Unable to load the proper Managed Identity."}"#,
    )]);
    let cred = credential(
        &spec(Some(UserAssignedId::ClientId("wrong".into()))),
        &app_service_env(&mock),
        options(false),
    );
    let e = failed(token(&cred).await);
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    assert_eq!(mock.count(), 1);
    assert!(
        e.message
            .contains("Unable to load the proper Managed Identity"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn service_fabric_is_unavailable_without_any_request() {
    let _trace = trace_init();
    let mock = MockIdentity::start().await;
    let env = app_service_env(&mock).with(
        "IDENTITY_SERVER_THUMBPRINT",
        "0123456789abcdef0123456789abcdef01234567",
    );
    let cred = credential(&spec(None), &env, options(true));
    assert_eq!(cred.source(), None);
    let reason = unavailable(token(&cred).await);
    assert!(
        reason.contains("Service Fabric managed identity is not supported"),
        "{reason}"
    );
    assert_eq!(mock.count(), 0);
}

// === Azure ML compute ===

fn azure_ml_env(mock: &MockIdentity) -> MapEnv {
    MapEnv::new()
        .with("MSI_ENDPOINT", mock.url("/MSI/auth"))
        .with("MSI_SECRET", "msi-secret-value")
}

#[tokio::test]
async fn azure_ml_secret_header_clientid_and_default_client_id() {
    let _trace = trace_init();
    let expires_on = (crate::support::now_unix() + 1234).to_string();
    let mock = MockIdentity::start_with(Arc::new(move |_: &IdentityRequest, issuer: &Issuer| {
        Reply::expires_on_token(&issuer.next(), &expires_on)
    }))
    .await;
    let with_default = azure_ml_env(&mock).with("DEFAULT_IDENTITY_CLIENT_ID", "compute-default-id");
    for (env, id, clientid) in [
        (azure_ml_env(&mock), None, None),
        (with_default.clone(), None, Some("compute-default-id")),
        (
            with_default,
            Some(UserAssignedId::ClientId("explicit-id".into())),
            Some("explicit-id"),
        ),
    ] {
        let cred = credential(&spec(id), &env, options(true));
        assert_eq!(cred.source(), Some(ManagedIdentitySource::AzureMl));
        let t = token(&cred).await.unwrap();
        assert_lifetime(&t, 1234);
        let r = mock.last();
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.path, "/MSI/auth");
        assert_eq!(r.header("secret"), Some("msi-secret-value"));
        assert_eq!(
            r.query.get("api-version").map(String::as_str),
            Some("2017-09-01")
        );
        assert_eq!(r.query.get("resource").map(String::as_str), Some(ARM));
        assert_eq!(r.query.get("clientid").map(String::as_str), clientid);
        assert!(
            !r.query.contains_key("client_id"),
            "clientid has no underscore"
        );
    }
}

#[tokio::test]
async fn azure_ml_legacy_date_expiries() {
    let _trace = trace_init();
    let mock = MockIdentity::start().await;
    let at = crate::support::now_unix() + 7200;
    mock.script([
        Reply::expires_on_token("linux", &msi_date(at, false)),
        Reply::expires_on_token("windows", &msi_date(at, true)),
    ]);
    let cred = credential(&spec(None), &azure_ml_env(&mock), options(false));
    for expected in ["linux", "windows"] {
        let t = token(&cred).await.unwrap();
        assert_eq!(t.token.expose(), expected);
        assert_lifetime(&t, 7200);
    }
}

#[tokio::test]
async fn azure_ml_object_or_resource_id_is_unavailable() {
    let _trace = trace_init();
    let mock = MockIdentity::start().await;
    for id in [
        UserAssignedId::ObjectId("oid".into()),
        UserAssignedId::ResourceId("/subscriptions/s/rg".into()),
    ] {
        let cred = credential(&spec(Some(id)), &azure_ml_env(&mock), options(false));
        let reason = unavailable(token(&cred).await);
        assert!(reason.contains("client_id only"), "{reason}");
    }
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn azure_ml_wrong_secret_is_rejected() {
    let _trace = trace_init();
    let mock = MockIdentity::start().await;
    mock.script([Reply::error(
        400,
        "invalid_request",
        "missing or wrong secret header",
    )]);
    let cred = credential(&spec(None), &azure_ml_env(&mock), options(false));
    let e = failed(token(&cred).await);
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    assert!(
        e.message.contains("missing or wrong secret header"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("msi-secret-value"));
}

// === Cloud Shell ===

#[tokio::test]
async fn cloud_shell_posts_the_resource_as_a_form() {
    let _trace = trace_init();
    let mock = MockIdentity::start().await;
    mock.script([Reply::imds_token("user-token", 3000)]);
    let env = MapEnv::new().with("MSI_ENDPOINT", mock.url("/oauth2/token"));
    let cred = credential(&spec(None), &env, options(true));
    assert_eq!(cred.source(), Some(ManagedIdentitySource::CloudShell));
    let t = token(&cred).await.unwrap();
    assert_eq!(t.token.expose(), "user-token");
    assert_eq!(t.expires_in, Duration::from_secs(3000));
    let r = mock.last();
    assert_eq!(mock.count(), 1);
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/oauth2/token");
    assert_eq!(r.raw_query, None);
    assert_eq!(r.header("metadata"), Some("true"));
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.form().get("resource").map(String::as_str), Some(ARM));

    let cred = credential(
        &spec(Some(UserAssignedId::ClientId("c".into()))),
        &env,
        options(false),
    );
    let reason = unavailable(token(&cred).await);
    assert!(reason.contains("Cloud Shell"), "{reason}");
    assert_eq!(mock.count(), 1);
}

// === Azure Arc ===

/// An Arc agent: 401 with `WWW-Authenticate: Basic realm=<realm>` unless `Authorization: Basic <key>` is sent.
fn arc_agent(realm: String, key: &'static str) -> Handler {
    Arc::new(move |r: &IdentityRequest, issuer: &Issuer| {
        if r.header("authorization") == Some(&format!("Basic {key}")) {
            return Reply::imds_token(&issuer.next(), 85770);
        }
        Reply::json(
            401,
            r#"{"error":"unauthorized_client","error_description":"Missing Basic Authorization header","error_codes":[401]}"#,
        )
        .with_header("www-authenticate", &format!("Basic realm={realm}"))
    })
}

fn arc_env(mock: &MockIdentity) -> MapEnv {
    MapEnv::new()
        .with("IDENTITY_ENDPOINT", mock.url(TOKEN_PATH))
        .with("IMDS_ENDPOINT", mock.base())
}

fn arc_options(key_dir: &TempDir) -> ManagedIdentityCredentialOptions {
    ManagedIdentityCredentialOptions {
        arc_key_dir: key_dir.path().to_path_buf(),
        ..options(true)
    }
}

#[tokio::test]
async fn arc_answers_the_challenge_with_the_key_file() {
    let _trace = trace_init();
    let keys = TempDir::new();
    let key = keys.file("0b1c2d3e.key", "arc-secret-key\n", 0o600);
    let mock =
        MockIdentity::start_with(arc_agent(key.display().to_string(), "arc-secret-key")).await;
    let cred = credential(&spec(None), &arc_env(&mock), arc_options(&keys));
    assert_eq!(cred.source(), Some(ManagedIdentitySource::AzureArc));
    let t = token(&cred).await.unwrap();
    assert_eq!(t.token.expose(), "mi.1");
    assert_eq!(t.expires_in, Duration::from_secs(85770));
    let requests = mock.requests();
    assert_eq!(
        requests.len(),
        2,
        "challenge, then the answer (no IMDS probe for Arc)"
    );
    for r in &requests {
        assert_eq!(r.path, TOKEN_PATH);
        assert_eq!(r.header("metadata"), Some("true"));
        assert_eq!(
            r.query.get("api-version").map(String::as_str),
            Some("2020-06-01")
        );
        assert_eq!(r.query.get("resource").map(String::as_str), Some(ARM));
    }
    assert!(requests[0].header("authorization").is_none());
    assert_eq!(
        requests[1].header("authorization"),
        Some("Basic arc-secret-key")
    );
}

#[tokio::test]
async fn arc_refuses_key_files_that_fail_the_checks() {
    let _trace = trace_init();
    let keys = TempDir::new();
    let elsewhere = TempDir::new();
    let outside = elsewhere.file("stolen.key", "not-for-you", 0o600);
    let too_big = keys.file("big.key", &"k".repeat(4097), 0o600);
    let wrong_ext = keys.file("secret.txt", "not-a-key", 0o600);
    let escape = keys.path().join("escape.key");
    std::os::unix::fs::symlink(&outside, &escape).unwrap();
    let traversal = format!("{}/../{}/stolen.key", keys.path().display(), {
        elsewhere.path().file_name().unwrap().to_string_lossy()
    });
    let missing = keys.path().join("missing.key");
    let fifo = keys.fifo("pipe.key");
    for (realm, why) in [
        (
            outside.display().to_string(),
            "is not in the agent's key directory",
        ),
        (
            escape.display().to_string(),
            "is not in the agent's key directory",
        ),
        (traversal, "is not in the agent's key directory"),
        (too_big.display().to_string(), "is larger than 4096 bytes"),
        (
            wrong_ext.display().to_string(),
            "does not have the .key extension",
        ),
        (missing.display().to_string(), "cannot resolve the key file"),
        (
            fifo.display().to_string(),
            "is a FIFO (named pipe), not a regular file",
        ),
    ] {
        let mock = MockIdentity::start_with(arc_agent(realm.clone(), "never")).await;
        let cred = credential(&spec(None), &arc_env(&mock), arc_options(&keys));
        let e = failed(token(&cred).await);
        assert_eq!(e.kind, TokenErrorKind::CredentialRejected, "{realm}");
        assert!(e.message.contains(why), "{realm}: {}", e.message);
        for secret in ["not-for-you", "not-a-key", "kkkk"] {
            assert!(!e.message.contains(secret), "{}", e.message);
        }
        assert_eq!(mock.count(), 1, "{realm}: the key is never sent");
    }
}

#[tokio::test]
async fn arc_accepts_a_key_file_of_exactly_4096_bytes() {
    let _trace = trace_init();
    let keys = TempDir::new();
    let key = keys.file("max.key", &"k".repeat(4096), 0o600);
    let key_text: &'static str = Box::leak("k".repeat(4096).into_boxed_str());
    let mock = MockIdentity::start_with(arc_agent(key.display().to_string(), key_text)).await;
    let cred = credential(&spec(None), &arc_env(&mock), arc_options(&keys));
    token(&cred).await.unwrap();
    assert_eq!(mock.count(), 2);
}

#[tokio::test]
async fn arc_without_a_challenge_is_rejected() {
    let _trace = trace_init();
    let keys = TempDir::new();
    let mock = MockIdentity::start().await;
    mock.script([
        Reply::imds_token("unexpected", 3600),
        Reply::json(401, r#"{"error":"unauthorized_client"}"#),
    ]);
    let cred = credential(&spec(None), &arc_env(&mock), arc_options(&keys));
    let e = failed(token(&cred).await);
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    assert!(
        e.message.contains("instead of the expected 401 challenge"),
        "{}",
        e.message
    );
    let e = failed(token(&cred).await);
    assert!(
        e.message.contains("without a `WWW-Authenticate"),
        "{}",
        e.message
    );
    assert_eq!(mock.count(), 2);
}

#[tokio::test]
async fn arc_user_assigned_identity_is_unavailable() {
    let _trace = trace_init();
    let keys = TempDir::new();
    let mock = MockIdentity::start().await;
    let cred = credential(
        &spec(Some(UserAssignedId::ClientId("cid".into()))),
        &arc_env(&mock),
        arc_options(&keys),
    );
    let reason = unavailable(token(&cred).await);
    assert!(
        reason.contains("Azure Arc") && reason.contains("client_id"),
        "{reason}"
    );
    assert_eq!(mock.count(), 0);
}

// === detection edge ===

#[tokio::test]
async fn identity_endpoint_alone_is_unavailable_and_sends_nothing() {
    let _trace = trace_init();
    let mock = MockIdentity::start().await;
    let env = MapEnv::new()
        .with("IDENTITY_ENDPOINT", mock.url("/x"))
        .with("AZURE_POD_IDENTITY_AUTHORITY_HOST", mock.base());
    let cred = credential(&spec(None), &env, options(true));
    let reason = unavailable(token(&cred).await);
    assert!(
        reason.contains("IDENTITY_ENDPOINT is set without"),
        "{reason}"
    );
    assert_eq!(mock.count(), 0);
}
