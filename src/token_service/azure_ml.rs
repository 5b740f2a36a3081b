//! The Azure ML compute protocol (`api-version=2017-09-01`), which compute instances and clusters serve and the
//! SDKs read from `MSI_ENDPOINT` + `MSI_SECRET`: `GET /msi/token?api-version=2017-09-01&resource=R[&clientid=]`
//! with `secret: <secret>` → `{"access_token","expires_on":"<unix seconds>","resource","token_type","client_id"}`,
//! the same body as App Service's. The identity parameter is `clientid`, without an underscore.

/// The header carrying the secret.
pub(super) const SECRET_HEADER: &str = "secret";
