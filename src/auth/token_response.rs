//! The success body of every token service, and the one parser for it: the Entra ID token endpoint (v1 and v2)
//! and the managed-identity endpoints (IMDS, App Service, Azure ML, Cloud Shell, Azure Arc).
//!
//! Bodies differ by service and age: numbers may be JSON strings; there is `expires_in`, `expires_on` or both;
//! `expires_on` is a Unix epoch (number or string) or, from legacy managed-identity endpoints, a date string
//! (`MM/DD/YYYY HH:MM:SS +00:00`, `M/D/YYYY h:mm:ss AM +00:00`). `expires_in` wins whenever it is a usable
//! (non-zero) number of seconds, even when `expires_on` disagrees, as MSAL and the Azure SDKs prefer it. A zero
//! `refresh_in` counts as absent. Reasons for refusing a body never quote it (it may hold a token).

use std::time::Duration;

use serde::Deserialize;

use super::lenient_json::{self, WireError};
use super::{AccessToken, Secret, expiry};

/// Why a body or a [`TokenResponse`] gives no usable lifetime.
pub(super) const EXPIRED: &str = "the token is already expired";
pub(super) const NO_EXPIRY: &str = "neither expires_in nor expires_on";

/// A token service's success body, checked: a token that can go in a header, and at least one usable expiry.
/// The expiry fields are kept apart so tests can check what each format implies; [`Self::lifetime`] combines them.
#[derive(Debug)]
pub(crate) struct TokenResponse {
    /// The access token.
    pub(crate) access_token: Secret,
    /// `expires_in`, when it is a non-zero number of seconds.
    pub(crate) expires_in: Option<u64>,
    /// `expires_on` as Unix seconds, when it is a usable epoch or legacy date.
    pub(crate) expires_on: Option<u64>,
    /// `refresh_in`, when it is a non-zero number of seconds.
    pub(crate) refresh_in: Option<u64>,
    /// A refresh token (user flows), when one was sent.
    pub(crate) refresh_token: Option<Secret>,
}

/// The body as sent. No `Debug`: it holds the tokens before they are wrapped in [`Secret`].
#[derive(Deserialize)]
struct Wire {
    #[serde(default, deserialize_with = "lenient_json::text")]
    access_token: Option<String>,
    #[serde(default, deserialize_with = "lenient_json::text")]
    token_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_json::seconds")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "lenient_json::epoch")]
    expires_on: Option<u64>,
    #[serde(default, deserialize_with = "lenient_json::seconds")]
    refresh_in: Option<u64>,
    #[serde(default, deserialize_with = "lenient_json::text")]
    refresh_token: Option<String>,
}

// === impl TokenResponse ===

impl TokenResponse {
    /// Parses and checks a success body (see the module docs).
    pub(crate) fn parse(body: &[u8]) -> Result<Self, String> {
        let wire: Wire = lenient_json::from_object(body).map_err(WireError::reason)?;
        let access_token = wire
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or("no access_token")?;
        if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("access_token contains characters that cannot be sent in a header".into());
        }
        if let Some(kind) = wire.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(format!("token_type {kind:?} is not Bearer"));
        }
        let expires_in = wire.expires_in.filter(|s| *s > 0);
        if expires_in.is_none() && wire.expires_on.is_none() {
            let zero = wire.expires_in == Some(0);
            return Err(if zero { EXPIRED } else { NO_EXPIRY }.to_owned());
        }
        Ok(Self {
            access_token: Secret::new(access_token),
            expires_in,
            expires_on: wire.expires_on,
            refresh_in: wire.refresh_in.filter(|s| *s > 0),
            refresh_token: wire
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        })
    }

    /// The remaining lifetime: `expires_in`, else the time until `expires_on`; never zero.
    pub(crate) fn lifetime(&self) -> Result<Duration, String> {
        let lifetime = match (self.expires_in, self.expires_on) {
            (Some(secs), _) => Duration::from_secs(secs),
            (None, Some(on)) => expiry::until(on),
            (None, None) => return Err(NO_EXPIRY.to_owned()),
        };
        if lifetime.is_zero() {
            return Err(EXPIRED.to_owned());
        }
        Ok(lifetime)
    }
}

/// A body as a credential uses it: the access token (from `source`), and the refresh token user flows get.
pub(crate) fn parse_token_response(
    body: &[u8],
    source: &str,
) -> Result<(AccessToken, Option<Secret>), String> {
    let response = TokenResponse::parse(body)?;
    let token = AccessToken {
        expires_in: response.lifetime()?,
        token: response.access_token,
        refresh_in: response.refresh_in.map(Duration::from_secs),
        source: source.into(),
    };
    Ok((token, response.refresh_token))
}

#[cfg(test)]
mod tests;
