//! The device-code credential against the mock Entra ID: `login` (pending, slow_down, expiry, declined,
//! failures), tokens from the saved refresh token (rotation persisted, revocation, claims), and the binary's
//! `login` subcommand end to end.
//!
//! In-process sign-ins wait on a [`VirtualClock`], so polling costs no real time; the binary polls at the
//! mock's `interval` of 1 s.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aml_auth_proxy::auth::{
    BoxFuture, CredentialError, DEFAULT_CLIENT_ID, DeviceCodeCredential,
    DeviceCodeCredentialOptions, DeviceCodePrompt, LoginError, PollClock, TokenCredential,
    TokenError, TokenErrorKind, TokenRequest, decode_claims_challenge,
};
use base64::Engine;
use http::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use crate::support::process::{ClosedPort, Output, command, run_to_end};
use crate::support::proxy::TempDir;
use crate::support::{
    ARM_SCOPE, Behavior, DeviceCodeAnswer, DevicePoll, MockAad, TokenRequestRecord, trace_init,
};

const ML: &str = "https://ml.azure.com/.default";
const DECORATED_ARM: &str = "https://management.azure.com/.default openid profile offline_access";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const MFA_FIXTURE: &str = "aad_error_50079_interaction_required_with_claims.json";

/// A clock whose `sleep` returns at once and moves `now` forward; it records every wait.
#[derive(Debug)]
struct VirtualClock {
    start: Instant,
    elapsed: Mutex<Duration>,
    sleeps: Mutex<Vec<Duration>>,
}

impl VirtualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
            sleeps: Mutex::new(Vec::new()),
        })
    }

    fn sleeps(&self) -> Vec<u64> {
        self.sleeps
            .lock()
            .unwrap()
            .iter()
            .map(Duration::as_secs)
            .collect()
    }
}

impl PollClock for VirtualClock {
    fn now(&self) -> Instant {
        self.start + *self.elapsed.lock().unwrap()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        *self.elapsed.lock().unwrap() += duration;
        self.sleeps.lock().unwrap().push(duration);
        Box::pin(async {})
    }
}

/// A test bed: the mock, a directory for the cache file, and a credential `me` in `tenant` on a virtual clock.
struct Bed {
    aad: MockAad,
    dir: TempDir,
    tenant: &'static str,
    clock: Arc<VirtualClock>,
    cred: DeviceCodeCredential,
}

impl Bed {
    async fn new(tenant: &'static str) -> Self {
        let aad = MockAad::start().await;
        let dir = TempDir::new();
        let clock = VirtualClock::new();
        let cred = Self::credential(&aad, &dir, tenant, clock.clone());
        Self {
            aad,
            dir,
            tenant,
            clock,
            cred,
        }
    }

    fn credential(
        aad: &MockAad,
        dir: &TempDir,
        tenant: &str,
        clock: Arc<VirtualClock>,
    ) -> DeviceCodeCredential {
        let spec = DeviceCodeCredentialOptions {
            tenant_id: Some(tenant.to_owned()),
            client_id: None,
            cache_file: dir.path().join("cache/tokens.json"),
            config_file: None,
        };
        DeviceCodeCredential::new(spec, aad.entra_client())
            .with_name("me")
            .with_clock(clock)
    }

    fn cache_file(&self) -> PathBuf {
        self.dir.path().join("cache/tokens.json")
    }

    fn cache(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.cache_file()).unwrap()).unwrap()
    }

    fn saved_refresh_token(&self) -> String {
        self.cache()["refresh_token"].as_str().unwrap().to_owned()
    }

    /// Signs in (the mock approves the first poll unless scripted otherwise); returns the prompt shown.
    async fn login(&self, options: &TokenRequest) -> Result<DeviceCodePrompt, LoginError> {
        let mut shown = None;
        self.cred
            .login(options, |p| shown = Some(p.clone()))
            .await?;
        Ok(shown.expect("a prompt was shown"))
    }

    /// The device-code polls the mock received.
    fn polls(&self) -> Vec<TokenRequestRecord> {
        self.aad
            .requests_for(self.tenant)
            .into_iter()
            .filter(|r| r.form.get("grant_type").map(String::as_str) == Some(DEVICE_GRANT))
            .collect()
    }

    /// The refresh-token grants the mock received.
    fn refreshes(&self) -> Vec<TokenRequestRecord> {
        self.aad
            .requests_for(self.tenant)
            .into_iter()
            .filter(|r| r.form.get("grant_type").map(String::as_str) == Some("refresh_token"))
            .collect()
    }

    async fn token(&self, scope: &str) -> Result<String, CredentialError> {
        let t = self.cred.get_token(&TokenRequest::new(scope)).await?;
        assert_eq!(&*t.source, "device_code");
        Ok(t.token.expose().to_owned())
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn failed(result: Result<String, CredentialError>) -> TokenError {
    match result {
        Err(CredentialError::Failed(e)) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

// === login ===

#[tokio::test]
async fn login_shows_the_code_polls_past_pending_and_saves_the_refresh_token() {
    let _trace = trace_init();
    let bed = Bed::new("dc-ok").await;
    bed.aad.script_device_polls([DevicePoll::Pending]);
    let prompt = bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert_eq!(prompt.user_code, "ABCD-EFGH");
    assert_eq!(prompt.verification_uri, "https://microsoft.com/devicelogin");
    assert_eq!(prompt.expires_in, Duration::from_secs(900));
    assert!(prompt.text().contains("ABCD-EFGH"), "{}", prompt.text());
    assert_eq!(
        bed.clock.sleeps(),
        vec![1, 1],
        "one interval before each poll"
    );

    let start = bed.aad.device_code_requests("dc-ok");
    assert_eq!(start.len(), 1);
    let form: Vec<(&str, &str)> = start[0]
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        form,
        vec![("client_id", DEFAULT_CLIENT_ID), ("scope", DECORATED_ARM)]
    );

    let polls = bed.polls();
    assert_eq!(polls.len(), 2, "pending, then approved");
    for poll in &polls {
        assert_eq!(poll.form["client_id"], DEFAULT_CLIENT_ID);
        assert!(poll.form["device_code"].starts_with("dc."));
        assert_eq!(poll.form["client_info"], "1");
        assert!(!poll.form.contains_key("claims"));
    }

    let file = bed.cache_file();
    assert_eq!(mode(&file), 0o600);
    let doc = bed.cache();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["tenant"], "dc-ok");
    assert_eq!(doc["client_id"], DEFAULT_CLIENT_ID);
    assert_eq!(doc["authority"], bed.aad.base_url());
    let now = crate::support::now_unix();
    assert!(doc["obtained_at"].as_u64().unwrap().abs_diff(now) < 60);
    assert!(bed.aad.refresh_token_is_valid(&bed.saved_refresh_token()));
    let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["tokens.json"], "no temporary file is left");
}

#[tokio::test]
async fn slow_down_adds_five_seconds_to_the_interval() {
    let _trace = trace_init();
    let bed = Bed::new("dc-slow").await;
    bed.aad.script_device_polls([
        DevicePoll::SlowDown,
        DevicePoll::Pending,
        DevicePoll::SlowDown,
    ]);
    bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert_eq!(bed.clock.sleeps(), vec![1, 6, 6, 11]);
    assert_eq!(bed.polls().len(), 4);
    assert!(bed.cache_file().exists());
}

#[tokio::test]
async fn login_stops_when_the_code_expires() {
    let _trace = trace_init();
    let bed = Bed::new("dc-expiry").await;
    // Numbers as strings, as some identity providers send them.
    bed.aad.set_device_code(DeviceCodeAnswer {
        interval: "2".into(),
        expires_in: "5".into(),
        ..DeviceCodeAnswer::default()
    });
    bed.aad.script_device_polls([DevicePoll::Pending; 10]);
    let e = bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap_err();
    assert!(matches!(e, LoginError::Expired), "{e:?}");
    assert!(e.to_string().contains("expired"), "{e}");
    // Polls at 2 s and 4 s; the next would come after the code's 5 s lifetime.
    assert_eq!(bed.clock.sleeps(), vec![2, 2]);
    assert_eq!(bed.polls().len(), 2);
    assert!(!bed.cache_file().exists());

    // Entra ID saying so ends the sign-in as well.
    let bed = Bed::new("dc-expired-token").await;
    bed.aad
        .script_device_polls([DevicePoll::Pending, DevicePoll::Expired]);
    let e = bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap_err();
    assert!(matches!(e, LoginError::Expired), "{e:?}");
    assert_eq!(bed.polls().len(), 2);
    assert!(!bed.cache_file().exists());
}

#[tokio::test]
async fn declined_and_bad_codes_stop_the_sign_in() {
    let _trace = trace_init();
    let bed = Bed::new("dc-declined").await;
    bed.aad.script_device_polls([DevicePoll::Declined]);
    let e = bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap_err();
    assert!(matches!(e, LoginError::Declined), "{e:?}");
    assert_eq!(bed.polls().len(), 1);
    assert!(!bed.cache_file().exists());

    let bed = Bed::new("dc-badcode").await;
    bed.aad.script_device_polls([DevicePoll::BadCode]);
    match bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap_err() {
        LoginError::Token(e) => {
            assert_eq!(
                e.aad.as_ref().unwrap().error.as_deref(),
                Some("bad_verification_code")
            );
            assert!(e.message.starts_with("AADSTS70018"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bed.polls().len(), 1);
    assert!(!bed.cache_file().exists());
}

#[tokio::test]
async fn device_code_start_failures_are_classified() {
    let _trace = trace_init();
    let bed = Bed::new("dc-start").await;
    let unknown_app = r#"{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier 'x' was not found in the directory.\r\nTrace ID: t","error_codes":[700016]}"#;
    bed.aad
        .fail_device_code_start(Behavior::json(StatusCode::BAD_REQUEST, unknown_app));
    match bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap_err() {
        LoginError::Token(e) => {
            assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
            assert!(e.message.starts_with("AADSTS700016"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    bed.aad
        .fail_device_code_start(Behavior::Status(StatusCode::SERVICE_UNAVAILABLE));
    match bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap_err() {
        LoginError::Token(e) => assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable),
        other => panic!("{other:?}"),
    }
    assert!(bed.polls().is_empty());
    assert!(bed.clock.sleeps().is_empty());
}

#[tokio::test]
async fn a_few_failed_polls_are_tolerated_then_the_sign_in_stops() {
    let _trace = trace_init();
    let bed = Bed::new("dc-flaky").await;
    let outage = Behavior::Status(StatusCode::SERVICE_UNAVAILABLE);
    // A scripted behaviour answers the tenant's next poll; then the user flow resumes.
    bed.aad.script("dc-flaky", [outage.clone(), outage.clone()]);
    bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    assert_eq!(bed.polls().len(), 3);

    let bed = Bed::new("dc-down").await;
    bed.aad.set_behavior("dc-down", outage);
    match bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap_err() {
        LoginError::Token(e) => assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable),
        other => panic!("{other:?}"),
    }
    assert_eq!(bed.polls().len(), 3);
    assert!(!bed.cache_file().exists());
}

#[tokio::test]
async fn login_with_claims_sends_them_on_every_poll() {
    let _trace = trace_init();
    let bed = Bed::new("dc-claims-login").await;
    let claims = r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#;
    bed.aad.script_device_polls([DevicePoll::Pending]);
    bed.login(&TokenRequest::new(ARM_SCOPE).with_claims(Some(claims.to_owned())))
        .await
        .unwrap();
    let polls = bed.polls();
    assert_eq!(polls.len(), 2);
    assert!(polls.iter().all(|p| p.form["claims"] == claims));
    let issued = bed.aad.registry().all();
    assert_eq!(issued.last().unwrap().claims.as_deref(), Some(claims));
}

// === tokens from the refresh token ===

#[tokio::test]
async fn the_refresh_token_serves_any_scope_and_its_rotation_is_saved() {
    let _trace = trace_init();
    let bed = Bed::new("dc-refresh").await;
    bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    let first = bed.saved_refresh_token();

    let arm = bed.token(ARM_SCOPE).await.unwrap();
    assert!(bed.aad.registry().is_valid(&arm));
    let refresh = bed.refreshes();
    assert_eq!(refresh.len(), 1);
    let form: Vec<(&str, &str)> = refresh[0]
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // (BTreeMap order: alphabetical.)
    assert_eq!(
        form,
        vec![
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_info", "1"),
            ("grant_type", "refresh_token"),
            ("refresh_token", first.as_str()),
            ("scope", DECORATED_ARM),
        ]
    );
    let second = bed.saved_refresh_token();
    assert_ne!(second, first, "the rotated refresh token was saved");
    assert!(!bed.aad.refresh_token_is_valid(&first));
    assert!(bed.aad.refresh_token_is_valid(&second));
    assert_eq!(mode(&bed.cache_file()), 0o600);

    // Another scope, with the rotated token (the old one no longer works at the mock).
    let ml = bed.token(ML).await.unwrap();
    assert_eq!(
        bed.aad.registry().get(&ml).unwrap().scope.as_deref(),
        Some("https://ml.azure.com/.default openid profile offline_access")
    );
    assert_eq!(bed.refreshes()[1].form["refresh_token"], second);
    assert_ne!(bed.saved_refresh_token(), second);
}

#[tokio::test]
async fn concurrent_refreshes_never_spend_the_same_refresh_token_twice() {
    let _trace = trace_init();
    let bed = Bed::new("dc-concurrent").await;
    bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    let scopes: Vec<String> = (0..6)
        .map(|i| format!("https://r{i}.example/.default"))
        .collect();
    let results = futures_join_all(scopes.iter().map(|s| bed.token(s))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let used: Vec<String> = bed
        .refreshes()
        .iter()
        .map(|r| r.form["refresh_token"].clone())
        .collect();
    let mut unique = used.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        used.len(),
        "each refresh used the latest token"
    );
}

/// Polls every future to completion, concurrently (no extra dependency).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn without_rotation_the_saved_refresh_token_is_kept() {
    let _trace = trace_init();
    let bed = Bed::new("dc-keep").await;
    bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    bed.aad.set_refresh_token_rotation(false);
    let before = std::fs::read_to_string(bed.cache_file()).unwrap();
    bed.token(ARM_SCOPE).await.unwrap();
    bed.token(ML).await.unwrap();
    assert_eq!(std::fs::read_to_string(bed.cache_file()).unwrap(), before);
    assert_eq!(bed.refreshes().len(), 2);
}

#[tokio::test]
async fn a_new_login_takes_effect_without_a_restart() {
    let _trace = trace_init();
    let bed = Bed::new("dc-relogin").await;
    bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    bed.token(ARM_SCOPE).await.unwrap();
    bed.aad.revoke_refresh_tokens();
    let e = failed(bed.token(ARM_SCOPE).await);
    assert_eq!(e.kind, TokenErrorKind::InteractionRequired);
    // The user runs `login` again (here: a second credential on the same file, as the CLI would be).
    let other = Bed::credential(&bed.aad, &bed.dir, bed.tenant, VirtualClock::new());
    other
        .login(&TokenRequest::new(ARM_SCOPE), |_| {})
        .await
        .unwrap();
    bed.token(ARM_SCOPE).await.unwrap();
}

#[tokio::test]
async fn without_a_cache_file_the_credential_is_unavailable_and_says_to_log_in() {
    let _trace = trace_init();
    let bed = Bed::new("dc-missing").await;
    match bed.token(ARM_SCOPE).await {
        Err(CredentialError::Unavailable(attempts)) => {
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].source, "device_code");
            assert!(
                attempts[0].reason.starts_with("not signed in (")
                    && attempts[0]
                        .reason
                        .ends_with("does not exist): run `aml-auth-proxy login --credential me`"),
                "{}",
                attempts[0].reason
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bed.aad.total_count(), 0);
}

#[tokio::test]
async fn a_cache_file_others_can_read_is_refused() {
    let _trace = trace_init();
    let bed = Bed::new("dc-shared").await;
    bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    std::fs::set_permissions(bed.cache_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = failed(bed.token(ARM_SCOPE).await);
    assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
    let expected = format!(
        "cannot use the refresh-token cache: {} is readable by group or others (mode 0644); chmod 600 it; or sign in again with `aml-auth-proxy login --credential me`",
        bed.cache_file().display()
    );
    assert_eq!(e.message, expected);
    assert!(!e.message.contains(&bed.saved_refresh_token()));
    assert!(bed.refreshes().is_empty());
}

#[tokio::test]
async fn a_sign_in_for_another_tenant_is_not_used() {
    let _trace = trace_init();
    let bed = Bed::new("dc-tenant-a").await;
    bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    let other = Bed::credential(&bed.aad, &bed.dir, "dc-tenant-b", VirtualClock::new());
    match other.get_token(&TokenRequest::new(ARM_SCOPE)).await {
        Err(CredentialError::Unavailable(attempts)) => {
            let reason = &attempts[0].reason;
            assert!(reason.contains("tenant dc-tenant-a"), "{reason}");
            assert!(reason.contains("uses tenant dc-tenant-b"), "{reason}");
            assert!(
                reason.ends_with("run `aml-auth-proxy login --credential me`"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bed.aad.count("dc-tenant-b"), 0);
}

#[tokio::test]
async fn a_revoked_refresh_token_asks_for_aml_auth_proxy_login() {
    let _trace = trace_init();
    let bed = Bed::new("dc-revoked").await;
    bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
    let saved = bed.saved_refresh_token();
    bed.aad.revoke_refresh_tokens();
    let e = failed(bed.token(ARM_SCOPE).await);
    assert_eq!(e.kind, TokenErrorKind::InteractionRequired);
    assert!(
        e.message.starts_with(
            "the device-code sign-in must be renewed: run `aml-auth-proxy login --credential me` (AADSTS50173:"
        ),
        "{}",
        e.message
    );
    assert!(!e.message.contains("--claims-challenge"));
    let aad = e.aad.as_ref().unwrap();
    assert_eq!(aad.error.as_deref(), Some("invalid_grant"));
    assert_eq!(aad.error_codes, vec![50173]);
    assert_eq!(aad.suberror.as_deref(), Some("bad_token"));
    assert!(
        !format!("{e:?}{e}").contains(&saved),
        "the refresh token never appears in errors"
    );
}

#[tokio::test]
async fn claims_are_passed_through_and_claims_entra_requires_are_named() {
    let _trace = trace_init();
    let bed = Bed::new("dc-claims").await;
    bed.login(&TokenRequest::new(ARM_SCOPE)).await.unwrap();

    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1726077595"}}}"#;
    let mut request = TokenRequest::new(ARM_SCOPE);
    request.claims = Some(claims.into());
    let token = bed.cred.get_token(&request).await.unwrap();
    assert_eq!(bed.refreshes().last().unwrap().form["claims"], claims);
    assert_eq!(
        bed.aad
            .registry()
            .claims_of(token.token.expose())
            .as_deref(),
        Some(claims)
    );

    // Entra ID wants MFA and says which claims: the hint carries them, base64.
    bed.aad.script(
        "dc-claims",
        [Behavior::fixture(StatusCode::BAD_REQUEST, MFA_FIXTURE)],
    );
    let e = failed(bed.token(ARM_SCOPE).await);
    assert_eq!(e.kind, TokenErrorKind::InteractionRequired);
    let required = e.aad.as_ref().unwrap().claims.clone().unwrap();
    let expected = format!(
        "run `aml-auth-proxy login --credential me --claims-challenge {}`",
        base64::engine::general_purpose::STANDARD.encode(&required)
    );
    assert!(e.message.contains(&expected), "{}", e.message);
    let b64 = expected.rsplit(' ').next().unwrap().trim_end_matches('`');
    assert_eq!(decode_claims_challenge(b64).unwrap(), required);
    // The refresh token itself still works once the user has done what Entra ID asked.
    bed.token(ARM_SCOPE).await.unwrap();
}

// === the binary's `login` ===

/// A configuration with a device_code credential `me` (tenant `tenant`) and a route using it.
fn login_config(dir: &TempDir, aad: &MockAad, tenant: &str, extra_credentials: &str) -> PathBuf {
    let yaml = format!(
        "authority_host: {base}\ncredentials:\n  me:\n    device_code: {{ tenant_id: {tenant}, cache_file: {cache} }}\n{extra_credentials}routes:\n  - name: ml\n    path_prefix: /\n    upstream: {base}\n    scope: {ML}\n    credential: me\n",
        base = aad.base_url(),
        cache = dir.path().join("tokens.json").display(),
    );
    dir.file("config.yaml", &yaml, 0o600)
}

async fn run_login(dir: &TempDir, args: &[&str]) -> Output {
    let imds = ClosedPort::new();
    let mut cmd = command(dir.path(), &imds);
    cmd.arg("login").args(args);
    run_to_end(cmd).await
}

#[tokio::test(flavor = "multi_thread")]
async fn login_command_prints_the_code_on_stderr_and_writes_a_private_cache_file() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let config = login_config(&dir, &aad, "cli-ok", "");
    aad.script_device_polls([DevicePoll::Pending]);
    let out = run_login(
        &dir,
        &["--config", config.to_str().unwrap(), "--credential", "me"],
    )
    .await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(out.stderr.contains("enter the code ABCD-EFGH"), "{out:#?}");
    let cache = dir.path().join("tokens.json");
    assert!(
        out.stderr.contains(&format!(
            "signed in (credential me, tenant cli-ok); refresh token saved to {}",
            cache.display()
        )),
        "{out:#?}"
    );
    assert_eq!(mode(&cache), 0o600);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    let rt = doc["refresh_token"].as_str().unwrap();
    assert!(aad.refresh_token_is_valid(rt));
    assert!(
        !out.all().contains(rt),
        "the refresh token is never printed"
    );
    // The first token is for the scope of the route using the credential.
    assert_eq!(
        aad.device_code_requests("cli-ok")[0].form["scope"],
        format!("{ML} openid profile offline_access")
    );
    assert_eq!(aad.count("cli-ok"), 2, "one pending poll, then success");

    // The credential serves tokens from what `login` saved.
    let spec = DeviceCodeCredentialOptions {
        tenant_id: Some("cli-ok".into()),
        client_id: None,
        cache_file: cache.clone(),
        config_file: None,
    };
    let cred = DeviceCodeCredential::new(spec, aad.entra_client());
    cred.get_token(&TokenRequest::new(ARM_SCOPE)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn login_command_finds_the_only_device_code_credential_and_sends_the_claims_challenge() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let config = login_config(&dir, &aad, "cli-claims", "");
    let claims =
        r#"{"access_token":{"xms_cc":{"values":["cp1"]},"acrs":{"essential":true,"value":"c25"}}}"#;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
    let out = run_login(
        &dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "--claims-challenge",
            &b64url,
        ],
    )
    .await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    let polls = aad.requests_for("cli-claims");
    assert_eq!(polls.len(), 1);
    // `cae` is on by default: the challenge's claims go with the CP1 capability merged in, in the device-code
    // request and in the poll alike, as MSAL sends them.
    let sent: Value = serde_json::from_str(&polls[0].form["claims"]).unwrap();
    assert_eq!(
        sent["access_token"]["acrs"],
        serde_json::json!({"essential": true, "value": "c25"})
    );
    let capabilities = sent["access_token"]["xms_cc"]["values"].as_array().unwrap();
    assert!(capabilities.iter().any(|v| v == "CP1"), "{sent}");
    let started = aad.device_code_requests("cli-claims");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].form["claims"], polls[0].form["claims"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_command_sends_cp1_when_cae_is_on_and_nothing_when_it_is_off() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    for (tenant, cae, expected) in [
        (
            "cli-cae-on",
            "true",
            Some(r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#),
        ),
        ("cli-cae-off", "false", None),
    ] {
        let dir = TempDir::new();
        let config = login_config(&dir, &aad, tenant, "");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("cae: {cae}\n{text}")).unwrap();
        let out = run_login(&dir, &["--config", config.to_str().unwrap()]).await;
        assert_eq!(out.code(), Some(0), "{out:#?}");
        let started = aad.device_code_requests(tenant);
        let polls = aad.requests_for(tenant);
        assert_eq!((started.len(), polls.len()), (1, 1), "{tenant}");
        for form in [&started[0].form, &polls[0].form] {
            assert_eq!(form.get("claims").map(String::as_str), expected, "{tenant}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_command_usage_and_configuration_problems_exit_64() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let one = login_config(
        &dir,
        &aad,
        "cli-usage",
        "  sp:\n    client_secret: { tenant_id: t, client_id: c, client_secret: not-a-canary }\n",
    );
    let cfg = one.to_str().unwrap().to_owned();
    let two_dir = TempDir::new();
    let two = login_config(
        &two_dir,
        &aad,
        "cli-usage",
        &format!(
            "  you:\n    device_code: {{ cache_file: {} }}\n",
            two_dir.path().join("other.json").display()
        ),
    );
    let none_dir = TempDir::new();
    let none = none_dir.file(
        "none.yaml",
        "credentials:\n  sp:\n    client_secret: { tenant_id: t, client_id: c, client_secret: x }\nroutes:\n  - name: arm\n    path_prefix: /\n    upstream: https://management.azure.com\n    scope: https://management.azure.com/.default\n    credential: sp\n",
        0o600,
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--config", &cfg, "--credential", "nosuch"],
            "no credential named \"nosuch\"",
        ),
        (
            vec!["--config", &cfg, "--credential", "sp"],
            "credential \"sp\" is a client_secret credential",
        ),
        (
            vec!["--config", two.to_str().unwrap()],
            "several credentials that sign in (me, you): choose one with --credential",
        ),
        (
            vec!["--config", none.to_str().unwrap()],
            "no interactive_browser or device_code credential",
        ),
        (
            vec!["--config", &cfg, "--claims-challenge", "%%%"],
            "--claims-challenge: the claims challenge is not valid base64",
        ),
        (
            vec!["--config", "/nonexistent/config.yaml"],
            "/nonexistent/config.yaml",
        ),
    ];
    for (args, reason) in cases {
        let out = run_login(&dir, &args).await;
        assert_eq!(out.code(), Some(64), "{args:?}: {out:#?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:#?}");
        assert!(out.stderr.contains(reason), "{args:?}: {out:#?}");
    }
    assert_eq!(aad.total_count(), 0, "nothing reached Entra ID");
    assert!(!dir.path().join("tokens.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_command_exits_1_when_the_sign_in_fails() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    let dir = TempDir::new();
    let config = login_config(&dir, &aad, "cli-declined", "");
    aad.script_device_polls([DevicePoll::Declined]);
    let out = run_login(&dir, &["--config", config.to_str().unwrap()]).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("ABCD-EFGH"), "{out:#?}");
    assert!(
        out.stderr
            .contains("aml-auth-proxy: login: the sign-in was declined"),
        "{out:#?}"
    );
    assert!(!dir.path().join("tokens.json").exists());

    aad.fail_device_code_start(Behavior::fixture(StatusCode::BAD_REQUEST, MFA_FIXTURE));
    let out = run_login(&dir, &["--config", config.to_str().unwrap()]).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stderr
            .contains("login: sign-in failed: InteractionRequired: AADSTS50079"),
        "{out:#?}"
    );
}
