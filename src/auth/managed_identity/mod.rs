//! Managed identity: tokens from the host's identity endpoint, whichever kind of Azure host this is.
//!
//! The source is detected once, at construction, from environment variables in the Azure SDKs' order:
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
//! `managed_identity.endpoint` replaces the full token URL of the detected source. How each source asks for a
//! token is one description in `endpoint`; this module holds detection, the credential, and the path every source
//! shares: send (retrying transient statuses), read the token, classify a refusal. Azure Arc's challenge is in
//! `arc`.
//!
//! What is *unavailable* (a chain moves on) and what *failed* (a chain stops):
//! * unavailable: no source fits (`IDENTITY_ENDPOINT` alone, Service Fabric), the configured user-assigned id
//!   cannot be expressed to the detected source, the IMDS probe got no answer, IMDS answered 400 (no identity, or
//!   not the requested one, is assigned here) or 403 "unreachable" (Docker Desktop's proxy);
//! * failed, `TokenServiceUnavailable`: transport errors after the probe, timeouts, 404/410/429/5xx once the
//!   retries are spent, a 200 whose body is no usable token;
//! * failed, `CredentialRejected`: a malformed endpoint variable, any other 4xx, an Azure Arc challenge that is
//!   missing or names a key file outside the agent's directory.

mod arc;
mod endpoint;
mod error_body;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use self::endpoint::{Call, Endpoint, IMDS_BASE, IMDS_TOKEN_PATH};
use super::http::{HttpResponse, TokenHttpClient, retry_after};
use super::{
    AccessToken, Credential, CredentialError, Secret, TokenError, TokenErrorKind, TokenRequest,
    Unusable, contains, parse_token_response, scope_to_resource,
};
use crate::env::Env;

/// Where the Azure Connected Machine agent keeps its challenge key files on Linux.
pub const DEFAULT_ARC_KEY_DIR: &str = "/var/opt/azcmagent/tokens";

/// The kind (and token source name) of this credential.
const SOURCE: &str = "managed_identity";

/// The `managed_identity` credential.
#[derive(Debug)]
pub struct ManagedIdentityCredential {
    endpoint: Result<Endpoint, Unusable>,
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

/// The retry schedule for transient answers (as azure-identity for Python does it).
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

// === impl ManagedIdentityCredential ===

impl ManagedIdentityCredential {
    /// Detects the source from `env` (see the module docs) for the identity `options` names. Detection never
    /// fails: a source that cannot be used answers every request with the reason.
    pub fn new(
        options: ManagedIdentityCredentialOptions,
        env: &dyn Env,
        http: TokenHttpClient,
    ) -> Self {
        let endpoint = detect(&options, env);
        match &endpoint {
            Ok(e) => {
                tracing::debug!(source = e.kind.name(), endpoint = %without_query(&e.url), "managed identity source detected");
            }
            Err(Unusable::Unavailable(reason) | Unusable::Invalid(reason)) => {
                tracing::debug!(reason = %reason, "no usable managed identity source");
            }
        }
        Self {
            endpoint,
            http,
            options,
            probed: tokio::sync::OnceCell::new(),
        }
    }

    /// The detected source, if one is usable.
    pub fn source(&self) -> Option<ManagedIdentitySource> {
        self.endpoint.as_ref().ok().map(|e| e.kind)
    }

    /// The token URL requests go to (before the query is added), if a source is usable.
    pub fn endpoint(&self) -> Option<&Uri> {
        self.endpoint.as_ref().ok().map(|e| &e.url)
    }

    /// Probes IMDS until one probe gets an answer (any HTTP answer proves IMDS is there; IMDS says 400 "Required
    /// metadata header not specified"); concurrent callers share one probe. The probe is the token request
    /// without the `Metadata` header, sent once with the probe timeout.
    async fn probe(&self, imds: &Endpoint, resource: &str) -> Result<(), CredentialError> {
        let http = self.http.with_attempt_timeout(self.options.probe_timeout);
        let probe = || async {
            let response = http
                .send(imds.probe(resource)?.attempt())
                .await
                .map_err(|e| {
                    let message =
                        format!("no response from IMDS at {}: {e}", without_query(&imds.url));
                    CredentialError::unavailable(SOURCE, message)
                })?;
            tracing::debug!(status = response.status.as_u16(), "IMDS answered the probe");
            Ok(())
        };
        self.probed.get_or_try_init(probe).await.map(|_| ())
    }

    /// Sends `call`, retrying transient statuses on the schedule; returns the last response. Transport failures
    /// (refused, reset, timed out) are not retried here: they end the attempt as `TokenServiceUnavailable`, and the
    /// token cache retries with its own backoff.
    async fn send(&self, call: &Call) -> Result<HttpResponse, TokenError> {
        let retry = &self.options.retry;
        let (mut retries, mut gone) = (0, false);
        loop {
            let response = self.http.send(call.attempt()).await.map_err(|e| {
                let url = without_query(call.request.uri());
                let message = format!("{} at {url} unreachable: {e}", call.kind.label());
                TokenError::service_unavailable(SOURCE, message)
            })?;
            let status = response.status.as_u16();
            if !call.kind.retries(status) || retries >= retry.max_retries {
                return Ok(response);
            }
            gone |= status == 410;
            retries += 1;
            let asked = retry_after(&response.headers).unwrap_or_default();
            let delay = retry.delay(retries, gone).max(asked);
            if delay > retry.max_delay {
                // Asked to wait longer than we would: give up now and pass Retry-After on to the cache.
                return Ok(response);
            }
            tracing::debug!(
                source = call.kind.name(),
                status,
                retry = retries,
                delay_ms = delay.as_millis() as u64,
                "managed identity endpoint answered a transient status; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Sends `call` and reads the answer: the token, or why there is none (see the module docs).
    async fn fetch(&self, call: &Call) -> Result<AccessToken, CredentialError> {
        let response = self.send(call).await?;
        if !response.status.is_success() {
            return Err(refusal(call, &response));
        }
        let (token, _) = parse_token_response(&response.body, SOURCE).map_err(|why| {
            let (label, host) = (call.kind.label(), call.host());
            let message = format!("{label} at {host} sent an unusable token response: {why}");
            CredentialError::service_unavailable(SOURCE, message)
        })?;
        Ok(token)
    }
}

impl Credential for ManagedIdentityCredential {
    const KIND: &'static str = SOURCE;

    async fn token(&self, request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        let endpoint = self.endpoint.as_ref().map_err(|why| why.error(SOURCE))?;
        // Managed identity cannot satisfy a claims challenge; a fresh request is the best it can do.
        let resource = scope_to_resource(&request.scope);
        if endpoint.kind == ManagedIdentitySource::Imds && self.options.in_chain {
            self.probe(endpoint, resource).await?;
        }
        let call = endpoint.call(resource)?;
        let token = match endpoint.kind {
            ManagedIdentitySource::AzureArc => arc::get_token(self, &call).await,
            _ => self.fetch(&call).await,
        }?;
        tracing::debug!(
            source = endpoint.kind.name(),
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

/// Detection in the order of the module docs (azure-identity's, which MSAL Go and the Rust SDK agree with). The
/// configured `endpoint`, if any, replaces the URL a variable gives, which must be an absolute http(s) URL.
fn detect(options: &ManagedIdentityCredentialOptions, env: &dyn Env) -> Result<Endpoint, Unusable> {
    let user_assigned = options.user_assigned.as_ref();
    let url = |variable: &str, value: &str| match &options.endpoint {
        Some(url) => Ok(url.clone()),
        None => parse_endpoint(variable, value),
    };
    if let Some(identity_endpoint) = env.non_empty("IDENTITY_ENDPOINT") {
        let endpoint_url = || url("IDENTITY_ENDPOINT", &identity_endpoint);
        if let Some(header) = env.non_empty("IDENTITY_HEADER") {
            if env.non_empty("IDENTITY_SERVER_THUMBPRINT").is_some() {
                return Err(Unusable::Unavailable(
                    "Service Fabric managed identity is not supported (IDENTITY_ENDPOINT, IDENTITY_HEADER and IDENTITY_SERVER_THUMBPRINT are set)"
                        .to_owned(),
                ));
            }
            return Ok(Endpoint::app_service(
                endpoint_url()?,
                Secret::new(header),
                user_assigned,
            ));
        }
        if env.non_empty("IMDS_ENDPOINT").is_some() {
            return Endpoint::arc(endpoint_url()?, user_assigned);
        }
        return Err(Unusable::Unavailable(
            "IDENTITY_ENDPOINT is set without IDENTITY_HEADER (App Service) or IMDS_ENDPOINT (Azure Arc), so no managed identity source fits"
                .to_owned(),
        ));
    }
    if let Some(msi_endpoint) = env.non_empty("MSI_ENDPOINT") {
        let url = url("MSI_ENDPOINT", &msi_endpoint)?;
        return match env.non_empty("MSI_SECRET") {
            Some(secret) => Endpoint::azure_ml(
                url,
                Secret::new(secret),
                user_assigned,
                env.non_empty("DEFAULT_IDENTITY_CLIENT_ID"),
            ),
            None => Endpoint::cloud_shell(url, user_assigned),
        };
    }
    let base = env.non_empty("AZURE_POD_IDENTITY_AUTHORITY_HOST");
    let base = base.as_deref().unwrap_or(IMDS_BASE);
    let text = format!("{}{IMDS_TOKEN_PATH}", base.trim_end_matches('/'));
    let url = url("AZURE_POD_IDENTITY_AUTHORITY_HOST", &text)?;
    Ok(Endpoint::imds(url, user_assigned))
}

fn parse_endpoint(variable: &str, value: &str) -> Result<Uri, Unusable> {
    let url = value.trim().parse::<Uri>().ok().filter(|url| {
        matches!(url.scheme_str(), Some("http" | "https"))
            && url.host().is_some_and(|h| !h.is_empty())
    });
    // The value is not echoed: endpoint variables are not secret, but a URL may carry userinfo.
    url.ok_or_else(|| {
        Unusable::Invalid(format!(
            "{variable} is not an absolute http:// or https:// URL"
        ))
    })
}

/// `scheme://authority/path` of `url`: what messages and logs show (the query may name the identity).
fn without_query(url: &Uri) -> String {
    let (scheme, path) = (url.scheme_str().unwrap_or("http"), url.path());
    let authority = url.authority().map_or("", |a| a.as_str());
    format!("{scheme}://{authority}{path}")
}

/// A non-2xx answer. IMDS's 400 and Docker Desktop's 403 "unreachable" say the source is not usable here
/// (azure-identity and azidentity treat them as unavailable so that chains go on); 408/429/5xx (and IMDS's
/// 404/410) are outages, any other status a rejection.
fn refusal(call: &Call, response: &HttpResponse) -> CredentialError {
    let status = response.status.as_u16();
    let imds = call.kind == ManagedIdentitySource::Imds;
    if imds && status == 400 {
        // IMDS says 400 when managed identity is disabled here or the requested identity is not assigned.
        let hint = match call.identity {
            Some(_) => "the requested user-assigned identity is not assigned to this resource",
            None => "no managed identity is assigned to this resource",
        };
        let message = format!("{} ({hint})", describe(call, response));
        return CredentialError::unavailable(SOURCE, message);
    }
    if imds && status == 403 && contains(&response.body.to_ascii_lowercase(), b"unreachable") {
        // Docker Desktop's proxy answers for 169.254.169.254 with 403 "… unreachable".
        let message = format!(
            "IMDS at {} is unreachable from here (a proxy answered HTTP 403)",
            call.host()
        );
        return CredentialError::unavailable(SOURCE, message);
    }
    let kind = if call.kind.retries(status) || (500..=599).contains(&status) {
        TokenErrorKind::TokenServiceUnavailable
    } else {
        TokenErrorKind::CredentialRejected
    };
    let error = TokenError::new(kind, SOURCE, describe(call, response));
    CredentialError::Failed(error.with_retry_after(retry_after(&response.headers)))
}

/// `<endpoint> at <host> answered HTTP <status>[ for <identity>][: <description>]`.
fn describe(call: &Call, response: &HttpResponse) -> String {
    let (label, host, status) = (call.kind.label(), call.host(), response.status.as_u16());
    let mut text = format!("{label} at {host} answered HTTP {status}");
    if let Some(identity) = &call.identity {
        text = format!("{text} for the user-assigned identity {identity}");
    }
    if let Some(description) = error_body::error_description(&response.body) {
        text = format!("{text}: {description}");
    }
    text
}
