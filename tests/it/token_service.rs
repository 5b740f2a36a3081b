//! The token service: the managed-identity endpoints (App Service, Azure ML compute, IMDS) answered from the
//! configured credentials through the proxy's token cache, against the in-process mock Entra ID.
//!
//! `protocols`: each protocol's request and answer shapes, and the identity mapping. `refusals`: the secret, the
//! resource list, unknown identities, the Host and Origin rules, IMDS's own checks — each with its status and flat
//! error body, and no token request made. `cache`: one token request for a burst, the entry shared with the proxy
//! path, Conditional Access damping, `/readyz`. `canary`: the real binary's logs, metrics and answers never show a
//! token or the secret. `uds`: the service on a Unix-domain socket. `check_config`: the block's problems, exit 64.

mod cache;
mod canary;
mod check_config;
mod protocols;
mod refusals;
mod uds;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::support::proxy::{TestProxy, World};
use crate::support::{json_body, request};
use aml_auth_proxy::config::Listen;

/// The token service's secret in these tests (callers send it as `X-IDENTITY-HEADER` / `secret`).
pub(crate) const SECRET: &str = "ts-SECRET-canary-0123456789abcdef";

/// `resource=` for Azure Resource Manager.
pub(crate) const ARM: &str = "https://management.azure.com";

/// A user-assigned identity's client id, mapped to the credential `uami`.
pub(crate) const UAMI: &str = "aaaaaaaa-0000-4000-8000-000000000001";

/// A configuration: the world's header, `credentials` (which must define `sp`), a route `/` → upstream with
/// `sp`, and a token service on 127.0.0.1:0 with the secret file holding [`SECRET`], `imds`, and `identities`
/// (lines indented by four spaces).
pub(crate) fn config(world: &World, credentials: &str, identities: &str, imds: bool) -> String {
    let secret = world.dir.file("identity-secret", SECRET, 0o600);
    format!(
        "{}token_service:\n  listen: 127.0.0.1:0\n  secret_file: {}\n  imds: {imds}\n  identities:\n{identities}  allowed_resources: [{ARM}, https://ml.azure.com]\n",
        world.config(credentials, &world.route("arm", "/", "sp", "")),
        secret.display()
    )
}

/// A proxy whose `default` identity is `sp` in `tenant` and whose [`UAMI`] is `uami` in tenant `uami-tenant`.
pub(crate) async fn start(world: &World, tenant: &str, imds: bool) -> TestProxy {
    let credentials = format!(
        "{}{}",
        World::sp("sp", tenant),
        World::sp("uami", "uami-tenant")
    );
    let identities = format!("    default: sp\n    \"{UAMI}\": uami\n");
    TestProxy::start(&config(world, &credentials, &identities, imds)).await
}

/// `http://<token service>{path}`.
pub(crate) fn url(proxy: &TestProxy, path: &str) -> String {
    match &proxy.token_service {
        Some(Listen::Tcp(addr)) => format!("http://{addr}{path}"),
        other => panic!("the token service listens on {other:?}"),
    }
}

/// An App Service request for `resource` (plus `extra` query text), with the secret.
pub(crate) async fn app_service(
    proxy: &TestProxy,
    resource: &str,
    extra: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    let path = format!("/msi/token?api-version=2019-08-01&resource={resource}{extra}");
    request(
        Method::GET,
        &url(proxy, &path),
        &[("x-identity-header", SECRET)],
        "",
    )
    .await
}

/// Checks a flat error answer: status, `x-aml-auth-proxy-error`, `Cache-Control: no-store`, and the body's
/// `error`, `error_description`, `statusCode`, `message` and `code`. Returns the body.
pub(crate) fn expect_flat_error(
    answer: &(StatusCode, HeaderMap, Bytes),
    status: StatusCode,
    code: &str,
) -> serde_json::Value {
    let (got, headers, body) = answer;
    let text = String::from_utf8_lossy(body);
    assert_eq!(*got, status, "status; body: {text}");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("x-aml-auth-proxy-error"), Some(code), "{text}");
    assert_eq!(header("cache-control"), Some("no-store"), "{text}");
    assert_eq!(header("content-type"), Some("application/json"), "{text}");
    let j = json_body(body);
    assert_eq!(j["code"], code, "{text}");
    assert_eq!(j["statusCode"], status.as_u16(), "{text}");
    assert!(j["error"].as_str().is_some_and(|e| !e.is_empty()), "{text}");
    let description = j["error_description"].as_str().unwrap_or_default();
    assert!(!description.is_empty(), "{text}");
    assert_eq!(j["message"].as_str(), Some(description), "{text}");
    j
}
