//! A user signed in with a web browser: the authorization-code flow with PKCE on a loopback redirect, as MSAL and
//! azure-identity's `InteractiveBrowserCredential` run it.
//!
//! `aml-auth-proxy login` runs [`InteractiveBrowserCredential::login`]: it listens on `127.0.0.1` (and `[::1]`
//! where available) on `redirect_port` (0: any free port), makes a PKCE verifier, its S256 challenge and a random
//! `state`, and has the caller open the authorize URL (`redirect_uri` `http://localhost:<port>/`,
//! `response_mode=form_post`) in a browser. Entra ID sends the browser back to the listener, the code in a POST
//! body (a query-string redirect is accepted too); a redirect with another `state` is refused and ends the
//! sign-in, an error redirect ends it with Entra ID's error and description, and requests with neither a code nor
//! an error (a browser's `/favicon.ico`) get a 404 while the listener keeps waiting, at most `timeout` (default 5
//! minutes). The code is then redeemed with the verifier (the same `redirect_uri`, `scope` and `claims`).
//!
//! The refresh token is then saved, and tokens served, exactly as for a device-code sign-in (the same session code
//! and 0600 cache file format: see [`DeviceCodeCredential`]); the same credential can also be signed in with a
//! device code ([`InteractiveBrowserCredential::login_with_device_code`]) when no browser can be opened. In a
//! running proxy the credential never opens a browser: without a saved sign-in it is unavailable and names the
//! `aml-auth-proxy login` command to run.

mod redirect;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use self::redirect::RedirectListener;
use super::device_code::decorate_scope;
use super::token_endpoint::form;
use super::{
    AccessToken, Credential, CredentialError, DeviceCodeCredential, DeviceCodeCredentialOptions,
    DeviceCodePrompt, EntraClient, LoginError, LoginOutcome, Secret, TokenRequest,
};

const SOURCE: &str = "interactive_browser";

/// The `interactive_browser` credential: signs a user in with a browser (`login`) and serves tokens from the
/// refresh token it saved.
#[derive(Debug)]
pub struct InteractiveBrowserCredential {
    /// The refresh-token session (cache file, refresh, rotation), shared with the device-code flow.
    session: DeviceCodeCredential,
    login_hint: Option<String>,
    domain_hint: Option<String>,
    redirect_port: u16,
    timeout: Duration,
}

/// Settings of an [`InteractiveBrowserCredential`] (`interactive_browser: { tenant_id, client_id, cache_file,
/// login_hint, domain_hint, redirect_port, timeout }` in configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InteractiveBrowserCredentialOptions {
    /// The signed-in session: tenant, client, cache file (the same format as `device_code`'s) and configuration file.
    pub session: DeviceCodeCredentialOptions,
    /// The account to pre-fill on the sign-in page (`login_hint`).
    pub login_hint: Option<String>,
    /// The home realm to go to directly (`domain_hint`, e.g. `contoso.com`).
    pub domain_hint: Option<String>,
    /// The loopback port of the redirect listener; 0 picks a free one.
    pub redirect_port: u16,
    /// How long `login` waits for the browser to come back.
    pub timeout: Duration,
}

/// The PKCE pair and state of one sign-in. No `Debug`: the verifier is a secret until the code is redeemed.
struct Pkce {
    verifier: Secret,
    challenge: String,
    state: String,
}

// === impl InteractiveBrowserCredential ===

impl InteractiveBrowserCredential {
    /// A credential for `options`.
    pub fn new(options: InteractiveBrowserCredentialOptions, entra: EntraClient) -> Self {
        Self {
            session: DeviceCodeCredential::new(options.session, entra).with_source(SOURCE),
            login_hint: options.login_hint,
            domain_hint: options.domain_hint,
            redirect_port: options.redirect_port,
            timeout: options.timeout,
        }
    }

    /// The configured credential name, so that messages can say `aml-auth-proxy login --credential NAME`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.session = self.session.with_name(name);
        self
    }

    /// Signs a user in with a browser: starts the redirect listener, hands the authorize URL to `open` (which shows
    /// it and opens a browser on it), waits for the redirect, redeems the code and saves the refresh token.
    /// Nothing is saved unless the sign-in succeeds. `open` failing ends the sign-in with
    /// [`LoginError::NoBrowser`], so that the caller can fall back to a device code.
    pub async fn login(
        &self,
        options: &TokenRequest,
        open: impl FnOnce(&str) -> Result<(), String>,
    ) -> Result<LoginOutcome, LoginError> {
        let listener = RedirectListener::bind(self.redirect_port)
            .await
            .map_err(|e| {
                LoginError::Setup(format!(
                    "cannot listen for the sign-in redirect on 127.0.0.1:{}: {e}",
                    self.redirect_port
                ))
            })?;
        let redirect_uri = listener.redirect_uri();
        let pkce = Pkce::new()?;
        let claims = options.claims_parameter();
        let scope = decorate_scope(&options.scope);
        let endpoint = self
            .session
            .entra
            .endpoint_url(&self.session.tenant, "authorize")
            .map_err(LoginError::Token)?;
        // In MSAL's order; the hints and claims only when there are some.
        let pairs = [
            ("client_id", Some(self.session.client_id.as_str())),
            ("response_type", Some("code")),
            ("redirect_uri", Some(&redirect_uri)),
            ("scope", Some(&scope)),
            ("state", Some(&pkce.state)),
            ("code_challenge", Some(&pkce.challenge)),
            ("code_challenge_method", Some("S256")),
            ("client_info", Some("1")),
            ("login_hint", self.login_hint.as_deref()),
            ("prompt", Some("select_account")),
            ("domain_hint", self.domain_hint.as_deref()),
            ("claims", claims.as_deref()),
            ("response_mode", Some("form_post")),
        ];
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(pairs.into_iter().filter_map(|(k, v)| Some((k, v?))));
        open(&format!("{endpoint}?{}", query.finish())).map_err(LoginError::NoBrowser)?;
        let code = listener.wait(&pkce.state, self.timeout).await?;
        tracing::debug!(
            source = SOURCE,
            "the browser came back with a code; redeeming it"
        );
        let body = form(
            &[
                ("client_id", &self.session.client_id),
                ("grant_type", "authorization_code"),
                ("client_info", "1"),
                ("code_verifier", pkce.verifier.expose()),
                ("code", code.expose()),
                ("redirect_uri", &redirect_uri),
                ("scope", &scope),
            ],
            claims.as_deref(),
        );
        let (_token, refresh_token) = self
            .session
            .entra
            .post_token(SOURCE, &self.session.tenant, &body)
            .await
            .map_err(LoginError::Token)?;
        self.session.save_sign_in(refresh_token).await
    }

    /// Signs the same account in with a device code instead (no browser on this machine, or `--device-code`): the
    /// refresh token goes to the same cache file.
    pub async fn login_with_device_code(
        &self,
        options: &TokenRequest,
        prompt: impl FnOnce(&DeviceCodePrompt),
    ) -> Result<LoginOutcome, LoginError> {
        self.session.login(options, prompt).await
    }
}

impl Credential for InteractiveBrowserCredential {
    const KIND: &'static str = SOURCE;

    async fn token(&self, request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        self.session.token(request).await
    }
}

// === impl InteractiveBrowserCredentialOptions ===

impl InteractiveBrowserCredentialOptions {
    /// How long `login` waits for the browser unless configured otherwise (azure-identity's default).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

    /// A browser sign-in into the account, tenant, client and cache file of a `device_code` credential (`login
    /// --browser` for a `device_code` credential): no hints, any free port, [`Self::DEFAULT_TIMEOUT`].
    pub fn from_device_code(session: DeviceCodeCredentialOptions) -> Self {
        Self {
            session,
            login_hint: None,
            domain_hint: None,
            redirect_port: 0,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

// === impl Pkce ===

impl Pkce {
    /// A fresh verifier (32 random bytes: 43 base64url characters, RFC 7636's recommendation), its S256
    /// challenge, and a random state (16 bytes).
    fn new() -> Result<Self, LoginError> {
        let mut bytes = zeroize::Zeroizing::new([0u8; 48]);
        aws_lc_rs::rand::fill(&mut bytes[..]).map_err(|_| {
            LoginError::Setup("the system random number generator failed".to_owned())
        })?;
        let verifier = Secret::new(URL_SAFE_NO_PAD.encode(&bytes[..32]));
        Ok(Self {
            challenge: s256(verifier.expose()),
            verifier,
            state: URL_SAFE_NO_PAD.encode(&bytes[32..]),
        })
    }
}

/// The S256 code challenge of `verifier`: base64url (unpadded) of its SHA-256.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_verifier_and_challenge_follow_rfc_7636() {
        let a = Pkce::new().unwrap();
        let b = Pkce::new().unwrap();
        assert_eq!(a.verifier.expose().len(), 43);
        assert!(
            a.verifier
                .expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(a.challenge.len(), 43);
        assert_eq!(a.challenge, s256(a.verifier.expose()));
        assert_ne!(a.verifier, b.verifier);
        assert_ne!(a.state, b.state);
        assert!(a.state.len() >= 22);
    }

    #[test]
    fn the_challenge_is_the_one_rfc_7636_and_msal_compute() {
        // RFC 7636 appendix B.
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        // The pair MSAL Python sent in the recorded authorize and token requests.
        assert_eq!(
            s256("BDdJmTPSIAoCLrZaWk6~v0jn8gfyOwKqc_hG9HVRutl"),
            "kB3uW3MEoS2wCkuPiMoy2g9G5wQRnfu0W621bStHSnY"
        );
    }
}
