//! A service principal authenticating with a client secret (PROTOCOLS §1).

use super::entra::ClientAuth;
use super::{
    AccessToken, BoxFuture, CredentialError, EntraClient, Secret, TokenCredential, TokenRequest,
};

/// `client_secret` credentials: the client-credentials grant with `client_secret=`.
pub struct ClientSecretCredential {
    tenant_id: String,
    client_id: String,
    secret: Secret,
    entra: EntraClient,
    source: &'static str,
}

// === impl ClientSecretCredential ===

impl ClientSecretCredential {
    /// A credential for `client_id` in `tenant_id`.
    pub fn new(tenant_id: String, client_id: String, secret: Secret, entra: EntraClient) -> Self {
        Self {
            tenant_id,
            client_id,
            secret,
            entra,
            source: "client_secret",
        }
    }

    /// Reports tokens and errors as coming from `source` (e.g. `environment`).
    pub fn with_source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }
}

impl std::fmt::Debug for ClientSecretCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecretCredential")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("secret", &self.secret)
            .field("authority", &self.entra.authority().to_string())
            .finish()
    }
}

impl TokenCredential for ClientSecretCredential {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        Box::pin(self.entra.client_credentials(
            self.source,
            &self.tenant_id,
            &self.client_id,
            ClientAuth::Secret(&self.secret),
            request,
        ))
    }

    fn kind(&self) -> &'static str {
        "client_secret"
    }
}
