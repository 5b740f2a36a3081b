//! IMDS unavailable, 404, 410 or 429 (F5): a bounded, clear answer every time, never an endless loop, and every
//! request with `Metadata: true`. Every credential built here points at 127.0.0.1, never at 169.254.169.254.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aml_auth_proxy::auth::{
    CredentialError, HttpClientOptions, ImdsRetry, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, TokenCredential, TokenErrorKind, TokenRequest,
    UserAssignedId,
};
use aml_auth_proxy::env::MapEnv;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::process::ClosedPort;
use crate::support::{
    ARM_SCOPE, IdentityRequest, MockIdentity, Reply, token_http_client, trace_init,
};

/// The production schedule scaled down 100× (0.8 s → 8 ms, 2.5 s → 25 ms, 60 s → 600 ms).
fn scaled_retry() -> ImdsRetry {
    let production = ImdsRetry::default();
    ImdsRetry {
        max_retries: production.max_retries,
        backoff: production.backoff / 100,
        gone_backoff: production.gone_backoff / 100,
        max_delay: production.max_delay / 100,
    }
}

/// A managed-identity credential for IMDS at `base` (via `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
fn credential(
    base: &str,
    client_id: Option<&str>,
    in_chain: bool,
    retry: ImdsRetry,
) -> ManagedIdentityCredential {
    let http = token_http_client(&HttpClientOptions::default());
    let env = MapEnv::new().with("AZURE_POD_IDENTITY_AUTHORITY_HOST", base);
    let options = ManagedIdentityCredentialOptions {
        user_assigned: client_id.map(|c| UserAssignedId::ClientId(c.into())),
        in_chain,
        retry,
        ..ManagedIdentityCredentialOptions::default()
    };
    let cred = ManagedIdentityCredential::new(options, &env, http);
    assert_eq!(cred.endpoint().and_then(|u| u.host()), Some("127.0.0.1"));
    cred
}

/// Every request carried `Metadata: true` and nothing that names a forwarding hop.
fn assert_metadata_and_no_forwarding(requests: &[IdentityRequest]) {
    assert!(!requests.is_empty());
    for r in requests {
        assert_eq!(r.header("metadata"), Some("true"), "{r:?}");
        for absent in ["x-forwarded-for", "forwarded", "x-forwarded-host", "via"] {
            assert!(r.header(absent).is_none(), "{absent} sent: {r:?}");
        }
    }
}

/// F5: IMDS refusing connections makes the managed-identity source unavailable at once, and a silent IMDS after
/// the 1 s probe (inside a chain, where the probe runs).
#[tokio::test]
async fn f05_imds_refused_or_silent_is_unavailable_within_the_1s_probe() {
    let _trace = trace_init();
    let closed = ClosedPort::new();
    let retry = ImdsRetry::default();
    let cred = credential(
        &format!("http://{}", closed.addr()),
        None,
        true,
        retry.clone(),
    );
    let started = Instant::now();
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let Err(CredentialError::Unavailable(attempts)) = result else {
        panic!("expected unavailable, got {result:?}");
    };
    assert!(
        attempts[0].reason.contains("no response from IMDS"),
        "{attempts:?}"
    );

    // Accepts, never answers.
    let silent = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let cred = credential(&format!("http://{addr}"), None, true, retry);
    let started = Instant::now();
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(CredentialError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1500),
        "the probe gave up after {took:?}"
    );
    held.abort();
}

/// F5: 410 ("IMDS is being updated, back within 70 s") is retried for at least 70 s in total. The production
/// schedule's delays are checked exactly; the same schedule scaled down 100× then runs against a mock IMDS that
/// answers 410 for "60 s" and recovers, and against one that never recovers. Every request carries
/// `Metadata: true` and no forwarding header.
#[tokio::test]
async fn f05_imds_410_is_retried_for_at_least_70s_with_metadata_on_every_request() {
    let _trace = trace_init();
    let production = ImdsRetry::default();
    let gone_total: Duration = (1..=production.max_retries)
        .map(|n| production.delay(n, true))
        .sum();
    assert_eq!(
        (1..=production.max_retries)
            .map(|n| production.delay(n, true).as_secs())
            .collect::<Vec<_>>(),
        [0, 5, 10, 20, 40]
    );
    assert!(
        gone_total >= Duration::from_secs(70),
        "410 retried for {gone_total:?}"
    );
    let ordinary: Duration = (1..=production.max_retries)
        .map(|n| production.delay(n, false))
        .sum();
    assert!(
        ordinary < gone_total,
        "410 waits longer than other statuses"
    );

    // Scaled 100×: 410 for "60 s" (600 ms), then a token.
    let first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = first.clone();
    let mock = MockIdentity::start_with(Arc::new(move |req, issuer| {
        let start = *seen.lock().unwrap().get_or_insert_with(Instant::now);
        if start.elapsed() < Duration::from_millis(600) {
            return Reply::error(410, "gone", "IMDS is going through updates");
        }
        MockIdentity::imds_like(req, issuer)
    }))
    .await;
    let cred = credential(&mock.base(), None, false, scaled_retry());
    let started = Instant::now();
    let token = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(token.token.expose().starts_with("mi."));
    // 410s until the window closed (how many depends on how late the timers fire), then the token; never more
    // than the schedule allows.
    assert!(
        (3..=6).contains(&mock.count()),
        "{} requests for one token",
        mock.count()
    );
    assert_metadata_and_no_forwarding(&mock.requests());

    // 410 for ever: the retries span ≥ 70 s (scaled: 700 ms), then a bounded failure.
    let mock = MockIdentity::start_with(Arc::new(|_, _| {
        Reply::error(410, "gone", "IMDS is going through updates")
    }))
    .await;
    let cred = credential(&mock.base(), None, false, scaled_retry());
    let started = Instant::now();
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    assert!(started.elapsed() >= Duration::from_millis(700));
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert!(e.message.contains("HTTP 410"), "{}", e.message);
    assert_eq!(mock.count(), 6);
    assert_metadata_and_no_forwarding(&mock.requests());
}

/// IMDS's answer for a user-assigned identity that is not (yet) assigned here: 404 `Identity not found`.
fn identity_not_found() -> Reply {
    Reply::error(404, "invalid_request", "Identity not found")
}

const MI_CLIENT_ID: &str = "7e3c1a2b-0000-4000-8000-0000000000c1";

/// F5: 404 is a clear error after a bounded number of retries (never an endless loop); 429 is retried and
/// recovers. Every request carries `Metadata: true`.
#[tokio::test]
async fn f05_imds_404_is_a_clear_bounded_error_and_429_recovers() {
    let _trace = trace_init();
    let mock = MockIdentity::start_with(Arc::new(|_, _| identity_not_found())).await;
    let cred = credential(&mock.base(), Some(MI_CLIENT_ID), false, scaled_retry());
    for round in 1..=2 {
        let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
        let Err(CredentialError::Failed(e)) = result else {
            panic!("expected a failure, got {result:?}");
        };
        assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
        assert!(
            e.message.contains("HTTP 404") && e.message.contains("Identity not found"),
            "{}",
            e.message
        );
        assert_eq!(mock.count(), 6 * round, "1 attempt + 5 retries per call");
    }
    let requests = mock.requests();
    assert_metadata_and_no_forwarding(&requests);
    assert!(
        requests
            .iter()
            .all(|r| r.query.get("client_id").map(String::as_str) == Some(MI_CLIENT_ID))
    );

    let mock = MockIdentity::start().await;
    mock.script([
        Reply::error(429, "throttled", "too many requests"),
        Reply::error(429, "throttled", "too many requests"),
    ]);
    let cred = credential(&mock.base(), None, false, scaled_retry());
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert_eq!(mock.count(), 3);
    assert_metadata_and_no_forwarding(&mock.requests());
}

/// F5 (stricter than its criteria): the 404 error names the client id that IMDS did not find.
#[tokio::test]
async fn f05_imds_404_error_names_the_client_id() {
    let _trace = trace_init();
    let mock = MockIdentity::start_with(Arc::new(|_, _| identity_not_found())).await;
    let cred = credential(&mock.base(), Some(MI_CLIENT_ID), false, scaled_retry());
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert!(e.message.contains(MI_CLIENT_ID), "{}", e.message);
}
