//! JWT-shaped tokens: `header.payload.signature`, base64url without padding, signed RS256 with an RSA-2048 key made
//! when the emulator starts (one key per run, never written anywhere).
//!
//! The public half is published as a JWKS (`/{tenant}/discovery/v2.0/keys`), so an application that validates
//! tokens with an ordinary JWT library can validate the emulator's too. The emulator's own resource roles (ARM, the
//! echoing upstream, the scoring endpoints) verify the signature with the same key and judge `exp`/`nbf` by the
//! wall clock, as a real resource server would: a token another emulator run issued, or one edited by hand, is
//! refused.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

/// How far in the future a token's `nbf` may be and still be accepted (resource servers allow clock skew; a token
/// issued for a claims challenge carries the challenge's `nbf`, which may be up to a second ahead).
pub(crate) const NBF_SKEW_SECS: i64 = 300;

/// The signing key of one emulator run.
pub(crate) struct Signer {
    key: KeyPair,
    public_der: Vec<u8>,
    kid: String,
    jwk: Value,
}

/// Why a presented token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Not three base64url parts with JSON header and payload.
    Malformed,
    /// The signature does not verify with this run's key (forged, edited, or from another run).
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is further in the future than the allowed skew.
    NotYetValid,
}

// === impl Signer ===

impl Signer {
    /// A fresh RSA-2048 key (100 ms to a second of CPU: call it off the async workers).
    pub(crate) fn generate() -> Result<Self, String> {
        let key = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| "RSA key generation failed".to_owned())?;
        let public = key.public_key();
        let public_der = public.as_ref().to_vec();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let thumbprint = digest::digest(&digest::SHA256, &n);
        let kid = URL_SAFE_NO_PAD.encode(&thumbprint.as_ref()[..20]);
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&n),
            "e": URL_SAFE_NO_PAD.encode(&e),
        });
        Ok(Self {
            key,
            public_der,
            kid,
            jwk,
        })
    }

    /// The key set clients fetch from `jwks_uri`.
    pub(crate) fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk.clone()] })
    }

    /// Signs `claims` (a JSON object) into a compact JWT.
    pub(crate) fn sign(&self, claims: &Map<String, Value>) -> Result<String, String> {
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.kid, "x5t": self.kid});
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                token.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "RS256 signing failed".to_owned())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }

    /// The claims of a token this run signed and that is valid at `now` (Unix seconds).
    pub(crate) fn verify(&self, token: &str, now: i64) -> Result<Map<String, Value>, Rejected> {
        let (signed, signature) = token.rsplit_once('.').ok_or(Rejected::Malformed)?;
        let (header, payload) = signed.split_once('.').ok_or(Rejected::Malformed)?;
        let header = decode_part(header).ok_or(Rejected::Malformed)?;
        let claims = decode_part(payload).ok_or(Rejected::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Rejected::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(Rejected::BadSignature);
        }
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.public_der)
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| Rejected::BadSignature)?;
        let number = |name: &str| claims.get(name).and_then(Value::as_i64);
        if number("exp").is_none_or(|exp| exp <= now) {
            return Err(Rejected::Expired);
        }
        if number("nbf").is_some_and(|nbf| nbf > now + NBF_SKEW_SECS) {
            return Err(Rejected::NotYetValid);
        }
        Ok(claims)
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

// === impl Rejected ===

impl Rejected {
    /// What a resource server says about it (for `error_description` and ARM's message).
    pub(crate) fn description(self) -> &'static str {
        match self {
            Rejected::Malformed => "The access token is malformed",
            Rejected::BadSignature => "The access token signature is invalid",
            Rejected::Expired => "The access token has expired",
            Rejected::NotYetValid => "The access token is not yet valid",
        }
    }
}

/// Why a request's bearer token was not accepted by a resource role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No `Authorization: Bearer …`.
    Missing,
    /// A token, but not one this run issued and still valid.
    Rejected(Rejected),
}

// === impl Presented ===

impl Presented {
    /// What a resource tells the caller.
    pub(crate) fn description(self) -> &'static str {
        match self {
            Self::Missing => "An authorization header with a token is required",
            Self::Rejected(why) => why.description(),
        }
    }
}

/// The verified claims of the request's bearer token.
pub(crate) fn check_bearer(
    signer: &Signer,
    headers: &http::HeaderMap,
    now: i64,
) -> Result<Map<String, Value>, Presented> {
    let token = super::serve::bearer(headers).ok_or(Presented::Missing)?;
    signer.verify(token, now).map_err(Presented::Rejected)
}

/// Whether verified claims are an Entra ID access token (not an online endpoint's AML token).
pub(crate) fn is_entra(claims: &Map<String, Value>) -> bool {
    claims.contains_key("tid") && !claims.contains_key(AML_ENDPOINT_CLAIM)
}

/// The claim that marks an online endpoint's AML token (its value is the endpoint's name).
pub(crate) const AML_ENDPOINT_CLAIM: &str = "aml_endpoint";

/// A base64url part holding a JSON object.
fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The header and claims of any JWT-shaped string, without checking anything.
#[cfg(test)]
pub(crate) fn decode_unverified(token: &str) -> Option<(Map<String, Value>, Map<String, Value>)> {
    let mut parts = token.split('.');
    let (header, payload) = (parts.next()?, parts.next()?);
    let _signature = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((decode_part(header)?, decode_part(payload)?))
}

/// A stable GUID-shaped identifier derived from `parts` (object ids of applications and users): the same inputs
/// always give the same id, so a test can predict `oid`.
pub(crate) fn derived_guid(parts: &[&str]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part.as_bytes());
        ctx.update(b"\0");
    }
    let d = ctx.finish();
    let b = d.as_ref();
    let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// `n` random bytes as base64url (refresh tokens, codes, keys, `uti`).
pub(crate) fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // The system RNG does not fail on supported platforms; fastrand keeps this total if it ever did.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url(SHA-256(text)) without padding: the PKCE S256 transform.
pub(crate) fn s256(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, text.as_bytes()))
}

/// base64url without padding of `bytes`.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_and_an_edited_one_does_not() {
        let signer = Signer::generate().unwrap();
        let mut claims = Map::new();
        claims.insert("aud".into(), "https://ml.azure.com".into());
        claims.insert("exp".into(), 2_000.into());
        claims.insert("nbf".into(), 1_000.into());
        let token = signer.sign(&claims).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(signer.verify(&token, 1_500).unwrap(), claims);
        assert_eq!(signer.verify(&token, 2_000), Err(Rejected::Expired));
        assert_eq!(signer.verify(&token, 600), Err(Rejected::NotYetValid));

        let (header, payload) = decode_unverified(&token).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(payload, claims);

        // Another audience, same signature: refused.
        let mut edited = claims.clone();
        edited.insert("aud".into(), "https://management.azure.com".into());
        let forged = format!(
            "{}.{}.{}",
            token.split('.').next().unwrap(),
            b64url(Value::Object(edited).to_string().as_bytes()),
            token.rsplit('.').next().unwrap()
        );
        assert_eq!(signer.verify(&forged, 1_500), Err(Rejected::BadSignature));
        // Another run's key: refused.
        let other = Signer::generate().unwrap();
        assert_eq!(other.verify(&token, 1_500), Err(Rejected::BadSignature));
        assert_eq!(signer.verify("a.b", 1_500), Err(Rejected::Malformed));
    }

    #[test]
    fn the_jwks_publishes_the_verifying_key() {
        let signer = Signer::generate().unwrap();
        let jwks = signer.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["kid"], signer.kid.as_str());
        assert_eq!(key["e"], "AQAB");
        let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256);
        // The published components verify a signature the signer made.
        let components = aws_lc_rs::rsa::PublicKeyComponents {
            n: n.as_slice(),
            e: &[1u8, 0, 1][..],
        };
        let token = signer.sign(&Map::new()).unwrap();
        let (signed, sig) = token.rsplit_once('.').unwrap();
        components
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(sig).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn derived_guids_are_stable_guids() {
        let a = derived_guid(&["tenant", "client"]);
        assert_eq!(a, derived_guid(&["tenant", "client"]));
        assert_ne!(a, derived_guid(&["tenantc", "lient"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_eq!(s256("abc").len(), 43);
    }
}
