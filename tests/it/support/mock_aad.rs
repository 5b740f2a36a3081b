//! A mock Entra ID (Azure AD) token endpoint.
//!
//! [`MockAad`] serves `POST /{tenant}/oauth2/v2.0/token` (form-urlencoded) over plain HTTP (the proxy accepts
//! `http://` authority hosts on loopback). Point the proxy's `authority_host` at [`MockAad::base_url`].
//!
//! What a request gets is decided per tenant, in this order:
//! 1. one-shot behaviours queued with [`MockAad::script`] (each used once, in order);
//! 2. a behaviour set with [`MockAad::set_behavior`];
//! 3. the tenant's name ([`Behavior::from_tenant`]):
//!
//! | tenant          | answer                                                                   |
//! |-----------------|--------------------------------------------------------------------------|
//! | anything else   | 200 with a fresh token, `expires_in` = [`DEFAULT_TTL_SECS`] (3600)         |
//! | `ttl<N>`        | 200 with a fresh token valid for N seconds                               |
//! | `slow<MS>`      | 200 with a fresh token, after MS milliseconds                            |
//! | `strings`       | 200, numbers as JSON strings, plus `"refresh_in"` (TTL / 2) as a string  |
//! | `throttle<N>`   | 429 with `Retry-After: N` (`throttle` alone: N = 1)                      |
//! | `status<CODE>`  | CODE with `{"error":"temporarily_unavailable"}` (`unavailable`: 503)     |
//! | `hang`          | never answers (until the mock is dropped)                                |
//! | `close`         | drops the connection without a response                                  |
//! | `garbage`       | 200 with a body that is not JSON                                         |
//! | `huge`          | 200 streaming a 50 MiB JSON body                                         |
//!
//! Every issued token is an opaque, unique `at.<tenant>.<n>` string, recorded in a [`TokenRegistry`]
//! (shareable with an [`Upstream`](super::Upstream), which can then reject unknown or expired tokens).
//! Every request, matching or not, is recorded as a [`TokenRequestRecord`].
//!
//! **User flows** (the device-code grant and the refresh-token grant):
//! - `POST /{tenant}/oauth2/v2.0/devicecode` answers a [`DeviceCodeAnswer`] (default: user code `ABCD-EFGH`,
//!   `interval` 1, `expires_in` 900, Entra ID's message) with a fresh device code `dc.<n>`; see
//!   [`MockAad::set_device_code`], or [`MockAad::fail_device_code_start`] to answer with a [`Behavior`] instead.
//!   These requests are recorded with `is_token_path: false` (see [`MockAad::device_code_requests`]).
//! - Token requests with `grant_type=urn:ietf:params:oauth:grant-type:device_code` answer the next
//!   [`DevicePoll`] queued with [`MockAad::script_device_polls`] (pending, slow_down, expired, declined, bad
//!   code), and approve once the queue is empty: a token plus a new refresh token `rt.<n>`. An unknown device
//!   code gets `invalid_grant` (AADSTS70000).
//! - Token requests with `grant_type=refresh_token` succeed for a refresh token the mock issued and has not
//!   revoked; by default the refresh token **rotates** (the answer carries a new one and the old one stops working,
//!   as Entra ID does; [`MockAad::set_refresh_token_rotation`]`(false)` keeps it and sends none). Any other
//!   refresh token gets the recorded AADSTS50173 revocation (`fixtures/aad_error_invalid_grant_50173_…`). See also
//!   [`MockAad::issue_refresh_token`], [`MockAad::revoke_refresh_tokens`] and [`MockAad::refresh_token_is_valid`].
//! - A behaviour scripted for the tenant ([`MockAad::script`] / [`MockAad::set_behavior`]) takes precedence over
//!   both grants (e.g. to answer a refresh with the 50079 claims fixture or a 503); the tenant's *name* does not.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::{
    BoxBody, BoxError, ChannelBody, RepeatBody, ServeOptions, Server, ServerHandle, Shutdown,
};

/// Size of the body [`Behavior::Huge`] streams.
pub(crate) const HUGE_BODY_LEN: usize = 50 * 1024 * 1024;

/// The TTL of issued tokens unless the tenant's name or script says otherwise.
pub(crate) const DEFAULT_TTL_SECS: u64 = 3600;

/// Where [`MockAad::fixture`] reads from: `tests/fixtures`, copies of the shared recorded payloads.
pub(crate) const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// What the mock answers to one token request.
#[derive(Clone, Debug)]
pub(crate) enum Behavior {
    /// 200 `{"token_type":"Bearer","expires_in":ttl,"ext_expires_in":ttl,"access_token":"at.<tenant>.<n>"}`
    /// with a fresh token valid for `ttl` seconds, sent after `latency`.
    Ok { ttl: u64, latency: Duration },
    /// Like `Ok`, but `expires_in`/`ext_expires_in` are JSON strings and `"refresh_in"` (ttl / 2, also a
    /// string) is added, as some token services send.
    Strings { ttl: u64 },
    /// An arbitrary answer: `status`, `body` (sent verbatim with `Content-Type: application/json`) and
    /// extra `headers`. See [`Behavior::fixture`] for Entra's recorded error bodies.
    Json {
        status: StatusCode,
        body: String,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// `status` (typically 500 or 503) with `{"error":"temporarily_unavailable"}`.
    Status(StatusCode),
    /// 429 with `Retry-After: retry_after_secs` and a `temporarily_unavailable` JSON body.
    Throttle { retry_after_secs: u64 },
    /// Never answers; the request is released only when the mock is dropped.
    Hang,
    /// Reads the request, then drops the connection without writing a response.
    CloseConnection,
    /// 200 `application/json` whose body is not valid JSON (truncated mid-string).
    Garbage,
    /// 200 streaming a [`HUGE_BODY_LEN`]-byte body (valid JSON: a token response with an enormous
    /// `access_token`), chunked, without a Content-Length.
    Huge,
}

/// One request the mock received.
#[derive(Clone, Debug)]
pub(crate) struct TokenRequestRecord {
    /// The first path segment (`""` if the path has none). Only meaningful for token requests.
    pub(crate) tenant: String,
    /// Whether the path was `/{tenant}/oauth2/v2.0/token` (otherwise the mock answered 404).
    pub(crate) is_token_path: bool,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    /// The form fields of the body (last value wins if a name repeats), secrets included.
    pub(crate) form: BTreeMap<String, String>,
    /// The body exactly as received (secrets included): for checks of field order and encoding, which
    /// `form` loses.
    pub(crate) raw_body: Bytes,
    pub(crate) headers: HeaderMap,
    /// When the request (head and body) had been read, on tokio's clock.
    pub(crate) arrived_at: Instant,
}

/// Everything known about one issued token.
#[derive(Clone, Debug)]
pub(crate) struct IssuedToken {
    pub(crate) token: String,
    pub(crate) tenant: String,
    /// Wall-clock issue time: validity is judged by real time, as a real resource server would.
    pub(crate) issued_at: SystemTime,
    /// Issue time on tokio's clock (for tests that pause time and measure refresh scheduling).
    pub(crate) issued_instant: Instant,
    pub(crate) ttl: Duration,
    /// The request's `claims` form field, if any.
    pub(crate) claims: Option<String>,
    /// The request's `scope` form field, if any.
    pub(crate) scope: Option<String>,
    /// Set by [`TokenRegistry::expire`]: the token counts as expired whatever its TTL.
    pub(crate) forced_expired: bool,
}

/// What a [`TokenRegistry`] knows about a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenStatus {
    /// Issued and not yet expired.
    Valid,
    /// Issued, but its TTL has passed (by the wall clock) or it was expired by hand.
    Expired,
    /// Never issued by this registry.
    Unknown,
}

/// The shared record of issued tokens: a cheap, cloneable handle.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenRegistry {
    tokens: Arc<Mutex<Vec<IssuedToken>>>,
}

/// Makes every token string unique within the test binary, across mocks and registries.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// The mock token endpoint. Dropping it stops the server.
#[derive(Debug)]
pub(crate) struct MockAad {
    state: Arc<AadState>,
    base_url: String,
    _server: ServerHandle,
}

#[derive(Debug)]
struct AadState {
    default_ttl: u64,
    registry: TokenRegistry,
    requests: Mutex<Vec<TokenRequestRecord>>,
    scripts: Mutex<HashMap<String, TenantScript>>,
    user_flows: Mutex<UserFlows>,
    shutdown: Shutdown,
}

/// Scripted behaviour of one tenant.
#[derive(Debug, Default)]
struct TenantScript {
    once: VecDeque<Behavior>,
    always: Option<Behavior>,
}

/// The `grant_type` of device-code polls.
pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The user code the default [`DeviceCodeAnswer`] hands out.
pub(crate) const USER_CODE: &str = "ABCD-EFGH";

/// How the mock answers one device-code poll (queued with [`MockAad::script_device_polls`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DevicePoll {
    /// 400 `authorization_pending` (AADSTS70016), as recorded.
    Pending,
    /// 400 `slow_down`.
    SlowDown,
    /// 400 `expired_token` (AADSTS70019).
    Expired,
    /// 400 `authorization_declined`.
    Declined,
    /// 400 `bad_verification_code` (AADSTS70018).
    BadCode,
    /// 200: a token and a new refresh token (what an empty queue answers too).
    Approve,
}

/// The answer to `POST /{tenant}/oauth2/v2.0/devicecode` (the device code itself is generated).
#[derive(Clone, Debug)]
pub(crate) struct DeviceCodeAnswer {
    pub(crate) user_code: String,
    pub(crate) verification_uri: String,
    /// Sent as is: a JSON number, or a string as some identity providers send.
    pub(crate) interval: serde_json::Value,
    /// Sent as is, like `interval`.
    pub(crate) expires_in: serde_json::Value,
    /// Entra ID's instructions; `None` leaves `message` out.
    pub(crate) message: Option<String>,
}

/// Device-code and refresh-token state.
#[derive(Debug)]
struct UserFlows {
    answer: DeviceCodeAnswer,
    start_behavior: Option<Behavior>,
    polls: VecDeque<DevicePoll>,
    /// Device codes handed out.
    device_codes: Vec<String>,
    /// Refresh tokens that currently work.
    refresh_tokens: Vec<String>,
    rotate: bool,
}

// === impl Behavior ===

impl Behavior {
    /// 200 with a token valid for `ttl` seconds, at once.
    pub(crate) fn ttl(ttl: u64) -> Self {
        Self::Ok {
            ttl,
            latency: Duration::ZERO,
        }
    }

    /// `status` with the JSON object of the fixture file `name` (see [`MockAad::fixture`]) as body,
    /// e.g. `Behavior::fixture(StatusCode::BAD_REQUEST, "aad_error_53003_blocked_by_conditional_access.json")`.
    pub(crate) fn fixture(status: StatusCode, name: &str) -> Self {
        Self::json(status, MockAad::fixture(name))
    }

    /// `status` with `body` as a JSON body and no extra headers.
    pub(crate) fn json(status: StatusCode, body: impl Into<String>) -> Self {
        Self::Json {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// The behaviour a tenant's name selects (see the module docs); `default_ttl` applies where the name
    /// gives none.
    pub(crate) fn from_tenant(tenant: &str, default_ttl: u64) -> Self {
        let number = |prefix: &str| {
            tenant
                .strip_prefix(prefix)
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(ttl) = number("ttl") {
            return Self::ttl(ttl);
        }
        if let Some(ms) = number("slow") {
            return Self::Ok {
                ttl: default_ttl,
                latency: Duration::from_millis(ms),
            };
        }
        if let Some(secs) = number("throttle") {
            return Self::Throttle {
                retry_after_secs: secs,
            };
        }
        if let Some(status) = number("status")
            .and_then(|code| u16::try_from(code).ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
        {
            return Self::Status(status);
        }
        match tenant {
            "strings" => Self::Strings { ttl: default_ttl },
            "throttle" => Self::Throttle {
                retry_after_secs: 1,
            },
            "unavailable" => Self::Status(StatusCode::SERVICE_UNAVAILABLE),
            "hang" => Self::Hang,
            "close" => Self::CloseConnection,
            "garbage" => Self::Garbage,
            "huge" => Self::Huge,
            _ => Self::ttl(default_ttl),
        }
    }
}

// === impl DeviceCodeAnswer ===

impl Default for DeviceCodeAnswer {
    fn default() -> Self {
        Self {
            user_code: USER_CODE.to_owned(),
            verification_uri: "https://microsoft.com/devicelogin".to_owned(),
            interval: 1.into(),
            expires_in: 900.into(),
            message: Some(format!(
                "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code {USER_CODE} to authenticate."
            )),
        }
    }
}

// === impl DevicePoll ===

impl DevicePoll {
    /// The 400 body of a poll that does not approve (`None` for [`DevicePoll::Approve`]).
    fn error_body(self) -> Option<serde_json::Value> {
        let (error, code, text) = match self {
            DevicePoll::Approve => return None,
            DevicePoll::Pending => (
                "authorization_pending",
                Some(70016),
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            ),
            DevicePoll::SlowDown => ("slow_down", None, "Polling too fast: slow down."),
            DevicePoll::Expired => ("expired_token", Some(70019), "Verification code expired."),
            DevicePoll::Declined => (
                "authorization_declined",
                None,
                "The user declined the sign-in.",
            ),
            DevicePoll::BadCode => (
                "bad_verification_code",
                Some(70018),
                "Invalid verification code.",
            ),
        };
        Some(aad_error_body(error, code, text))
    }
}

/// An Entra ID error body in the recorded shape (`AADSTS<code>: text` plus trace lines).
fn aad_error_body(error: &str, code: Option<i64>, text: &str) -> serde_json::Value {
    let description = match code {
        Some(c) => format!("AADSTS{c}: {text}"),
        None => text.to_owned(),
    };
    serde_json::json!({
        "error": error,
        "error_description": format!("{description}\r\nTrace ID: 00000000-0000-0000-0000-000000000001\r\nCorrelation ID: 00000000-0000-0000-0000-000000000002\r\nTimestamp: 2021-01-20 17:49:04Z"),
        "error_codes": code.into_iter().collect::<Vec<_>>(),
        "timestamp": "2021-01-20 17:49:04Z",
        "trace_id": "00000000-0000-0000-0000-000000000001",
        "correlation_id": "00000000-0000-0000-0000-000000000002",
    })
}

// === impl TokenRegistry ===

impl TokenRegistry {
    /// Issues and records a token for `tenant` valid for `ttl`, without any HTTP: for tests that talk to
    /// an [`Upstream`](super::Upstream) directly.
    pub(crate) fn mint(&self, tenant: &str, ttl: Duration) -> String {
        self.issue(tenant, ttl, &BTreeMap::new())
    }

    /// Issues a token for a token request's form fields.
    fn issue(&self, tenant: &str, ttl: Duration, form: &BTreeMap<String, String>) -> String {
        let n = NEXT_TOKEN.fetch_add(1, Ordering::SeqCst);
        let token = format!("at.{tenant}.{n}");
        self.lock().push(IssuedToken {
            token: token.clone(),
            tenant: tenant.to_owned(),
            issued_at: SystemTime::now(),
            issued_instant: Instant::now(),
            ttl,
            claims: form.get("claims").cloned(),
            scope: form.get("scope").cloned(),
            forced_expired: false,
        });
        token
    }

    /// Whether `token` was issued here, has not expired by the wall clock, and was not expired by hand.
    pub(crate) fn is_valid(&self, token: &str) -> bool {
        self.status(token) == TokenStatus::Valid
    }

    /// Valid, expired or unknown (see [`TokenStatus`]).
    pub(crate) fn status(&self, token: &str) -> TokenStatus {
        match self.get(token) {
            None => TokenStatus::Unknown,
            Some(t) if t.forced_expired => TokenStatus::Expired,
            Some(t) if SystemTime::now() >= t.issued_at + t.ttl => TokenStatus::Expired,
            Some(_) => TokenStatus::Valid,
        }
    }

    /// The `claims` form field of the request that obtained `token` (`None` if there was none, or the
    /// token is unknown).
    pub(crate) fn claims_of(&self, token: &str) -> Option<String> {
        self.get(token).and_then(|t| t.claims)
    }

    /// Everything recorded about `token`.
    pub(crate) fn get(&self, token: &str) -> Option<IssuedToken> {
        self.lock().iter().find(|t| t.token == token).cloned()
    }

    /// Every issued token, oldest first.
    pub(crate) fn all(&self) -> Vec<IssuedToken> {
        self.lock().clone()
    }

    /// How many tokens were issued.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Makes `token` count as expired from now on (no sleeping needed to test expiry handling).
    pub(crate) fn expire(&self, token: &str) {
        for t in self.lock().iter_mut().filter(|t| t.token == token) {
            t.forced_expired = true;
        }
    }

    /// Makes every token issued so far count as expired.
    pub(crate) fn expire_all(&self) {
        for t in self.lock().iter_mut() {
            t.forced_expired = true;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IssuedToken>> {
        self.tokens.lock().expect("token registry lock poisoned")
    }
}

// === impl MockAad ===

impl MockAad {
    /// Binds `127.0.0.1:0` and starts serving: tenants answer by name (see the module docs).
    pub(crate) async fn start() -> Self {
        let server = Server::bind().await;
        let base_url = format!("http://{}", server.addr());
        let state = Arc::new(AadState {
            default_ttl: DEFAULT_TTL_SECS,
            registry: TokenRegistry::default(),
            requests: Mutex::new(Vec::new()),
            scripts: Mutex::new(HashMap::new()),
            user_flows: Mutex::new(UserFlows {
                answer: DeviceCodeAnswer::default(),
                start_behavior: None,
                polls: VecDeque::new(),
                device_codes: Vec::new(),
                refresh_tokens: Vec::new(),
                rotate: true,
            }),
            shutdown: server.shutdown(),
        });
        let handler_state = state.clone();
        let server = server.spawn(ServeOptions::default(), move |req| {
            handle(handler_state.clone(), req)
        });
        Self {
            state,
            base_url,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`: the authority host to configure.
    pub(crate) fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// An Entra ID client of this mock, with the default HTTP options.
    pub(crate) fn entra_client(&self) -> aml_auth_proxy::auth::EntraClient {
        super::entra_client(&self.base_url())
    }

    /// The full token URL for `tenant`: `{base_url}/{tenant}/oauth2/v2.0/token`.
    pub(crate) fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url)
    }

    /// The registry that records every token this mock issues.
    pub(crate) fn registry(&self) -> TokenRegistry {
        self.state.registry.clone()
    }

    /// From now on, answer `tenant` with `behavior` (after any one-shot behaviours still queued).
    pub(crate) fn set_behavior(&self, tenant: &str, behavior: Behavior) {
        self.scripts().entry(tenant.to_owned()).or_default().always = Some(behavior);
    }

    /// Queue one-shot behaviours for `tenant`: the next requests get them in order, then the tenant falls
    /// back to its [`set_behavior`](Self::set_behavior) or name-derived behaviour. E.g.
    /// `script("t", [Behavior::Status(StatusCode::SERVICE_UNAVAILABLE)])` fails exactly one request.
    pub(crate) fn script(&self, tenant: &str, behaviors: impl IntoIterator<Item = Behavior>) {
        self.scripts()
            .entry(tenant.to_owned())
            .or_default()
            .once
            .extend(behaviors);
    }

    /// From now on, answer device-code requests with `answer` (and a fresh device code).
    pub(crate) fn set_device_code(&self, answer: DeviceCodeAnswer) {
        self.user_flows().answer = answer;
    }

    /// From now on, answer device-code requests with `behavior` instead (e.g. an Entra ID error fixture).
    pub(crate) fn fail_device_code_start(&self, behavior: Behavior) {
        self.user_flows().start_behavior = Some(behavior);
    }

    /// Queue answers for the next device-code polls (of any device code), in order; once the queue is empty,
    /// polls are approved.
    pub(crate) fn script_device_polls(&self, polls: impl IntoIterator<Item = DevicePoll>) {
        self.user_flows().polls.extend(polls);
    }

    /// Whether `token` is a refresh token the mock issued that still works.
    pub(crate) fn refresh_token_is_valid(&self, token: &str) -> bool {
        self.user_flows().refresh_tokens.iter().any(|t| t == token)
    }

    /// Revokes every refresh token: refreshing with one gets the recorded AADSTS50173 answer.
    pub(crate) fn revoke_refresh_tokens(&self) {
        self.user_flows().refresh_tokens.clear();
    }

    /// Whether a refresh answers with a new refresh token and revokes the old one (the default), or keeps the old
    /// one working and sends none.
    pub(crate) fn set_refresh_token_rotation(&self, rotate: bool) {
        self.user_flows().rotate = rotate;
    }

    /// The device-code requests (`/{tenant}/oauth2/v2.0/devicecode`) for `tenant`, oldest first.
    pub(crate) fn device_code_requests(&self, tenant: &str) -> Vec<TokenRequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| r.tenant == tenant && device_code_path_tenant(&r.path).is_some())
            .collect()
    }

    fn user_flows(&self) -> std::sync::MutexGuard<'_, UserFlows> {
        self.state.user_flows.lock().expect("user flows lock")
    }

    /// Every request received so far, oldest first.
    pub(crate) fn requests(&self) -> Vec<TokenRequestRecord> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// The token requests (`/{tenant}/oauth2/v2.0/token`) for `tenant`, oldest first.
    pub(crate) fn requests_for(&self, tenant: &str) -> Vec<TokenRequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_token_path && r.tenant == tenant)
            .collect()
    }

    /// The most recent request, if any.
    pub(crate) fn last_request(&self) -> Option<TokenRequestRecord> {
        self.state
            .requests
            .lock()
            .expect("requests lock")
            .last()
            .cloned()
    }

    /// How many token requests `tenant` received.
    pub(crate) fn count(&self, tenant: &str) -> usize {
        self.requests_for(tenant).len()
    }

    /// How many requests were received in all (any path).
    pub(crate) fn total_count(&self) -> usize {
        self.state.requests.lock().expect("requests lock").len()
    }

    /// The JSON object in the fixture file `name` under [`FIXTURE_DIR`], e.g.
    /// `MockAad::fixture("aad_error_53003_blocked_by_conditional_access.json")`.
    ///
    /// Fixture files start with comment lines (`#` or `//`) citing their source, and a comment may itself
    /// quote JSON; so comment lines are dropped and the first balanced top-level `{…}` of the rest is
    /// returned verbatim. Panics if the file is missing or holds no object.
    pub(crate) fn fixture(name: &str) -> String {
        let path = std::path::Path::new(FIXTURE_DIR).join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read fixture {}: {e}", path.display()));
        first_json_object(&text)
            .unwrap_or_else(|| panic!("no JSON object in fixture {}", path.display()))
    }

    fn scripts(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantScript>> {
        self.state.scripts.lock().expect("scripts lock")
    }
}

// === request handling ===

/// The tenant of a token path `/{tenant}/oauth2/v2.0/token`.
fn token_path_tenant(path: &str) -> Option<&str> {
    let tenant = path.strip_prefix('/')?.strip_suffix("/oauth2/v2.0/token")?;
    (!tenant.is_empty() && !tenant.contains('/')).then_some(tenant)
}

/// The tenant of a device-code path `/{tenant}/oauth2/v2.0/devicecode`.
fn device_code_path_tenant(path: &str) -> Option<&str> {
    let tenant = path
        .strip_prefix('/')?
        .strip_suffix("/oauth2/v2.0/devicecode")?;
    (!tenant.is_empty() && !tenant.contains('/')).then_some(tenant)
}

/// The first segment of `path` (`""` for `/`).
fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

async fn handle(
    state: Arc<AadState>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, BoxError> {
    let (parts, body) = req.into_parts();
    let (body, _hash) = super::read_body(body).await?;
    let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let path = parts.uri.path().to_owned();
    let tenant = token_path_tenant(&path).map(str::to_owned);
    let record = TokenRequestRecord {
        tenant: tenant
            .clone()
            .unwrap_or_else(|| first_segment(&path).to_owned()),
        is_token_path: tenant.is_some(),
        method: parts.method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        form: form.clone(),
        raw_body: body.clone(),
        headers: parts.headers,
        arrived_at: Instant::now(),
    };
    state.requests.lock().expect("requests lock").push(record);

    if parts.method == Method::POST
        && let Some(device_tenant) = device_code_path_tenant(&path)
    {
        return device_code_start(&state, device_tenant, &form).await;
    }
    let Some(tenant) = tenant else {
        return Ok(super::json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "error_description": format!("mock AAD serves no {path}")}),
        ));
    };
    if parts.method != Method::POST {
        return Ok(super::json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "invalid_request", "error_description": "token requests must be POST"}),
        ));
    }

    let grant = form.get("grant_type").map(String::as_str);
    match (state.scripted_behavior(&tenant), grant) {
        (Some(behavior), _) => respond(&state, &tenant, &form, behavior).await,
        (None, Some(DEVICE_CODE_GRANT)) => Ok(device_code_poll(&state, &tenant, &form)),
        (None, Some("refresh_token")) => Ok(refresh(&state, &tenant, &form)),
        (None, _) => {
            let behavior = Behavior::from_tenant(&tenant, state.default_ttl);
            respond(&state, &tenant, &form, behavior).await
        }
    }
}

impl AadState {
    /// The next one-shot behaviour queued for `tenant`, else the one set for it, if any.
    fn scripted_behavior(&self, tenant: &str) -> Option<Behavior> {
        let mut scripts = self.scripts.lock().expect("scripts lock");
        let script = scripts.get_mut(tenant)?;
        script.once.pop_front().or_else(|| script.always.clone())
    }

    fn user_flows(&self) -> std::sync::MutexGuard<'_, UserFlows> {
        self.user_flows.lock().expect("user flows lock")
    }
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
async fn device_code_start(
    state: &AadState,
    tenant: &str,
    form: &BTreeMap<String, String>,
) -> Result<Response<BoxBody>, BoxError> {
    let (answer, start_behavior) = {
        let flows = state.user_flows();
        (flows.answer.clone(), flows.start_behavior.clone())
    };
    if let Some(behavior) = start_behavior {
        return respond(state, tenant, form, behavior).await;
    }
    if !form.contains_key("client_id") || !form.contains_key("scope") {
        return Ok(super::json_response(
            StatusCode::BAD_REQUEST,
            &aad_error_body(
                "invalid_request",
                Some(900_144),
                "The request body must contain the following parameters: 'client_id' and 'scope'.",
            ),
        ));
    }
    let code = format!("dc.{}", NEXT_TOKEN.fetch_add(1, Ordering::SeqCst));
    state.user_flows().device_codes.push(code.clone());
    let mut body = serde_json::json!({
        "user_code": answer.user_code,
        "device_code": code,
        "verification_uri": answer.verification_uri,
        "expires_in": answer.expires_in,
        "interval": answer.interval,
    });
    if let Some(message) = answer.message {
        body["message"] = message.into();
    }
    Ok(super::json_response(StatusCode::OK, &body))
}

/// A device-code poll: the next scripted [`DevicePoll`], else approval.
fn device_code_poll(
    state: &AadState,
    tenant: &str,
    form: &BTreeMap<String, String>,
) -> Response<BoxBody> {
    let poll = {
        let mut flows = state.user_flows();
        let known = form
            .get("device_code")
            .is_some_and(|c| flows.device_codes.contains(c));
        if !known {
            drop(flows);
            return super::json_response(
                StatusCode::BAD_REQUEST,
                &aad_error_body(
                    "invalid_grant",
                    Some(70000),
                    "The provided value for the 'device_code' is not valid.",
                ),
            );
        }
        flows.polls.pop_front().unwrap_or(DevicePoll::Approve)
    };
    match poll.error_body() {
        Some(body) => super::json_response(StatusCode::BAD_REQUEST, &body),
        None => user_tokens(state, tenant, form, true),
    }
}

/// A refresh-token grant: a working refresh token gets tokens (and is rotated), anything else AADSTS50173.
fn refresh(state: &AadState, tenant: &str, form: &BTreeMap<String, String>) -> Response<BoxBody> {
    let rotate = {
        let mut flows = state.user_flows();
        let token = form.get("refresh_token").map(String::as_str).unwrap_or("");
        let Some(index) = flows.refresh_tokens.iter().position(|t| t == token) else {
            drop(flows);
            let mut resp = Response::new(super::full(MockAad::fixture(
                "aad_error_invalid_grant_50173_revoked_refresh_token.json",
            )));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            return resp;
        };
        if flows.rotate {
            flows.refresh_tokens.remove(index);
        }
        flows.rotate
    };
    user_tokens(state, tenant, form, rotate)
}

/// 200 with a user's tokens (the recorded shape): a fresh access token and, when `new_refresh_token`, a fresh
/// refresh token that works from now on.
fn user_tokens(
    state: &AadState,
    tenant: &str,
    form: &BTreeMap<String, String>,
    new_refresh_token: bool,
) -> Response<BoxBody> {
    use base64::Engine;
    let ttl = state.default_ttl;
    let token = state.registry.issue(tenant, Duration::from_secs(ttl), form);
    let mut body = serde_json::json!({
        "token_type": "Bearer",
        "scope": form.get("scope").cloned().unwrap_or_default(),
        "expires_in": ttl,
        "ext_expires_in": ttl,
        "access_token": token,
        "foci": "1",
        "client_info": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"uid":"u1","utid":"t1"}"#),
    });
    if new_refresh_token {
        let rt = format!("rt.{}", NEXT_TOKEN.fetch_add(1, Ordering::SeqCst));
        state.user_flows().refresh_tokens.push(rt.clone());
        body["refresh_token"] = rt.into();
    }
    super::json_response(StatusCode::OK, &body)
}

async fn respond(
    state: &AadState,
    tenant: &str,
    form: &BTreeMap<String, String>,
    behavior: Behavior,
) -> Result<Response<BoxBody>, BoxError> {
    use serde_json::json;
    let resp = match behavior {
        Behavior::Ok { ttl, latency } => {
            tokio::time::sleep(latency).await;
            let token = state.registry.issue(tenant, Duration::from_secs(ttl), form);
            super::json_response(
                StatusCode::OK,
                &json!({"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": token}),
            )
        }
        Behavior::Strings { ttl } => {
            let token = state.registry.issue(tenant, Duration::from_secs(ttl), form);
            super::json_response(
                StatusCode::OK,
                &json!({
                    "token_type": "Bearer",
                    "expires_in": ttl.to_string(),
                    "ext_expires_in": ttl.to_string(),
                    "refresh_in": (ttl / 2).to_string(),
                    "access_token": token,
                }),
            )
        }
        Behavior::Json {
            status,
            body,
            headers,
        } => {
            let mut resp = Response::new(super::full(body));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            for (name, value) in headers {
                resp.headers_mut().append(name, value);
            }
            resp
        }
        Behavior::Status(status) => {
            super::json_response(status, &json!({"error": "temporarily_unavailable"}))
        }
        Behavior::Throttle { retry_after_secs } => {
            let mut resp = super::json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": "temporarily_unavailable", "error_description": "mock AAD: too many requests"}),
            );
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs),
            );
            resp
        }
        Behavior::Hang => {
            // Every task of the server is cancelled when the mock is dropped, which releases this one.
            state.shutdown.clone().wait().await;
            return Err("mock AAD shut down".into());
        }
        Behavior::CloseConnection => {
            return Err("mock AAD: closing the connection without a response".into());
        }
        Behavior::Garbage => {
            let mut resp = Response::new(super::full(
                r#"{"token_type":"Bearer","expires_in":3600,"access_token":"at.garb"#,
            ));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Behavior::Huge => {
            let mut resp = Response::new(huge_body(&state.shutdown));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
    };
    Ok(resp)
}

/// A [`HUGE_BODY_LEN`]-byte token response: JSON prefix, a run of `A`s as the token, JSON suffix.
fn huge_body(shutdown: &Shutdown) -> BoxBody {
    use http_body_util::BodyExt;
    const PREFIX: &str =
        r#"{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":""#;
    const SUFFIX: &str = r#""}"#;
    let filler_len = HUGE_BODY_LEN - PREFIX.len() - SUFFIX.len();
    let (tx, body) = ChannelBody::channel(4);
    shutdown.spawn(async move {
        let mut filler = RepeatBody::new(Bytes::from(vec![b'A'; 64 * 1024]), filler_len);
        let _ = tx.send(Ok(Bytes::from_static(PREFIX.as_bytes()))).await;
        while let Some(Ok(frame)) = filler.frame().await {
            let Ok(data) = frame.into_data() else { break };
            if tx.send(Ok(data)).await.is_err() {
                return; // the client went away
            }
        }
        let _ = tx.send(Ok(Bytes::from_static(SUFFIX.as_bytes()))).await;
    });
    body
}

/// The first balanced top-level `{…}` in `text` once comment lines (`#…`, `//…`) are removed.
fn first_json_object(text: &str) -> Option<String> {
    let content: String = text
        .lines()
        .filter(|line| {
            let t = line.trim_start();
            !(t.starts_with('#') || t.starts_with("//"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let start = content.find('{')?;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in content[start..].char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(content[start..=start + i].to_owned());
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::first_json_object;

    #[test]
    fn extracts_object_after_comments() {
        let text = "# note {\"not\": \"this\"}\n// nor {this}\n\n{\"a\": \"b}\\\"\", \"c\": {\"d\": 1}} trailing";
        assert_eq!(
            first_json_object(text).as_deref(),
            Some("{\"a\": \"b}\\\"\", \"c\": {\"d\": 1}}")
        );
    }
}
