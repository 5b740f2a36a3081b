//! Managed identity, as the Azure SDKs find it:
//!
//! - **IMDS** — `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R[&client_id=|object_id=|msi_res_id=]`
//!   with `Metadata: true` (exactly, lower case). Without it: 400 with IMDS's recorded body; with `X-Forwarded-For`:
//!   400 (IMDS refuses forwarded requests); repeated query parameters: 400. Every field of the answer is a string.
//!   SDKs reach it through `AZURE_POD_IDENTITY_AUTHORITY_HOST=<the emulator>`.
//! - **App Service** — `GET /msi/token?api-version=2019-08-01&resource=R[&client_id=|principal_id=|object_id=|mi_res_id=]`
//!   with `X-IDENTITY-HEADER: <identity secret>`; `expires_on` is epoch seconds as a string. Errors are
//!   `{"statusCode", "message"}`.
//! - **Azure ML compute** — the same path with `api-version=2017-09-01` (or 2018-02-01, as the Azure ML docs
//!   show), header `secret: <identity secret>`, identity in `clientid=`. A wrong secret gets the text/plain
//!   answer the real endpoint gives.
//!
//! Tokens are v1.0, issued in the emulator's tenant (`--tenant`), for about 24 hours unless `--mi-token-lifetime`
//! or a `lifetime` rule says otherwise. A user-assigned identity's token carries `xms_mirid`.

use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;

use super::faults::{FaultKind, Probe, Target, normalize_resource};
use super::issue::{self, Grant, Subject};
use super::serve::{self, Body};
use super::stats::Area;
use super::{State, jwt};

/// The client id of the emulated system-assigned identity.
pub(crate) fn system_client_id(state: &State) -> String {
    jwt::derived_guid(&["system-assigned", &state.settings.tenant])
}

/// Which identity a request names.
struct Identity {
    client_id: String,
    resource_id: Option<String>,
    /// How `/__stats` names it.
    label: &'static str,
}

/// The IMDS token endpoint.
pub(crate) async fn imds(state: &State, req: Request<Incoming>) -> Response<Body> {
    let (response, resource, outcome) = imds_answer(state, &req).await;
    state.stats.record(
        Area::ManagedIdentity,
        &[
            ("protocol", Some("imds")),
            ("resource", resource.as_deref()),
            ("outcome", Some(outcome)),
        ],
    );
    response
}

async fn imds_answer(
    state: &State,
    req: &Request<Incoming>,
) -> (Response<Body>, Option<String>, &'static str) {
    let imds_error = |status: StatusCode, error: &str, description: &str| {
        serve::json(
            status,
            &json!({"error": error, "error_description": description}),
        )
    };
    if req.method() != Method::GET {
        return (
            imds_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "Only GET is supported",
            ),
            None,
            "bad_request",
        );
    }
    if req.headers().contains_key("x-forwarded-for") {
        return (
            imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Requests with an X-Forwarded-For header are not accepted",
            ),
            None,
            "forwarded",
        );
    }
    if serve::header_text(req.headers(), "metadata") != Some("true") {
        // The recorded body of a probe without the header.
        return (
            imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required metadata header not specified",
            ),
            None,
            "no_metadata_header",
        );
    }
    let pairs = serve::query_pairs(req.uri().query());
    let mut names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return (
            imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Requests with duplicate query parameter names are not accepted",
            ),
            None,
            "bad_request",
        );
    }
    let Some(version) = serve::get(&pairs, "api-version") else {
        return (
            imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required query variable 'api-version' is missing",
            ),
            None,
            "bad_request",
        );
    };
    if !supported_imds_version(version) {
        return (
            imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("Invalid api-version '{version}'"),
            ),
            None,
            "bad_request",
        );
    }
    let Some(resource) = serve::get(&pairs, "resource").filter(|r| !r.is_empty()) else {
        return (
            imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required query variable 'resource' is missing",
            ),
            None,
            "bad_request",
        );
    };
    let resource = resource.to_owned();
    let identity = match identity(
        state,
        &pairs,
        &[
            ("client_id", IdKind::Client),
            ("object_id", IdKind::Object),
            ("msi_res_id", IdKind::Resource),
        ],
    ) {
        Ok(i) => i,
        Err(text) => {
            return (
                imds_error(StatusCode::BAD_REQUEST, "invalid_request", &text),
                Some(resource),
                "bad_request",
            );
        }
    };
    let decided = decide(state, req, Target::Imds, &identity, &resource, |fault| match fault {
        Injected::Throttled => imds_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "Too many requests: the managed identity endpoint is throttling",
        ),
        Injected::Status(status) => imds_error(
            status,
            "unknown",
            "Failed to retrieve token from the Active directory. For details see logs in C:\\User\\WindowsAzure\\Logs\\Plugins\\Microsoft.Identity.MSI\\Msi.log",
        ),
        Injected::IdentityNotFound => imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        ),
    })
    .await;
    let lifetime = match decided {
        Ok(lifetime) => lifetime,
        Err((response, outcome)) => return (response, Some(resource), outcome),
    };
    match mint(state, &identity, &resource, lifetime) {
        Ok(issued) => {
            let body = json!({
                "access_token": issued.token,
                "client_id": identity.client_id,
                "expires_in": issued.expires_in.to_string(),
                "expires_on": issued.expires_on.to_string(),
                "ext_expires_in": issued.expires_in.to_string(),
                "not_before": issued.not_before.to_string(),
                "resource": resource,
                "token_type": "Bearer",
            });
            (
                serve::no_store(serve::json(StatusCode::OK, &body)),
                Some(resource),
                identity.label,
            )
        }
        Err(e) => (
            imds_error(StatusCode::INTERNAL_SERVER_ERROR, "unknown", &e),
            Some(resource),
            "status_500",
        ),
    }
}

/// `2018-02-01` and later dates.
fn supported_imds_version(version: &str) -> bool {
    version.len() == 10 && version.as_bytes()[4] == b'-' && version >= "2018-02-01"
}

/// The App Service and Azure ML endpoint (`/msi/token`).
pub(crate) async fn msi(state: &State, req: Request<Incoming>) -> Response<Body> {
    let pairs = serve::query_pairs(req.uri().query());
    let version = serve::get(&pairs, "api-version").unwrap_or_default();
    let protocol = match version {
        "2019-08-01" => Protocol::AppService,
        "2017-09-01" | "2018-02-01" => Protocol::AzureMl,
        _ => Protocol::Unknown,
    };
    let (response, outcome) = msi_answer(state, &req, &pairs, protocol).await;
    state.stats.record(
        Area::ManagedIdentity,
        &[
            ("protocol", Some(protocol.name())),
            ("resource", serve::get(&pairs, "resource")),
            ("outcome", Some(outcome)),
        ],
    );
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    AppService,
    AzureMl,
    Unknown,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::AppService => "app_service",
            Protocol::AzureMl => "azure_ml",
            Protocol::Unknown => "unknown",
        }
    }
}

/// App Service's error shape (what MSAL's reader prints).
fn status_message(status: StatusCode, message: &str) -> Response<Body> {
    serve::json(
        status,
        &json!({"statusCode": status.as_u16(), "message": message}),
    )
}

/// Whether the request carries the identity secret in `name`.
fn has_secret(headers: &HeaderMap, name: &str, secret: &str) -> bool {
    serve::header_text(headers, name).is_some_and(|v| {
        // Constant-time in the length of the expected value, as a secret comparison should be.
        let (a, b) = (v.as_bytes(), secret.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    })
}

async fn msi_answer(
    state: &State,
    req: &Request<Incoming>,
    pairs: &[(String, String)],
    protocol: Protocol,
) -> (Response<Body>, &'static str) {
    if req.method() != Method::GET {
        return (
            status_message(StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported"),
            "bad_request",
        );
    }
    let secret = &state.settings.identity_secret;
    let selectors: &[(&str, IdKind)] = match protocol {
        Protocol::Unknown => {
            return (
                status_message(
                    StatusCode::BAD_REQUEST,
                    "api-version must be 2019-08-01 (App Service, X-IDENTITY-HEADER) or 2017-09-01 (Azure ML, secret)",
                ),
                "bad_request",
            );
        }
        Protocol::AppService => {
            if !has_secret(req.headers(), "x-identity-header", secret) {
                return (
                    status_message(
                        StatusCode::UNAUTHORIZED,
                        "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER",
                    ),
                    "unauthorized",
                );
            }
            &[
                ("client_id", IdKind::Client),
                ("principal_id", IdKind::Object),
                ("object_id", IdKind::Object),
                ("mi_res_id", IdKind::Resource),
            ]
        }
        Protocol::AzureMl => {
            if !has_secret(req.headers(), "secret", secret) {
                // What the real endpoint answers (text/plain; it never echoes the value).
                return (
                    serve::body_response(
                        StatusCode::UNAUTHORIZED,
                        "Invalid secret token header: .",
                        "text/plain; charset=utf-8",
                    ),
                    "unauthorized",
                );
            }
            &[("clientid", IdKind::Client), ("client_id", IdKind::Client)]
        }
    };
    let Some(resource) = serve::get(pairs, "resource").filter(|r| !r.is_empty()) else {
        return (
            status_message(
                StatusCode::BAD_REQUEST,
                "The resource parameter is required",
            ),
            "bad_request",
        );
    };
    let identity = match identity(state, pairs, selectors) {
        Ok(i) => i,
        Err(text) => {
            return (
                status_message(StatusCode::BAD_REQUEST, &text),
                "bad_request",
            );
        }
    };
    let decided = decide(
        state,
        req,
        Target::Msi,
        &identity,
        resource,
        |fault| match fault {
            Injected::Throttled => {
                status_message(StatusCode::TOO_MANY_REQUESTS, "Too many requests")
            }
            Injected::Status(status) => {
                status_message(status, "An emulated managed identity failure")
            }
            Injected::IdentityNotFound => {
                status_message(StatusCode::BAD_REQUEST, "Identity not found")
            }
        },
    )
    .await;
    let lifetime = match decided {
        Ok(lifetime) => lifetime,
        Err(answer) => return answer,
    };
    match mint(state, &identity, resource, lifetime) {
        Ok(issued) => (
            serve::no_store(serve::json(
                StatusCode::OK,
                &json!({
                    "access_token": issued.token,
                    "expires_on": issued.expires_on.to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                    "client_id": identity.client_id,
                }),
            )),
            identity.label,
        ),
        Err(e) => (
            status_message(StatusCode::INTERNAL_SERVER_ERROR, &e),
            "status_500",
        ),
    }
}

/// A fault a rule injects into a token request, before it takes the protocol's error shape.
enum Injected {
    /// Answered with 429 and `Retry-After`.
    Throttled,
    /// The rule's error status.
    Status(StatusCode),
    /// Entra ID refused the identity's token (as the endpoint relays it).
    IdentityNotFound,
}

/// Asks the fault rules about a token request for `identity` and `resource`: the lifetime of the token to mint,
/// or the answer to an injected fault (built by `error`, in the protocol's shape) and its outcome.
async fn decide(
    state: &State,
    req: &Request<Incoming>,
    target: Target,
    identity: &Identity,
    resource: &str,
    error: impl Fn(Injected) -> Response<Body>,
) -> Result<Duration, (Response<Body>, &'static str)> {
    let decision = state
        .faults
        .decide_and_wait(&Probe {
            target,
            tenant: Some(&state.settings.tenant),
            client: Some(&identity.client_id),
            scope: Some(resource),
            grant: None,
            path: req.uri().path(),
            endpoint: None,
            action: None,
        })
        .await;
    let Some(kind) = decision.failure else {
        return Ok(decision
            .lifetime
            .unwrap_or(state.settings.managed_identity_lifetime));
    };
    Err(match kind {
        FaultKind::Throttle { retry_after } => (
            serve::with_header(
                error(Injected::Throttled),
                header::RETRY_AFTER,
                retry_after.to_string(),
            ),
            "throttled",
        ),
        FaultKind::Status { code } => (
            error(Injected::Status(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            )),
            super::entra::status_outcome(code),
        ),
        _ => (error(Injected::IdentityNotFound), "identity_not_found"),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdKind {
    Client,
    Object,
    Resource,
}

/// The identity the query names (at most one selector), or the system-assigned one.
fn identity(
    state: &State,
    pairs: &[(String, String)],
    selectors: &[(&str, IdKind)],
) -> Result<Identity, String> {
    let given: Vec<(&str, IdKind, &str)> = selectors
        .iter()
        .filter_map(|(name, kind)| {
            serve::get(pairs, name)
                .filter(|v| !v.is_empty())
                .map(|v| (*name, *kind, v))
        })
        .collect();
    match given.as_slice() {
        [] => Ok(Identity {
            client_id: system_client_id(state),
            resource_id: None,
            label: "system_assigned",
        }),
        [(_, kind, value)] => {
            let ws = &state.settings.workspace;
            let resource_id = match kind {
                IdKind::Resource => (*value).to_owned(),
                _ => format!(
                    "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
                    ws.subscription_id,
                    ws.resource_group,
                    jwt::derived_guid(&["uami", value])
                ),
            };
            let client_id = match kind {
                IdKind::Client => (*value).to_owned(),
                _ => jwt::derived_guid(&["uami-client", value]),
            };
            Ok(Identity {
                client_id,
                resource_id: Some(resource_id),
                label: "user_assigned",
            })
        }
        many => Err(format!(
            "Only one identity may be named; got {}",
            many.iter()
                .map(|(n, _, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn mint(
    state: &State,
    identity: &Identity,
    resource: &str,
    lifetime: Duration,
) -> Result<issue::Issued, String> {
    let audience = normalize_resource(resource).to_owned();
    issue::access_token(
        state,
        &Grant {
            tenant: &state.settings.tenant,
            client_id: &identity.client_id,
            resource: &audience,
            subject: Subject::ManagedIdentity {
                resource_id: identity.resource_id.clone(),
            },
            lifetime,
            claims: None,
            client_auth: "2",
            scp: None,
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn imds_versions() {
        assert!(super::supported_imds_version("2018-02-01"));
        assert!(super::supported_imds_version("2019-08-01"));
        assert!(!super::supported_imds_version("2017-09-01"));
        assert!(!super::supported_imds_version("latest"));
    }
}
