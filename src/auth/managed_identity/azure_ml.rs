//! Azure ML compute instances and clusters (PROTOCOLS §4.4): the 2017-09-01 MSI protocol.
//!
//! `GET {MSI_ENDPOINT}?api-version=2017-09-01&resource=…&clientid=…` with `secret: {MSI_SECRET}` (and
//! `Metadata: true`, as the Azure ML docs' curl example sends). `clientid` has no underscore; it defaults to
//! `DEFAULT_IDENTITY_CLIENT_ID` (the compute's assigned identity) as MSAL Go, MSAL-node and azidentity do.
//! `expires_on` may be an epoch or a legacy date string.

use http::{HeaderName, Uri};

use super::{Call, Problem, Transport, UserAssignedId, id_kind};
use crate::auth::{AccessToken, CredentialError, Secret};

const API_VERSION: &str = "2017-09-01";

/// The Azure ML compute source.
#[derive(Debug)]
pub(super) struct AzureMl {
    pub(super) url: Uri,
    secret: Secret,
    /// `clientid`: the configured client id, else `DEFAULT_IDENTITY_CLIENT_ID`.
    pub(super) client_id: Option<String>,
}

// === impl AzureMl ===

impl AzureMl {
    /// Fails (unavailable) for an object or resource id: this endpoint only knows client ids.
    pub(super) fn new(
        url: Uri,
        secret: Secret,
        user_assigned: Option<&UserAssignedId>,
        default_client_id: Option<String>,
    ) -> Result<Self, Problem> {
        let client_id = match user_assigned {
            None => default_client_id,
            Some(UserAssignedId::ClientId(id)) => Some(id.clone()),
            Some(other) => {
                return Err(Problem::Unavailable(format!(
                    "Azure ML compute managed identity (MSI_ENDPOINT + MSI_SECRET) selects a user-assigned identity by client_id only; {} is not supported",
                    id_kind(other)
                )));
            }
        };
        Ok(Self {
            url,
            secret,
            client_id,
        })
    }

    /// The token request as sent.
    pub(super) fn call(&self, resource: &str) -> Result<Call, CredentialError> {
        let mut params = vec![("api-version", API_VERSION), ("resource", resource)];
        if let Some(id) = &self.client_id {
            params.push(("clientid", id));
        }
        Call::get(&self.url, &params)
            .and_then(|c| {
                c.header(
                    HeaderName::from_static("secret"),
                    self.secret.expose(),
                    true,
                )
            })
            .and_then(|c| c.header(HeaderName::from_static("metadata"), "true", false))
            .map_err(CredentialError::Failed)
    }

    /// Requests a token; non-2xx answers are failures (the source is clearly present).
    pub(super) async fn get_token(
        &self,
        transport: Transport<'_>,
        resource: &str,
    ) -> Result<AccessToken, CredentialError> {
        let call = self.call(resource)?;
        let response = transport
            .send(&call)
            .await
            .map_err(CredentialError::Failed)?;
        if response.status.is_success() {
            return transport.token(&call, &response);
        }
        Err(CredentialError::Failed(transport.failure(&call, &response)))
    }
}
