//! The App Service protocol (`api-version=2019-08-01`), which App Service, Functions and Container Apps serve and
//! every Azure SDK reads from `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`:
//! `GET /msi/token?api-version=2019-08-01&resource=R[&client_id=|principal_id=|object_id=|mi_res_id=]` with
//! `X-IDENTITY-HEADER: <secret>` → `{"access_token","expires_on":"<unix seconds>","resource","token_type",
//! "client_id"}`.

use serde_json::{Value, json};

use super::Issued;

/// The header carrying the secret.
pub(super) const SECRET_HEADER: &str = "x-identity-header";

/// The success body, which the Azure ML protocol answers with too.
pub(super) fn body(issued: &Issued<'_>) -> Value {
    json!({
        "access_token": issued.access_token,
        "expires_on": issued.expires_on.to_string(),
        "resource": issued.resource,
        "token_type": "Bearer",
        "client_id": issued.client_id,
    })
}
