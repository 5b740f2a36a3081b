//! The Azure ML compute protocol (`api-version=2017-09-01`), which compute instances and clusters serve and the
//! SDKs read from `MSI_ENDPOINT` + `MSI_SECRET`: `GET /msi/token?api-version=2017-09-01&resource=R[&clientid=]`
//! with `secret: <secret>` → `{"access_token","expires_on":"<unix seconds>","resource","token_type","client_id"}`.
//! The identity parameter is `clientid`, without an underscore.

use serde_json::{Value, json};

use super::Issued;

/// The header carrying the secret.
pub(super) const SECRET_HEADER: &str = "secret";

/// The success body.
pub(super) fn body(issued: &Issued<'_>) -> Value {
    json!({
        "access_token": issued.access_token,
        "expires_on": issued.expires_on.to_string(),
        "resource": issued.resource,
        "token_type": "Bearer",
        "client_id": issued.client_id,
    })
}
