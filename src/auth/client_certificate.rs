//! A service principal authenticating with a certificate: the client-credentials grant with a signed JWT client
//! assertion (`private_key_jwt`). The certificate file and the signing are `certificate_file`.
//!
//! The assertion is built as current MSAL does: PS256 with `x5t#S256`, `x5c` when the chain is to be sent,
//! `aud` = the token endpoint, a fresh `jti`, `nbf` = `iat` = now, `exp` = now + 10 min. Like MSAL Python's
//! `AutoRefresher` it is reused until 60 s before it expires, then replaced by a new one with a new `jti`; a
//! rejection by Entra ID discards it at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::certificate_file::{AssertionClaims, ClientCertificate};
use super::token_endpoint::ClientAuth;
use super::{
    AccessToken, Credential, CredentialError, EntraClient, Secret, TokenError, TokenRequest,
};
use crate::lock;

/// Lifetime of a client assertion (`exp` − `iat`), as MSAL.
pub(crate) const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// An assertion is replaced when it has less than this left (MSAL Python: 60 s).
pub(crate) const ASSERTION_REUSE_MARGIN: Duration = Duration::from_secs(60);

const KIND: &str = "client_certificate";

/// `client_certificate` credentials: the client-credentials grant with a certificate-signed client assertion.
/// `Debug` shows neither the key nor an assertion.
#[derive(Debug)]
pub struct ClientCertificateCredential {
    tenant_id: String,
    client_id: String,
    /// The loaded certificate, or why it could not be loaded (the message names the file).
    certificate: Result<ClientCertificate, String>,
    send_chain: bool,
    entra: EntraClient,
    source: &'static str,
    assertions: AssertionCache,
}

/// Settings of a [`ClientCertificateCredential`] (`client_certificate: { tenant_id, client_id, certificate_file,
/// password | password_file, send_certificate_chain }` in configuration).
#[derive(Debug)]
pub struct ClientCertificateCredentialOptions {
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// PEM (key + certificate) or PKCS#12 file.
    pub certificate_file: PathBuf,
    /// Password of the key or PKCS#12 file.
    pub password: Option<Secret>,
    /// Send the `x5c` certificate chain (subject-name/issuer authentication).
    pub send_certificate_chain: bool,
}

/// The current assertion, reused while it has more than [`ASSERTION_REUSE_MARGIN`] left.
#[derive(Debug, Default)]
struct AssertionCache(Mutex<Option<CachedAssertion>>);

#[derive(Debug)]
struct CachedAssertion {
    /// The `aud` it was signed for (one per tenant and authority).
    audience: String,
    jwt: Arc<Secret>,
    issued_at: u64,
}

// === impl ClientCertificateCredential ===

impl ClientCertificateCredential {
    /// A credential for `options`. The certificate file is read now; if it cannot be loaded, every `get_token`
    /// fails with `CredentialRejected` naming the file and the problem.
    pub fn new(options: ClientCertificateCredentialOptions, entra: EntraClient) -> Self {
        Self::with_source(options, entra, KIND)
    }

    /// [`Self::new`], reporting tokens and errors as coming from `source` (e.g. `environment` for
    /// `AZURE_CLIENT_CERTIFICATE_PATH`, `sdk_auth_file` for `clientCertificate`).
    pub(crate) fn with_source(
        options: ClientCertificateCredentialOptions,
        entra: EntraClient,
        source: &'static str,
    ) -> Self {
        let path = &options.certificate_file;
        let certificate = ClientCertificate::load(path, options.password.as_ref());
        let now = i64::try_from(super::expiry::now_unix()).unwrap_or(0);
        match &certificate {
            Ok(cert) if cert.not_after_unix() < now => tracing::warn!(
                file = %path.display(),
                subject = cert.subject(),
                source,
                "client certificate has expired; Entra ID will reject it"
            ),
            Ok(_) => {}
            Err(why) => tracing::warn!(source, error = %why, "client certificate not loaded"),
        }
        Self {
            tenant_id: options.tenant_id,
            client_id: options.client_id,
            certificate,
            send_chain: options.send_certificate_chain,
            entra,
            source,
            assertions: AssertionCache::default(),
        }
    }

    /// A boolean setting such as `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`: `Some(true)` for `1`/`true`/`yes`/`on`,
    /// `Some(false)` for `0`/`false`/`no`/`off`/empty (case-insensitive, surrounding whitespace ignored), `None` for
    /// anything else, which callers treat as off with a warning (Python's "any non-empty value" is the bug avoided
    /// here).
    pub fn parse_flag(value: &str) -> Option<bool> {
        let v = value.trim();
        let is = |words: &[&str]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
        if is(&["1", "true", "yes", "on"]) {
            Some(true)
        } else if is(&["", "0", "false", "no", "off"]) {
            Some(false)
        } else {
            None
        }
    }
}

impl Credential for ClientCertificateCredential {
    const KIND: &'static str = KIND;

    async fn token(&self, request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        let certificate = self
            .certificate
            .as_ref()
            .map_err(|why| CredentialError::rejected(self.source, why.clone()))?;
        let audience = self
            .entra
            .endpoint_url(&self.tenant_id, "token")
            .map_err(|e| {
                CredentialError::Failed(TokenError {
                    source: self.source.into(),
                    ..e
                })
            })?
            .to_string();
        let assertion = self
            .assertions
            .get_or_sign(
                certificate,
                &audience,
                &self.client_id,
                self.send_chain,
                super::expiry::now_unix(),
            )
            .map_err(|why| CredentialError::rejected(self.source, why))?;
        let result = self
            .entra
            .client_credentials(
                self.source,
                &self.tenant_id,
                &self.client_id,
                ClientAuth::Assertion(assertion.expose()),
                request,
            )
            .await;
        if let Err(CredentialError::Failed(e)) = &result
            && !e.is_transient()
        {
            // Rejected (expired, clock skew, replay…): the next attempt signs a fresh one.
            self.assertions.clear();
        }
        result
    }
}

// === impl AssertionCache ===

impl AssertionCache {
    /// The cached assertion for `audience` if it was issued no later than `now` and has more than
    /// [`ASSERTION_REUSE_MARGIN`] left; otherwise a newly signed one (new `jti`), which replaces it.
    fn get_or_sign(
        &self,
        certificate: &ClientCertificate,
        audience: &str,
        client_id: &str,
        send_chain: bool,
        now: u64,
    ) -> Result<Arc<Secret>, String> {
        let mut slot = lock(&self.0);
        if let Some(cached) = &*slot
            && cached.audience == audience
            && cached.issued_at <= now
            && now - cached.issued_at < (ASSERTION_LIFETIME - ASSERTION_REUSE_MARGIN).as_secs()
        {
            return Ok(Arc::clone(&cached.jwt));
        }
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = AssertionClaims {
            audience,
            client_id,
            jti: &jti,
            issued_at: now,
            lifetime: ASSERTION_LIFETIME,
        };
        let jwt = Arc::new(certificate.sign_assertion(&claims, send_chain)?);
        *slot = Some(CachedAssertion {
            audience: audience.to_owned(),
            jwt: Arc::clone(&jwt),
            issued_at: now,
        });
        Ok(jwt)
    }

    fn clear(&self) {
        *lock(&self.0) = None;
    }
}

#[cfg(test)]
mod tests;
