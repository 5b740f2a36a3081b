//! Loading PEM and PKCS#12 files and signing assertions. Every key and certificate is generated at test time
//! (rcgen on aws-lc-rs); encrypted keys and PKCS#12 files are written with the same crates the loader reads them
//! with. RSA key generation is slow-ish, so one PKI is generated per test binary and shared.

use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value;

use super::{AssertionClaims, ClientCertificate, Secret};
use crate::auth::test_support::{assert_has, assert_starts};
use crate::test_support::TempDir;

/// A root CA and an intermediate CA (ECDSA P-256: their key type does not matter and EC keys are generated
/// in microseconds) and a client (leaf) certificate with an RSA key, generated once per test process.
pub(crate) struct Pki {
    pub(crate) root_der: Vec<u8>,
    pub(crate) intermediate_der: Vec<u8>,
    pub(crate) leaf_der: Vec<u8>,
    /// PKCS#8 DER of the leaf's RSA key.
    pub(crate) leaf_key: Vec<u8>,
}

/// The shared test PKI. Under nextest every test is its own process, so each pays for one RSA key generation.
pub(crate) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_params = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p
        };
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("aml-auth-proxy test root");
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);

        let intermediate_key = KeyPair::generate().unwrap();
        let intermediate_params = ca_params("aml-auth-proxy test intermediate");
        let intermediate = intermediate_params
            .signed_by(&intermediate_key, &root_issuer)
            .unwrap();
        let intermediate_issuer = Issuer::new(intermediate_params, intermediate_key);

        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "aml-auth-proxy test client");
        let leaf = leaf_params
            .signed_by(&leaf_key, &intermediate_issuer)
            .unwrap();
        Pki {
            root_der: root.der().to_vec(),
            intermediate_der: intermediate.der().to_vec(),
            leaf_der: leaf.der().to_vec(),
            leaf_key: leaf_key.serialize_der(),
        }
    })
}

/// A PEM section with 64-character lines.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 key.
fn pkcs1(pkcs8_der: &[u8]) -> Vec<u8> {
    let info = pkcs8::PrivateKeyInfoRef::try_from(pkcs8_der).unwrap();
    info.private_key.as_bytes().to_vec()
}

/// A PKCS#8 key encrypted with PBES2 (PBKDF2-SHA256, AES-256-CBC; few iterations to keep tests fast).
fn encrypt_pkcs8(pkcs8_der: &[u8], password: &str) -> Vec<u8> {
    let params =
        pkcs8::pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(1000, &[7; 16], [9; 16])
            .unwrap();
    let info = pkcs8::PrivateKeyInfoRef::try_from(pkcs8_der).unwrap();
    info.encrypt_with_params(params, password)
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// The modern PKCS#12 encryption (PBES2 with AES-256).
const AES: EncryptionAlgorithm = EncryptionAlgorithm::PbeWithHmacSha256AndAes256;

/// A PKCS#12 file holding `key` with `certs` (leaf first), written by p12-keystore.
fn pkcs12(key: &[u8], certs: &[&[u8]], password: &str, algorithm: EncryptionAlgorithm) -> Vec<u8> {
    let certs: Vec<Certificate> = certs
        .iter()
        .map(|der| Certificate::from_der(der).unwrap())
        .collect();
    let chain = PrivateKeyChain::new(
        b"key-1".as_slice(),
        PrivateKey::from_der(key).unwrap(),
        certs,
    );
    let mut store = KeyStore::new();
    store.add_entry("client", KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .encryption_algorithm(algorithm)
        .encryption_iterations(1000)
        .mac_iterations(1000)
        .write()
        .unwrap()
}

fn load(data: impl AsRef<[u8]>, password: Option<&str>) -> Result<ClientCertificate, String> {
    let password = password.map(Secret::new);
    ClientCertificate::from_bytes(data.as_ref(), password.as_ref())
}

fn chain_of(cert: &ClientCertificate) -> Vec<Vec<u8>> {
    cert.chain.iter().map(|c| c.as_ref().to_vec()).collect()
}

fn full_chain(p: &Pki) -> Vec<Vec<u8>> {
    vec![
        p.leaf_der.clone(),
        p.intermediate_der.clone(),
        p.root_der.clone(),
    ]
}

/// Asserts that no base64 body line of a PEM key (its first 16 characters) shows up in an error or `Debug` output.
fn assert_no_key_material(text: &str, key_pem: &str) {
    for line in key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
    {
        assert!(!text.contains(&line[..16]), "key material in {text:?}");
    }
}

// Under nextest each test is a process that generates its own RSA key, so related cases share one test.

// --- PEM -----------------------------------------------------------------------------------------------------

#[test]
fn pem_keys_pkcs8_and_pkcs1_with_the_chain_in_any_order() {
    let p = pki();
    // Root first, key in the middle, the leaf before its issuer: the loader finds the leaf by key and orders.
    let file = [
        pem("CERTIFICATE", &p.root_der),
        pem("PRIVATE KEY", &p.leaf_key),
        pem("CERTIFICATE", &p.leaf_der),
        pem("CERTIFICATE", &p.intermediate_der),
        pem("CERTIFICATE", &p.leaf_der), // repeated: kept once
    ]
    .concat();
    let cert = load(&file, None).unwrap();
    assert_eq!(chain_of(&cert), full_chain(p));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &p.leaf_der);
    assert_eq!(cert.x5t_s256, URL_SAFE_NO_PAD.encode(digest));
    assert_eq!(cert.subject(), "CN=aml-auth-proxy test client");
    // A password given for an unencrypted key is ignored.
    assert!(load(&file, Some("unused")).is_ok());

    // PKCS#1 ("RSA PRIVATE KEY"), after the certificate.
    let file = pem("CERTIFICATE", &p.leaf_der) + &pem("RSA PRIVATE KEY", &pkcs1(&p.leaf_key));
    let cert = load(&file, None).unwrap();
    assert_eq!(chain_of(&cert), vec![p.leaf_der.clone()]);
}

#[test]
fn pem_encrypted_pkcs8_key_needs_the_right_password() {
    let p = pki();
    let key_pem = pem(
        "ENCRYPTED PRIVATE KEY",
        &encrypt_pkcs8(&p.leaf_key, "s3cret pw"),
    );
    let file = pem("CERTIFICATE", &p.leaf_der) + &key_pem;

    let cert = load(&file, Some("s3cret pw")).unwrap();
    assert_eq!(cert.chain[0].as_ref(), p.leaf_der.as_slice());

    let wrong = load(&file, Some("wrong")).unwrap_err();
    assert!(wrong.contains("wrong password"), "{wrong}");
    assert!(!wrong.contains("s3cret"), "{wrong}");
    assert_no_key_material(&wrong, &key_pem);

    let missing = load(&file, None).unwrap_err();
    assert_has(&missing, "encrypted");
    assert_has(&missing, "no password");
}

/// No RSA key generation here: the failures are found before a key is parsed.
#[test]
fn refused_files_say_why() {
    let ec = KeyPair::generate().unwrap();
    let ec_cert = CertificateParams::new(vec!["ec".to_owned()])
        .unwrap()
        .self_signed(&ec)
        .unwrap();
    let (key, cert) = (ec.serialize_pem(), ec_cert.pem());
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    let cases: Vec<(Vec<u8>, Option<&str>, &str)> = vec![
        // EC keys, as PKCS#8 and as SEC1 ("EC PRIVATE KEY"; the label alone is enough), in PEM and PKCS#12.
        (
            (key.clone() + &cert).into(),
            None,
            "the private key is an EC key: only RSA keys are supported (Entra ID signs assertions with PS256)",
        ),
        (
            (pem("EC PRIVATE KEY", b"not parsed") + &cert).into(),
            None,
            "only RSA keys are supported",
        ),
        (
            pkcs12(&ec.serialize_der(), &[ec_cert.der()], "pw", AES),
            Some("pw"),
            "only RSA keys are supported",
        ),
        // A key but no certificate, a certificate but no key, two keys.
        (key.clone().into(), None, "no certificate"),
        (cert.clone().into(), None, "no private key"),
        ((key.clone() + &key + &cert).into(), None, "2 private keys"),
        // PEM syntax, and the legacy OpenSSL encryption nobody should still use.
        (
            (cert + "-----BEGIN PRIVATE KEY-----\nMIIE\n").into(),
            None,
            "not a valid PEM file",
        ),
        (legacy.into(), Some("pw"), "legacy OpenSSL PEM encryption"),
        // Neither format, empty.
        (" \n".into(), None, "empty"),
        ("just some text".into(), None, "neither PEM"),
        (
            vec![0x30, 0x03, 0x02, 0x01, 0x00],
            None,
            "not a valid PKCS#12 file",
        ),
    ];
    for (file, password, why) in cases {
        assert_has(&load(file, password).unwrap_err(), why);
    }
    // Unreadable.
    let missing = std::path::Path::new("/nonexistent/aml-auth-proxy/client.pem");
    let err = ClientCertificate::load(missing, None).unwrap_err();
    assert_starts(
        &err,
        "client certificate file /nonexistent/aml-auth-proxy/client.pem: ",
    );
}

#[test]
fn key_must_match_a_certificate_in_pem_and_pkcs12() {
    let p = pki();
    // A second RSA key, which matches no certificate.
    let other = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .unwrap()
        .serialize_der();
    let key_pem = pem("PRIVATE KEY", &other);
    let file = key_pem.clone() + &pem("CERTIFICATE", &p.leaf_der);
    let err = load(&file, None).unwrap_err();
    assert!(err.contains("does not match any certificate"), "{err}");
    assert_no_key_material(&err, &key_pem);

    let pfx = pkcs12(&other, &[&p.leaf_der], "pw", AES);
    let err = load(&pfx, Some("pw")).unwrap_err();
    assert!(err.contains("does not match any certificate"), "{err}");
}

// --- PKCS#12 -------------------------------------------------------------------------------------------------

#[test]
fn pkcs12_with_and_without_password_with_ca_chain_and_legacy_3des() {
    let p = pki();
    let pfx = pkcs12(
        &p.leaf_key,
        &[&p.leaf_der, &p.intermediate_der, &p.root_der],
        "pfx-pw",
        AES,
    );
    let cert = load(&pfx, Some("pfx-pw")).unwrap();
    assert_eq!(chain_of(&cert), full_chain(p));
    let missing = load(&pfx, None).unwrap_err();
    assert!(missing.contains("no password is configured"), "{missing}");

    let no_password = pkcs12(&p.leaf_key, &[&p.leaf_der], "", AES);
    let cert = load(&no_password, None).unwrap();
    assert_eq!(chain_of(&cert), vec![p.leaf_der.clone()]);

    let legacy = pkcs12(
        &p.leaf_key,
        &[&p.leaf_der, &p.intermediate_der],
        "legacy",
        EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
    );
    let cert = load(&legacy, Some("legacy")).unwrap();
    assert_eq!(
        chain_of(&cert),
        vec![p.leaf_der.clone(), p.intermediate_der.clone()]
    );
}

// --- files and redaction ---------------------------------------------------------------------------------------

#[test]
fn load_names_the_file_and_debug_shows_no_key() {
    let p = pki();
    let dir = TempDir::new();
    let key_pem = pem("PRIVATE KEY", &p.leaf_key);
    let key_only = dir.write("key-only.pem", key_pem.as_bytes());
    let both = dir.write(
        "both.pem",
        (key_pem.clone() + &pem("CERTIFICATE", &p.leaf_der)).as_bytes(),
    );
    let err = ClientCertificate::load(&key_only, None).unwrap_err();
    let cert = ClientCertificate::load(&both, None).unwrap();

    assert_starts(
        &err,
        &format!("client certificate file {}: ", key_only.display()),
    );
    assert!(err.contains("no certificate"), "{err}");
    assert_no_key_material(&err, &key_pem);

    let shown = format!("{cert:?}");
    assert!(shown.contains("RSA-2048 (redacted)"), "{shown}");
    assert!(shown.contains("CN=aml-auth-proxy test client"), "{shown}");
    assert_no_key_material(&shown, &key_pem);
}

// --- the JWT assertion -----------------------------------------------------------------------------------------

/// Splits a JWT and decodes header, claims and signature (the decoder refuses anything but unpadded base64url).
pub(crate) fn decode_jwt(jwt: &str) -> (Value, Value, Vec<u8>) {
    let parts: Vec<Vec<u8>> = jwt
        .split('.')
        .map(|p| URL_SAFE_NO_PAD.decode(p).unwrap())
        .collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let json = |bytes: &[u8]| serde_json::from_slice(bytes).unwrap();
    (json(&parts[0]), json(&parts[1]), parts[2].clone())
}

/// Whether `jwt` carries a PS256 signature by the key of `cert_der`.
pub(crate) fn ps256_verifies(jwt: &str, cert_der: &[u8]) -> bool {
    let (signed, signature) = jwt.rsplit_once('.').unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    let public = cert.public_key().subject_public_key.data.to_vec();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, public)
        .verify(signed.as_bytes(), &signature)
        .is_ok()
}

fn claims<'a>(jti: &'a str) -> AssertionClaims<'a> {
    AssertionClaims {
        audience: "https://login.example/tenant-1/oauth2/v2.0/token",
        client_id: "11111111-2222-3333-4444-555555555555",
        jti,
        issued_at: 1_800_000_000,
        lifetime: Duration::from_secs(600),
    }
}

#[test]
fn assertion_is_ps256_with_x5t_s256_and_verifies() {
    let p = pki();
    let file = pem("PRIVATE KEY", &p.leaf_key)
        + &pem("CERTIFICATE", &p.leaf_der)
        + &pem("CERTIFICATE", &p.intermediate_der);
    let cert = load(&file, None).unwrap();
    let jwt = cert.sign_assertion(&claims("jti-1"), false).unwrap();
    let (header, body, signature) = decode_jwt(jwt.expose());

    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &p.leaf_der);
    assert_eq!(
        header,
        serde_json::json!({
            "alg": "PS256",
            "typ": "JWT",
            "x5t#S256": URL_SAFE_NO_PAD.encode(digest.as_ref()),
        })
    );
    assert_eq!(
        body,
        serde_json::json!({
            "aud": "https://login.example/tenant-1/oauth2/v2.0/token",
            "iss": "11111111-2222-3333-4444-555555555555",
            "sub": "11111111-2222-3333-4444-555555555555",
            "jti": "jti-1",
            "nbf": 1_800_000_000u64,
            "iat": 1_800_000_000u64,
            "exp": 1_800_000_600u64,
        })
    );
    assert_eq!(signature.len(), 256);
    assert!(ps256_verifies(jwt.expose(), &p.leaf_der));

    // PSS is randomised (a 32-byte salt): two signatures over the same input differ, and both verify.
    let again = cert.sign_assertion(&claims("jti-1"), false).unwrap();
    assert_ne!(again.expose(), jwt.expose());
    assert!(ps256_verifies(again.expose(), &p.leaf_der));

    // A changed header or body no longer verifies.
    let tampered = jwt.expose().replacen("eyJ", "eyK", 1);
    assert!(!ps256_verifies(&tampered, &p.leaf_der));
}
