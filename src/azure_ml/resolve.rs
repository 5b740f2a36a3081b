//! Resolving an Azure ML route through Resource Manager: an online endpoint to its scoring origin and the
//! credential its `authMode` needs, a workspace to its data-plane origin and MLflow tracking path.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http::header::ACCEPT;
use http::uri::Scheme;
use http_body_util::Full;
use serde::Deserialize;

use super::arm::{ArmClient, Call, SOURCE};
use super::secrets::{AmlTokenCredential, EndpointKeyCredential};
use crate::auth::{TokenCredential, TokenError, TokenErrorKind, TokenHttpClient};
use crate::config::{
    AzureMlTarget, EndpointAuth, HttpsOrigin, OnlineEndpointConfig, Upstream, WorkspaceId,
};
use crate::origin::{CheckedUrl, UrlRule, check_url};
use crate::token_cache::{CacheKey, TokenCache, TokenSource};

/// The RBAC action reading an online endpoint needs.
pub const ENDPOINT_READ_ACTION: &str =
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/read";

/// The RBAC action reading a workspace needs.
pub const WORKSPACE_READ_ACTION: &str = "Microsoft.MachineLearningServices/workspaces/read";

/// What resolving needs: Resource Manager, the cache the route's credentials live in, and the route's identity.
#[derive(Debug, Clone)]
pub struct ResolveContext {
    /// Resource Manager with the route's management token.
    pub arm: ArmClient,
    /// For discovery documents (no token is sent).
    pub http: TokenHttpClient,
    /// Where the scoring credential's entry is made.
    pub cache: TokenCache,
    /// The route's configured credential (Entra ID).
    pub credential: Arc<dyn TokenCredential>,
    /// Its configured name.
    pub credential_name: Arc<str>,
    /// Its tenant, where configured.
    pub tenant: Option<Arc<str>>,
    /// The Entra ID scope of `AADToken` endpoints (the cloud's Azure ML audience).
    pub ml_scope: Arc<str>,
    /// Whether the scoring credential's entry gets a background keeper (the proxy: yes; one-shot commands: no).
    pub keep_fresh: bool,
}

/// A resolved Azure ML route.
#[derive(Debug)]
pub struct Resolved {
    /// Where requests go: the scoring URI's or the data plane's origin, base path `/`.
    pub upstream: Upstream,
    /// The credential requests carry.
    pub tokens: TokenSource,
    /// What was resolved.
    pub detail: Detail,
}

/// What a resolved route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// An online endpoint.
    OnlineEndpoint {
        /// Its `authMode`.
        mode: EndpointMode,
        /// The path of its scoring URI (usually `/score`).
        scoring_path: String,
    },
    /// A workspace.
    Workspace {
        /// The path of its MLflow tracking URI on the data plane (`/mlflow/v1.0/subscriptions/…`).
        mlflow_path: String,
    },
}

/// An online endpoint's `authMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointMode {
    /// `Key`.
    Key,
    /// `AMLToken`.
    AmlToken,
    /// `AADToken`.
    AadToken,
}

#[derive(Deserialize)]
struct Resource<P> {
    properties: Option<P>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointProperties {
    auth_mode: Option<String>,
    scoring_uri: Option<String>,
    provisioning_state: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkspaceProperties {
    discovery_url: Option<String>,
    ml_flow_tracking_uri: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    api: Option<String>,
}

// === impl EndpointMode ===

impl EndpointMode {
    /// As Resource Manager spells it.
    pub fn arm_name(self) -> &'static str {
        match self {
            EndpointMode::Key => "Key",
            EndpointMode::AmlToken => "AMLToken",
            EndpointMode::AadToken => "AADToken",
        }
    }

    /// As configuration spells it.
    pub fn config_name(self) -> &'static str {
        match self {
            EndpointMode::Key => "key",
            EndpointMode::AmlToken => "aml_token",
            EndpointMode::AadToken => "aad_token",
        }
    }

    fn from_arm(text: &str) -> Option<Self> {
        [
            EndpointMode::Key,
            EndpointMode::AmlToken,
            EndpointMode::AadToken,
        ]
        .into_iter()
        .find(|m| m.arm_name().eq_ignore_ascii_case(text))
    }

    fn from_config(auth: EndpointAuth) -> Option<Self> {
        match auth {
            EndpointAuth::Auto => None,
            EndpointAuth::Key => Some(EndpointMode::Key),
            EndpointAuth::AmlToken => Some(EndpointMode::AmlToken),
            EndpointAuth::AadToken => Some(EndpointMode::AadToken),
        }
    }
}

/// The resource path of a workspace.
pub fn workspace_path(ws: &WorkspaceId) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{}",
        ws.subscription_id, ws.resource_group, ws.name
    )
}

/// How a target is named in messages (`online endpoint my-endpoint`, `workspace my-ws`).
pub fn describe(target: &AzureMlTarget) -> String {
    match target {
        AzureMlTarget::OnlineEndpoint(e) => format!("online endpoint {}", e.name),
        AzureMlTarget::Workspace(ws) => format!("workspace {}", ws.name),
    }
}

/// Resolves `target` through Resource Manager.
pub async fn resolve(ctx: &ResolveContext, target: &AzureMlTarget) -> Result<Resolved, TokenError> {
    match target {
        AzureMlTarget::OnlineEndpoint(e) => online_endpoint(ctx, e).await,
        AzureMlTarget::Workspace(ws) => workspace(ctx, ws).await,
    }
}

async fn online_endpoint(
    ctx: &ResolveContext,
    e: &OnlineEndpointConfig,
) -> Result<Resolved, TokenError> {
    let path = format!(
        "{}/onlineEndpoints/{}",
        workspace_path(&e.workspace),
        e.name
    );
    let what = format!(
        "online endpoint {}: reading its authMode and scoringUri",
        e.name
    );
    let call = Call {
        what: &what,
        action: ENDPOINT_READ_ACTION,
    };
    let body = ctx.arm.get(&path, call).await?;
    let props = serde_json::from_slice::<Resource<EndpointProperties>>(&body)
        .ok()
        .and_then(|r| r.properties)
        .ok_or_else(|| unreadable(&what, "the answer is not an online endpoint"))?;
    let arm_mode = props.auth_mode.as_deref().unwrap_or_default();
    let read = EndpointMode::from_arm(arm_mode)
        .ok_or_else(|| unreadable(&what, &format!("unknown authMode {arm_mode:?}")))?;
    let mode = match EndpointMode::from_config(e.auth) {
        Some(configured) if configured != read => {
            return Err(TokenError::new(
                TokenErrorKind::CredentialRejected,
                SOURCE,
                format!(
                    "online endpoint {}: the route says auth: {}, but the endpoint's authMode is {}",
                    e.name,
                    configured.config_name(),
                    read.arm_name()
                ),
            ));
        }
        _ => read,
    };
    let Some(scoring_uri) = props.scoring_uri.filter(|u| !u.is_empty()) else {
        let state = props
            .provisioning_state
            .unwrap_or_else(|| "unknown".to_owned());
        return Err(TokenError::service_unavailable(
            SOURCE,
            format!(
                "online endpoint {}: no scoringUri yet (provisioningState {state})",
                e.name
            ),
        ));
    };
    let url = answered_url(ctx.arm.base(), &scoring_uri)
        .map_err(|why| unreadable(&what, &format!("scoringUri {why}")))?;
    let tokens = match mode {
        EndpointMode::AadToken => ctx.entra_source(&ctx.ml_scope),
        EndpointMode::Key => ctx.secret_source(
            format!("{path}/listKeys"),
            Arc::new(EndpointKeyCredential::new(
                ctx.arm.clone(),
                path.clone(),
                e.name.clone(),
            )),
        ),
        EndpointMode::AmlToken => ctx.secret_source(
            format!("{path}/token"),
            Arc::new(AmlTokenCredential::new(
                ctx.arm.clone(),
                path.clone(),
                e.name.clone(),
            )),
        ),
    };
    Ok(Resolved {
        upstream: Upstream {
            origin: url.origin,
            base_path: String::new(),
        },
        tokens,
        detail: Detail::OnlineEndpoint {
            mode,
            scoring_path: url.path,
        },
    })
}

async fn workspace(ctx: &ResolveContext, ws: &WorkspaceId) -> Result<Resolved, TokenError> {
    let path = workspace_path(ws);
    let what = format!(
        "workspace {}: reading its discoveryUrl and mlFlowTrackingUri",
        ws.name
    );
    let call = Call {
        what: &what,
        action: WORKSPACE_READ_ACTION,
    };
    let body = ctx.arm.get(&path, call).await?;
    let props = serde_json::from_slice::<Resource<WorkspaceProperties>>(&body)
        .ok()
        .and_then(|r| r.properties)
        .ok_or_else(|| unreadable(&what, "the answer is not a workspace"))?;
    let discovery = props
        .discovery_url
        .ok_or_else(|| unreadable(&what, "it has no discoveryUrl"))?;
    let discovery = answered_url(ctx.arm.base(), &discovery)
        .map_err(|why| unreadable(&what, &format!("discoveryUrl {why}")))?;
    let origin = data_plane(ctx, &discovery.origin, &discovery.path, &ws.name).await?;
    let mlflow_path = props
        .ml_flow_tracking_uri
        .as_deref()
        .and_then(tracking_path)
        .unwrap_or_else(|| format!("/mlflow/v1.0{path}"));
    Ok(Resolved {
        upstream: Upstream {
            origin,
            base_path: String::new(),
        },
        tokens: ctx.entra_source(&ctx.arm_scope()),
        detail: Detail::Workspace { mlflow_path },
    })
}

/// The data-plane origin: the discovery document's `api` (no token is sent for it).
async fn data_plane(
    ctx: &ResolveContext,
    origin: &HttpsOrigin,
    path: &str,
    name: &str,
) -> Result<HttpsOrigin, TokenError> {
    let what = format!("workspace {name}: reading its discovery document");
    let request = Request::get(format!("{origin}{path}"))
        .header(ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|_| unreadable(&what, "the discoveryUrl is not a valid URL"))?;
    let response = ctx
        .http
        .send(request)
        .await
        .map_err(|e| TokenError::service_unavailable(SOURCE, format!("{what}: {e}")))?;
    if !response.status.is_success() {
        return Err(TokenError::service_unavailable(
            SOURCE,
            format!("{what}: HTTP {}", response.status.as_u16()),
        ));
    }
    let api = serde_json::from_slice::<Discovery>(&response.body)
        .ok()
        .and_then(|d| d.api)
        .ok_or_else(|| unreadable(&what, "it names no api service"))?;
    answered_url(ctx.arm.base(), &api)
        .map(|u| u.origin)
        .map_err(|why| unreadable(&what, &format!("api {why}")))
}

/// The path of an `mlFlowTrackingUri` (`azureml://host/mlflow/v1.0/…` → `/mlflow/v1.0/…`).
pub fn tracking_path(uri: &str) -> Option<String> {
    let (_, rest) = uri.split_once("://")?;
    let path = &rest[rest.find('/')?..];
    let clean = path.trim_end_matches('/');
    (!clean.is_empty() && !clean.contains(['?', '#'])).then(|| clean.to_owned())
}

/// A URL Resource Manager answered with (a scoring URI, a discovery URL, the data-plane origin), checked as an
/// upstream; plain http only when Resource Manager itself is a plain-http loopback stand-in (tests, the
/// emulator), so an answer can never make the proxy send a key or token in the clear.
fn answered_url(resource_manager: &HttpsOrigin, text: &str) -> Result<CheckedUrl, String> {
    let url = check_url(text, UrlRule::Upstream)?;
    if url.origin.scheme == Scheme::HTTP && resource_manager.scheme != Scheme::HTTP {
        return Err(format!(
            "is plain http ({}): only https is used when resource_manager is https",
            url.origin
        ));
    }
    Ok(url)
}

fn unreadable(what: &str, why: &str) -> TokenError {
    TokenError::new(
        TokenErrorKind::TokenServiceUnavailable,
        SOURCE,
        format!("{what}: {why}"),
    )
}

// === impl ResolveContext ===

impl ResolveContext {
    /// The management scope of the route's tokens (the workspace data plane takes them too).
    fn arm_scope(&self) -> Arc<str> {
        Arc::clone(&self.arm.tokens().key().scope)
    }

    /// The entry for an Entra ID token for `scope` with the route's credential.
    fn entra_source(&self, scope: &Arc<str>) -> TokenSource {
        let key = CacheKey {
            credential: Arc::clone(&self.credential_name),
            tenant: self.tenant.clone(),
            scope: Arc::clone(scope),
            claims: None,
        };
        self.cache
            .source(key, Arc::clone(&self.credential), self.keep_fresh)
    }

    /// The entry for an endpoint's key or AML token, named by the Resource Manager action that reads it.
    fn secret_source(
        &self,
        action_path: String,
        credential: Arc<dyn TokenCredential>,
    ) -> TokenSource {
        let key = CacheKey {
            credential: Arc::clone(&self.credential_name),
            tenant: self.tenant.clone(),
            scope: action_path.into(),
            claims: None,
        };
        self.cache.source(key, credential, self.keep_fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_answers_are_taken_only_from_a_plain_http_resource_manager() {
        let https_arm = check_url("https://management.azure.com", UrlRule::Upstream)
            .unwrap()
            .origin;
        let loopback_arm = check_url("http://127.0.0.1:9000", UrlRule::Upstream)
            .unwrap()
            .origin;
        let http_scoring = "http://127.0.0.1:5001/score";
        let err = answered_url(&https_arm, http_scoring).unwrap_err();
        assert!(err.contains("plain http"), "{err}");
        assert_eq!(
            answered_url(&loopback_arm, http_scoring).unwrap().path,
            "/score"
        );
        let real = "https://ep.westus.inference.ml.azure.com/score";
        assert!(answered_url(&https_arm, real).is_ok());
        // The upstream rules still apply whatever Resource Manager is.
        assert!(answered_url(&loopback_arm, "http://169.254.169.254/score").is_err());
        assert!(answered_url(&https_arm, "https://[::ffff:169.254.169.254]/score").is_err());
    }

    #[test]
    fn tracking_paths() {
        // The recorded workspace's mlFlowTrackingUri.
        let recorded = "azureml://westus.api.azureml.ms/mlflow/v1.0/subscriptions/00000000-0000-0000-0000-000000000/resourceGroups/00000/providers/Microsoft.MachineLearningServices/workspaces/00000";
        assert_eq!(
            tracking_path(recorded).as_deref(),
            Some(
                "/mlflow/v1.0/subscriptions/00000000-0000-0000-0000-000000000/resourceGroups/00000/providers/Microsoft.MachineLearningServices/workspaces/00000"
            )
        );
        assert_eq!(tracking_path("azureml://host"), None);
        assert_eq!(tracking_path("nonsense"), None);
    }

    #[test]
    fn recorded_endpoint_and_workspace_bodies_parse() {
        let endpoint = br#"{"name": "online-ept-6696557f8dec409", "properties": {"scoringUri": "https://online-ept-6696557f8dec409.westus.inference.ml.azure.com/score", "authMode": "AMLToken", "provisioningState": "Succeeded", "compute": null, "traffic": {}}}"#;
        let props = serde_json::from_slice::<Resource<EndpointProperties>>(endpoint)
            .unwrap()
            .properties
            .unwrap();
        assert_eq!(
            EndpointMode::from_arm(props.auth_mode.as_deref().unwrap()),
            Some(EndpointMode::AmlToken)
        );
        let url = check_url(props.scoring_uri.as_deref().unwrap(), UrlRule::Upstream).unwrap();
        assert_eq!(url.path, "/score");
        let ws = br#"{"properties": {"EnableSoftwareBillOfMaterials": false, "discoveryUrl": "https://westus.api.azureml.ms/discovery", "mlFlowTrackingUri": "azureml://westus.api.azureml.ms/mlflow/v1.0/x"}}"#;
        let props = serde_json::from_slice::<Resource<WorkspaceProperties>>(ws)
            .unwrap()
            .properties
            .unwrap();
        assert_eq!(
            props.discovery_url.as_deref(),
            Some("https://westus.api.azureml.ms/discovery")
        );
        let discovery = br#"{"api": "https://centralus.api.azureml.ms", "catalog": "https://catalog.cortanaanalytics.com"}"#;
        assert_eq!(
            serde_json::from_slice::<Discovery>(discovery)
                .unwrap()
                .api
                .as_deref(),
            Some("https://centralus.api.azureml.ms")
        );
        for mode in ["Key", "AMLToken", "AADToken", "key", "amltoken"] {
            assert!(EndpointMode::from_arm(mode).is_some(), "{mode}");
        }
        assert_eq!(EndpointMode::from_arm("Basic"), None);
    }
}
