//! The echoing upstream, standing in for an Azure ML data plane (`<region>.api.azureml.ms`, and any service a
//! route points at). It checks the bearer token like a resource server (a live token this run issued; 401 with
//! `WWW-Authenticate` otherwise) and answers with what it received — the token shown only as its decoded claims,
//! never the token itself.
//!
//! | path | answer |
//! |---|---|
//! | `GET /discovery` | the workspace discovery document (no token needed), every service URL pointing here |
//! | `…/lro` | 202 with `Location`, `Azure-AsyncOperation` and `Operation-Location` on this server, `Retry-After: 0` |
//! | `/operations/{id}/status` | `{"status": "Succeeded"}` |
//! | `/stream?chunks=N&interval_ms=M` | `text/event-stream`: `data: i`, one event every M ms (default 5 events, 100 ms) |
//! | `/status/{code}` | that status |
//! | `/mlflow/v1.0/subscriptions/…/workspaces/{ws}/api/2.0/mlflow/…` | the workspace's MLflow tracking service (`mlflow`) |
//! | anything else | 200, the request echoed as indented JSON |
//!
//! A `cae` rule makes it answer 401 `WWW-Authenticate: Bearer … error="insufficient_claims", claims="…"` until a
//! token carrying the demanded claims is used, as a CAE-enabled Azure service does.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header, request::Parts};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::State;
use super::faults::{Challenge, FaultKind, Probe, Target, now_secs};
use super::jwt::{self, Presented, Rejected};
use super::mlflow;
use super::serve::{self, Body, ChannelBody};
use super::stats::Area;

/// How much of a request body the echo shows (all of it is counted and hashed).
const ECHO_BODY_BYTES: usize = 64 * 1024;

/// The upstream listener.
pub(crate) async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let (response, audience) = answer(state, &parts, body).await;
    let status = response.status().as_u16().to_string();
    state.stats.record(
        Area::Upstream,
        &[("status", Some(&status)), ("audience", audience.as_deref())],
    );
    response
}

async fn answer(state: &State, parts: &Parts, body: Incoming) -> (Response<Body>, Option<String>) {
    let path = parts.uri.path();
    if path == "/discovery" {
        return (serve::json(StatusCode::OK, &discovery(state)), None);
    }
    let authority = &state.urls.authority_host;
    let claims = match jwt::check_bearer(&state.signer, &parts.headers, now_secs()) {
        Ok(c) if jwt::is_entra(&c) => c,
        Ok(_) => return (invalid_token(authority, Rejected::BadSignature), None),
        Err(Presented::Missing) => return (missing_token(authority), None),
        Err(Presented::Rejected(why)) => return (invalid_token(authority, why), None),
    };
    let audience = claims.get("aud").and_then(Value::as_str).map(str::to_owned);
    let decision = state
        .faults
        .decide_and_wait(&Probe {
            target: Target::Upstream,
            tenant: claims.get("tid").and_then(Value::as_str),
            client: claims.get("appid").and_then(Value::as_str),
            scope: audience.as_deref(),
            grant: None,
            path,
            endpoint: None,
            action: None,
        })
        .await;
    if let Some(kind) = &decision.failure {
        return (fault_answer(kind), audience);
    }
    if let Some(challenge) = &decision.cae
        && !challenge.satisfied_by(&claims)
    {
        state.faults.challenged(challenge.rule);
        return (insufficient_claims(authority, challenge), audience);
    }
    let base = &state.urls.upstream;
    let query = serve::query_pairs(parts.uri.query());
    let tracking = format!("/mlflow/v1.0{}", state.settings.workspace.id());
    if let Some(call) = mlflow::call_of(path, &tracking) {
        let response = match call {
            Ok(call) => match serve::read_body(body, serve::SMALL_BODY).await {
                Ok(bytes) => state.mlflow.handle(&parts.method, call, &query, &bytes),
                Err(response) => response,
            },
            Err(()) => mlflow::error(
                StatusCode::NOT_FOUND,
                "RESOURCE_DOES_NOT_EXIST",
                format!("the emulator's MLflow tracking service is at {tracking}"),
            ),
        };
        return (response, audience);
    }
    let number = |name: &str, default: u64| {
        serve::get(&query, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let response = if path.ends_with("/lro") {
        long_running(base)
    } else if path.starts_with("/operations/") && path.ends_with("/status") {
        serve::json(StatusCode::OK, &json!({"status": "Succeeded"}))
    } else if path == "/stream" {
        stream(
            state,
            number("chunks", 5),
            Duration::from_millis(number("interval_ms", 100)),
        )
    } else if let Some(code) = path.strip_prefix("/status/") {
        match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|s| !s.is_informational())
        {
            Some(s) if s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED => {
                serve::empty(s)
            }
            Some(s) => serve::json(s, &json!({"status": s.as_u16()})),
            None => serve::json(
                StatusCode::BAD_REQUEST,
                &json!({"error": {"code": "BadRequest", "message": format!("no status {code:?}")}}),
            ),
        }
    } else {
        let summary = serve::summarize_body(body, ECHO_BODY_BYTES).await;
        serve::json_pretty(StatusCode::OK, &echo(parts, &claims, &summary))
    };
    (response, audience)
}

/// The echo document.
fn echo(parts: &Parts, claims: &Map<String, Value>, body: &serve::BodySummary) -> Value {
    // HTTP/2 carries the authority in the URI, HTTP/1.1 in `Host`.
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| serve::header_text(&parts.headers, "host").map(str::to_owned));
    let text = (body.complete)
        .then(|| std::str::from_utf8(&body.head).ok().map(str::to_owned))
        .flatten();
    json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "authority": authority,
        "authorization": authorization(&parts.headers, claims),
        "headers": headers(&parts.headers),
        "body": text,
        "body_len": body.len,
        "body_sha256": body.sha256,
    })
}

/// What the `Authorization` header carried: its scheme, the token's length and its verified claims.
pub(crate) fn authorization(headers: &HeaderMap, claims: &Map<String, Value>) -> Value {
    let token_length = serve::bearer(headers).map_or(0, str::len);
    let expires_in = claims
        .get("exp")
        .and_then(Value::as_i64)
        .map(|exp| exp - now_secs());
    json!({
        "scheme": "Bearer",
        "token_length": token_length,
        "expires_in": expires_in,
        "claims": claims,
    })
}

/// Request headers by lower-case name (a list when repeated); anything that carries credentials is redacted.
pub(crate) fn headers(map: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in map.keys() {
        let redacted = name.as_str().contains("authorization")
            || name.as_str() == "cookie"
            || name.as_str() == "x-ms-authorization-auxiliary";
        let values: Vec<Value> = map
            .get_all(name)
            .iter()
            .map(|v| {
                if redacted {
                    "<redacted>".into()
                } else {
                    String::from_utf8_lossy(v.as_bytes()).into_owned().into()
                }
            })
            .collect();
        let value = match <[Value; 1]>::try_from(values) {
            Ok([single]) => single,
            Err(many) => Value::Array(many),
        };
        out.insert(name.as_str().to_owned(), value);
    }
    Value::Object(out)
}

/// The workspace discovery document: every data-plane service is this server.
fn discovery(state: &State) -> Value {
    let base = &state.urls.upstream;
    json!({
        "api": base,
        "catalog": base,
        "experimentation": base,
        "history": base,
        "hyperdrive": base,
        "labeling": base,
        "modelmanagement": base,
        "pipelines": base,
        "studiocoreservices": base,
    })
}

fn missing_token(authority: &str) -> Response<Body> {
    serve::with_header(
        serve::json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"code": "AuthenticationFailed", "message": "Authentication failed. The 'Authorization' header is missing."}}),
        ),
        header::WWW_AUTHENTICATE,
        format!(
            "Bearer authorization_uri=\"{authority}/common/oauth2/authorize\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\""
        ),
    )
}

fn invalid_token(authority: &str, why: Rejected) -> Response<Body> {
    let description = why.description();
    serve::with_header(
        serve::json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"code": "InvalidAuthenticationToken", "message": format!("{description}.")}}),
        ),
        header::WWW_AUTHENTICATE,
        format!(
            "Bearer authorization_uri=\"{authority}/common/oauth2/authorize\", error=\"invalid_token\", error_description=\"{description}\""
        ),
    )
}

/// A CAE-enabled service's claims challenge (`error="insufficient_claims"`, claims base64 with padding).
pub(crate) fn insufficient_claims(authority: &str, challenge: &Challenge) -> Response<Body> {
    let claims = base64::engine::general_purpose::STANDARD.encode(challenge.claims().to_string());
    let code = match challenge.demand {
        super::faults::CaeDemand::Revoke => "TokenIssuedBeforeRevocationTimestamp",
        super::faults::CaeDemand::Acrs(_) => "InsufficientAuthenticationContext",
    };
    serve::with_header(
        serve::json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"code": "InvalidAuthenticationToken", "message": format!("Continuous access evaluation resulted in challenge with result: InteractionRequired and code: {code}")}}),
        ),
        header::WWW_AUTHENTICATE,
        format!(
            "Bearer realm=\"\", authorization_uri=\"{authority}/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"{claims}\""
        ),
    )
}

/// A failure rule's answer, in ARM's error shape (what Azure ML's data plane sends).
pub(crate) fn fault_answer(kind: &FaultKind) -> Response<Body> {
    match kind {
        FaultKind::Throttle { retry_after } => serve::with_header(
            serve::json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": {"code": "TooManyRequests", "message": "Too many requests: an emulated throttle."}}),
            ),
            header::RETRY_AFTER,
            retry_after.to_string(),
        ),
        FaultKind::Status { code } => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            serve::json(
                status,
                &json!({"error": {"code": "EmulatedFailure", "message": format!("An emulated HTTP {code}.")}}),
            )
        }
        _ => serve::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": {"code": "EmulatedFailure", "message": "This rule does not apply here."}}),
        ),
    }
}

/// 202 with the three long-running-operation headers pointing at this server.
fn long_running(base: &str) -> Response<Body> {
    let response = serve::json(StatusCode::ACCEPTED, &json!({"status": "InProgress"}));
    let response = serve::with_header(
        response,
        header::LOCATION,
        format!("{base}/operations/1/result?api-version=2024-04-01"),
    );
    let response = serve::with_header(
        response,
        "azure-asyncoperation",
        format!("{base}/operations/1/status?api-version=2024-04-01"),
    );
    let response = serve::with_header(
        response,
        "operation-location",
        format!("{base}/operations/1/status?api-version=2024-04-01"),
    );
    serve::with_header(response, header::RETRY_AFTER, "0")
}

/// Server-sent events: `data: i`, the first at once, then one every `interval`; the producer stops when the
/// client goes away or the emulator stops.
fn stream(state: &State, chunks: u64, interval: Duration) -> Response<Body> {
    let (tx, body) = ChannelBody::channel();
    let mut stop = state.stop.clone();
    tokio::spawn(async move {
        for i in 0..chunks {
            if i > 0 {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
            }
            if tx
                .send(Bytes::from(format!("data: {i}\n\n")))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}
