//! The token service: a second, optional listener that speaks the managed-identity protocols the Azure SDKs
//! already implement, so that SDKs and tools which insist on authenticating themselves (they refuse bearer tokens
//! over plain http and cannot be pointed at a base URL) get their tokens from the proxy's configured credentials.
//!
//! * [`app_service`]: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (api-version 2019-08-01);
//! * [`azure_ml`]: `MSI_ENDPOINT` + `MSI_SECRET` (api-version 2017-09-01);
//! * [`imds`]: the instance metadata protocol (opt-in: it has no secret).
//!
//! A request passes, in order: the proxy's Host rule (421), the caller key when the listener is exposed (401),
//! the proxy's browser-origin rule (403), `GET` only (405), the path (404), the protocol's own header checks (the
//! secret, compared in constant time: 401; IMDS's `Metadata: true` and no `X-Forwarded-For`: 400), the
//! `api-version` and `resource` (400), `allowed_resources` (403) and the identity mapping (400). Only then is a
//! token looked up, in the same [`TokenCache`] the proxy path uses: one entry per (credential, tenant, scope), so a
//! burst of SDK processes costs one token request, failures are shared and damped, and Conditional Access refusals
//! keep their codes. An entry the token service has used is kept fresh from then on and covered by `/readyz`.
//!
//! Every answer has `Cache-Control: no-store`; errors are one flat JSON object ([`respond`]). Each issuance is
//! one info log line (identity, resource, credential, expiry), never the token.

pub mod app_service;
pub mod azure_ml;
pub mod imds;
pub mod protocol;
pub mod respond;
pub mod secret_file;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::Value;

use self::protocol::{NamedIdentity, Protocol, Query};
use self::respond::Refusal;
use crate::auth::{CredentialSet, TokenCredential};
use crate::config::{DEFAULT_IDENTITY, TokenServiceConfig, resource_name};
use crate::lock;
use crate::metrics::TokenServiceMetrics;
use crate::proxy::admission::{CallerKey, HostAllowlist, is_refused_browser_request};
use crate::proxy::body::ResponseBody;
use crate::proxy::error::ProxyError;
use crate::secret::Secret;
use crate::token_cache::{CacheKey, CachedToken, TokenCache, TokenSource};

pub use self::secret_file::{SecretFileError, load_or_create};

/// The path of the App Service and Azure ML protocols (compared without regard to case: App Service's own is
/// `/MSI/token`).
pub const MSI_PATH: &str = "/msi/token";

/// The metric label of requests that speak no protocol (wrong path, method, host…).
const NO_PROTOCOL: &str = "-";
/// The metric label of requests that name no configured identity.
const NO_IDENTITY: &str = "-";

/// The token service of one configuration. Cheap to clone.
#[derive(Clone)]
pub struct TokenService {
    inner: Arc<Inner>,
}

struct Inner {
    secret: Secret,
    imds: bool,
    identities: Vec<Identity>,
    allowed_resources: Vec<String>,
    hosts: HostAllowlist,
    caller_key: Option<CallerKey>,
    cache: TokenCache,
    metrics: TokenServiceMetrics,
    in_use: Mutex<HashMap<(usize, Arc<str>), InUse>>,
}

/// What the token service is built from besides its configuration block.
pub struct TokenServiceParts<'a> {
    /// The secret callers must send (already read or created).
    pub secret: Secret,
    /// The configuration's credentials.
    pub credentials: &'a CredentialSet,
    /// Each credential's tenant, where configured.
    pub tenants: &'a HashMap<String, String>,
    /// The proxy's token cache.
    pub cache: TokenCache,
    /// The proxy's allowed hosts.
    pub hosts: HostAllowlist,
    /// The caller key, required when the listener is exposed beyond this host.
    pub caller_key: Option<CallerKey>,
    /// Where answers are counted.
    pub metrics: TokenServiceMetrics,
}

/// One `token_service.identities` entry, with its credential.
struct Identity {
    id: String,
    credential_name: String,
    credential: Arc<dyn TokenCredential>,
    tenant: Option<Arc<str>>,
}

/// A cache entry the token service has used (readiness watches it from then on).
#[derive(Debug, Clone)]
pub struct InUse {
    /// The identity callers named (`default` or an id).
    pub identity: String,
    /// The credential serving it.
    pub credential: String,
    /// The resource (as configured in `allowed_resources`).
    pub resource: String,
    /// The cache entry.
    pub tokens: TokenSource,
}

/// A token about to be sent, with what each protocol's body says about it.
pub struct Issued<'a> {
    /// The token.
    pub access_token: &'a str,
    /// Expiry, Unix seconds.
    pub expires_on: u64,
    /// Not before, Unix seconds.
    pub not_before: u64,
    /// Now, Unix seconds.
    pub now: u64,
    /// The resource as the caller asked for it.
    pub resource: &'a str,
    /// The client id of the identity.
    pub client_id: String,
}

/// What a request was resolved to, for the metric and the log line.
struct Labels {
    protocol: &'static str,
    identity: String,
}

// === impl TokenService ===

impl TokenService {
    /// The token service for `config`, answering from `parts.credentials` through `parts.cache`.
    pub fn new(config: &TokenServiceConfig, parts: TokenServiceParts<'_>) -> Self {
        let identities = config
            .identities
            .iter()
            .filter_map(|m| {
                let credential = parts.credentials.get(&m.credential);
                if credential.is_none() {
                    tracing::warn!(identity = %m.id, credential = %m.credential, "token service: the identity's credential does not exist; it is not served");
                }
                Some(Identity {
                    id: m.id.clone(),
                    credential_name: m.credential.clone(),
                    credential: credential?,
                    tenant: parts.tenants.get(&m.credential).map(|t| t.as_str().into()),
                })
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                secret: parts.secret,
                imds: config.imds,
                identities,
                allowed_resources: config.allowed_resources.clone(),
                hosts: parts.hosts,
                caller_key: parts.caller_key,
                cache: parts.cache,
                metrics: parts.metrics,
                in_use: Mutex::default(),
            }),
        }
    }

    /// The cache entries requests have used, for `/readyz`.
    pub fn in_use(&self) -> Vec<InUse> {
        let mut entries: Vec<InUse> = lock(&self.inner.in_use).values().cloned().collect();
        entries.sort_by(|a, b| (&a.identity, &a.resource).cmp(&(&b.identity, &b.resource)));
        entries
    }

    /// Answers one request.
    pub async fn answer<B>(&self, mut req: Request<B>) -> Response<ResponseBody> {
        let mut labels = Labels {
            protocol: NO_PROTOCOL,
            identity: NO_IDENTITY.to_owned(),
        };
        match self.serve(&mut req, &mut labels).await {
            Ok(response) => {
                self.inner
                    .metrics
                    .count(labels.protocol, &labels.identity, "success");
                response
            }
            Err(response) => {
                let code = response
                    .headers()
                    .get(crate::proxy::respond::ERROR_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("Internal")
                    .to_owned();
                tracing::debug!(protocol = labels.protocol, identity = %labels.identity, status = response.status().as_u16(), code = %code, "token service: request refused");
                self.inner
                    .metrics
                    .count(labels.protocol, &labels.identity, &code);
                response
            }
        }
    }

    /// The rules in order (see the module documentation); `Err` is the refusal's answer.
    async fn serve<B>(
        &self,
        req: &mut Request<B>,
        labels: &mut Labels,
    ) -> Result<Response<ResponseBody>, Response<ResponseBody>> {
        let inner = &*self.inner;
        inner
            .hosts
            .check(req)
            .map_err(|e| respond::admission_error(&e))?;
        if let Some(key) = &inner.caller_key {
            key.check(req.headers_mut())
                .map_err(|e| respond::admission_error(&e))?;
        }
        if is_refused_browser_request(req.headers(), &[]) {
            return Err(respond::admission_error(&ProxyError::OriginNotAllowed(
                "browser cross-origin requests are refused by the token service (the request carries Origin or Sec-Fetch-Site)".into(),
            )));
        }
        if req.method() != Method::GET {
            return Err(Refusal::method_not_allowed().response());
        }
        let path = req.uri().path();
        let query = Query::parse(req.uri().query());
        let protocol = if path.eq_ignore_ascii_case(MSI_PATH) {
            let version = query.as_ref().ok().and_then(|q| q.get("api-version"));
            let protocol = Protocol::of_msi_version(version);
            if let Some(protocol) = protocol {
                labels.protocol = protocol.label();
            }
            self.check_secret(req.headers(), protocol)
                .map_err(|r| r.response())?;
            query.as_ref().map_err(Refusal::response)?;
            protocol.ok_or_else(|| {
                Refusal::bad_request(
                    "unsupported or missing api-version: use 2019-08-01 (App Service, X-IDENTITY-HEADER) or 2017-09-01 (Azure ML, secret)",
                )
                .response()
            })?
        } else if path == imds::PATH && inner.imds {
            labels.protocol = Protocol::Imds.label();
            imds::admit(req.headers()).map_err(|r| r.response())?;
            let query = query.as_ref().map_err(Refusal::response)?;
            imds::check_version(query.get("api-version")).map_err(|r| r.response())?;
            Protocol::Imds
        } else {
            let also = if inner.imds {
                format!(" and {}", imds::PATH)
            } else {
                String::new()
            };
            return Err(
                Refusal::not_found(format!("the token service answers {MSI_PATH}{also}"))
                    .response(),
            );
        };
        labels.protocol = protocol.label();
        let query = query.map_err(|r| r.response())?;
        let resource = query.resource().map_err(|r| r.response())?;
        let allowed = self.allowed(resource).ok_or_else(|| {
            Refusal::resource_not_allowed(format!(
                "the resource {:?} is not in token_service.allowed_resources",
                printable(resource)
            ))
            .response()
        })?;
        let named = query.identity(protocol).map_err(|r| r.response())?;
        let index = self
            .identity(named.as_ref(), protocol)
            .map_err(|r| r.response())?;
        let identity = &inner.identities[index];
        labels.identity.clone_from(&identity.id);
        // The scope is built from the configured resource, so case or slash variants cannot create entries.
        let slash = if resource_without_default(resource).ends_with('/') {
            "/"
        } else {
            ""
        };
        let scope: Arc<str> = format!("{allowed}{slash}/.default").into();
        let tokens = self.tokens(index, identity, &scope, allowed);
        let token = tokens
            .token()
            .await
            .map_err(|e| respond::token_failure(&e))?;
        Ok(self.issue(protocol, identity, resource, named.as_ref(), &token))
    }

    /// Checks the protocol's secret header (either header while the protocol is not known yet), in constant time.
    fn check_secret(&self, headers: &HeaderMap, protocol: Option<Protocol>) -> Result<(), Refusal> {
        let names: &[&str] = match protocol {
            Some(Protocol::AppService) => &[app_service::SECRET_HEADER],
            Some(Protocol::AzureMl) => &[azure_ml::SECRET_HEADER],
            _ => &[app_service::SECRET_HEADER, azure_ml::SECRET_HEADER],
        };
        let mut sent = names.iter().flat_map(|name| headers.get_all(*name).iter());
        match (sent.next(), sent.next()) {
            (None, _) => Err(Refusal::not_authenticated(format!(
                "the {} header is missing: send the content of token_service.secret_file",
                names.join(" or ")
            ))),
            (Some(_), Some(_)) => Err(Refusal::not_authenticated(format!(
                "the secret is sent more than once ({}): send it once",
                names.join(" or ")
            ))),
            (Some(value), None) if self.inner.secret.matches(value.as_bytes()) => Ok(()),
            (Some(_), None) => Err(Refusal::not_authenticated(format!(
                "the {} header does not carry this token service's secret",
                names.join(" or ")
            ))),
        }
    }

    /// The configured resource `resource` names, if it is allowed.
    fn allowed(&self, resource: &str) -> Option<&str> {
        let name = resource_name(resource);
        self.inner
            .allowed_resources
            .iter()
            .find(|r| r.eq_ignore_ascii_case(name))
            .map(String::as_str)
    }

    /// The index of the identity a request names (`default` when it names none).
    fn identity(
        &self,
        named: Option<&NamedIdentity>,
        protocol: Protocol,
    ) -> Result<usize, Refusal> {
        let wanted = named.map_or(DEFAULT_IDENTITY, |n| n.value.as_str());
        self.inner
            .identities
            .iter()
            .position(|i| i.id.eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                Refusal::identity_not_found(match (protocol, named) {
                    (Protocol::Imds, _) => "Identity not found".to_owned(),
                    (_, Some(n)) => format!(
                        "Identity not found: {}={:?} is not in token_service.identities",
                        n.param,
                        printable(&n.value)
                    ),
                    (_, None) => "Identity not found: the request names no identity and token_service.identities has no `default`".to_owned(),
                })
            })
    }

    /// The cache entry for (identity, scope); the first use starts its keeper and puts it under `/readyz`.
    fn tokens(
        &self,
        index: usize,
        identity: &Identity,
        scope: &Arc<str>,
        resource: &str,
    ) -> TokenSource {
        let inner = &*self.inner;
        let mut in_use = lock(&inner.in_use);
        if let Some(used) = in_use.get(&(index, Arc::clone(scope))) {
            return used.tokens.clone();
        }
        let key = CacheKey {
            credential: identity.credential_name.as_str().into(),
            tenant: identity.tenant.clone(),
            scope: Arc::clone(scope),
            claims: None,
        };
        let tokens = inner
            .cache
            .source(key, Arc::clone(&identity.credential), true);
        in_use.insert(
            (index, Arc::clone(scope)),
            InUse {
                identity: identity.id.clone(),
                credential: identity.credential_name.clone(),
                resource: resource.to_owned(),
                tokens: tokens.clone(),
            },
        );
        tokens
    }

    /// The success answer, and its log line.
    fn issue(
        &self,
        protocol: Protocol,
        identity: &Identity,
        resource: &str,
        named: Option<&NamedIdentity>,
        token: &CachedToken,
    ) -> Response<ResponseBody> {
        let now = unix_seconds(SystemTime::now());
        let expires_on = unix_seconds(token.expires_on());
        let claims = jwt_claims(token.bearer());
        let claim = |name: &str| claims.as_ref().and_then(|c| c.get(name));
        let client_id = claim("appid")
            .or_else(|| claim("azp"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| named.and_then(NamedIdentity::client_id).map(str::to_owned))
            .unwrap_or_default();
        let not_before = claim("nbf").and_then(Value::as_u64).unwrap_or(now);
        let issued = Issued {
            access_token: token.bearer(),
            expires_on,
            not_before,
            now,
            resource,
            client_id,
        };
        let body = match protocol {
            Protocol::AppService | Protocol::AzureMl => app_service::body(&issued),
            Protocol::Imds => imds::body(&issued),
        };
        tracing::info!(
            protocol = protocol.label(),
            identity = %identity.id,
            resource = %printable(resource),
            credential = %identity.credential_name,
            source = %token.source(),
            expires_on,
            "token service: token issued"
        );
        respond::json(StatusCode::OK, &body)
    }
}

impl<B: Send + 'static> tower::Service<Request<B>> for TokenService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move { Ok(service.answer(req).await) })
    }
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("imds", &self.inner.imds)
            .field("identities", &self.inner.identities.len())
            .field("allowed_resources", &self.inner.allowed_resources)
            .finish_non_exhaustive()
    }
}

/// The claims of a JWT access token (its payload, unverified: only to describe the token to its caller).
fn jwt_claims(token: &str) -> Option<serde_json::Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// `resource` without a trailing `/.default`.
fn resource_without_default(resource: &str) -> &str {
    resource.strip_suffix("/.default").unwrap_or(resource)
}

/// Caller input as it may be quoted in an answer or a log line: at most 200 characters, no control characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}
