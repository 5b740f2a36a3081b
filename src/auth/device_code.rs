//! A user signed in with a device code, and the tokens the refresh token left behind serves.
//!
//! `aml-auth-proxy login` runs [`DeviceCodeCredential::login`]: it asks Entra ID for a device code, shows the
//! prompt (visit a page, enter a code), polls the token endpoint every `interval` seconds (`authorization_pending`:
//! keep polling; `slow_down`: wait 5 s longer between polls; anything else, or the code's expiry: stop) and saves
//! the refresh token to the credential's `cache_file` (see `cache`; not an MSAL cache: one written for another
//! authority, tenant or client counts as "not signed in").
//!
//! As a [`TokenCredential`], it redeems that refresh token for an access token to any scope and saves the rotated
//! refresh token Entra ID returns. Refreshes are serialised: a refresh token may be single-use, so two concurrent
//! refreshes with the same one could invalidate each other. The file is read on every refresh, so a `login` run
//! while the proxy is up takes effect at the next refresh. A refresh token that no longer works (`invalid_grant`,
//! interaction required, e.g. AADSTS50173 revoked) is an `InteractionRequired` error naming the `login` command to
//! run, with `--claims-challenge` and `--config FILE` where they apply, so that it works as printed.
//!
//! [`InteractiveBrowserCredential`](crate::auth::InteractiveBrowserCredential) signs in with a browser instead and
//! keeps its refresh token here, in the same file format, under its own kind name.

mod cache;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use tokio::time::Instant;

use self::cache::{CacheError, StoredLogin};
use super::lenient_json::{self, WireError};
use super::token_endpoint::form;
use super::{
    AccessToken, BoxFuture, Credential, CredentialError, EntraClient, Secret, TokenError,
    TokenErrorKind, TokenRequest, words,
};
use crate::file_read::{self, FileError};

/// The public client signed in with unless `client_id` says otherwise: the Azure CLI's first-party app, which
/// Microsoft pre-authorises for Azure Resource Manager and Azure Machine Learning.
pub const DEFAULT_CLIENT_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";

/// The tenant signed in to unless `tenant_id` says otherwise: any work or school account.
pub const DEFAULT_TENANT: &str = "organizations";

const SOURCE: &str = "device_code";

/// The OpenID Connect scopes every user-flow request adds (`offline_access` asks for the refresh token).
const USER_FLOW_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// Poll interval when Entra ID names none (RFC 8628 §3.2, MSAL).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The shortest poll interval honoured, whatever the server says.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// How much longer to wait after `slow_down` (RFC 8628 §3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// The code's lifetime when Entra ID names none (MSAL's default).
const DEFAULT_CODE_LIFETIME_SECS: u64 = 1800;

/// A code lifetime beyond this is treated as this (a day), so deadlines cannot overflow.
const MAX_CODE_LIFETIME_SECS: u64 = 86_400;

/// Consecutive unreachable/5xx polls tolerated before the sign-in is abandoned.
const MAX_TRANSIENT_POLL_FAILURES: u32 = 3;

/// The `device_code` credential: signs a user in (`login`) and serves tokens from the refresh token it saved.
#[derive(Debug)]
pub struct DeviceCodeCredential {
    pub(super) tenant: String,
    pub(super) client_id: String,
    cache_file: PathBuf,
    /// The configured credential name, for the `login --credential NAME` hint.
    name: Option<String>,
    /// The configuration file, for the `login --config FILE` hint.
    config_file: Option<PathBuf>,
    /// The kind errors and tokens name: `device_code`, or `interactive_browser` for a browser sign-in's session.
    source: &'static str,
    pub(super) entra: EntraClient,
    clock: Arc<dyn PollClock>,
    /// Held for the whole of a refresh (refreshes are serialised); holds a rotated refresh token that could not
    /// be saved.
    refresh: tokio::sync::Mutex<Option<Unsaved>>,
}

/// Settings of a [`DeviceCodeCredential`] (`device_code: { tenant_id, client_id, cache_file }` in configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCodeCredentialOptions {
    /// Tenant to sign in to (default [`DEFAULT_TENANT`]).
    pub tenant_id: Option<String>,
    /// Public client id (default [`DEFAULT_CLIENT_ID`], the Azure CLI's first-party app).
    pub client_id: Option<String>,
    /// Where `login` persists the refresh token (0600).
    pub cache_file: PathBuf,
    /// The configuration file the credential was read from, if any: hints name it (`login --config FILE`).
    pub config_file: Option<PathBuf>,
}

/// What the user is asked to do. Every field has had control characters removed (it is shown on a terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCodePrompt {
    /// The code to enter.
    pub user_code: String,
    /// The page to enter it on.
    pub verification_uri: String,
    /// Entra ID's own instructions, if it sent any.
    pub message: Option<String>,
    /// How long the code is valid.
    pub expires_in: Duration,
}

/// A completed sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    /// Where the refresh token was saved.
    pub cache_file: PathBuf,
    /// The tenant signed in to.
    pub tenant: String,
    /// The public client signed in with.
    pub client_id: String,
}

/// Why a sign-in did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The device code expired (Entra ID said `expired_token`, or its lifetime passed) before the user finished.
    #[error(
        "the device code expired before the sign-in was completed; run the login command again"
    )]
    Expired,
    /// The user declined the sign-in (`authorization_declined`).
    #[error("the sign-in was declined")]
    Declined,
    /// Entra ID issued tokens but no refresh token, so there is nothing to keep.
    #[error(
        "Entra ID returned no refresh token (was offline_access refused for this app?); nothing was saved"
    )]
    NoRefreshToken,
    /// Entra ID refused (e.g. `bad_verification_code`, Conditional Access, unknown client) or was unreachable.
    #[error("{0}")]
    Token(TokenError),
    /// The sign-in succeeded but the refresh token could not be saved.
    #[error("signed in, but the refresh token could not be saved: {0}")]
    Cache(String),
    /// No browser could be opened (the caller may fall back to a device code).
    #[error("no browser could be opened: {0}")]
    NoBrowser(String),
    /// Entra ID redirected back with an error (`access_denied`, `interaction_required`, …).
    #[error("Entra ID refused the sign-in: {error}: {description}")]
    Refused {
        /// Entra ID's `error`.
        error: String,
        /// Entra ID's `error_description` (control characters removed), or a placeholder.
        description: String,
    },
    /// The redirect carried another `state` than this sign-in sent (a forged or stale redirect): refused.
    #[error(
        "the redirect to the sign-in listener carried a state that this sign-in did not send; refused (nothing was saved)"
    )]
    StateMismatch,
    /// The browser sign-in was not completed in time.
    #[error("the browser sign-in was not completed within {}; run the login command again (or use --device-code)", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// The loopback listener for the redirect could not be started, or the sign-in could not be prepared.
    #[error("{0}")]
    Setup(String),
}

/// The clock the device flow waits on: real time in production, a virtual one in tests.
pub trait PollClock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;

    /// Completes after `duration` (on this clock).
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// [`PollClock`] on tokio's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

/// A refresh token Entra ID rotated that could not be saved: used instead of the file's token for as long as the
/// file still holds the token it replaced.
#[derive(Debug)]
struct Unsaved {
    replaced: Secret,
    current: Secret,
}

/// The device-code response as sent (RFC 8628 §3.2). No `Debug`: it holds the device code.
#[derive(Deserialize)]
struct DeviceCodeResponse {
    #[serde(default, deserialize_with = "lenient_json::text")]
    device_code: Option<String>,
    #[serde(default, deserialize_with = "lenient_json::text")]
    user_code: Option<String>,
    #[serde(default, deserialize_with = "lenient_json::text")]
    verification_uri: Option<String>,
    /// The v1 endpoint's spelling.
    #[serde(default, deserialize_with = "lenient_json::text")]
    verification_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_json::text")]
    message: Option<String>,
    #[serde(default, deserialize_with = "lenient_json::seconds")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "lenient_json::seconds")]
    interval: Option<u64>,
}

/// How one poll of the token endpoint ended, when it did not produce tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PollError {
    Pending,
    SlowDown,
    Expired,
    Declined,
    Transient,
    Fatal,
}

// === impl DeviceCodeCredential ===

impl DeviceCodeCredential {
    /// A credential for `options` (tenant default [`DEFAULT_TENANT`], client default [`DEFAULT_CLIENT_ID`]).
    pub fn new(options: DeviceCodeCredentialOptions, entra: EntraClient) -> Self {
        Self {
            tenant: options.tenant_id.unwrap_or_else(|| DEFAULT_TENANT.into()),
            client_id: options
                .client_id
                .unwrap_or_else(|| DEFAULT_CLIENT_ID.into()),
            cache_file: options.cache_file,
            name: None,
            config_file: options.config_file,
            source: SOURCE,
            entra,
            clock: Arc::new(TokioClock),
            refresh: tokio::sync::Mutex::new(None),
        }
    }

    /// The configured credential name, so that messages can say `aml-auth-proxy login --credential NAME`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Reports under `source` (the kind of the credential this session serves, e.g. `interactive_browser`).
    pub(crate) fn with_source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }

    /// Waits between device-code polls on `clock` instead of tokio's (tests).
    pub fn with_clock(mut self, clock: Arc<dyn PollClock>) -> Self {
        self.clock = clock;
        self
    }

    /// The command that signs this credential in again, e.g.
    /// `aml-auth-proxy login --config /etc/proxy.yaml --credential me --claims-challenge eyJ…` (claims: a JSON
    /// document, shown base64; `--config` when the credential came from a file).
    pub fn login_command(&self, claims: Option<&str>) -> String {
        let config = self
            .config_file
            .as_ref()
            .map(|f| shell_word(&f.to_string_lossy()));
        let claims = claims.map(|c| base64::engine::general_purpose::STANDARD.encode(c));
        let flags = [
            ("--config", config.as_deref()),
            ("--credential", self.name.as_deref()),
            ("--claims-challenge", claims.as_deref()),
        ];
        words(&["aml-auth-proxy", "login"], &flags).join(" ")
    }

    /// Signs a user in with a device code: shows `prompt` the instructions, polls until the user has finished,
    /// and saves the refresh token to the cache file. Nothing is saved unless the sign-in succeeds. `options` is the
    /// request for the first access token (its claims, if any, are satisfied); the refresh token then serves any
    /// scope the user may access.
    pub async fn login(
        &self,
        options: &TokenRequest,
        prompt: impl FnOnce(&DeviceCodePrompt),
    ) -> Result<LoginOutcome, LoginError> {
        let started = self.clock.now();
        let claims = options.claims_parameter();
        // `POST /{tenant}/oauth2/v2.0/devicecode`: the device code, the poll interval and the prompt.
        let start = device_code_form(&self.client_id, &options.scope, claims.as_deref());
        let (device_code, mut interval, shown) = self
            .entra
            .post(
                self.source,
                &self.tenant,
                "devicecode",
                &start,
                parse_device_code,
            )
            .await
            .map_err(LoginError::Token)?;
        prompt(&shown);
        let deadline = started.checked_add(shown.expires_in).unwrap_or(started);
        let form = device_poll_form(&self.client_id, &device_code, claims.as_deref());
        let mut transient_failures = 0;
        loop {
            match self.clock.now().checked_add(interval) {
                Some(next) if next <= deadline => {}
                _ => return Err(LoginError::Expired),
            }
            self.clock.sleep(interval).await;
            let error = match self
                .entra
                .post_token(self.source, &self.tenant, &form)
                .await
            {
                Ok((_token, refresh_token)) => return self.save_sign_in(refresh_token).await,
                Err(e) => e,
            };
            match PollError::of(&error) {
                PollError::Pending => transient_failures = 0,
                PollError::SlowDown => {
                    transient_failures = 0;
                    interval = interval.saturating_add(SLOW_DOWN_STEP);
                    tracing::debug!(
                        interval_secs = interval.as_secs(),
                        "Entra ID asked to poll more slowly"
                    );
                }
                PollError::Expired => return Err(LoginError::Expired),
                PollError::Declined => return Err(LoginError::Declined),
                PollError::Transient if transient_failures + 1 < MAX_TRANSIENT_POLL_FAILURES => {
                    transient_failures += 1;
                    tracing::warn!(error = %error, "device-code poll failed; polling again");
                }
                PollError::Transient | PollError::Fatal => return Err(LoginError::Token(error)),
            }
        }
    }

    /// Saves the refresh token of a successful sign-in (device code or browser).
    pub(crate) async fn save_sign_in(
        &self,
        refresh_token: Option<Secret>,
    ) -> Result<LoginOutcome, LoginError> {
        let refresh_token = refresh_token.ok_or(LoginError::NoRefreshToken)?;
        // Taken before saving, so that no refresh can run with the previous token while the file changes.
        let mut unsaved = self.refresh.lock().await;
        self.save(refresh_token)
            .await
            .map_err(|e| LoginError::Cache(e.to_string()))?;
        // The new sign-in supersedes any rotated token kept in memory.
        *unsaved = None;
        tracing::info!(file = %self.cache_file.display(), tenant = %self.tenant, "signed in; refresh token saved");
        Ok(LoginOutcome {
            cache_file: self.cache_file.clone(),
            tenant: self.tenant.clone(),
            client_id: self.client_id.clone(),
        })
    }

    /// Runs `job` on the cache file off the async workers, waiting at most [`file_read::READ_TIMEOUT`].
    async fn on_file<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Path) -> Result<T, CacheError> + Send + 'static,
    ) -> Result<T, CacheError> {
        let path = self.cache_file.clone();
        file_read::off_thread_async(&self.cache_file, file_read::READ_TIMEOUT, move || {
            job(&path)
        })
        .await
        .map_err(CacheError::File)?
    }

    /// Saves `refresh_token`, obtained now, for this authority, tenant and client.
    async fn save(&self, refresh_token: Secret) -> Result<(), CacheError> {
        let stored = StoredLogin {
            authority: self.entra.authority().to_string(),
            tenant: self.tenant.clone(),
            client_id: self.client_id.clone(),
            refresh_token,
            obtained_at: super::expiry::now_unix(),
        };
        match self.on_file(move |path| cache::store(path, &stored)).await {
            // Not from `store` itself: the file system did not answer in time.
            Err(CacheError::File(e)) => Err(CacheError::Io {
                what: "cannot write",
                path: self.cache_file.clone(),
                error: std::io::Error::other(match e {
                    FileError::TimedOut { after, .. } => format!(
                        "did not finish within {}s (a hung network mount?)",
                        after.as_secs()
                    ),
                    other => other.to_string(),
                }),
            }),
            other => other,
        }
    }

    /// Turns a refusal of the refresh token into `InteractionRequired` naming the `login` command to run.
    fn sign_in_again(&self, mut e: TokenError, request: &TokenRequest) -> TokenError {
        let claims = e
            .aad
            .as_ref()
            .and_then(|a| a.claims.clone())
            .filter(|c| !c.trim().is_empty())
            .or_else(|| request.claims.as_deref().map(str::to_owned));
        e.kind = TokenErrorKind::InteractionRequired;
        let flow = if self.source == SOURCE {
            "device-code"
        } else {
            "browser"
        };
        e.message = format!(
            "the {flow} sign-in must be renewed: run `{}` ({})",
            self.login_command(claims.as_deref()),
            e.message
        );
        e
    }
}

impl Credential for DeviceCodeCredential {
    const KIND: &'static str = SOURCE;

    async fn token(&self, request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        let mut unsaved = self.refresh.lock().await;
        let login = self.login_command(None);
        let stored = match self.on_file(cache::load).await {
            Ok(stored) => stored,
            Err(CacheError::Missing(path)) => {
                let path = path.display();
                let why = format!("not signed in ({path} does not exist): run `{login}`");
                return Err(CredentialError::unavailable(self.source, why));
            }
            Err(e) => {
                let why = format!(
                    "cannot use the refresh-token cache: {e}; or sign in again with `{login}`"
                );
                return Err(CredentialError::rejected(self.source, why));
            }
        };
        // The cache file must hold a sign-in for this authority, tenant and client.
        let authority = self.entra.authority().to_string();
        if !(stored.authority.eq_ignore_ascii_case(&authority)
            && stored.tenant.eq_ignore_ascii_case(&self.tenant)
            && stored.client_id.eq_ignore_ascii_case(&self.client_id))
        {
            let why = format!(
                "not signed in here: {} holds a sign-in to tenant {} with client {} at {}, but this credential uses tenant {} with client {} at {authority}; run `{login}`",
                self.cache_file.display(),
                stored.tenant,
                stored.client_id,
                stored.authority,
                self.tenant,
                self.client_id,
            );
            return Err(CredentialError::unavailable(self.source, why));
        }
        // A rotated token that could not be saved stays valid only while the file still holds its predecessor.
        if unsaved
            .as_ref()
            .is_some_and(|u| u.replaced != stored.refresh_token)
        {
            *unsaved = None;
        }
        let in_use = unsaved
            .as_ref()
            .map_or(&stored.refresh_token, |u| &u.current);
        let claims = request.claims_parameter();
        let form = refresh_form(&self.client_id, in_use, &request.scope, claims.as_deref());
        let (token, rotated) = match self
            .entra
            .post_token(self.source, &self.tenant, &form)
            .await
        {
            Ok(tokens) => tokens,
            Err(e) if needs_sign_in(&e) => {
                *unsaved = None;
                return Err(CredentialError::Failed(self.sign_in_again(e, request)));
            }
            Err(e) => return Err(CredentialError::Failed(e)),
        };
        if let Some(rotated) = rotated.filter(|t| t != in_use) {
            let keep = Secret::new(rotated.expose());
            match self.save(rotated).await {
                Ok(()) => {
                    *unsaved = None;
                    tracing::debug!(file = %self.cache_file.display(), "saved the rotated refresh token");
                }
                Err(e) => {
                    tracing::warn!(
                        credential = self.name.as_deref().unwrap_or(self.source),
                        error = %e,
                        "cannot save the rotated refresh token; keeping it in memory"
                    );
                    *unsaved = Some(Unsaved {
                        replaced: stored.refresh_token,
                        current: keep,
                    });
                }
            }
        }
        Ok(token)
    }
}

// === impl DeviceCodePrompt ===

impl DeviceCodePrompt {
    /// The text to show: Entra ID's `message`, else one built from the page and the code.
    pub fn text(&self) -> String {
        self.message.clone().unwrap_or_else(|| {
            format!(
                "To sign in, use a web browser to open the page {} and enter the code {} to authenticate.",
                self.verification_uri, self.user_code
            )
        })
    }
}

// === impl TokioClock ===

impl PollClock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

// === impl PollError ===

impl PollError {
    /// Classifies a failed poll by Entra ID's `error` (RFC 8628 §3.5 names) and AADSTS codes.
    fn of(e: &TokenError) -> Self {
        let aad = e.aad.as_deref();
        let error = aad.and_then(|a| a.error.as_deref()).unwrap_or_default();
        let code = |c: i64| aad.is_some_and(|a| a.error_codes.contains(&c));
        match error {
            "authorization_pending" => PollError::Pending,
            "slow_down" => PollError::SlowDown,
            "expired_token" | "code_expired" => PollError::Expired,
            "authorization_declined" | "access_denied" => PollError::Declined,
            _ if code(70016) => PollError::Pending,
            _ if code(70019) => PollError::Expired,
            _ if e.is_transient() => PollError::Transient,
            _ => PollError::Fatal,
        }
    }
}

/// True when the refresh token itself is no longer good: Entra ID wants the user (`invalid_grant`, or a code that
/// means interaction). Conditional Access blocks and client problems are not cured by signing in again.
fn needs_sign_in(e: &TokenError) -> bool {
    e.kind == TokenErrorKind::InteractionRequired
        || (e.kind == TokenErrorKind::CredentialRejected
            && e.aad
                .as_ref()
                .is_some_and(|a| a.error.as_deref() == Some("invalid_grant")))
}

/// `scope` plus `openid profile offline_access` (reserved scopes already present are not repeated).
pub(crate) fn decorate_scope(scope: &str) -> String {
    let mut scopes: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !USER_FLOW_SCOPES.contains(s))
        .collect();
    scopes.extend(USER_FLOW_SCOPES);
    scopes.join(" ")
}

/// The device-code request: `client_id`, `scope` (decorated) and `claims` if any (as MSAL sends them).
fn device_code_form(client_id: &str, scope: &str, claims: Option<&str>) -> Secret {
    form(
        &[("client_id", client_id), ("scope", &decorate_scope(scope))],
        claims,
    )
}

/// A device-code poll: `grant_type`, `client_id`, `device_code`, `client_info=1` and `claims` if any.
fn device_poll_form(client_id: &str, device_code: &Secret, claims: Option<&str>) -> Secret {
    let pairs = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", client_id),
        ("device_code", device_code.expose()),
        ("client_info", "1"),
    ];
    form(&pairs, claims)
}

/// The refresh-token grant: `client_id`, `grant_type`, `refresh_token`, `scope` (decorated), `client_info=1` and
/// `claims` if any.
fn refresh_form(
    client_id: &str,
    refresh_token: &Secret,
    scope: &str,
    claims: Option<&str>,
) -> Secret {
    let pairs = [
        ("client_id", client_id),
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose()),
        ("scope", &decorate_scope(scope)),
        ("client_info", "1"),
    ];
    form(&pairs, claims)
}

/// Parses the device-code response into the device code, the poll interval and the prompt. Numbers may be
/// strings; `interval` defaults to 5 s (at least 1 s), `expires_in` to 1800 s (at most a day); `verification_url`
/// (v1 spelling) is accepted.
fn parse_device_code(body: &[u8]) -> Result<(Secret, Duration, DeviceCodePrompt), String> {
    let wire: DeviceCodeResponse = lenient_json::from_object(body).map_err(WireError::reason)?;
    let text = |field: Option<String>| field.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let device_code = text(wire.device_code).ok_or("no device_code")?;
    let user_code = text(wire.user_code).ok_or("no user_code")?;
    let verification_uri = text(wire.verification_uri)
        .or_else(|| text(wire.verification_url))
        .ok_or("no verification_uri")?;
    let expires_in = wire
        .expires_in
        .unwrap_or(DEFAULT_CODE_LIFETIME_SECS)
        .min(MAX_CODE_LIFETIME_SECS);
    let interval = wire
        .interval
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_INTERVAL)
        .max(MIN_INTERVAL);
    let prompt = DeviceCodePrompt {
        user_code: printable(&user_code),
        verification_uri: printable(&verification_uri),
        message: text(wire.message).as_deref().map(printable),
        expires_in: Duration::from_secs(expires_in),
    };
    Ok((Secret::new(device_code), interval, prompt))
}

/// `word` as one shell word: as is when it holds only characters no shell treats specially, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:@%+=,-".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `text` with control characters (terminal escapes, line breaks) replaced by spaces.
pub(crate) fn printable(text: &str) -> String {
    text.replace(char::is_control, " ").trim().to_owned()
}

#[cfg(test)]
mod tests;
