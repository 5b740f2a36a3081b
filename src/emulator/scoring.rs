//! Online endpoints' scoring listeners (`<name>.<region>.inference.ml.azure.com`): one per endpoint, any path.
//!
//! The credential depends on the endpoint's `authMode`: `Key` accepts its current primary or secondary key (as ARM's
//! `listKeys` gives them; a regenerated key stops working at once), `AMLToken` a live token from ARM's `…/token`
//! for this endpoint, `AADToken` a live Entra ID token for `https://ml.azure.com`. Anything else is answered 401 with
//! `WWW-Authenticate: Bearer realm="<name>"` — no claims, so not a claims challenge. A success echoes the request
//! (never the credential: a key is named `primary` or `secondary`, a token shown as its claims) with
//! `azureml-model-deployment: blue`.

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::faults::{ArmAction, FaultKind, Probe, Target, normalize_resource, now_secs};
use super::jwt;
use super::serve::{self, Body};
use super::stats::Area;
use super::{AuthMode, Endpoint, State};

/// How much of a request body the echo shows.
const ECHO_BODY_BYTES: usize = 64 * 1024;

/// The one deployment behind every endpoint.
const DEPLOYMENT: &str = "blue";

/// The scoring listener of the endpoint at `index`.
pub(crate) async fn handle(state: &State, index: usize, req: Request<Incoming>) -> Response<Body> {
    let Some(endpoint) = state.endpoints.get(index) else {
        return serve::empty(StatusCode::NOT_FOUND);
    };
    let (parts, body) = req.into_parts();
    let (response, auth) = answer(state, endpoint, &parts, body).await;
    let status = response.status().as_u16().to_string();
    state.stats.record(
        Area::Scoring,
        &[
            ("endpoint", Some(&endpoint.name)),
            ("auth", auth),
            ("status", Some(&status)),
        ],
    );
    serve::with_header(response, "azureml-model-deployment", DEPLOYMENT)
}

async fn answer(
    state: &State,
    endpoint: &Endpoint,
    parts: &http::request::Parts,
    body: Incoming,
) -> (Response<Body>, Option<&'static str>) {
    let unauthorized = |why: &str| {
        serve::with_header(
            serve::json(
                StatusCode::UNAUTHORIZED,
                &json!({"message": format!("{why} (endpoint '{}' uses authMode {})", endpoint.name, endpoint.auth_mode.as_str())}),
            ),
            header::WWW_AUTHENTICATE,
            format!("Bearer realm=\"{}\"", endpoint.name),
        )
    };
    let now = now_secs();
    let (authorization, claims, auth) = match endpoint.auth_mode {
        AuthMode::Key => {
            let Some(presented) = serve::bearer(&parts.headers) else {
                return (
                    unauthorized("An authorization header with a key is required"),
                    None,
                );
            };
            let keys = crate::lock(&endpoint.keys).clone();
            let which = if presented == keys.primary {
                "primary"
            } else if presented == keys.secondary {
                "secondary"
            } else {
                return (unauthorized("The key is not valid"), None);
            };
            (json!({"scheme": "Bearer", "key": which}), None, "key")
        }
        AuthMode::AmlToken => match jwt::check_bearer(&state.signer, &parts.headers, now) {
            Ok(c)
                if c.get(jwt::AML_ENDPOINT_CLAIM).and_then(Value::as_str)
                    == Some(&endpoint.name)
                    && c.get("aud").and_then(Value::as_str) == Some(&endpoint.origin) =>
            {
                (
                    super::upstream::authorization(&parts.headers, &c),
                    None,
                    "aml_token",
                )
            }
            Ok(_) => {
                return (
                    unauthorized("The token was not issued for this endpoint"),
                    None,
                );
            }
            Err(presented) => return (unauthorized(presented.description()), None),
        },
        AuthMode::AadToken => match jwt::check_bearer(&state.signer, &parts.headers, now) {
            Ok(c)
                if jwt::is_entra(&c)
                    && c.get("aud")
                        .and_then(Value::as_str)
                        .is_some_and(|a| normalize_resource(a) == "https://ml.azure.com") =>
            {
                (
                    super::upstream::authorization(&parts.headers, &c),
                    Some(c),
                    "aad_token",
                )
            }
            Ok(_) => {
                return (
                    unauthorized("The token's audience is not https://ml.azure.com"),
                    None,
                );
            }
            Err(presented) => return (unauthorized(presented.description()), None),
        },
    };
    let decision = state
        .faults
        .decide_and_wait(&Probe {
            target: Target::Scoring,
            tenant: claims
                .as_ref()
                .and_then(|c| c.get("tid"))
                .and_then(Value::as_str),
            client: claims
                .as_ref()
                .and_then(|c| c.get("appid"))
                .and_then(Value::as_str),
            scope: None,
            grant: None,
            path: parts.uri.path(),
            endpoint: Some(&endpoint.name),
            action: (endpoint.auth_mode == AuthMode::AadToken).then_some(ArmAction::Score),
        })
        .await;
    match &decision.failure {
        Some(FaultKind::Deny { action }) => {
            let oid = claims
                .as_ref()
                .and_then(|c| c.get("oid"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            return (
                serve::json(
                    StatusCode::FORBIDDEN,
                    &json!({"error": {"code": "AuthorizationFailed", "message": format!(
                        "The principal '{oid}' does not have the permission '{}' on endpoint '{}'.",
                        action.permission("workspaces/onlineEndpoints"),
                        endpoint.name
                    )}}),
                ),
                Some(auth),
            );
        }
        Some(kind) => return (super::upstream::fault_answer(kind), Some(auth)),
        None => {}
    }
    if let (Some(challenge), Some(c)) = (&decision.cae, &claims)
        && !challenge.satisfied_by(c)
    {
        state.faults.challenged(challenge.rule);
        return (
            super::upstream::insufficient_claims(&state.urls.authority_host, challenge),
            Some(auth),
        );
    }
    let summary = serve::summarize_body(body, ECHO_BODY_BYTES).await;
    let text = summary
        .complete
        .then(|| std::str::from_utf8(&summary.head).ok().map(str::to_owned))
        .flatten();
    let echo = json!({
        "endpoint": endpoint.name,
        "auth_mode": endpoint.auth_mode.as_str(),
        "deployment": serve::header_text(&parts.headers, "azureml-model-deployment").unwrap_or(DEPLOYMENT),
        "authorization": authorization,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": super::upstream::headers(&parts.headers),
        "body": text,
        "body_len": summary.len,
        "body_sha256": summary.sha256,
    });
    (serve::json_pretty(StatusCode::OK, &echo), Some(auth))
}
