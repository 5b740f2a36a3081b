//! Credential kinds this version validates but cannot use yet. They say so plainly and never pretend.

use super::{AccessToken, BoxFuture, CredentialError, TokenCredential, TokenRequest};

/// A credential kind that is configured correctly but not implemented in this version: always `Unavailable`.
#[derive(Debug)]
pub struct UnsupportedCredential {
    kind: &'static str,
}

// === impl UnsupportedCredential ===

impl UnsupportedCredential {
    /// A placeholder for `kind`.
    pub fn new(kind: &'static str) -> Self {
        Self { kind }
    }

    /// What callers and logs are told.
    pub fn reason(&self) -> String {
        format!(
            "{} credentials are not supported by aml-auth-proxy {} yet",
            self.kind,
            env!("CARGO_PKG_VERSION")
        )
    }
}

impl TokenCredential for UnsupportedCredential {
    fn get_token<'a>(
        &'a self,
        _request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        let error = CredentialError::unavailable(self.kind, self.reason());
        Box::pin(async move { Err(error) })
    }

    fn kind(&self) -> &'static str {
        self.kind
    }
}
