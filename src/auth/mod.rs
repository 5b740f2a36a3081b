//! Credentials: how the proxy obtains Entra ID tokens. Knows nothing about serving HTTP.
//!
//! Every credential kind implements [`TokenCredential`]. A credential answers a [`TokenRequest`] with an
//! [`AccessToken`] or a [`CredentialError`]: `Unavailable` means "not configured or not present here" and lets a
//! [`ChainCredential`] try its next source; `Failed` carries a classified [`TokenError`] and stops the chain.

mod azure_cli;
mod azure_developer_cli;
mod azure_powershell;
mod build;
mod certificate_file;
mod chain;
pub(crate) mod claims;
mod client_certificate;
mod client_secret;
mod delegate;
mod developer_tool;
pub(crate) mod device_code;
mod entra_error;
mod environment;
mod error;
pub(crate) mod expiry;
mod http;
mod interactive_browser;
mod lenient_json;
mod managed_identity;
mod process;
mod sdk_auth_file;
#[cfg(test)]
mod test_support;
mod token_endpoint;
mod token_response;
mod workload_identity;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use crate::secret::Secret;
pub use azure_cli::{AzureCliCredential, AzureCliCredentialOptions};
pub use azure_developer_cli::{AzureDeveloperCliCredential, AzureDeveloperCliCredentialOptions};
pub use azure_powershell::{AzurePowerShellCredential, AzurePowerShellCredentialOptions};
pub use build::{CredentialOptions, CredentialSet, build_credentials, build_credentials_in};
pub use certificate_file::ClientCertificate;
pub use chain::{ChainCredential, ChainSource};
pub use claims::{ClaimsChallengeError, decode_claims_challenge};
pub use client_certificate::{ClientCertificateCredential, ClientCertificateCredentialOptions};
pub use client_secret::{ClientSecretCredential, ClientSecretCredentialOptions};
pub use delegate::DelegateCredential;
pub use developer_tool::DeveloperToolCredentialOptions;
pub use device_code::{
    DEFAULT_CLIENT_ID, DEFAULT_TENANT, DeviceCodeCredential, DeviceCodeCredentialOptions,
    DeviceCodePrompt, LoginError, LoginOutcome, PollClock, TokioClock,
};
pub use entra_error::AadError;
pub use environment::EnvironmentCredential;
pub use error::{Attempt, TokenError, TokenErrorKind};
pub(crate) use http::retry_after;
pub use http::{HttpClientOptions, TokenHttpClient};
pub use interactive_browser::{InteractiveBrowserCredential, InteractiveBrowserCredentialOptions};
pub use managed_identity::{
    DEFAULT_ARC_KEY_DIR, ImdsRetry, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    ManagedIdentitySource, UserAssignedId,
};
pub use sdk_auth_file::{SdkAuthFileCredential, SdkAuthFileCredentialOptions};
pub use token_endpoint::EntraClient;
pub use workload_identity::{WorkloadIdentityCredential, WorkloadIdentityCredentialOptions};

/// For [`crate::fuzzing`] only.
pub(crate) use token_response::parse_token_response;

/// A boxed, sendable future (credentials are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that can obtain access tokens, as the token cache and chains hold it (`Arc<dyn TokenCredential>`).
/// Credential kinds implement [`Credential`] instead, and get this through the blanket impl.
pub trait TokenCredential: Send + Sync + fmt::Debug {
    /// Obtains a fresh token for `request` (the cache decides when to call this).
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<AccessToken, CredentialError>>;

    /// The credential's kind, as written in configuration (`client_secret`, `chain`, …).
    fn kind(&self) -> &'static str;
}

/// What each credential kind implements: its kind and an `async` token request. Every `Credential` is a
/// [`TokenCredential`]; the blanket impl boxes the future so that credentials can be used as trait objects.
pub trait Credential: Send + Sync + fmt::Debug {
    /// The kind, as written in configuration (`client_secret`, `chain`, …).
    const KIND: &'static str;

    /// Obtains a fresh token for `request` (the cache decides when to call this).
    fn token(
        &self,
        request: &TokenRequest,
    ) -> impl Future<Output = Result<AccessToken, CredentialError>> + Send;
}

/// What a token is requested for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenRequest {
    /// One scope, e.g. `https://management.azure.com/.default`.
    pub scope: Arc<str>,
    /// A claims JSON document from a claims challenge. Credentials that cannot send claims refuse the request.
    pub claims: Option<Arc<str>>,
    /// Advertise the `CP1` client capability (merged into the `claims` parameter by credentials that send one).
    pub client_capabilities: bool,
}

/// A token as a credential returns it.
#[derive(Debug)]
pub struct AccessToken {
    /// The bearer token.
    pub token: Secret,
    /// Lifetime from the moment the request was sent.
    pub expires_in: Duration,
    /// When Entra ID suggests refreshing (`refresh_in`), if it said.
    pub refresh_in: Option<Duration>,
    /// The source that produced it: the credential kind, or for chains the winning source's name.
    pub source: Arc<str>,
}

/// Why a credential produced no token.
#[derive(Debug)]
pub enum CredentialError {
    /// Not configured or not present here (a chain moves on to its next source): every source consulted, and why.
    Unavailable(Vec<Attempt>),
    /// Present but failed: rejected, blocked by policy, or the token service is unreachable.
    Failed(TokenError),
}

/// Why a credential cannot serve, found when it was built (missing settings, a bad file) and reported on every
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// Not configured or not present here: `Unavailable`, so a chain moves on.
    Unavailable(String),
    /// Present but wrong (a malformed setting or file): `CredentialRejected`, so a chain stops.
    Invalid(String),
}

// === impl Credential ===

impl<C: Credential> TokenCredential for C {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(self.token(request))
    }

    fn kind(&self) -> &'static str {
        C::KIND
    }
}

// === impl Unusable ===

impl Unusable {
    /// The error every request from `source` gets.
    pub(crate) fn error(&self, source: &str) -> CredentialError {
        match self {
            Unusable::Unavailable(reason) => CredentialError::unavailable(source, reason.clone()),
            Unusable::Invalid(reason) => CredentialError::rejected(source, reason.clone()),
        }
    }
}

// === impl TokenRequest ===

impl TokenRequest {
    /// A request for `scope` without claims.
    pub fn new(scope: impl Into<Arc<str>>) -> Self {
        Self {
            scope: scope.into(),
            claims: None,
            client_capabilities: false,
        }
    }

    /// Also asks for `claims` (a JSON document, e.g. from a claims challenge).
    pub fn with_claims(mut self, claims: Option<String>) -> Self {
        self.claims = claims.map(Into::into);
        self
    }

    /// Sets whether the `CP1` client capability is advertised.
    pub fn with_client_capabilities(mut self, on: bool) -> Self {
        self.client_capabilities = on;
        self
    }

    /// The `claims` form parameter: the challenge's claims merged with the client capabilities, if any.
    pub fn claims_parameter(&self) -> Option<String> {
        claims::parameter(self.claims.as_deref(), self.client_capabilities)
    }
}

// === impl CredentialError ===

impl CredentialError {
    /// An `Unavailable` error from one source.
    pub fn unavailable(source: impl Into<String>, reason: impl Into<String>) -> Self {
        CredentialError::Unavailable(vec![Attempt {
            source: source.into(),
            reason: reason.into(),
        }])
    }

    /// A `Failed` error: `source` is present but its settings or files are wrong, or the service refused it.
    pub fn rejected(source: impl Into<String>, message: impl Into<String>) -> Self {
        CredentialError::Failed(TokenError::rejected(source, message))
    }

    /// A `Failed` error: the token service (or tool) behind `source` is unreachable, failing or unusable.
    pub fn service_unavailable(source: impl Into<String>, message: impl Into<String>) -> Self {
        CredentialError::Failed(TokenError::service_unavailable(source, message))
    }

    /// Converts to the error callers see: `Unavailable` becomes `CredentialUnavailable` listing every attempt.
    pub fn into_token_error(self) -> TokenError {
        match self {
            CredentialError::Failed(e) => e,
            CredentialError::Unavailable(attempts) => {
                let source = match attempts.as_slice() {
                    [one] => one.source.clone(),
                    _ => "chain".to_owned(),
                };
                let mut e = TokenError::new(
                    TokenErrorKind::CredentialUnavailable,
                    source,
                    format!(
                        "no credential source can provide a token: {}",
                        Attempt::summary(&attempts)
                    ),
                );
                e.attempts = attempts;
                e
            }
        }
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::Unavailable(attempts) => {
                write!(f, "unavailable: {}", Attempt::summary(attempts))
            }
            CredentialError::Failed(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for CredentialError {}

impl From<TokenError> for CredentialError {
    /// A classified failure is `Failed`: it stops a chain.
    fn from(e: TokenError) -> Self {
        CredentialError::Failed(e)
    }
}

/// True for a syntactically valid tenant id (`[A-Za-z0-9.-]+`).
pub(crate) fn is_valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// True when `needle` occurs in `haystack` (a tool's output, a certificate file).
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `fixed`, then `flag value` for each flag that has a value: a tool's argument vector, or, joined with spaces, the
/// command a message tells the user to run.
pub(crate) fn words(fixed: &[&str], flags: &[(&str, Option<&str>)]) -> Vec<String> {
    let mut words: Vec<String> = fixed.iter().map(|w| (*w).to_owned()).collect();
    for (flag, value) in flags {
        if let Some(value) = value {
            words.extend([(*flag).to_owned(), (*value).to_owned()]);
        }
    }
    words
}

/// Converts a `…/.default` scope to the v1 resource it names (`https://management.azure.com/.default` →
/// `https://management.azure.com`), as managed identity and the Azure CLI expect.
pub(crate) fn scope_to_resource(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}
