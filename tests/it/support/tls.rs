//! A throw-away certificate authority for TLS tests.
//!
//! [`TestCa`] is generated at runtime with rcgen (ECDSA P-256): a self-signed CA certificate and one leaf
//! certificate signed by it. The leaf's subject alternative names are `localhost`, `127.0.0.1` and `::1`
//! unless a test asks for others ([`TestCa::with_sans`]). Nothing is read from or written to disk unless a
//! test asks for it ([`TestCa::write_ca_file`]).
//!
//! Every rustls config built here names the aws-lc-rs crypto provider explicitly; nothing relies on a
//! process-wide default provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The subject alternative names of the default leaf certificate.
pub(crate) const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A CA certificate plus one leaf certificate (and its key) signed by that CA.
///
/// Two `TestCa`s never trust each other: a client built from one rejects a server built from the other.
#[derive(Debug)]
pub(crate) struct TestCa {
    ca_pem: String,
    leaf_der: CertificateDer<'static>,
    /// PKCS#8 DER of the leaf's private key.
    leaf_key_der: Vec<u8>,
}

/// The crypto provider every config in the test support code uses.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

// === impl TestCa ===

impl TestCa {
    /// A fresh CA and a leaf certificate for `localhost`, `127.0.0.1` and `::1`.
    pub(crate) fn new() -> Self {
        Self::with_sans(&DEFAULT_SANS)
    }

    /// Another fresh, unrelated CA. It is the same as [`TestCa::new`]; the name says what a test means:
    /// a server built with `TestCa::untrusted().server_config(..)` presents a certificate that a client
    /// trusting only the test's main CA (or the system roots) must refuse.
    pub(crate) fn untrusted() -> Self {
        Self::new()
    }

    /// A fresh CA whose leaf certificate names only `sans` (DNS names or IP literals). Use it to build a
    /// server whose certificate does not match the host name a client connects to.
    pub(crate) fn with_sans(sans: &[&str]) -> Self {
        // The CA: self-signed, allowed to sign certificates.
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "aml-auth-proxy test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);

        // The leaf: a server certificate for the requested names, signed by the CA.
        let leaf_key = KeyPair::generate().expect("generate leaf key");
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut leaf_params = CertificateParams::new(sans).expect("leaf params (bad SAN?)");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "aml-auth-proxy test server");
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("sign leaf");

        Self {
            ca_pem: ca_cert.pem(),
            leaf_der: leaf_cert.der().clone(),
            leaf_key_der: leaf_key.serialize_der(),
        }
    }

    /// The CA certificate, PEM-encoded (what a proxy's `ca_file` option would point at).
    pub(crate) fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Writes the CA certificate as PEM to `dir/test-ca.pem` and returns that path.
    pub(crate) fn write_ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write CA PEM");
        path
    }

    /// A server config presenting the leaf certificate, offering the ALPN protocols `alpn` in that order
    /// (e.g. `&[b"h2", b"http/1.1"]`; an empty slice offers no ALPN).
    pub(crate) fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone()], key)
            .expect("server certificate and key");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
