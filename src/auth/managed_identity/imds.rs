//! The Instance Metadata Service of Azure VMs, scale sets, AKS nodes and container instances (PROTOCOLS §4.2).
//!
//! `GET {base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…[&client_id|object_id|msi_res_id]`
//! with `Metadata: true`. Inside a chain the credential first probes the same URL without the header: any HTTP
//! answer (IMDS says 400 "Required metadata header not specified") proves IMDS is there; none within the probe
//! timeout makes the source unavailable.

use http::{HeaderName, Uri};

use super::{Call, SOURCE, Transport, UserAssignedId, identity_param, without_query};
use crate::auth::{AccessToken, CredentialError, TokenHttpClient};

/// IMDS's link-local address. Tests must never send anything there.
#[cfg(test)]
pub(super) const LINK_LOCAL_HOST: &str = "169.254.169.254";

/// The base URL that `AZURE_POD_IDENTITY_AUTHORITY_HOST` replaces.
pub(super) const DEFAULT_BASE: &str = "http://169.254.169.254";

/// The token path under the base URL.
pub(super) const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

const API_VERSION: &str = "2018-02-01";

/// The IMDS source.
#[derive(Debug)]
pub(super) struct Imds {
    /// The full token URL, without the query.
    pub(super) url: Uri,
    /// `client_id`, `object_id` or `msi_res_id`.
    identity: Option<(&'static str, String)>,
}

// === impl Imds ===

impl Imds {
    /// IMDS at `url` (the full token URL), for the system-assigned or the given user-assigned identity.
    pub(super) fn new(url: Uri, user_assigned: Option<&UserAssignedId>) -> Self {
        Self {
            url,
            identity: identity_param(user_assigned, "client_id", "object_id", "msi_res_id"),
        }
    }

    /// The token request, without the `Metadata` header.
    fn bare_call(&self, resource: &str) -> Result<Call, CredentialError> {
        let mut params = vec![("api-version", API_VERSION), ("resource", resource)];
        if let Some((name, value)) = &self.identity {
            params.push((name, value));
        }
        Call::get(&self.url, &params).map_err(CredentialError::Failed)
    }

    /// The token request as sent.
    pub(super) fn call(&self, resource: &str) -> Result<Call, CredentialError> {
        self.bare_call(resource)?
            .header(HeaderName::from_static("metadata"), "true", false)
            .map_err(CredentialError::Failed)
    }

    /// One request without the `Metadata` header and without retries; any HTTP answer means IMDS is there.
    pub(super) async fn probe(
        &self,
        http: &TokenHttpClient,
        resource: &str,
    ) -> Result<(), CredentialError> {
        let call = self.bare_call(resource)?;
        let request = call.request().map_err(CredentialError::Failed)?;
        match http.send(request).await {
            Ok(response) => {
                tracing::debug!(status = response.status.as_u16(), "IMDS answered the probe");
                Ok(())
            }
            Err(e) => Err(CredentialError::unavailable(
                SOURCE,
                format!("no response from IMDS at {}: {e}", without_query(&self.url)),
            )),
        }
    }

    /// Requests a token; 400 and Docker Desktop's 403 "unreachable" are unavailable, see the module docs.
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
        let status = response.status.as_u16();
        if response.status.is_success() {
            return transport.token(&call, &response);
        }
        if status == 400 {
            // IMDS says 400 when managed identity is disabled here or the requested identity is not assigned
            // (azure-identity and azidentity treat it as unavailable so that chains go on).
            let hint = if self.identity.is_some() {
                "the requested user-assigned identity is not assigned to this resource"
            } else {
                "no managed identity is assigned to this resource"
            };
            return Err(CredentialError::unavailable(
                SOURCE,
                format!("{} ({hint})", transport.describe(&call, &response)),
            ));
        }
        if status == 403 && contains_ignore_case(&response.body, b"unreachable") {
            // Docker Desktop's proxy answers for 169.254.169.254 with 403 "… unreachable".
            return Err(CredentialError::unavailable(
                SOURCE,
                format!(
                    "IMDS at {} is unreachable from here (a proxy answered HTTP 403)",
                    call.host()
                ),
            ));
        }
        Err(CredentialError::Failed(transport.failure(&call, &response)))
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
