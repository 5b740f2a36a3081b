//! An online endpoint's own credentials, read from Resource Manager, as [`Credential`]s: the token cache holds
//! them exactly like Entra ID tokens (single flight, refresh ahead, shared and damped failures, never used past
//! expiry, sensitive header values), so a key or an AML token gets every property a token has.
//!
//! - [`EndpointKeyCredential`]: `POST …/onlineEndpoints/{name}/listKeys` → the primary key. Keys do not expire;
//!   the key is read again every [`KEY_REREAD`] (so a rotation is noticed without traffic) and kept usable for
//!   [`KEY_LIFETIME`] while re-reads fail. An upstream `401` drops it at once and it is read again (see
//!   `proxy::answer_challenge`).
//! - [`AmlTokenCredential`]: `POST …/onlineEndpoints/{name}/token` → `accessToken`, refreshed at
//!   `refreshAfterTimeUtc` and never used past `expiryTimeUtc` (both Unix seconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::arm::{ArmClient, Call, SOURCE};
use crate::auth::{
    AccessToken, Credential, CredentialError, TokenError, TokenErrorKind, TokenRequest,
};
use crate::secret::Secret;

/// How long a key read from `listKeys` is used while re-reads fail.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How often a key is read again.
pub const KEY_REREAD: Duration = Duration::from_secs(3600);

/// The RBAC action `listKeys` needs.
pub const LIST_KEYS_ACTION: &str =
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/listkeys/action";

/// The RBAC action `token` needs.
pub const TOKEN_ACTION: &str =
    "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/token/action";

/// An online endpoint's key, from `listKeys`.
#[derive(Debug)]
pub struct EndpointKeyCredential {
    arm: ArmClient,
    /// The endpoint's resource path (`/subscriptions/…/onlineEndpoints/{name}`).
    endpoint: String,
    /// The endpoint's name, for messages.
    name: String,
}

/// An online endpoint's AML token, from its `token` action.
#[derive(Debug)]
pub struct AmlTokenCredential {
    arm: ArmClient,
    endpoint: String,
    name: String,
}

/// `listKeys`' answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keys {
    primary_key: Option<String>,
    secondary_key: Option<String>,
}

/// The `token` action's answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmlToken {
    access_token: String,
    expiry_time_utc: i64,
    #[serde(default)]
    refresh_after_time_utc: Option<i64>,
}

// === impl EndpointKeyCredential ===

impl EndpointKeyCredential {
    /// The key of the endpoint at resource path `endpoint` (named `name`).
    pub fn new(arm: ArmClient, endpoint: String, name: String) -> Self {
        Self {
            arm,
            endpoint,
            name,
        }
    }
}

impl Credential for EndpointKeyCredential {
    const KIND: &'static str = "endpoint_key";

    async fn token(&self, _request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        let what = format!("listKeys of online endpoint {}", self.name);
        let call = Call {
            what: &what,
            action: LIST_KEYS_ACTION,
        };
        let body = self
            .arm
            .post(&format!("{}/listKeys", self.endpoint), call)
            .await?;
        Ok(key_token(&body, &what)?)
    }
}

/// The key of a `listKeys` body: the primary key, else the secondary.
pub fn key_token(body: &[u8], what: &str) -> Result<AccessToken, TokenError> {
    let keys: Keys = serde_json::from_slice(body).map_err(|_| malformed(what))?;
    let key = [keys.primary_key, keys.secondary_key]
        .into_iter()
        .flatten()
        .find(|k| !k.is_empty())
        .ok_or_else(|| malformed(what))?;
    Ok(AccessToken {
        token: Secret::new(key),
        expires_in: KEY_LIFETIME,
        refresh_in: Some(KEY_REREAD),
        source: EndpointKeyCredential::KIND.into(),
    })
}

// === impl AmlTokenCredential ===

impl AmlTokenCredential {
    /// The AML token of the endpoint at resource path `endpoint` (named `name`).
    pub fn new(arm: ArmClient, endpoint: String, name: String) -> Self {
        Self {
            arm,
            endpoint,
            name,
        }
    }
}

impl Credential for AmlTokenCredential {
    const KIND: &'static str = "aml_token";

    async fn token(&self, _request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        let what = format!("token of online endpoint {}", self.name);
        let call = Call {
            what: &what,
            action: TOKEN_ACTION,
        };
        let body = self
            .arm
            .post(&format!("{}/token", self.endpoint), call)
            .await?;
        Ok(aml_token(&body, SystemTime::now(), &what)?)
    }
}

/// The token of a `token` body received at `now`: it lives until `expiryTimeUtc` and is refreshed at
/// `refreshAfterTimeUtc` (ignored when it is not before the expiry).
pub fn aml_token(body: &[u8], now: SystemTime, what: &str) -> Result<AccessToken, TokenError> {
    let token: AmlToken = serde_json::from_slice(body).map_err(|_| malformed(what))?;
    if token.access_token.is_empty() {
        return Err(malformed(what));
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let in_secs = |t: i64| Duration::from_secs(t.saturating_sub(now).max(0) as u64);
    let expires_in = in_secs(token.expiry_time_utc);
    if expires_in.is_zero() {
        return Err(TokenError::service_unavailable(
            SOURCE,
            format!("{what}: Resource Manager issued a token that has already expired"),
        ));
    }
    let refresh_in = token
        .refresh_after_time_utc
        .map(in_secs)
        .filter(|r| !r.is_zero() && *r < expires_in);
    Ok(AccessToken {
        token: Secret::new(token.access_token),
        expires_in,
        refresh_in,
        source: AmlTokenCredential::KIND.into(),
    })
}

fn malformed(what: &str) -> TokenError {
    TokenError::new(
        TokenErrorKind::TokenServiceUnavailable,
        SOURCE,
        format!("{what}: Resource Manager's answer could not be read"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::metrics::Metrics;
    use crate::token_cache::{CacheKey, CachePolicy, TokenCache};

    /// Resource Manager's `token` action as recorded (24 h tokens, refresh after about 12 h), issuing `ok`
    /// tokens, then refusing (403).
    #[derive(Debug)]
    struct RecordedTokenAction {
        calls: AtomicUsize,
        ok: usize,
    }

    impl Credential for RecordedTokenAction {
        const KIND: &'static str = "aml_token";

        async fn token(&self, _request: &TokenRequest) -> Result<AccessToken, CredentialError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n >= self.ok {
                return Err(TokenError::new(
                    TokenErrorKind::AuthorizationFailed,
                    SOURCE,
                    format!("token of online endpoint e: denied ({TOKEN_ACTION})"),
                )
                .into());
            }
            let now = SystemTime::now();
            let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
            let body = format!(
                r#"{{"accessToken": "aml-{n}", "tokenType": "Bearer", "expiryTimeUtc": {}, "refreshAfterTimeUtc": {}}}"#,
                secs + 86_340,
                secs + 43_171
            );
            Ok(aml_token(
                body.as_bytes(),
                now,
                "token of online endpoint e",
            )?)
        }
    }

    /// Paused clock: the token cache holds an AML token until `refreshAfterTimeUtc` (refreshing it once, in the
    /// background, no earlier than 30 s of jitter before), and never serves it past `expiryTimeUtc`, even while
    /// every refresh is refused.
    #[tokio::test(start_paused = true)]
    async fn an_aml_token_is_refreshed_at_refresh_after_and_never_used_past_expiry() {
        let action = Arc::new(RecordedTokenAction {
            calls: AtomicUsize::new(0),
            ok: 2,
        });
        let cache = TokenCache::new(Metrics::new().unwrap().tokens, CachePolicy::default());
        let key = CacheKey {
            credential: "c".into(),
            tenant: None,
            scope: "/subscriptions/s/onlineEndpoints/e/token".into(),
            claims: None,
        };
        let tokens = cache.source(key, action.clone(), true);
        let bearer = |v: http::HeaderValue| v.to_str().unwrap().to_owned();
        assert_eq!(bearer(tokens.header_value().await.unwrap()), "Bearer aml-0");
        let calls = || action.calls.load(Ordering::SeqCst);
        assert_eq!(calls(), 1);

        tokio::time::sleep(Duration::from_secs(43_100)).await;
        assert_eq!(calls(), 1, "not refreshed before refreshAfterTimeUtc");
        assert_eq!(bearer(tokens.header_value().await.unwrap()), "Bearer aml-0");
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(calls(), 2, "refreshed once at refreshAfterTimeUtc");
        assert_eq!(bearer(tokens.header_value().await.unwrap()), "Bearer aml-1");

        // Every later refresh is refused; the token still serves until (shortly before) its expiry, 86,340 s after
        // it was issued at about 43,171 s…
        tokio::time::sleep(Duration::from_secs(129_400 - 43_200)).await;
        assert!(calls() > 3, "refreshes were retried: {}", calls());
        assert_eq!(bearer(tokens.header_value().await.unwrap()), "Bearer aml-1");
        // …and never after.
        tokio::time::sleep(Duration::from_secs(200)).await;
        let refused = tokens.header_value().await.unwrap_err();
        assert_eq!(refused.error.kind, TokenErrorKind::AuthorizationFailed);
        assert!(refused.error.message.contains(TOKEN_ACTION));
    }

    /// The recorded `token` answer (azure-ai-ml's test recordings): sent at `Date: Tue, 03 Mar 2026 20:19:01 GMT`.
    const RECORDED_TOKEN: &str = r#"{"accessToken": "Sanitized", "tokenType": "Bearer", "expiryTimeUtc": 1772655481, "refreshAfterTimeUtc": 1772612312}"#;
    const RECORDED_AT: u64 = 1_772_569_141;

    #[test]
    fn the_recorded_aml_token_is_refreshed_at_refresh_after_and_expires_at_expiry() {
        let at = UNIX_EPOCH + Duration::from_secs(RECORDED_AT);
        let token = aml_token(RECORDED_TOKEN.as_bytes(), at, "t").unwrap();
        assert_eq!(token.token.expose(), "Sanitized");
        assert_eq!(token.expires_in, Duration::from_secs(86_340));
        assert_eq!(token.refresh_in, Some(Duration::from_secs(43_171)));
        assert_eq!(&*token.source, "aml_token");
        // Received after its expiry: refused, never cached.
        let late = UNIX_EPOCH + Duration::from_secs(1_772_655_481);
        let e = aml_token(RECORDED_TOKEN.as_bytes(), late, "t").unwrap_err();
        assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
        // A refresh time at or past the expiry is ignored (the cache then refreshes ahead by itself).
        let odd = r#"{"accessToken": "a", "expiryTimeUtc": 1772569241, "refreshAfterTimeUtc": 1772569341}"#;
        assert_eq!(aml_token(odd.as_bytes(), at, "t").unwrap().refresh_in, None);
    }

    #[test]
    fn the_documented_list_keys_answer_gives_the_primary_key() {
        // The spec example's shape (`listKeys.json`), with values.
        let body = br#"{"primaryKey": "p-key", "secondaryKey": "s-key"}"#;
        let token = key_token(body, "k").unwrap();
        assert_eq!(token.token.expose(), "p-key");
        assert_eq!(token.expires_in, KEY_LIFETIME);
        assert_eq!(token.refresh_in, Some(KEY_REREAD));
        let only_secondary = br#"{"primaryKey": "", "secondaryKey": "s-key"}"#;
        assert_eq!(
            key_token(only_secondary, "k").unwrap().token.expose(),
            "s-key"
        );
        let e = key_token(br#"{"primaryKey": null}"#, "listKeys of online endpoint e").unwrap_err();
        assert!(e.message.starts_with("listKeys of online endpoint e"));
        // A malformed body is reported without echoing it.
        let e = key_token(br#"{"primaryKey": 5, "x": "canary-KEY"}"#, "k").unwrap_err();
        assert!(!e.message.contains("canary"));
    }
}
