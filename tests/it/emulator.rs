//! `aml-azure-emulator`, in process on ephemeral ports (and as the real binary where the command line is the
//! subject): each role answers as the Azure service it stands in for, the failure switches work from flags and the
//! control API, and — through the proxy — each switch produces the proxy error code the product documents.

mod arm;
mod binary;
mod entra;
mod managed_identity;
mod through_proxy;
mod try_it;
mod upstream;

use std::collections::BTreeMap;

use aml_auth_proxy::emulator::{Emulator, EmulatorOptions, FaultSpec};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::support::{json_body, request};

/// The client id the tests' apps use.
pub(crate) const APP: &str = "11111111-2222-3333-4444-555555555555";

/// An emulator with the defaults, every listener on an ephemeral port.
pub(crate) async fn start() -> Emulator {
    start_with(EmulatorOptions::ephemeral()).await
}

pub(crate) async fn start_with(options: EmulatorOptions) -> Emulator {
    Emulator::start(options).await.expect("emulator starts")
}

/// A rule from its spec.
pub(crate) fn fault(spec: &str) -> FaultSpec {
    spec.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// `POST url` with a form body.
pub(crate) async fn post_form(url: &str, pairs: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    request(
        Method::POST,
        url,
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
    )
    .await
}

/// The client-credentials answer for `scope` in `tenant` (with `extra` form fields).
pub(crate) async fn client_credentials(
    emulator: &Emulator,
    tenant: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let url = format!(
        "{}/{tenant}/oauth2/v2.0/token",
        emulator.urls().authority_host
    );
    let mut pairs = vec![
        ("grant_type", "client_credentials"),
        ("client_id", APP),
        ("client_secret", "not-checked"),
        ("scope", scope),
    ];
    pairs.extend_from_slice(extra);
    let (status, headers, body) = post_form(&url, &pairs).await;
    (status, headers, json_body(&body))
}

/// An access token for `scope` in `tenant`.
pub(crate) async fn token(emulator: &Emulator, tenant: &str, scope: &str) -> String {
    let (status, _, body) = client_credentials(emulator, tenant, scope, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// The payload of a JWT, unverified.
pub(crate) fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// `GET url` with a bearer token.
pub(crate) async fn get_with_token(url: &str, token: &str) -> (StatusCode, HeaderMap, Bytes) {
    let auth = format!("Bearer {token}");
    request(Method::GET, url, &[("authorization", &auth)], "").await
}

/// A counter of `/__stats`: `area`'s `by_<dimension>` map.
pub(crate) fn counts(emulator: &Emulator, area: &str, dimension: &str) -> BTreeMap<String, u64> {
    let stats = emulator.stats();
    stats[area][format!("by_{dimension}")]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}
