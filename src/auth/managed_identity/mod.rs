//! Managed identity (PROTOCOLS §4): tokens from the host's identity endpoint, whichever kind of Azure host this is.
//!
//! The source is detected once, at construction, from environment variables in the Azure SDKs' order (§4.1):
//!
//! | variables set                                              | source                                          |
//! |------------------------------------------------------------|-------------------------------------------------|
//! | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` + `IDENTITY_SERVER_THUMBPRINT` | Service Fabric: not supported (unavailable) |
//! | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`                    | App Service / Functions / Container Apps        |
//! | `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`                      | Azure Arc (HIMDS)                               |
//! | `IDENTITY_ENDPOINT` alone                                  | none: unavailable (as azure-identity does)      |
//! | `MSI_ENDPOINT` + `MSI_SECRET`                              | Azure ML compute                                |
//! | `MSI_ENDPOINT` alone                                       | Cloud Shell                                     |
//! | none of these                                              | IMDS (`AZURE_POD_IDENTITY_AUTHORITY_HOST` replaces its base URL) |
//!
//! `managed_identity.endpoint` replaces the full token URL of the detected source. Each source lives in its own
//! file; this one holds detection, the retry loop they share and the credential itself.
//!
//! What is *unavailable* (a chain moves on) and what *failed* (a chain stops):
//! * unavailable: no source fits (`IDENTITY_ENDPOINT` alone, Service Fabric), the configured user-assigned id
//!   cannot be expressed to the detected source, the IMDS probe got no answer, IMDS answered 400 (no identity, or
//!   not the requested one, is assigned here) or 403 "unreachable" (Docker Desktop's proxy);
//! * failed, `TokenServiceUnavailable`: transport errors after the probe, timeouts, 404/410/429/5xx once the
//!   retries are spent, a 200 whose body is no usable token;
//! * failed, `CredentialRejected`: a malformed endpoint variable, any other 4xx, an Azure Arc challenge that is
//!   missing or names a key file outside the agent's directory.

mod app_service;
mod arc;
mod azure_ml;
mod cloud_shell;
mod imds;
mod response;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

use super::http::{HttpResponse, TokenHttpClient, retry_after};
use super::token_response::TokenResponse;
use super::{
    AccessToken, Credential, CredentialError, Secret, TokenError, TokenErrorKind, TokenRequest,
    scope_to_resource,
};
use crate::env::Env;

/// Where the Azure Connected Machine agent keeps its challenge key files on Linux.
pub const DEFAULT_ARC_KEY_DIR: &str = "/var/opt/azcmagent/tokens";

/// The kind (and token source name) of this credential.
const SOURCE: &str = "managed_identity";

/// The `managed_identity` credential.
#[derive(Debug)]
pub struct ManagedIdentityCredential {
    source: Result<Source, Problem>,
    http: TokenHttpClient,
    options: ManagedIdentityCredentialOptions,
    /// Set once an IMDS probe got an answer; a failed probe is tried again on the next call.
    probed: tokio::sync::OnceCell<()>,
}

/// Settings of a [`ManagedIdentityCredential`]: which identity (`managed_identity: { client_id | object_id |
/// resource_id, endpoint }` in configuration), and how its endpoint is asked (production values by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedIdentityCredentialOptions {
    /// A user-assigned identity; `None` for the system-assigned one.
    pub user_assigned: Option<UserAssignedId>,
    /// Replaces the full token URL of the detected source.
    pub endpoint: Option<Uri>,
    /// Inside a credential chain: probe IMDS once (no `Metadata` header, [`Self::probe_timeout`]) before trusting
    /// it, so that a host without IMDS makes the source unavailable quickly instead of failing the chain.
    pub in_chain: bool,
    /// How long the IMDS probe waits for any answer.
    pub probe_timeout: Duration,
    /// Retries of a token request that the endpoint answered with a transient status.
    pub retry: ImdsRetry,
    /// The only directory an Azure Arc challenge may name (default [`DEFAULT_ARC_KEY_DIR`]).
    pub arc_key_dir: PathBuf,
}

/// How a user-assigned managed identity is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAssignedId {
    /// Its client (application) id.
    ClientId(String),
    /// Its object (principal) id.
    ObjectId(String),
    /// Its ARM resource id.
    ResourceId(String),
}

/// The retry schedule for transient answers (PROTOCOLS §4.2, as azure-identity for Python does it).
///
/// Retry `n` (1-based) waits `0` for `n = 1`, else `backoff · 2^(n-1)`, at most `max_delay`; once IMDS has said
/// 410 ("going through updates, back within 70 s") `gone_backoff` replaces `backoff`. A larger `Retry-After` is
/// honoured; one larger than `max_delay` ends the retries and travels with the error instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsRetry {
    /// Retries after the first attempt (so at most `max_retries + 1` requests).
    pub max_retries: u32,
    /// The backoff factor.
    pub backoff: Duration,
    /// The backoff factor once a 410 was seen (2.5 s gives 0 + 5 + 10 + 20 + 40 = 75 s ≥ 70 s).
    pub gone_backoff: Duration,
    /// The longest single wait.
    pub max_delay: Duration,
}

/// The kinds of managed-identity endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManagedIdentitySource {
    /// Azure App Service, Functions and Container Apps (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
    AppService,
    /// Azure Arc-enabled servers (`IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`).
    AzureArc,
    /// Azure ML compute instances and clusters (`MSI_ENDPOINT` + `MSI_SECRET`).
    AzureMl,
    /// Azure Cloud Shell (`MSI_ENDPOINT` alone).
    CloudShell,
    /// The Instance Metadata Service of VMs, scale sets, AKS nodes and container instances.
    Imds,
}

/// A detected, usable source.
#[derive(Debug)]
enum Source {
    AppService(app_service::AppService),
    Arc(arc::Arc),
    AzureMl(azure_ml::AzureMl),
    CloudShell(cloud_shell::CloudShell),
    Imds(imds::Imds),
}

/// Why no source can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// Not present here, or not usable as configured: a chain moves on.
    Unavailable(String),
    /// Present but malformed (a bad endpoint variable): a configuration error.
    Invalid(String),
}

/// One token-service request, rebuilt for every attempt.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    url: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// What the sources share: the HTTP client and the retry schedule.
#[derive(Debug, Clone, Copy)]
struct Transport<'a> {
    http: &'a TokenHttpClient,
    retry: &'a ImdsRetry,
    source: ManagedIdentitySource,
}

// === impl ManagedIdentityCredential ===

impl ManagedIdentityCredential {
    /// Detects the source from `env` (see the module docs) for the identity `options` names. Detection never
    /// fails: a source that cannot be used answers every request with the reason.
    pub fn new(
        options: ManagedIdentityCredentialOptions,
        env: &dyn Env,
        http: TokenHttpClient,
    ) -> Self {
        let source = detect(&options, env);
        match &source {
            Ok(s) => {
                tracing::debug!(source = s.kind().name(), endpoint = %without_query(s.url()), "managed identity source detected");
            }
            Err(Problem::Unavailable(reason) | Problem::Invalid(reason)) => {
                tracing::debug!(reason = %reason, "no usable managed identity source");
            }
        }
        Self {
            source,
            http,
            options,
            probed: tokio::sync::OnceCell::new(),
        }
    }

    /// The detected source, if one is usable.
    pub fn source(&self) -> Option<ManagedIdentitySource> {
        self.source.as_ref().ok().map(Source::kind)
    }

    /// The token URL requests go to (before the query is added), if a source is usable.
    pub fn endpoint(&self) -> Option<&Uri> {
        self.source.as_ref().ok().map(Source::url)
    }

    /// Probes IMDS until one probe gets an answer; concurrent callers share one probe.
    async fn probe(&self, imds: &imds::Imds, resource: &str) -> Result<(), CredentialError> {
        let http = self.http.with_attempt_timeout(self.options.probe_timeout);
        self.probed
            .get_or_try_init(|| imds.probe(&http, resource))
            .await
            .map(|_| ())
    }
}

impl Credential for ManagedIdentityCredential {
    const KIND: &'static str = SOURCE;

    async fn token(&self, request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        let source = match &self.source {
            Ok(source) => source,
            Err(Problem::Unavailable(reason)) => {
                return Err(CredentialError::unavailable(SOURCE, reason.clone()));
            }
            Err(Problem::Invalid(reason)) => {
                return Err(CredentialError::rejected(SOURCE, reason.clone()));
            }
        };
        // Managed identity cannot satisfy a claims challenge; a fresh request is the best it can do.
        let resource = scope_to_resource(&request.scope);
        let transport = Transport {
            http: &self.http,
            retry: &self.options.retry,
            source: source.kind(),
        };
        let token = match source {
            Source::AppService(s) => s.get_token(transport, resource).await,
            Source::Arc(s) => s.get_token(transport, resource).await,
            Source::AzureMl(s) => s.get_token(transport, resource).await,
            Source::CloudShell(s) => s.get_token(transport, resource).await,
            Source::Imds(s) => {
                if self.options.in_chain {
                    self.probe(s, resource).await?;
                }
                s.get_token(transport, resource).await
            }
        }?;
        tracing::debug!(
            source = source.kind().name(),
            expires_in_s = token.expires_in.as_secs(),
            "managed identity token acquired"
        );
        Ok(token)
    }
}

// === impl ManagedIdentityCredentialOptions ===

impl Default for ManagedIdentityCredentialOptions {
    /// The system-assigned identity at the detected endpoint; no probe (a credential used on its own), a 1 s probe
    /// timeout when probing, the Python SDK's retry schedule and the Linux Arc key directory.
    fn default() -> Self {
        Self {
            user_assigned: None,
            endpoint: None,
            in_chain: false,
            probe_timeout: Duration::from_secs(1),
            retry: ImdsRetry::default(),
            arc_key_dir: PathBuf::from(DEFAULT_ARC_KEY_DIR),
        }
    }
}

// === impl ImdsRetry ===

impl ImdsRetry {
    /// The wait before retry `n` (1-based), `gone` once a 410 was seen.
    pub fn delay(&self, n: u32, gone: bool) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let factor = if gone {
            self.gone_backoff
        } else {
            self.backoff
        };
        let exponent = (n - 1).min(31);
        factor
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

impl Default for ImdsRetry {
    /// 5 retries, factor 0.8 s (0, 1.6, 3.2, 6.4, 12.8 s) or 2.5 s after a 410 (0, 5, 10, 20, 40 s), at most 60 s.
    fn default() -> Self {
        Self {
            max_retries: 5,
            backoff: Duration::from_millis(800),
            gone_backoff: Duration::from_millis(2500),
            max_delay: Duration::from_secs(60),
        }
    }
}

// === impl ManagedIdentitySource ===

impl ManagedIdentitySource {
    /// A short name for logs (`app_service`, `azure_arc`, `azure_ml`, `cloud_shell`, `imds`).
    pub fn name(self) -> &'static str {
        match self {
            ManagedIdentitySource::AppService => "app_service",
            ManagedIdentitySource::AzureArc => "azure_arc",
            ManagedIdentitySource::AzureMl => "azure_ml",
            ManagedIdentitySource::CloudShell => "cloud_shell",
            ManagedIdentitySource::Imds => "imds",
        }
    }

    /// How messages name the endpoint.
    fn label(self) -> &'static str {
        match self {
            ManagedIdentitySource::AppService => "the App Service identity endpoint",
            ManagedIdentitySource::AzureArc => "the Azure Arc agent",
            ManagedIdentitySource::AzureMl => "the Azure ML compute identity endpoint",
            ManagedIdentitySource::CloudShell => "the Cloud Shell identity endpoint",
            ManagedIdentitySource::Imds => "IMDS",
        }
    }

    /// Statuses worth retrying: IMDS's documented list (404, 410, 429, 5xx), else the usual transient ones.
    fn retries(self, status: u16) -> bool {
        match self {
            ManagedIdentitySource::Imds => {
                matches!(status, 404 | 410 | 429) || (500..=599).contains(&status)
            }
            _ => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
        }
    }
}

impl fmt::Display for ManagedIdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Source ===

impl Source {
    fn kind(&self) -> ManagedIdentitySource {
        match self {
            Source::AppService(_) => ManagedIdentitySource::AppService,
            Source::Arc(_) => ManagedIdentitySource::AzureArc,
            Source::AzureMl(_) => ManagedIdentitySource::AzureMl,
            Source::CloudShell(_) => ManagedIdentitySource::CloudShell,
            Source::Imds(_) => ManagedIdentitySource::Imds,
        }
    }

    fn url(&self) -> &Uri {
        match self {
            Source::AppService(s) => &s.url,
            Source::Arc(s) => &s.url,
            Source::AzureMl(s) => &s.url,
            Source::CloudShell(s) => &s.url,
            Source::Imds(s) => &s.url,
        }
    }
}

/// Detection in the order of PROTOCOLS §4.1 (azure-identity's, which MSAL Go and the Rust SDK agree with).
fn detect(options: &ManagedIdentityCredentialOptions, env: &dyn Env) -> Result<Source, Problem> {
    let user_assigned = options.user_assigned.as_ref();
    if let Some(identity_endpoint) = env.non_empty("IDENTITY_ENDPOINT") {
        if let Some(header) = env.non_empty("IDENTITY_HEADER") {
            if env.non_empty("IDENTITY_SERVER_THUMBPRINT").is_some() {
                return Err(Problem::Unavailable(
                    "Service Fabric managed identity is not supported (IDENTITY_ENDPOINT, IDENTITY_HEADER and IDENTITY_SERVER_THUMBPRINT are set)"
                        .to_owned(),
                ));
            }
            let url = endpoint_url(options, "IDENTITY_ENDPOINT", &identity_endpoint)?;
            return app_service::AppService::new(url, Secret::new(header), user_assigned)
                .map(Source::AppService);
        }
        if env.non_empty("IMDS_ENDPOINT").is_some() {
            let url = endpoint_url(options, "IDENTITY_ENDPOINT", &identity_endpoint)?;
            return arc::Arc::new(url, options.arc_key_dir.clone(), user_assigned).map(Source::Arc);
        }
        return Err(Problem::Unavailable(
            "IDENTITY_ENDPOINT is set without IDENTITY_HEADER (App Service) or IMDS_ENDPOINT (Azure Arc), so no managed identity source fits"
                .to_owned(),
        ));
    }
    if let Some(msi_endpoint) = env.non_empty("MSI_ENDPOINT") {
        let url = endpoint_url(options, "MSI_ENDPOINT", &msi_endpoint)?;
        return match env.non_empty("MSI_SECRET") {
            Some(secret) => azure_ml::AzureMl::new(
                url,
                Secret::new(secret),
                user_assigned,
                env.non_empty("DEFAULT_IDENTITY_CLIENT_ID"),
            )
            .map(Source::AzureMl),
            None => cloud_shell::CloudShell::new(url, user_assigned).map(Source::CloudShell),
        };
    }
    let url = match &options.endpoint {
        Some(url) => url.clone(),
        None => {
            let base = env.non_empty("AZURE_POD_IDENTITY_AUTHORITY_HOST");
            let base = base.as_deref().unwrap_or(imds::DEFAULT_BASE);
            let text = format!("{}{}", base.trim_end_matches('/'), imds::TOKEN_PATH);
            parse_endpoint("AZURE_POD_IDENTITY_AUTHORITY_HOST", &text)?
        }
    };
    Ok(Source::Imds(imds::Imds::new(url, user_assigned)))
}

/// The configured `endpoint` if any, else the variable's value, which must be an absolute http(s) URL.
fn endpoint_url(
    options: &ManagedIdentityCredentialOptions,
    variable: &str,
    value: &str,
) -> Result<Uri, Problem> {
    match &options.endpoint {
        Some(url) => Ok(url.clone()),
        None => parse_endpoint(variable, value),
    }
}

fn parse_endpoint(variable: &str, value: &str) -> Result<Uri, Problem> {
    // The value is not echoed: endpoint variables are not secret, but a URL may carry userinfo.
    let invalid = || {
        Problem::Invalid(format!(
            "{variable} is not an absolute http:// or https:// URL"
        ))
    };
    let url: Uri = value.trim().parse().map_err(|_| invalid())?;
    let scheme_ok = matches!(url.scheme_str(), Some("http" | "https"));
    if !scheme_ok || url.host().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    Ok(url)
}

/// `scheme://authority/path` of `url`: what messages and logs show (the query may name the identity).
fn without_query(url: &Uri) -> String {
    format!(
        "{}://{}{}",
        url.scheme_str().unwrap_or("http"),
        url.authority()
            .map(http::uri::Authority::as_str)
            .unwrap_or_default(),
        url.path()
    )
}

/// The user-assigned identity as a (parameter name, value) pair, with each source's names.
fn identity_param(
    id: Option<&UserAssignedId>,
    client_id: &'static str,
    object_id: &'static str,
    resource_id: &'static str,
) -> Option<(&'static str, String)> {
    match id? {
        UserAssignedId::ClientId(v) => Some((client_id, v.clone())),
        UserAssignedId::ObjectId(v) => Some((object_id, v.clone())),
        UserAssignedId::ResourceId(v) => Some((resource_id, v.clone())),
    }
}

/// How messages name a user-assigned id kind.
fn id_kind(id: &UserAssignedId) -> &'static str {
    match id {
        UserAssignedId::ClientId(_) => "client_id",
        UserAssignedId::ObjectId(_) => "object_id",
        UserAssignedId::ResourceId(_) => "resource_id",
    }
}

// === impl Call ===

impl Call {
    /// A GET of `base` with `params` appended to its query.
    fn get(base: &Uri, params: &[(&str, &str)]) -> Result<Self, TokenError> {
        Ok(Self {
            method: Method::GET,
            url: with_query(base, params)?,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        })
    }

    /// Adds a header; `sensitive` values are kept out of any debug output of the HTTP stack.
    fn header(
        mut self,
        name: HeaderName,
        value: &str,
        sensitive: bool,
    ) -> Result<Self, TokenError> {
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            TokenError::new(
                TokenErrorKind::CredentialRejected,
                SOURCE,
                format!("the {name} header value contains characters that cannot be sent"),
            )
        })?;
        value.set_sensitive(sensitive);
        self.headers.insert(name, value);
        Ok(self)
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, TokenError> {
        guard_test_url(&self.url);
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.url.clone())
            .body(Full::new(self.body.clone()))
            .map_err(|e| {
                TokenError::service_unavailable(SOURCE, format!("building the token request: {e}"))
            })?;
        *request.headers_mut() = self.headers.clone();
        Ok(request)
    }

    /// `host:port`, for messages.
    fn host(&self) -> String {
        self.url
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default()
    }

    /// The user-assigned identity the call asks for, as `name=value` (IMDS, App Service and Azure ML name it in the
    /// query): what an operator needs to see next to "Identity not found".
    fn identity(&self) -> Option<String> {
        const NAMES: [&str; 6] = [
            "client_id",
            "object_id",
            "principal_id",
            "msi_res_id",
            "mi_res_id",
            "clientid",
        ];
        form_urlencoded::parse(self.url.query()?.as_bytes())
            .find(|(k, _)| NAMES.contains(&k.as_ref()))
            .map(|(k, v)| format!("{k}={v}"))
    }
}

/// `base` with `params` form-encoded and appended to any query it has.
fn with_query(base: &Uri, params: &[(&str, &str)]) -> Result<Uri, TokenError> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name, value);
    }
    let query = query.finish();
    let text = base.to_string();
    let text = match (base.query(), query.is_empty()) {
        (_, true) => text,
        (Some(_), false) => format!("{text}&{query}"),
        (None, false) => format!("{text}?{query}"),
    };
    text.parse().map_err(|_| {
        TokenError::new(
            TokenErrorKind::CredentialRejected,
            SOURCE,
            "the managed identity token URL is not valid",
        )
    })
}

/// Unit tests must never reach the real IMDS (DESIGN §4): any request to 169.254.169.254 fails the test.
#[cfg(test)]
fn guard_test_url(url: &Uri) {
    assert_ne!(
        url.host(),
        Some(imds::LINK_LOCAL_HOST),
        "a test tried to contact the real IMDS: point AZURE_POD_IDENTITY_AUTHORITY_HOST or `endpoint` at 127.0.0.1"
    );
}

#[cfg(not(test))]
fn guard_test_url(_url: &Uri) {}

// === impl Transport ===

impl Transport<'_> {
    /// Sends `call`, retrying transient statuses on the schedule; returns the last response. Transport failures
    /// (refused, reset, timed out) are not retried here: they end the attempt as `TokenServiceUnavailable`, and the
    /// token cache retries with its own backoff.
    async fn send(&self, call: &Call) -> Result<HttpResponse, TokenError> {
        let mut retries = 0;
        let mut gone = false;
        loop {
            let response = self.http.send(call.request()?).await.map_err(|e| {
                TokenError::service_unavailable(
                    SOURCE,
                    format!(
                        "{} at {} unreachable: {e}",
                        self.source.label(),
                        without_query(&call.url)
                    ),
                )
            })?;
            let status = response.status.as_u16();
            if !self.source.retries(status) || retries >= self.retry.max_retries {
                return Ok(response);
            }
            gone |= status == 410;
            retries += 1;
            let asked = retry_after(&response.headers);
            let delay = self
                .retry
                .delay(retries, gone)
                .max(asked.unwrap_or_default());
            if delay > self.retry.max_delay {
                // Asked to wait longer than we would: give up now and pass Retry-After on to the cache.
                return Ok(response);
            }
            tracing::debug!(
                source = self.source.name(),
                status,
                retry = retries,
                delay_ms = delay.as_millis() as u64,
                "managed identity endpoint answered a transient status; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// A success body as a token, or `TokenServiceUnavailable` "unusable response".
    fn token(&self, call: &Call, response: &HttpResponse) -> Result<AccessToken, CredentialError> {
        TokenResponse::parse(&response.body)
            .and_then(|parsed| parsed.into_access_token(SOURCE))
            .map_err(|why| {
                CredentialError::service_unavailable(
                    SOURCE,
                    format!(
                        "{} at {} sent an unusable token response: {why}",
                        self.source.label(),
                        call.host()
                    ),
                )
            })
    }

    /// A non-2xx answer: 408/429/5xx (and IMDS's 404/410) are outages, any other status a rejection.
    fn failure(&self, call: &Call, response: &HttpResponse) -> TokenError {
        let status = response.status.as_u16();
        let kind = if self.source.retries(status) || (500..=599).contains(&status) {
            TokenErrorKind::TokenServiceUnavailable
        } else {
            TokenErrorKind::CredentialRejected
        };
        TokenError::new(kind, SOURCE, self.describe(call, response))
            .with_retry_after(retry_after(&response.headers))
    }

    /// `<endpoint> at <host> answered HTTP <status>[ for <identity>][: <description>]`.
    fn describe(&self, call: &Call, response: &HttpResponse) -> String {
        let mut text = format!(
            "{} at {} answered HTTP {}",
            self.source.label(),
            call.host(),
            response.status.as_u16()
        );
        if let Some(identity) = call.identity() {
            text.push_str(" for the user-assigned identity ");
            text.push_str(&identity);
        }
        if let Some(description) = response::error_description(&response.body) {
            text.push_str(": ");
            text.push_str(&description);
        }
        text
    }
}
