//! A service principal authenticating with a client secret.

use super::token_endpoint::ClientAuth;
use super::{AccessToken, Credential, CredentialError, EntraClient, Secret, TokenRequest};

/// `client_secret` credentials: the client-credentials grant with `client_secret=`. `Debug` shows the secret
/// redacted.
#[derive(Debug)]
pub struct ClientSecretCredential {
    options: ClientSecretCredentialOptions,
    entra: EntraClient,
    source: &'static str,
}

/// Settings of a [`ClientSecretCredential`] (`client_secret: { tenant_id, client_id, client_secret |
/// client_secret_file }` in configuration).
#[derive(Debug)]
pub struct ClientSecretCredentialOptions {
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// The secret, from the inline value or the file.
    pub client_secret: Secret,
}

// === impl ClientSecretCredential ===

impl ClientSecretCredential {
    /// A credential for `options.client_id` in `options.tenant_id`.
    pub fn new(options: ClientSecretCredentialOptions, entra: EntraClient) -> Self {
        Self {
            options,
            entra,
            source: Self::KIND,
        }
    }

    /// Reports tokens and errors as coming from `source` (e.g. `environment`).
    pub fn with_source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }
}

impl Credential for ClientSecretCredential {
    const KIND: &'static str = "client_secret";

    async fn token(&self, request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        let options = &self.options;
        let auth = ClientAuth::Secret(&options.client_secret);
        self.entra
            .client_credentials(
                self.source,
                &options.tenant_id,
                &options.client_id,
                auth,
                request,
            )
            .await
    }
}
