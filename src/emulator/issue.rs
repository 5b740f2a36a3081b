//! What an access token says: the claims of the tokens Entra ID and the managed-identity endpoints issue.
//!
//! App tokens carry `aud` (the resource of the requested scope), `iss`, `iat`, `nbf`, `exp`, `tid`, `oid`/`sub`
//! (stable per tenant and client), `appid` and `azp` (both, so code written for v1 or v2 tokens finds the client),
//! `idtyp`, `ver`, `uti`; user tokens add `scp`, `name`, `preferred_username`, `upn` and `amr`; managed-identity
//! tokens are v1.0 with `xms_mirid` for a user-assigned identity. A request's `claims` parameter shapes the token:
//! `xms_cc` capabilities (`CP1`) are copied, an essential `nbf` raises `nbf`, `acrs` (authentication context) and
//! any other requested claim is carried with the requested value — which is what a claims challenge checks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::State;
use super::jwt::{self, NBF_SKEW_SECS};

/// Who a token is for.
#[derive(Debug, Clone)]
pub(crate) enum Subject {
    /// An application (client credentials).
    App,
    /// A signed-in user (device code, authorization code, refresh token).
    User(User),
    /// A managed identity; user-assigned ones carry their resource id.
    ManagedIdentity { resource_id: Option<String> },
}

/// The emulator's signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) username: String,
}

/// One token to issue.
#[derive(Debug)]
pub(crate) struct Grant<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) client_id: &'a str,
    /// The audience: a resource (`https://ml.azure.com`), never a scope.
    pub(crate) resource: &'a str,
    pub(crate) subject: Subject,
    pub(crate) lifetime: Duration,
    /// The request's `claims` parameter, parsed.
    pub(crate) claims: Option<&'a Value>,
    /// `appidacr`: 0 public client, 1 secret, 2 certificate or assertion.
    pub(crate) client_auth: &'a str,
    /// The delegated permission of a user token (`user_impersonation`, or the scope's own name).
    pub(crate) scp: Option<String>,
}

/// An issued token.
#[derive(Debug)]
pub(crate) struct Issued {
    pub(crate) token: String,
    /// Whole seconds the client may use it (`expires_in`).
    pub(crate) expires_in: u64,
    /// `exp` (Unix seconds).
    pub(crate) expires_on: i64,
    /// `nbf` (Unix seconds).
    pub(crate) not_before: i64,
}

/// Claims a `claims` request cannot set: they say who the token is for.
const PROTECTED: [&str; 12] = [
    "aud", "iss", "iat", "exp", "sub", "tid", "oid", "appid", "azp", "ver", "idtyp", "uti",
];

// === impl User ===

impl User {
    /// The default user, or the one a `login_hint` names.
    pub(crate) fn new(login_hint: Option<&str>) -> Self {
        let username = login_hint
            .filter(|h| h.contains('@') && h.len() <= 256)
            .unwrap_or("emulator.user@contoso.example")
            .to_owned();
        Self { username }
    }

    fn oid(&self, tenant: &str) -> String {
        jwt::derived_guid(&["user", tenant, &self.username.to_ascii_lowercase()])
    }
}

/// The app's object id in a tenant (stable, so tests can predict it).
pub(crate) fn app_oid(tenant: &str, client_id: &str) -> String {
    jwt::derived_guid(&["app", tenant, &client_id.to_ascii_lowercase()])
}

/// Parses a `claims` request parameter: a JSON object, or an error text.
pub(crate) fn parse_claims(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err("The claims parameter is not a valid JSON object.".to_owned()),
    }
}

/// The wall clock as fractional Unix seconds.
fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Signs an access token for `grant`.
pub(crate) fn access_token(state: &State, grant: &Grant<'_>) -> Result<Issued, String> {
    let now = now_f64();
    let iat = now.floor() as i64;
    // `exp` rounds up and `expires_in` down, so a client that counts from when it sent the request never thinks
    // the token lives longer than it does.
    let exp = (now + grant.lifetime.as_secs_f64()).ceil() as i64;
    let mut nbf = iat;
    let authority = &state.urls.authority_host;
    let tid = grant.tenant;
    let mut c = Map::new();
    let v1 = matches!(grant.subject, Subject::ManagedIdentity { .. });
    c.insert("aud".into(), grant.resource.into());
    c.insert(
        "iss".into(),
        if v1 {
            format!("{authority}/{tid}/")
        } else {
            format!("{authority}/{tid}/v2.0")
        }
        .into(),
    );
    c.insert("iat".into(), iat.into());
    c.insert("exp".into(), exp.into());
    c.insert("aio".into(), jwt::random_b64(45).into());
    c.insert("appid".into(), grant.client_id.into());
    c.insert("azp".into(), grant.client_id.into());
    c.insert("appidacr".into(), grant.client_auth.into());
    c.insert("tid".into(), tid.into());
    c.insert("uti".into(), jwt::random_b64(16).into());
    c.insert("ver".into(), if v1 { "1.0" } else { "2.0" }.into());
    match &grant.subject {
        Subject::App => {
            let oid = app_oid(tid, grant.client_id);
            c.insert("idtyp".into(), "app".into());
            c.insert("oid".into(), oid.clone().into());
            c.insert("sub".into(), oid.into());
        }
        Subject::ManagedIdentity { resource_id } => {
            let oid = app_oid(tid, grant.client_id);
            c.insert("idtyp".into(), "app".into());
            c.insert("oid".into(), oid.clone().into());
            c.insert("sub".into(), oid.into());
            if let Some(id) = resource_id {
                c.insert("xms_mirid".into(), id.clone().into());
            }
        }
        Subject::User(user) => {
            let oid = user.oid(tid);
            c.insert("idtyp".into(), "user".into());
            c.insert("oid".into(), oid.clone().into());
            c.insert("sub".into(), oid.into());
            c.insert("name".into(), "Emulator User".into());
            c.insert("preferred_username".into(), user.username.clone().into());
            c.insert("upn".into(), user.username.clone().into());
            c.insert("amr".into(), serde_json::json!(["pwd", "mfa"]));
            if let Some(scp) = &grant.scp {
                c.insert("scp".into(), scp.clone().into());
            }
        }
    }
    if let Some(Value::Object(requested)) = grant.claims.and_then(|c| c.get("access_token")) {
        for (name, ask) in requested {
            if PROTECTED.contains(&name.as_str()) || name == "xms_caeerror" {
                continue;
            }
            let value = ask.get("value").cloned();
            let values = ask.get("values").cloned();
            match name.as_str() {
                "nbf" => {
                    let wanted = value.as_ref().and_then(|v| match v {
                        Value::String(s) => s.parse::<i64>().ok(),
                        other => other.as_i64(),
                    });
                    if let Some(wanted) = wanted {
                        nbf = nbf.max(wanted.min(iat + NBF_SKEW_SECS));
                    }
                }
                "xms_cc" | "acrs" => {
                    let list = match (values, value) {
                        (Some(Value::Array(list)), _) => list,
                        (_, Some(one)) => vec![one],
                        _ => continue,
                    };
                    c.insert(name.clone(), Value::Array(list));
                }
                _ => {
                    if let Some(v) = value.or(values) {
                        c.insert(name.clone(), v);
                    }
                }
            }
        }
    }
    c.insert("nbf".into(), nbf.into());
    let token = state.signer.sign(&c)?;
    Ok(Issued {
        token,
        expires_in: grant.lifetime.as_secs(),
        expires_on: exp,
        not_before: nbf,
    })
}

/// An OpenID Connect id token for a user sign-in.
pub(crate) fn id_token(
    state: &State,
    tenant: &str,
    client_id: &str,
    user: &User,
    nonce: Option<&str>,
) -> Result<String, String> {
    let iat = now_f64().floor() as i64;
    let oid = user.oid(tenant);
    let mut c = Map::new();
    c.insert("aud".into(), client_id.into());
    c.insert(
        "iss".into(),
        format!("{}/{tenant}/v2.0", state.urls.authority_host).into(),
    );
    c.insert("iat".into(), iat.into());
    c.insert("nbf".into(), iat.into());
    c.insert("exp".into(), (iat + 3600).into());
    c.insert("name".into(), "Emulator User".into());
    c.insert("oid".into(), oid.clone().into());
    c.insert("preferred_username".into(), user.username.clone().into());
    c.insert("sub".into(), oid.into());
    c.insert("tid".into(), tenant.into());
    c.insert("ver".into(), "2.0".into());
    if let Some(nonce) = nonce {
        c.insert("nonce".into(), nonce.into());
    }
    state.signer.sign(&c)
}

/// MSAL's `client_info`: base64url of `{"uid": <user oid>, "utid": <tenant>}`.
pub(crate) fn client_info(tenant: &str, user: &User) -> String {
    let info = serde_json::json!({"uid": user.oid(tenant), "utid": tenant});
    jwt::b64url(info.to_string().as_bytes())
}
