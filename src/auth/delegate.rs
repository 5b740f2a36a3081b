//! A source settled when it was built: the credential it stands for (a service principal described by environment
//! variables or by a file), or the reason it cannot serve here, said every time it is asked.

use std::sync::Arc;

use super::{AccessToken, BoxFuture, CredentialError, TokenCredential, TokenRequest, Unusable};

/// The `environment` and `sdk_auth_file` sources, and a chain source that cannot serve (e.g. one that needs
/// `$HOME` when it is unset).
#[derive(Debug)]
pub struct DelegateCredential {
    kind: &'static str,
    inner: Result<Arc<dyn TokenCredential>, Unusable>,
}

// === impl DelegateCredential ===

impl DelegateCredential {
    /// A `kind` source answered by `inner`, or refused for its reason.
    pub(crate) fn new(
        kind: &'static str,
        inner: Result<Arc<dyn TokenCredential>, Unusable>,
    ) -> Self {
        Self { kind, inner }
    }

    /// A `kind` source that is unavailable because of `reason`.
    pub(crate) fn unavailable(kind: &'static str, reason: impl Into<String>) -> Self {
        Self::new(kind, Err(Unusable::Unavailable(reason.into())))
    }
}

impl TokenCredential for DelegateCredential {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        match &self.inner {
            Ok(inner) => inner.get_token(request),
            Err(why) => {
                let error = why.error(self.kind);
                Box::pin(async move { Err(error) })
            }
        }
    }

    fn kind(&self) -> &'static str {
        self.kind
    }
}
