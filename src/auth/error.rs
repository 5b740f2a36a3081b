//! The classified token failure that the cache shares with every waiter and the proxy turns into a response.

use std::fmt;
use std::time::Duration;

use super::AadError;

/// A classified failure to obtain a token. Its text never contains a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// What kind of failure, which decides the caller's status and error code.
    pub kind: TokenErrorKind,
    /// A one-line, human-readable explanation (for Entra ID errors: the first line of `error_description`).
    pub message: String,
    /// The configured credential name (filled in by the layer that knows it).
    pub credential: String,
    /// The source that failed (`client_secret`, `environment`, `managed_identity`, …).
    pub source: String,
    /// Entra ID's error fields, verbatim, when the failure came from Entra ID.
    pub aad: Option<Box<AadError>>,
    /// How long the token service asked us to wait.
    pub retry_after: Option<Duration>,
    /// For chains: every source tried and what it said.
    pub attempts: Vec<Attempt>,
}

/// The kinds of token failure, one per error code the proxy answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenErrorKind {
    /// Entra ID refused for a Conditional Access / device / location / app policy.
    ConditionalAccessBlocked,
    /// MFA, step-up or re-sign-in is needed (or a claims challenge the credential cannot satisfy).
    InteractionRequired,
    /// Entra ID rejected the proxy's own credential or request (bad secret, unknown app or tenant, bad scope).
    CredentialRejected,
    /// No source can produce a token here.
    CredentialUnavailable,
    /// The token service is unreachable, failing, throttling or too slow.
    TokenServiceUnavailable,
    /// Azure Resource Manager refused the identity an action it needs (an online endpoint's `listKeys` or
    /// `token`, reading the endpoint or workspace): the message names the missing action.
    AuthorizationFailed,
    /// Azure Resource Manager says the online endpoint or workspace a route names does not exist.
    ResourceNotFound,
}

/// One source's outcome inside a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The source name.
    pub source: String,
    /// Why it could not serve.
    pub reason: String,
}

// === impl TokenError ===

impl TokenError {
    /// A failure without Entra ID details.
    pub fn new(
        kind: TokenErrorKind,
        source: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            credential: String::new(),
            source: source.into(),
            aad: None,
            retry_after: None,
            attempts: Vec::new(),
        }
    }

    /// The token service is unavailable.
    pub fn service_unavailable(source: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(TokenErrorKind::TokenServiceUnavailable, source, message)
    }

    /// A `CredentialRejected` error: the settings or files of `source` are wrong, or the service refused them.
    pub fn rejected(source: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(TokenErrorKind::CredentialRejected, source, message)
    }

    /// Sets the configured credential name.
    pub fn with_credential(mut self, name: &str) -> Self {
        name.clone_into(&mut self.credential);
        self
    }

    /// Sets `retry_after`.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// True for failures that a later attempt can cure by itself (outages, throttling, timeouts).
    pub fn is_transient(&self) -> bool {
        self.kind == TokenErrorKind::TokenServiceUnavailable
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for TokenError {}

// === impl Attempt ===

impl Attempt {
    /// `source: reason; source: reason`.
    pub fn summary(attempts: &[Attempt]) -> String {
        attempts
            .iter()
            .map(|a| format!("{}: {}", a.source, a.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

// === impl TokenErrorKind ===

impl TokenErrorKind {
    /// The error code the proxy answers with (`x-aml-auth-proxy-error` and the JSON `error`).
    pub fn code(self) -> &'static str {
        match self {
            TokenErrorKind::ConditionalAccessBlocked => "ConditionalAccessBlocked",
            TokenErrorKind::InteractionRequired => "InteractionRequired",
            TokenErrorKind::CredentialRejected => "CredentialRejected",
            TokenErrorKind::CredentialUnavailable => "CredentialUnavailable",
            TokenErrorKind::TokenServiceUnavailable => "TokenServiceUnavailable",
            TokenErrorKind::AuthorizationFailed => "AuthorizationFailed",
            TokenErrorKind::ResourceNotFound => "ResourceNotFound",
        }
    }
}

impl fmt::Display for TokenErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
