//! A client certificate file for `private_key_jwt`: loading a PEM or PKCS#12 file into a checked RSA key and
//! certificate chain, and signing the JWT client assertion the way current MSAL does (PS256 with `x5t#S256`,
//! optional `x5c`). The credential that sends the assertion is `client_certificate`.
//!
//! * **PEM**: one private key (`PRIVATE KEY`, `RSA PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY` with the password)
//!   and at least one `CERTIFICATE`. Sections other than these are ignored.
//! * **PKCS#12 / PFX** (DER), with or without a password, including legacy 3DES/RC2 files.
//!
//! The format is told from the content, not the file name. The leaf is the certificate whose public key matches
//! the private key (as MSAL Go picks it); the chain is the leaf, then its issuers as far as the file has them, then
//! any other certificates in file order. Only RSA keys are accepted: Entra ID signs assertions with PS256.
//! Error messages describe the problem and never contain key material.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair as _, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pkcs8::ObjectIdentifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use zeroize::Zeroizing;

use super::{Secret, contains};
use crate::file_read::{self, Access};

/// Certificate files (PEM or PKCS#12) larger than this are refused; a key with a full chain is a few KiB.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The error for every non-RSA key.
const RSA_ONLY: &str = "only RSA keys are supported (Entra ID signs assertions with PS256)";

/// PKCS#8 key algorithm identifiers.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");

/// A loaded client certificate: the RSA key pair, the certificate chain (leaf first) and the leaf's SHA-256
/// thumbprint. `Debug` shows the thumbprint, subject and chain length, never the key.
pub struct ClientCertificate {
    key: RsaKeyPair,
    chain: Vec<CertificateDer<'static>>,
    /// The leaf's SHA-256 thumbprint, base64url (the `x5t#S256` header).
    x5t_s256: String,
    subject: String,
    not_after: i64,
}

/// The claims of one client assertion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AssertionClaims<'a> {
    /// `aud`: the token endpoint URL the assertion is sent to.
    pub(crate) audience: &'a str,
    /// `iss` and `sub`: the application (client) id.
    pub(crate) client_id: &'a str,
    /// `jti`: unique per assertion.
    pub(crate) jti: &'a str,
    /// `iat` and `nbf`, in Unix seconds.
    pub(crate) issued_at: u64,
    /// `exp` − `iat`.
    pub(crate) lifetime: Duration,
}

/// A private key as found in the file, before it is checked.
enum RawKey {
    /// PKCS#8 `PrivateKeyInfo` DER.
    Pkcs8(Zeroizing<Vec<u8>>),
    /// PKCS#1 `RSAPrivateKey` DER.
    Pkcs1(Zeroizing<Vec<u8>>),
    /// PKCS#8 `EncryptedPrivateKeyInfo` DER.
    EncryptedPkcs8(Vec<u8>),
}

// === impl ClientCertificate ===

impl ClientCertificate {
    /// Loads `path`: PEM (key + certificates) or PKCS#12, told apart by content. `password` decrypts an encrypted
    /// PEM key or the PKCS#12 file (a PKCS#12 file without one is opened with the empty password).
    ///
    /// The error names the file and the problem, never key material.
    pub fn load(path: &Path, password: Option<&Secret>) -> Result<ClientCertificate, String> {
        // Bounded in size and time; a FIFO or device is refused without being opened.
        file_read::read(path, MAX_FILE_BYTES, Access::Any)
            .map_err(|e| e.reason())
            .and_then(|data| Self::from_bytes(&data, password))
            .map_err(|why| format!("client certificate file {}: {why}", path.display()))
    }

    /// Parses the content of a PEM or PKCS#12 file (see [`ClientCertificate::load`]). The error describes the
    /// problem without naming a file.
    pub fn from_bytes(data: &[u8], password: Option<&Secret>) -> Result<ClientCertificate, String> {
        if data.iter().all(u8::is_ascii_whitespace) {
            return Err("the file is empty".to_owned());
        }
        if contains(data, b"-----BEGIN ") {
            Self::from_pem(data, password)
        } else if data.first() == Some(&0x30) {
            Self::from_pkcs12(data, password)
        } else {
            Err("neither PEM (no -----BEGIN line) nor PKCS#12 (not DER)".to_owned())
        }
    }

    /// The leaf certificate's subject, e.g. `CN=my-app`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The end of the leaf certificate's validity, in Unix seconds.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after
    }

    /// Signs a client assertion: header `{"alg":"PS256","typ":"JWT","x5t#S256":…[,"x5c":[…]]}`, claims
    /// `aud, iss, sub, jti, nbf, iat, exp`, base64url segments without padding, RSA-PSS SHA-256 (salt = 32 bytes).
    pub(crate) fn sign_assertion(
        &self,
        claims: &AssertionClaims<'_>,
        include_chain: bool,
    ) -> Result<Secret, String> {
        let mut header = serde_json::json!({
            "alg": "PS256",
            "typ": "JWT",
            "x5t#S256": self.x5t_s256,
        });
        if include_chain {
            header["x5c"] = self
                .chain
                .iter()
                .map(|c| serde_json::Value::String(STANDARD.encode(c.as_ref())))
                .collect();
        }
        let expires = claims.issued_at.saturating_add(claims.lifetime.as_secs());
        let payload = serde_json::json!({
            "aud": claims.audience,
            "iss": claims.client_id,
            "sub": claims.client_id,
            "jti": claims.jti,
            "nbf": claims.issued_at,
            "iat": claims.issued_at,
            "exp": expires,
        });
        let b64 = |json: serde_json::Value| URL_SAFE_NO_PAD.encode(json.to_string());
        let mut jwt = format!("{}.{}", b64(header), b64(payload));
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PSS_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the client assertion failed".to_owned())?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(&signature));
        Ok(Secret::new(jwt))
    }

    fn from_pem(data: &[u8], password: Option<&Secret>) -> Result<Self, String> {
        if contains(data, b"Proc-Type: 4,ENCRYPTED") {
            return Err("the private key uses legacy OpenSSL PEM encryption (Proc-Type: 4,ENCRYPTED), which is \
                 not supported: convert it to encrypted PKCS#8 (openssl pkcs8 -topk8 -v2 aes-256-cbc)"
                .to_owned());
        }
        let mut keys = Vec::new();
        let mut certs = Vec::new();
        for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(data) {
            let (kind, der) = item.map_err(|e| pem_error(&e))?;
            match kind {
                SectionKind::Certificate => certs.push(der),
                SectionKind::PrivateKey => keys.push(RawKey::Pkcs8(Zeroizing::new(der))),
                SectionKind::RsaPrivateKey => keys.push(RawKey::Pkcs1(Zeroizing::new(der))),
                SectionKind::EcPrivateKey => {
                    return Err(format!("the private key is an EC key: {RSA_ONLY}"));
                }
                _ => {}
            }
        }
        keys.extend(
            encrypted_pem_keys(data)?
                .into_iter()
                .map(RawKey::EncryptedPkcs8),
        );
        let [key] = <[RawKey; 1]>::try_from(keys).map_err(|keys| match keys.len() {
            0 => "no private key found (the PEM file needs a PRIVATE KEY, RSA PRIVATE KEY or \
                  ENCRYPTED PRIVATE KEY section besides the certificate)"
                .to_owned(),
            n => {
                format!("{n} private keys found; keep only the one that belongs to the certificate")
            }
        })?;
        if certs.is_empty() {
            return Err(
                "no certificate found (the PEM file needs a CERTIFICATE section besides the key)"
                    .to_owned(),
            );
        }
        let key = rsa_key(key, password)?;
        Self::assemble(key, certs)
    }

    fn from_pkcs12(data: &[u8], password: Option<&Secret>) -> Result<Self, String> {
        let archive =
            p12_keystore::Pkcs12Archive::from_pkcs12(data, password.map_or("", Secret::expose))
                .map_err(|e| pkcs12_error(&e, password.is_some()))?;
        let certs: Vec<Vec<u8>> = archive
            .certs
            .iter()
            .map(|bag| bag.cert.as_der().to_vec())
            .collect();
        let [key] = <[_; 1]>::try_from(archive.keys).map_err(|keys| match keys.len() {
            0 => "the PKCS#12 file contains no private key".to_owned(),
            n => format!(
                "the PKCS#12 file contains {n} private keys; export only the one for this application"
            ),
        })?;
        if certs.is_empty() {
            return Err("the PKCS#12 file contains no certificate".to_owned());
        }
        let key = rsa_key(
            RawKey::Pkcs8(Zeroizing::new(key.key.as_der().to_vec())),
            None,
        )?;
        Self::assemble(key, certs)
    }

    /// Picks the leaf (the certificate holding the key's public key) and orders the chain.
    fn assemble(key: RsaKeyPair, all: Vec<Vec<u8>>) -> Result<Self, String> {
        // Some exports repeat a certificate (e.g. in two PKCS#12 bags): keep the first of each.
        let mut certs = Vec::with_capacity(all.len());
        for der in all {
            if !certs.contains(&der) {
                certs.push(der);
            }
        }
        let mut parsed = Vec::with_capacity(certs.len());
        for (i, der) in certs.iter().enumerate() {
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|_| format!("certificate #{} is not a valid X.509 certificate", i + 1))?;
            parsed.push(cert);
        }
        let public = key.public_key().as_ref();
        let leaf = parsed
            .iter()
            .position(|c| c.public_key().subject_public_key.data.as_ref() == public)
            .ok_or("the private key does not match any certificate in the file")?;

        // Leaf, then its issuers as far as the file has them, then the rest in file order.
        let mut order = vec![leaf];
        while let Some(cert) = order.last().map(|&i| &parsed[i])
            && cert.subject().as_raw() != cert.issuer().as_raw()
            && let Some(issuer) = (0..parsed.len()).find(|&i| {
                !order.contains(&i) && parsed[i].subject().as_raw() == cert.issuer().as_raw()
            })
        {
            order.push(issuer);
        }
        order.extend(
            (0..parsed.len())
                .filter(|i| !order.contains(i))
                .collect::<Vec<_>>(),
        );

        let subject = parsed[leaf].subject().to_string();
        let not_after = parsed[leaf].validity().not_after.timestamp();
        let chain: Vec<CertificateDer<'static>> = order
            .iter()
            .map(|&i| CertificateDer::from(certs[i].clone()))
            .collect();
        Ok(Self {
            key,
            x5t_s256: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, chain[0].as_ref())),
            chain,
            subject,
            not_after,
        })
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("subject", &self.subject)
            .field("x5t#S256", &self.x5t_s256)
            .field("chain_len", &self.chain.len())
            .field(
                "key",
                &format_args!("RSA-{} (redacted)", self.key.public_modulus_len() * 8),
            )
            .finish()
    }
}

/// Turns a key found in the file into an RSA key pair, decrypting it with `password` if it is encrypted.
fn rsa_key(key: RawKey, password: Option<&Secret>) -> Result<RsaKeyPair, String> {
    match key {
        RawKey::Pkcs1(der) => RsaKeyPair::from_der(&der).map_err(|e| key_rejected(&e)),
        RawKey::Pkcs8(der) => {
            let info = pkcs8::PrivateKeyInfoRef::try_from(der.as_slice())
                .map_err(|_| "the private key is not valid PKCS#8".to_owned())?;
            match info.algorithm.oid {
                RSA_ENCRYPTION => RsaKeyPair::from_pkcs8(&der).map_err(|e| key_rejected(&e)),
                EC_PUBLIC_KEY => Err(format!("the private key is an EC key: {RSA_ONLY}")),
                ED25519 | ED448 => Err(format!("the private key is an EdDSA key: {RSA_ONLY}")),
                RSASSA_PSS => Err(
                    "the private key is restricted to RSASSA-PSS (OID 1.2.840.113549.1.1.10); \
                     use a plain rsaEncryption RSA key"
                        .to_owned(),
                ),
                other => Err(format!(
                    "the private key's algorithm (OID {other}) is not supported: {RSA_ONLY}"
                )),
            }
        }
        RawKey::EncryptedPkcs8(der) => {
            let password =
                password.ok_or("the private key is encrypted, but no password is configured")?;
            let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice())
                .map_err(|_| "the encrypted private key is not valid PKCS#8".to_owned())?;
            let plain = info
                .decrypt(password.expose())
                .map_err(|e| decrypt_error(&e))?;
            rsa_key(
                RawKey::Pkcs8(Zeroizing::new(plain.as_bytes().to_vec())),
                None,
            )
        }
    }
}

/// The DER of every `ENCRYPTED PRIVATE KEY` section (rustls-pki-types skips that label).
fn encrypted_pem_keys(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let text = String::from_utf8_lossy(data);
    let mut keys = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        match &mut body {
            None if line == "-----BEGIN ENCRYPTED PRIVATE KEY-----" => body = Some(String::new()),
            None => {}
            Some(b) if line == "-----END ENCRYPTED PRIVATE KEY-----" => {
                let der = STANDARD.decode(b.as_bytes()).map_err(|_| {
                    "the ENCRYPTED PRIVATE KEY section is not valid base64".to_owned()
                })?;
                keys.push(der);
                body = None;
            }
            Some(b) => b.push_str(line),
        }
    }
    if body.is_some() {
        return Err("the ENCRYPTED PRIVATE KEY section has no END line".to_owned());
    }
    Ok(keys)
}

/// A PEM syntax error, described without echoing the file's content.
fn pem_error(e: &pem::Error) -> String {
    let why = match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "it cannot be parsed",
    };
    format!("not a valid PEM file: {why}")
}

fn key_rejected(e: &aws_lc_rs::error::KeyRejected) -> String {
    match e.description_() {
        "TooSmall" => "the RSA key is shorter than 2048 bits".to_owned(),
        "TooLarge" => "the RSA key is longer than 8192 bits".to_owned(),
        other => format!("the RSA private key is not usable ({other})"),
    }
}

fn decrypt_error(e: &pkcs8::Error) -> String {
    use pkcs8::pkcs5::Error as Pbes;
    match e {
        pkcs8::Error::EncryptedPrivateKey(Pbes::UnsupportedAlgorithm { oid }) => format!(
            "the private key's encryption (OID {oid}) is not supported; use PBES2 with PBKDF2 or scrypt and AES"
        ),
        pkcs8::Error::EncryptedPrivateKey(Pbes::NoPbes1CryptSupport) => {
            "the private key uses legacy PBES1 encryption, which is not supported: re-encrypt it \
             (openssl pkcs8 -topk8 -v2 aes-256-cbc)"
                .to_owned()
        }
        _ => "cannot decrypt the private key: wrong password?".to_owned(),
    }
}

fn pkcs12_error(e: &p12_keystore::error::Error, has_password: bool) -> String {
    use p12_keystore::error::Error as P12;
    let wrong_password = match e {
        P12::MacError(_) | P12::UnpadError => true,
        P12::Pkcs5Error(why) => why.contains("decryption failed"),
        _ => false,
    };
    match e {
        _ if wrong_password && has_password => {
            "cannot open the PKCS#12 file: wrong password (or the file is corrupted)".to_owned()
        }
        _ if wrong_password => {
            "cannot open the PKCS#12 file: it is password-protected, but no password is configured"
                .to_owned()
        }
        // These name algorithms and OIDs only.
        P12::Pkcs5Error(why) => format!("cannot decrypt the PKCS#12 file: {why}"),
        P12::UnsupportedEncryptionScheme | P12::UnsupportedMacAlgorithm => {
            format!("the PKCS#12 file uses an unsupported algorithm: {e}")
        }
        P12::InvalidParameters => {
            "the PKCS#12 file's encryption parameters are invalid or beyond safe limits".to_owned()
        }
        _ => "not a valid PKCS#12 file".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
