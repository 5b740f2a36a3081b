//! App Service, Functions and Container Apps (PROTOCOLS §4.3), api-version 2019-08-01.
//!
//! `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…[&client_id|principal_id|mi_res_id]` with
//! `X-IDENTITY-HEADER: {IDENTITY_HEADER}` and `Metadata: true` (unneeded by App Service, needed by Azure Automation,
//! sent by MSAL and the Rust SDK). The answer carries `expires_on` only, as an epoch string.

use http::{HeaderName, Uri};

use super::{Call, Problem, Transport, UserAssignedId, identity_param};
use crate::auth::{AccessToken, CredentialError, Secret};

const API_VERSION: &str = "2019-08-01";

/// The App Service source.
#[derive(Debug)]
pub(super) struct AppService {
    pub(super) url: Uri,
    header: Secret,
    /// `client_id`, `principal_id` (the documented name; `object_id` is its alias) or `mi_res_id`.
    identity: Option<(&'static str, String)>,
}

// === impl AppService ===

impl AppService {
    /// The endpoint at `url`, authenticated by `header` (`IDENTITY_HEADER`); every user-assigned id kind works.
    pub(super) fn new(
        url: Uri,
        header: Secret,
        user_assigned: Option<&UserAssignedId>,
    ) -> Result<Self, Problem> {
        Ok(Self {
            url,
            header,
            identity: identity_param(user_assigned, "client_id", "principal_id", "mi_res_id"),
        })
    }

    /// The token request as sent.
    pub(super) fn call(&self, resource: &str) -> Result<Call, CredentialError> {
        let mut params = vec![("api-version", API_VERSION), ("resource", resource)];
        if let Some((name, value)) = &self.identity {
            params.push((name, value));
        }
        Call::get(&self.url, &params)
            .and_then(|c| {
                c.header(
                    HeaderName::from_static("x-identity-header"),
                    self.header.expose(),
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
