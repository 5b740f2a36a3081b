//! The control API, on the login listener:
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/__stats` | counters per area (see [`super::stats`]) and the rules with how often each acted |
//! | GET | `/__control` | the URLs (as printed at start-up) and the rules |
//! | GET | `/__control/faults` | the rules: `[{"id", "spec", "seen", "applied", "remaining"}]` |
//! | POST | `/__control/faults` | add a rule: the body is a spec (`throttle=30,on=token`) or a JSON object with the same keys (`{"kind": "throttle", "value": 30, "on": "token"}`) → 201 with the rule |
//! | GET / DELETE | `/__control/faults/{id}` | one rule / remove it (204) |
//! | DELETE | `/__control/faults` | remove every rule (204) |
//! | POST | `/__control/reset` | remove every rule and zero the counters (204) |
//! | POST | `/__control/rotate-keys[?endpoint=NAME]` | new primary and secondary keys for Key endpoints |
//! | POST | `/__control/revoke-refresh-tokens` | every refresh token stops working (the recorded AADSTS50173 answer) |
//!
//! A request carrying a browser `Origin` (or `Sec-Fetch-Site: cross-site`/`same-site`) is refused with 403, so a
//! web page cannot switch failures on through a user's browser.

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::faults::FaultSpec;
use super::serve::{self, Body};
use super::{AuthMode, Keys, State};

/// The `/__stats` document.
pub(crate) fn stats_document(state: &State) -> Value {
    let mut stats = state.stats.to_json();
    stats["faults"] = state.faults.list();
    stats
}

/// The control listener's paths.
pub(crate) async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let headers = req.headers();
    let cross_site = headers.contains_key(header::ORIGIN)
        || matches!(
            serve::header_text(headers, "sec-fetch-site"),
            Some("cross-site" | "same-site")
        );
    if cross_site {
        return error(
            StatusCode::FORBIDDEN,
            "the control API does not answer browser requests from web pages",
        );
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["__stats"]) => serve::json_pretty(StatusCode::OK, &stats_document(state)),
        (&Method::GET, ["__control"]) => serve::json_pretty(
            StatusCode::OK,
            &json!({"urls": state.urls, "faults": state.faults.list()}),
        ),
        (&Method::GET, ["__control", "faults"]) => {
            serve::json_pretty(StatusCode::OK, &state.faults.list())
        }
        (&Method::POST, ["__control", "faults"]) => {
            let body = match serve::read_body(body, serve::SMALL_BODY).await {
                Ok(b) => b,
                Err(response) => return response,
            };
            let text = String::from_utf8_lossy(&body);
            let parsed = if text.trim_start().starts_with('{') {
                match serde_json::from_str::<Value>(&text) {
                    Ok(v) => FaultSpec::from_json(&v),
                    Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
                }
            } else {
                text.parse::<FaultSpec>()
            };
            match parsed {
                Ok(spec) => {
                    let id = state.faults.add(spec);
                    let rule = state.faults.get(id).unwrap_or(Value::Null);
                    serve::with_header(
                        serve::json(StatusCode::CREATED, &rule),
                        header::LOCATION,
                        format!("/__control/faults/{id}"),
                    )
                }
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        (&Method::DELETE, ["__control", "faults"]) => {
            state.faults.clear();
            serve::empty(StatusCode::NO_CONTENT)
        }
        (method, ["__control", "faults", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(StatusCode::NOT_FOUND, "no such rule");
            };
            match *method {
                Method::GET => match state.faults.get(id) {
                    Some(rule) => serve::json(StatusCode::OK, &rule),
                    None => error(StatusCode::NOT_FOUND, "no such rule"),
                },
                Method::DELETE if state.faults.remove(id) => serve::empty(StatusCode::NO_CONTENT),
                Method::DELETE => error(StatusCode::NOT_FOUND, "no such rule"),
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "GET or DELETE"),
            }
        }
        (&Method::POST, ["__control", "reset"]) => {
            state.faults.clear();
            state.stats.reset();
            serve::empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["__control", "rotate-keys"]) => {
            let pairs = serve::query_pairs(parts.uri.query());
            let only = serve::get(&pairs, "endpoint");
            let mut rotated = Vec::new();
            for endpoint in &state.endpoints {
                let wanted = only.is_none_or(|n| n.eq_ignore_ascii_case(&endpoint.name));
                if wanted && endpoint.auth_mode == AuthMode::Key {
                    *crate::lock(&endpoint.keys) = Keys::fresh();
                    rotated.push(endpoint.name.clone());
                }
            }
            if rotated.is_empty() {
                return error(StatusCode::NOT_FOUND, "no Key endpoint by that name");
            }
            serve::json(StatusCode::OK, &json!({"rotated": rotated}))
        }
        (&Method::POST, ["__control", "revoke-refresh-tokens"]) => {
            let revoked = crate::lock(&state.flows).revoke_refresh_tokens();
            serve::json(StatusCode::OK, &json!({"revoked": revoked}))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "see GET /__control, /__control/faults, /__stats",
        ),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    serve::json(status, &json!({"error": message}))
}
