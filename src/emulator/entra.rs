//! Entra ID (`login.microsoftonline.com`): the v2 token endpoint (client credentials with a secret or an
//! assertion, device code, authorization code with PKCE, refresh token), the v1 token endpoint (client credentials
//! with `resource=`), the authorize endpoint (loopback redirects, `response_mode=query|form_post|fragment`), the
//! device-code endpoint, OpenID metadata, instance discovery and the signing keys.
//!
//! Any tenant name is accepted and becomes the token's `tid`; user flows on `common` or `organizations` land in
//! the emulator's default tenant. The signed-in user is `emulator.user@contoso.example` unless `login_hint` names
//! another; a device-code sign-in completes by itself after `--device-code-pending-polls` polls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::faults::{FaultKind, Probe, Target, normalize_resource, now_secs};
use super::issue::{self, Grant, Subject, User};
use super::recorded;
use super::serve::{self, Body};
use super::stats::Area;
use super::{State, jwt};

/// How long an authorization code can be redeemed.
const CODE_LIFETIME_SECS: i64 = 600;

/// How long a device code can be polled.
const DEVICE_CODE_LIFETIME_SECS: i64 = 900;

/// The device-code grant type.
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The client-assertion type of certificate and federated credentials.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Scopes every user flow may add; they do not name a resource.
const RESERVED_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// A form body's fields (the last value of a repeated name wins).
type Form = BTreeMap<String, String>;

/// User-flow state: codes, device codes and refresh tokens handed out.
#[derive(Debug, Default)]
pub(crate) struct Flows {
    codes: HashMap<String, AuthCode>,
    redeemed: HashSet<String>,
    device_codes: HashMap<String, DeviceCode>,
    refresh_tokens: HashMap<String, RefreshGrant>,
}

#[derive(Debug, Clone)]
struct AuthCode {
    tenant: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    /// (method, challenge)
    pkce: Option<(String, String)>,
    nonce: Option<String>,
    claims: Option<Value>,
    user: User,
    expires: i64,
}

#[derive(Debug, Clone)]
struct DeviceCode {
    tenant: String,
    client_id: String,
    scope: String,
    polls: u32,
    expires: i64,
}

#[derive(Debug, Clone)]
struct RefreshGrant {
    tenant: String,
    client_id: String,
    scope: String,
    user: User,
}

/// A token-endpoint answer and how `/__stats` counts it.
struct Answer {
    response: Response<Body>,
    outcome: &'static str,
}

// === impl Flows ===

impl Flows {
    /// Forgets every refresh token (they are then answered with the recorded AADSTS50173 revocation).
    pub(crate) fn revoke_refresh_tokens(&mut self) -> usize {
        let n = self.refresh_tokens.len();
        self.refresh_tokens.clear();
        n
    }
}

/// Entra ID's paths on the login listener.
pub(crate) async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::POST, [tenant, "oauth2", "v2.0", "token"]) => {
            let tenant = (*tenant).to_owned();
            token(state, &tenant, req, Version::V2).await
        }
        (Method::POST, [tenant, "oauth2", "token"]) => {
            let tenant = (*tenant).to_owned();
            token(state, &tenant, req, Version::V1).await
        }
        (Method::GET | Method::POST, [tenant, "oauth2", "v2.0", "authorize"]) => {
            let tenant = (*tenant).to_owned();
            authorize(state, &tenant, req).await
        }
        (Method::POST, [tenant, "oauth2", "v2.0", "devicecode"]) => {
            let tenant = (*tenant).to_owned();
            device_code(state, &tenant, req).await
        }
        (Method::GET, [tenant, "v2.0", ".well-known", "openid-configuration"]) => {
            serve::json(StatusCode::OK, &openid_configuration(state, tenant, true))
        }
        (Method::GET, [tenant, ".well-known", "openid-configuration"]) => {
            serve::json(StatusCode::OK, &openid_configuration(state, tenant, false))
        }
        (Method::GET, [_, "discovery", "v2.0", "keys"] | [_, "discovery", "keys"]) => {
            serve::json(StatusCode::OK, &state.signer.jwks())
        }
        (Method::GET, [_, "discovery", "instance"]) => serve::json(
            StatusCode::OK,
            &instance_discovery(state, req.uri().query()),
        ),
        (Method::GET, ["devicelogin"]) => serve::body_response(
            StatusCode::OK,
            format!(
                "<!doctype html><title>aml-azure-emulator</title><p>The emulator completes a device-code sign-in by itself after {} poll(s): there is nothing to enter here.</p>\n",
                state.settings.device_code_pending_polls
            ),
            "text/html; charset=utf-8",
        ),
        (Method::GET, [""]) => serve::json_pretty(
            StatusCode::OK,
            &json!({
                "service": "aml-azure-emulator",
                "urls": state.urls,
            }),
        ),
        _ => serve::json(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "error_description": format!("the emulator's Entra ID has no {path}")}),
        ),
    }
}

/// Which token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// `/oauth2/v2.0/token`, `scope=`.
    V2,
    /// `/oauth2/token`, `resource=`, numbers as strings.
    V1,
}

/// Letters, digits, `.` and `-`: what Entra ID accepts as a tenant in a path.
fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// AADSTS900023's description of a tenant that [`valid_tenant`] refuses.
fn invalid_tenant_text(tenant: &str) -> String {
    format!(
        "Specified tenant identifier '{tenant}' is neither a valid DNS name, nor a valid external domain."
    )
}

/// The answer of the token or device-code endpoint to a tenant that [`valid_tenant`] refuses.
fn invalid_tenant(tenant: &str) -> Answer {
    Answer {
        response: bad_request(900_023, &invalid_tenant_text(tenant)),
        outcome: "invalid_tenant",
    }
}

/// The first of `scope`'s scopes that names a resource (not one of [`RESERVED_SCOPES`]).
fn resource_scope(scope: &str) -> Option<&str> {
    scope
        .split_whitespace()
        .find(|s| !RESERVED_SCOPES.contains(s))
}

/// A form-encoded request's head and fields, or the answer to a body that cannot be read.
async fn read_form(req: Request<Incoming>) -> Result<(Parts, Form), Response<Body>> {
    let (parts, body) = req.into_parts();
    let body = serve::read_body(body, serve::SMALL_BODY).await?;
    Ok((parts, serve::form(&body)))
}

/// A form field, when given and not empty.
fn form_field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// The tenant a user flow signs in to: the path's, unless it is a multi-tenant alias.
fn home_tenant<'a>(state: &'a State, tenant: &'a str) -> &'a str {
    match tenant.to_ascii_lowercase().as_str() {
        "common" | "organizations" | "consumers" => &state.settings.tenant,
        _ => tenant,
    }
}

/// An Entra error answer with the headers Entra ID sends.
fn fail(status: StatusCode, body: &Value) -> Response<Body> {
    let response = serve::no_store(serve::json(status, body));
    match body.get("trace_id").and_then(Value::as_str) {
        Some(id) => serve::with_header(response, "x-ms-request-id", id),
        None => response,
    }
}

fn bad_request(code: u32, text: &str) -> Response<Body> {
    fail(
        StatusCode::BAD_REQUEST,
        &recorded::entra_error("invalid_request", Some(code), text),
    )
}

/// The answer of a failure rule on Entra ID's token or device-code endpoint.
fn fault_answer(kind: &FaultKind, client_id: &str, user_flow: bool) -> Answer {
    let (response, outcome) = match kind {
        FaultKind::ConditionalAccess => (
            fail(
                StatusCode::BAD_REQUEST,
                &recorded::render(
                    recorded::BLOCKED_BY_CONDITIONAL_ACCESS,
                    user_flow.then_some("interaction_required"),
                ),
            ),
            "conditional_access",
        ),
        FaultKind::Mfa => (
            fail(
                StatusCode::BAD_REQUEST,
                &recorded::render(recorded::MFA_REQUIRED, None),
            ),
            "mfa",
        ),
        FaultKind::InvalidClient => (
            fail(
                StatusCode::UNAUTHORIZED,
                &recorded::entra_error(
                    "invalid_client",
                    Some(7_000_215),
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                ),
            ),
            "invalid_client",
        ),
        FaultKind::Throttle { retry_after } => (
            serve::with_header(
                fail(
                    StatusCode::TOO_MANY_REQUESTS,
                    &recorded::entra_error(
                        "temporarily_unavailable",
                        None,
                        &format!(
                            "The service is throttling this client: too many requests. Retry after {retry_after} seconds."
                        ),
                    ),
                ),
                header::RETRY_AFTER,
                retry_after.to_string(),
            ),
            "throttled",
        ),
        FaultKind::Status { code } => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let error = match code {
                503 => "temporarily_unavailable",
                500..=599 => "server_error",
                _ => "invalid_request",
            };
            (
                fail(
                    status,
                    &recorded::entra_error(
                        error,
                        None,
                        &format!("The service answered HTTP {code} (an emulated failure)."),
                    ),
                ),
                status_outcome(*code),
            )
        }
        // Never decided for Entra ID (they need an ARM action), and not failures: answer as a server error.
        FaultKind::Deny { .. }
        | FaultKind::Latency { .. }
        | FaultKind::Lifetime { .. }
        | FaultKind::Cae { .. } => (
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                &recorded::entra_error("server_error", None, "unexpected fault"),
            ),
            "status_500",
        ),
    };
    Answer { response, outcome }
}

/// `status_503` and the like, as a static string for the counters.
#[expect(
    clippy::match_overlapping_arm,
    reason = "the common codes by name, then the rest of their class"
)]
pub(crate) fn status_outcome(code: u16) -> &'static str {
    match code {
        400 => "status_400",
        401 => "status_401",
        403 => "status_403",
        404 => "status_404",
        408 => "status_408",
        409 => "status_409",
        429 => "status_429",
        500 => "status_500",
        501 => "status_501",
        502 => "status_502",
        503 => "status_503",
        504 => "status_504",
        400..=499 => "status_4xx",
        _ => "status_5xx",
    }
}

// === token endpoint ===

async fn token(
    state: &State,
    tenant: &str,
    req: Request<Incoming>,
    version: Version,
) -> Response<Body> {
    let (parts, form) = match read_form(req).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let field = |name: &str| form_field(&form, name);
    let basic = basic_credentials(&parts.headers);
    let client_id = field("client_id")
        .map(str::to_owned)
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()));
    let grant = field("grant_type").unwrap_or_default().to_owned();
    let scope = match version {
        Version::V2 => field("scope").map(str::to_owned),
        Version::V1 => field("resource").map(str::to_owned),
    };
    let first_resource_scope = scope.as_deref().and_then(resource_scope).map(str::to_owned);
    let answer = if !valid_tenant(tenant) {
        invalid_tenant(tenant)
    } else {
        let decision = state
            .faults
            .decide_and_wait(&Probe {
                target: Target::Token,
                tenant: Some(tenant),
                client: client_id.as_deref(),
                scope: first_resource_scope.as_deref(),
                grant: Some(&grant),
                path: parts.uri.path(),
                endpoint: None,
                action: None,
            })
            .await;
        let lifetime = decision.lifetime.unwrap_or(state.settings.token_lifetime);
        match &decision.failure {
            Some(kind) => fault_answer(
                kind,
                client_id.as_deref().unwrap_or_default(),
                grant != "client_credentials",
            ),
            None => {
                let request = TokenRequest {
                    tenant,
                    client_id: client_id.as_deref(),
                    form: &form,
                    has_secret: field("client_secret").is_some() || basic.is_some(),
                    has_assertion: field("client_assertion").is_some(),
                    scope: scope.as_deref(),
                    lifetime,
                    version,
                };
                match grant.as_str() {
                    "client_credentials" => client_credentials(state, &request),
                    DEVICE_CODE_GRANT if version == Version::V2 => {
                        device_code_grant(state, &request)
                    }
                    "authorization_code" if version == Version::V2 => {
                        authorization_code_grant(state, &request)
                    }
                    "refresh_token" if version == Version::V2 => {
                        refresh_token_grant(state, &request)
                    }
                    "" => Answer {
                        response: bad_request(
                            900_144,
                            "The request body must contain the following parameter: 'grant_type'.",
                        ),
                        outcome: "invalid_request",
                    },
                    other => Answer {
                        response: fail(
                            StatusCode::BAD_REQUEST,
                            &recorded::entra_error(
                                "unsupported_grant_type",
                                Some(70_003),
                                &format!("The app requested an unsupported grant type '{other}'."),
                            ),
                        ),
                        outcome: "unsupported_grant_type",
                    },
                }
            }
        }
    };
    state.stats.record(
        Area::Token,
        &[
            ("tenant", Some(tenant)),
            ("scope", first_resource_scope.as_deref()),
            ("grant", Some(grant.as_str()).filter(|g| !g.is_empty())),
            ("client", client_id.as_deref()),
            ("outcome", Some(answer.outcome)),
        ],
    );
    let response = answer.response;
    match serve::header_text(&parts.headers, "client-request-id") {
        Some(id) => serve::with_header(response, "client-request-id", id),
        None => response,
    }
}

/// The client id and secret of `Authorization: Basic` (client_secret_basic).
fn basic_credentials(headers: &http::HeaderMap) -> Option<(String, String)> {
    let value = serve::header_text(headers, "authorization")?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((decode(id)?, decode(secret)?))
}

/// What every grant reads.
struct TokenRequest<'a> {
    tenant: &'a str,
    client_id: Option<&'a str>,
    form: &'a Form,
    has_secret: bool,
    has_assertion: bool,
    scope: Option<&'a str>,
    lifetime: Duration,
    version: Version,
}

impl<'a> TokenRequest<'a> {
    fn field(&self, name: &str) -> Option<&'a str> {
        form_field(self.form, name)
    }

    /// The parsed `claims` parameter, or the answer for a malformed one.
    /// The client id, the grant's own field `name` and the optional claims: what the device-code and refresh-token
    /// grants both need first.
    fn grant_inputs(&self, name: &str) -> Result<(&'a str, &'a str, Option<Value>), Answer> {
        let client_id = self.client_id.ok_or_else(|| missing("client_id"))?;
        let value = self.field(name).ok_or_else(|| missing(name))?;
        Ok((client_id, value, self.claims()?))
    }

    fn claims(&self) -> Result<Option<Value>, Answer> {
        match self.field("claims") {
            None => Ok(None),
            Some(text) => issue::parse_claims(text).map(Some).map_err(|e| Answer {
                response: bad_request(90_014, &e),
                outcome: "invalid_request",
            }),
        }
    }
}

fn missing(name: &str) -> Answer {
    Answer {
        response: bad_request(
            900_144,
            &format!("The request body must contain the following parameter: '{name}'."),
        ),
        outcome: "invalid_request",
    }
}

fn invalid_scope(scope: &str) -> Answer {
    let mut body = recorded::render(recorded::INVALID_SCOPE, None);
    if let Some(Value::String(text)) = body.get_mut("error_description") {
        *text = text.replace("https://example.contoso.com/activity.read", scope);
    }
    Answer {
        response: fail(StatusCode::BAD_REQUEST, &body),
        outcome: "invalid_scope",
    }
}

fn client_credentials(state: &State, request: &TokenRequest<'_>) -> Answer {
    let Some(client_id) = request.client_id else {
        return missing("client_id");
    };
    if !request.has_secret && !request.has_assertion {
        return Answer {
            response: fail(
                StatusCode::UNAUTHORIZED,
                &recorded::entra_error(
                    "invalid_client",
                    Some(7_000_218),
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                ),
            ),
            outcome: "invalid_client",
        };
    }
    if request.has_assertion && request.field("client_assertion_type") != Some(JWT_BEARER) {
        return missing("client_assertion_type");
    }
    let Some(scope) = request.scope else {
        return missing(match request.version {
            Version::V2 => "scope",
            Version::V1 => "resource",
        });
    };
    let resource = match request.version {
        Version::V2 => {
            let scopes: Vec<&str> = scope.split_whitespace().collect();
            match scopes.as_slice() {
                [one] if one.ends_with("/.default") => normalize_resource(one).to_owned(),
                _ => return invalid_scope(scope),
            }
        }
        Version::V1 => scope.trim().to_owned(),
    };
    let claims = match request.claims() {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let grant = Grant {
        tenant: request.tenant,
        client_id,
        resource: &resource,
        subject: Subject::App,
        lifetime: request.lifetime,
        claims: claims.as_ref(),
        client_auth: if request.has_assertion { "2" } else { "1" },
        scp: None,
    };
    let issued = match issue::access_token(state, &grant) {
        Ok(i) => i,
        Err(e) => return server_error(&e),
    };
    let body = match request.version {
        Version::V2 => json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "ext_expires_in": issued.expires_in,
            "access_token": issued.token,
        }),
        Version::V1 => json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in.to_string(),
            "ext_expires_in": issued.expires_in.to_string(),
            "expires_on": issued.expires_on.to_string(),
            "not_before": issued.not_before.to_string(),
            "resource": resource,
            "access_token": issued.token,
        }),
    };
    Answer {
        response: serve::no_store(serve::json(StatusCode::OK, &body)),
        outcome: "issued",
    }
}

fn server_error(e: &str) -> Answer {
    Answer {
        response: fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            &recorded::entra_error("server_error", None, e),
        ),
        outcome: "status_500",
    }
}

/// The resource and delegated permission a user flow's scopes ask for.
fn user_resource(scope: &str) -> (String, String) {
    let Some(first) = resource_scope(scope) else {
        return (
            "https://graph.microsoft.com".to_owned(),
            "openid profile offline_access".to_owned(),
        );
    };
    if first.ends_with("/.default") {
        return (
            normalize_resource(first).to_owned(),
            "user_impersonation".to_owned(),
        );
    }
    match first.rsplit_once('/') {
        Some((resource, permission)) if resource.contains("://") => {
            (resource.to_owned(), permission.to_owned())
        }
        _ => (first.to_owned(), "user_impersonation".to_owned()),
    }
}

/// A completed user sign-in, to answer with tokens.
struct SignIn<'a> {
    tenant: &'a str,
    client_id: &'a str,
    scope: &'a str,
    user: &'a User,
    claims: Option<&'a Value>,
    nonce: Option<&'a str>,
}

/// A user flow's successful answer: access token, and a refresh token, id token and client info when asked for.
fn user_tokens(state: &State, request: &TokenRequest<'_>, sign_in: &SignIn<'_>) -> Answer {
    let SignIn {
        tenant,
        client_id,
        scope,
        user,
        claims,
        nonce,
    } = *sign_in;
    let (resource, scp) = user_resource(scope);
    let grant = Grant {
        tenant,
        client_id,
        resource: &resource,
        subject: Subject::User(user.clone()),
        lifetime: request.lifetime,
        claims,
        client_auth: if request.has_secret || request.has_assertion {
            "1"
        } else {
            "0"
        },
        scp: Some(scp),
    };
    let issued = match issue::access_token(state, &grant) {
        Ok(i) => i,
        Err(e) => return server_error(&e),
    };
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": issued.expires_in,
        "ext_expires_in": issued.expires_in,
        "access_token": issued.token,
    });
    if scopes.contains(&"offline_access") {
        let refresh = format!("rt.{}", jwt::random_b64(48));
        crate::lock(&state.flows).refresh_tokens.insert(
            refresh.clone(),
            RefreshGrant {
                tenant: tenant.to_owned(),
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
                user: user.clone(),
            },
        );
        body["refresh_token"] = refresh.into();
    }
    if scopes.contains(&"openid") {
        match issue::id_token(state, tenant, client_id, user, nonce) {
            Ok(id) => body["id_token"] = id.into(),
            Err(e) => return server_error(&e),
        }
    }
    if request.field("client_info") == Some("1") {
        body["client_info"] = issue::client_info(tenant, user).into();
    }
    Answer {
        response: serve::no_store(serve::json(StatusCode::OK, &body)),
        outcome: "issued",
    }
}

fn invalid_grant(code: u32, text: &str, outcome: &'static str) -> Answer {
    Answer {
        response: fail(
            StatusCode::BAD_REQUEST,
            &recorded::entra_error("invalid_grant", Some(code), text),
        ),
        outcome,
    }
}

fn device_code_grant(state: &State, request: &TokenRequest<'_>) -> Answer {
    let (client_id, code, claims) = match request.grant_inputs("device_code") {
        Ok(inputs) => inputs,
        Err(answer) => return answer,
    };
    let pending_polls = state.settings.device_code_pending_polls;
    let entry = {
        let mut flows = crate::lock(&state.flows);
        let Some(entry) = flows.device_codes.get_mut(code) else {
            return invalid_grant(
                70_000,
                "The provided value for the input parameter 'device_code' is not valid.",
                "invalid_grant",
            );
        };
        if entry.client_id != client_id {
            return invalid_grant(
                70_000,
                "The device code was issued to another client.",
                "invalid_grant",
            );
        }
        if entry.expires <= now_secs() {
            flows.device_codes.remove(code);
            return Answer {
                response: fail(
                    StatusCode::BAD_REQUEST,
                    &recorded::entra_error(
                        "expired_token",
                        Some(70_019),
                        "Verification code expired.",
                    ),
                ),
                outcome: "expired_token",
            };
        }
        entry.polls += 1;
        if entry.polls <= pending_polls {
            return Answer {
                response: fail(
                    StatusCode::BAD_REQUEST,
                    &recorded::render(recorded::AUTHORIZATION_PENDING, None),
                ),
                outcome: "authorization_pending",
            };
        }
        let entry = entry.clone();
        flows.device_codes.remove(code);
        entry
    };
    let user = User::new(None);
    user_tokens(
        state,
        request,
        &SignIn {
            tenant: &entry.tenant,
            client_id: &entry.client_id,
            scope: &entry.scope,
            user: &user,
            claims: claims.as_ref(),
            nonce: None,
        },
    )
}

fn authorization_code_grant(state: &State, request: &TokenRequest<'_>) -> Answer {
    let Some(client_id) = request.client_id else {
        return missing("client_id");
    };
    let Some(code) = request.field("code") else {
        return missing("code");
    };
    let Some(redirect_uri) = request.field("redirect_uri") else {
        return missing("redirect_uri");
    };
    let entry = {
        let mut flows = crate::lock(&state.flows);
        if flows.redeemed.contains(code) {
            return invalid_grant(
                54_005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
                "code_redeemed",
            );
        }
        let Some(entry) = flows.codes.remove(code) else {
            return invalid_grant(
                70_000,
                "The provided authorization code is not valid.",
                "invalid_grant",
            );
        };
        flows.redeemed.insert(code.to_owned());
        entry
    };
    if entry.expires <= now_secs() {
        return invalid_grant(
            70_008,
            "The provided authorization code or refresh token has expired due to inactivity.",
            "code_expired",
        );
    }
    if entry.client_id != client_id {
        return invalid_grant(
            70_000,
            "The authorization code was issued to another client.",
            "invalid_grant",
        );
    }
    if entry.redirect_uri != redirect_uri {
        return invalid_grant(
            500_112,
            &format!(
                "The reply address '{redirect_uri}' does not match the reply address '{}' provided when requesting the authorization code.",
                entry.redirect_uri
            ),
            "redirect_uri_mismatch",
        );
    }
    if let Some((method, challenge)) = &entry.pkce {
        let verified = request.field("code_verifier").is_some_and(|verifier| {
            if method == "S256" {
                jwt::s256(verifier) == *challenge
            } else {
                verifier == challenge
            }
        });
        if !verified {
            return invalid_grant(
                501_481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                "pkce_mismatch",
            );
        }
    }
    let claims = match request.claims() {
        Ok(c) => c.or(entry.claims.clone()),
        Err(answer) => return answer,
    };
    let scope = request.scope.unwrap_or(&entry.scope).to_owned();
    user_tokens(
        state,
        request,
        &SignIn {
            tenant: &entry.tenant,
            client_id,
            scope: &scope,
            user: &entry.user,
            claims: claims.as_ref(),
            nonce: entry.nonce.as_deref(),
        },
    )
}

fn refresh_token_grant(state: &State, request: &TokenRequest<'_>) -> Answer {
    let (client_id, refresh, claims) = match request.grant_inputs("refresh_token") {
        Ok(inputs) => inputs,
        Err(answer) => return answer,
    };
    let grant = {
        let mut flows = crate::lock(&state.flows);
        let Some(grant) = flows.refresh_tokens.get(refresh) else {
            return Answer {
                response: fail(
                    StatusCode::BAD_REQUEST,
                    &recorded::render(recorded::REFRESH_TOKEN_REVOKED, None),
                ),
                outcome: "refresh_token_revoked",
            };
        };
        if grant.client_id != client_id || home_tenant(state, request.tenant) != grant.tenant {
            return invalid_grant(
                70_000,
                "The refresh token was issued to another client or tenant.",
                "invalid_grant",
            );
        }
        // Refresh tokens rotate: the one used stops working once a new one is issued.
        match flows.refresh_tokens.remove(refresh) {
            Some(grant) => grant,
            None => return server_error("refresh token vanished"),
        }
    };
    let scope = request.scope.unwrap_or(&grant.scope).to_owned();
    user_tokens(
        state,
        request,
        &SignIn {
            tenant: &grant.tenant,
            client_id,
            scope: &scope,
            user: &grant.user,
            claims: claims.as_ref(),
            nonce: None,
        },
    )
}

// === device-code endpoint ===

async fn device_code(state: &State, tenant: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, form) = match read_form(req).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let field = |name: &str| form_field(&form, name);
    let client_id = field("client_id");
    let scope = field("scope");
    let decision = state
        .faults
        .decide_and_wait(&Probe {
            target: Target::DeviceCode,
            tenant: Some(tenant),
            client: client_id,
            scope: scope.and_then(resource_scope),
            grant: None,
            path: parts.uri.path(),
            endpoint: None,
            action: None,
        })
        .await;
    let answer = match (decision.failure, client_id, scope) {
        (_, _, _) if !valid_tenant(tenant) => invalid_tenant(tenant),
        (Some(kind), client_id, _) => fault_answer(&kind, client_id.unwrap_or_default(), true),
        (None, None, _) => missing("client_id"),
        (None, _, None) => missing("scope"),
        (None, Some(client_id), Some(scope)) => {
            let user_code: String = (0..9)
                .map(|_| {
                    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
                    char::from(ALPHABET[fastrand::usize(..ALPHABET.len())])
                })
                .collect();
            let device_code = jwt::random_b64(48);
            crate::lock(&state.flows).device_codes.insert(
                device_code.clone(),
                DeviceCode {
                    tenant: home_tenant(state, tenant).to_owned(),
                    client_id: client_id.to_owned(),
                    scope: scope.to_owned(),
                    polls: 0,
                    expires: now_secs() + DEVICE_CODE_LIFETIME_SECS,
                },
            );
            let uri = format!("{}/devicelogin", state.urls.authority_host);
            Answer {
                response: serve::no_store(serve::json(
                    StatusCode::OK,
                    &json!({
                        "user_code": user_code,
                        "device_code": device_code,
                        "verification_uri": uri,
                        "expires_in": DEVICE_CODE_LIFETIME_SECS,
                        "interval": 1,
                        "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
                    }),
                )),
                outcome: "issued",
            }
        }
    };
    state.stats.record(
        Area::DeviceCode,
        &[
            ("tenant", Some(tenant)),
            ("client", client_id),
            ("outcome", Some(answer.outcome)),
        ],
    );
    answer.response
}

// === authorize endpoint ===

/// Whether `uri` is an `http(s)` URL on a loopback host with an explicit port: the only redirects the emulator
/// follows (it never sends a browser anywhere else).
fn loopback_redirect(uri: &str) -> bool {
    let Ok(parsed) = uri.parse::<http::Uri>() else {
        return false;
    };
    let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
    let host_ok = parsed.host().is_some_and(|h| {
        matches!(
            h.to_ascii_lowercase().as_str(),
            "localhost" | "127.0.0.1" | "[::1]"
        )
    });
    scheme_ok && host_ok && parsed.port_u16().is_some() && !uri.contains('#')
}

/// The error page Entra ID shows (no redirect) when the client or redirect URI is wrong.
fn error_page(code: u32, text: &str) -> Response<Body> {
    let body = recorded::entra_error("invalid_request", Some(code), text);
    let description = body["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    serve::body_response(
        StatusCode::BAD_REQUEST,
        format!(
            "<!doctype html><title>Sign in error</title><h1>Sorry, but we're having trouble signing you in.</h1><pre>{}</pre>\n",
            crate::html_escape(&description)
        ),
        "text/html; charset=utf-8",
    )
}

/// Sends `fields` back to `redirect_uri` the way `response_mode` asks.
fn redirect_back(redirect_uri: &str, mode: &str, fields: &[(&str, String)]) -> Response<Body> {
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    match mode {
        "form_post" => {
            let inputs: String = fields
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<input type=\"hidden\" name=\"{}\" value=\"{}\"/>",
                        crate::html_escape(k),
                        crate::html_escape(v)
                    )
                })
                .collect();
            serve::body_response(
                StatusCode::OK,
                format!(
                    "<html><head><title>Working...</title></head><body><form method=\"POST\" name=\"hiddenform\" action=\"{}\">{inputs}<noscript><p>Script is disabled. Click Submit to continue.</p><input type=\"submit\" value=\"Submit\" /></noscript></form><script language=\"javascript\">document.forms[0].submit();</script></body></html>\n",
                    crate::html_escape(redirect_uri)
                ),
                "text/html; charset=utf-8",
            )
        }
        "fragment" => serve::with_header(
            serve::empty(StatusCode::FOUND),
            header::LOCATION,
            format!("{redirect_uri}#{encoded}"),
        ),
        _ => {
            let joiner = if redirect_uri.contains('?') { '&' } else { '?' };
            serve::with_header(
                serve::empty(StatusCode::FOUND),
                header::LOCATION,
                format!("{redirect_uri}{joiner}{encoded}"),
            )
        }
    }
}

/// A non-empty parameter.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    serve::get(params, name).filter(|v| !v.is_empty())
}

async fn authorize(state: &State, tenant: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let params: Vec<(String, String)> = if parts.method == Method::POST {
        match serve::read_body(body, serve::SMALL_BODY).await {
            Ok(b) => form_urlencoded::parse(&b).into_owned().collect(),
            Err(response) => return response,
        }
    } else {
        serve::query_pairs(parts.uri.query())
    };
    let p = |name: &str| param(&params, name);
    let client_id = p("client_id");
    let (response, outcome) = authorize_answer(state, tenant, parts.uri.path(), &params).await;
    state.stats.record(
        Area::Authorize,
        &[
            ("tenant", Some(tenant)),
            ("client", client_id),
            (
                "pkce",
                Some(match p("code_challenge_method") {
                    Some("S256") => "s256",
                    _ if p("code_challenge").is_some() => "plain",
                    _ => "none",
                }),
            ),
            ("response_mode", Some(p("response_mode").unwrap_or("query"))),
            ("outcome", Some(outcome)),
        ],
    );
    response
}

async fn authorize_answer(
    state: &State,
    tenant: &str,
    path: &str,
    params: &[(String, String)],
) -> (Response<Body>, &'static str) {
    let p = |name: &str| param(params, name);
    let Some(client_id) = p("client_id").filter(|c| c.len() <= 64) else {
        return (
            error_page(
                900_144,
                "The request body must contain the following parameter: 'client_id'.",
            ),
            "invalid_client",
        );
    };
    let Some(redirect_uri) = p("redirect_uri").filter(|r| loopback_redirect(r)) else {
        return (
            error_page(
                50_011,
                &format!(
                    "The redirect URI '{}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. The emulator redirects only to loopback addresses with a port (http://localhost:PORT/…).",
                    p("redirect_uri").unwrap_or_default()
                ),
            ),
            "bad_redirect_uri",
        );
    };
    if !valid_tenant(tenant) {
        return (
            error_page(900_023, &invalid_tenant_text(tenant)),
            "invalid_tenant",
        );
    }
    let mode = p("response_mode").unwrap_or("query");
    let state_param = p("state").map(str::to_owned);
    let error_redirect = |error: &str, code: Option<u32>, text: &str| {
        let body = recorded::entra_error(error, code, text);
        let mut fields = vec![
            ("error", error.to_owned()),
            (
                "error_description",
                body["error_description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
        ];
        if let Some(uri) = body.get("error_uri").and_then(Value::as_str) {
            fields.push(("error_uri", uri.to_owned()));
        }
        if let Some(s) = &state_param {
            fields.push(("state", s.clone()));
        }
        redirect_back(redirect_uri, mode, &fields)
    };
    if !matches!(mode, "query" | "form_post" | "fragment") {
        return (
            error_redirect(
                "invalid_request",
                Some(900_144),
                "response_mode must be query, fragment or form_post.",
            ),
            "invalid_request",
        );
    }
    if p("response_type") != Some("code") {
        return (
            error_redirect(
                "unsupported_response_type",
                Some(700_054),
                "The emulator's authorize endpoint answers response_type=code only.",
            ),
            "unsupported_response_type",
        );
    }
    let pkce = match (p("code_challenge"), p("code_challenge_method")) {
        (None, None) => None,
        (Some(challenge), Some("S256"))
            if challenge.len() == 43
                && challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(("S256".to_owned(), challenge.to_owned()))
        }
        (Some(challenge), None | Some("plain")) => Some(("plain".to_owned(), challenge.to_owned())),
        _ => {
            return (
                error_redirect(
                    "invalid_request",
                    Some(501_491),
                    "Invalid size of Code_Challenge parameter or unsupported code_challenge_method (S256 or plain).",
                ),
                "invalid_request",
            );
        }
    };
    let scope = p("scope")
        .unwrap_or("openid profile offline_access")
        .to_owned();
    let claims = match p("claims").map(issue::parse_claims) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            return (
                error_redirect("invalid_request", Some(90_014), &e),
                "invalid_request",
            );
        }
    };
    let decision = state
        .faults
        .decide_and_wait(&Probe {
            target: Target::Authorize,
            tenant: Some(tenant),
            client: Some(client_id),
            scope: resource_scope(&scope),
            grant: None,
            path,
            endpoint: None,
            action: None,
        })
        .await;
    if let Some(kind) = decision.failure {
        let (error, code, text, outcome) = match kind {
            FaultKind::ConditionalAccess => (
                "access_denied",
                Some(53_003),
                "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
                "conditional_access",
            ),
            FaultKind::Mfa => (
                "interaction_required",
                Some(50_079),
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multifactor authentication.",
                "mfa",
            ),
            FaultKind::InvalidClient => (
                "unauthorized_client",
                Some(700_016),
                "Application was not found in the directory.",
                "invalid_client",
            ),
            FaultKind::Throttle { .. } => (
                "temporarily_unavailable",
                None,
                "The server is temporarily too busy to handle the request.",
                "throttled",
            ),
            _ => (
                "server_error",
                None,
                "The server encountered an unexpected error.",
                "status_5xx",
            ),
        };
        return (error_redirect(error, code, text), outcome);
    }
    let user = User::new(p("login_hint"));
    let home = home_tenant(state, tenant).to_owned();
    let code = format!("ac.{}", jwt::random_b64(48));
    crate::lock(&state.flows).codes.insert(
        code.clone(),
        AuthCode {
            tenant: home.clone(),
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scope,
            pkce,
            nonce: p("nonce").map(str::to_owned),
            claims,
            user: user.clone(),
            expires: now_secs() + CODE_LIFETIME_SECS,
        },
    );
    let mut fields = vec![
        ("code", code),
        ("client_info", issue::client_info(&home, &user)),
    ];
    if let Some(s) = &state_param {
        fields.push(("state", s.clone()));
    }
    fields.push(("session_state", uuid::Uuid::new_v4().to_string()));
    (redirect_back(redirect_uri, mode, &fields), "code_issued")
}

// === metadata ===

fn openid_configuration(state: &State, tenant: &str, v2: bool) -> Value {
    let authority = &state.urls.authority_host;
    let (version, issuer) = if v2 {
        ("/v2.0", format!("{authority}/{tenant}/v2.0"))
    } else {
        ("", format!("{authority}/{tenant}/"))
    };
    json!({
        "token_endpoint": format!("{authority}/{tenant}/oauth2{version}/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{authority}/{tenant}/discovery{version}/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{authority}/{tenant}/oauth2{version}/authorize"),
        "device_authorization_endpoint": format!("{authority}/{tenant}/oauth2{version}/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{authority}/{tenant}/oauth2{version}/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "aml-azure-emulator",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    })
}

fn instance_discovery(state: &State, query: Option<&str>) -> Value {
    let authority = &state.urls.authority_host;
    let host = authority
        .split_once("://")
        .map_or(authority.as_str(), |(_, h)| h);
    let pairs = serve::query_pairs(query);
    let tenant = serve::get(&pairs, "authorization_endpoint")
        .and_then(|e| e.split_once("://"))
        .and_then(|(_, rest)| rest.split('/').nth(1))
        .unwrap_or("common")
        .to_owned();
    json!({
        "tenant_discovery_endpoint": format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_redirects_with_a_port_are_followed() {
        for ok in [
            "http://localhost:8400",
            "http://localhost:8400/",
            "http://127.0.0.1:1234/callback?x=1",
            "http://[::1]:9/",
            "https://localhost:443/cb",
        ] {
            assert!(loopback_redirect(ok), "{ok}");
        }
        for bad in [
            "http://localhost/",
            "http://evil.example:8400/",
            "http://localhost.evil.example:8400/",
            "file:///etc/passwd",
            "http://127.0.0.2:80/",
            "http://localhost:8400/#frag",
            "not a url",
        ] {
            assert!(!loopback_redirect(bad), "{bad}");
        }
    }

    #[test]
    fn user_flow_scopes_name_a_resource() {
        assert_eq!(
            user_resource("https://ml.azure.com/.default offline_access openid profile"),
            (
                "https://ml.azure.com".to_owned(),
                "user_impersonation".to_owned()
            )
        );
        assert_eq!(
            user_resource("openid https://management.azure.com/user_impersonation"),
            (
                "https://management.azure.com".to_owned(),
                "user_impersonation".to_owned()
            )
        );
        assert_eq!(
            user_resource("openid profile").0,
            "https://graph.microsoft.com"
        );
    }

    #[test]
    fn tenants_and_basic_credentials() {
        assert!(valid_tenant("contoso.onmicrosoft.com"));
        assert!(valid_tenant(crate::emulator::DEFAULT_TENANT));
        assert!(!valid_tenant("a/b"));
        assert!(!valid_tenant(""));
        let mut headers = http::HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("app%3A1:s%2Bcret");
        headers.insert("authorization", format!("Basic {encoded}").parse().unwrap());
        assert_eq!(
            basic_credentials(&headers),
            Some(("app:1".to_owned(), "s+cret".to_owned()))
        );
    }
}
