//! A source that cannot serve here, with the reason it says every time it is asked.

use super::{AccessToken, BoxFuture, CredentialError, TokenCredential, TokenRequest};

/// Always `Unavailable`, with a fixed reason (e.g. a chain source that needs `$HOME` when it is unset).
#[derive(Debug)]
pub(crate) struct UnavailableCredential {
    kind: &'static str,
    reason: String,
}

// === impl UnavailableCredential ===

impl UnavailableCredential {
    /// A `kind` source that is unavailable because of `reason`.
    pub(crate) fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

impl TokenCredential for UnavailableCredential {
    fn get_token<'a>(
        &'a self,
        _request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        let error = CredentialError::unavailable(self.kind, self.reason.clone());
        Box::pin(async move { Err(error) })
    }

    fn kind(&self) -> &'static str {
        self.kind
    }
}
