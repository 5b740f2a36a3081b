//! Azure Cloud Shell (PROTOCOLS §4.5): `MSI_ENDPOINT` without `MSI_SECRET`.
//!
//! `POST {MSI_ENDPOINT}` with `Metadata: true` and the form `resource=…`. The tokens are the signed-in user's,
//! so there is no user-assigned identity to choose.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, Method, Uri};

use super::{Call, Problem, Transport, UserAssignedId, id_kind};
use crate::auth::{AccessToken, CredentialError};

/// The Cloud Shell source.
#[derive(Debug)]
pub(super) struct CloudShell {
    pub(super) url: Uri,
}

// === impl CloudShell ===

impl CloudShell {
    /// Fails (unavailable) for any user-assigned identity.
    pub(super) fn new(url: Uri, user_assigned: Option<&UserAssignedId>) -> Result<Self, Problem> {
        if let Some(id) = user_assigned {
            return Err(Problem::Unavailable(format!(
                "Cloud Shell managed identity (MSI_ENDPOINT without MSI_SECRET) serves the signed-in user only; a user-assigned identity ({}) is not supported",
                id_kind(id)
            )));
        }
        Ok(Self { url })
    }

    /// The token request as sent: a form POST.
    pub(super) fn call(&self, resource: &str) -> Result<Call, CredentialError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("resource", resource)
            .finish();
        let mut call = Call::get(&self.url, &[])
            .and_then(|c| c.header(HeaderName::from_static("metadata"), "true", false))
            .and_then(|c| c.header(CONTENT_TYPE, "application/x-www-form-urlencoded", false))
            .map_err(CredentialError::Failed)?;
        call.method = Method::POST;
        call.body = Bytes::from(body);
        Ok(call)
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
