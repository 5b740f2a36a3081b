//! TLS client configuration shared by the upstream client and the token-service client.
//!
//! Trust anchors are the system roots plus `tls.extra_ca_file`. The crypto provider (aws-lc-rs) is passed
//! explicitly, so a second provider pulled in elsewhere can never cause a runtime panic. Certificate
//! verification cannot be turned off.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the protocol versions for the provider (should not happen with the default provider).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// An extra CA certificate was rejected.
    #[error("extra CA certificate #{index} rejected: {reason}")]
    BadExtraRoot {
        /// Position in `tls.extra_ca_file`.
        index: usize,
        /// What rustls said.
        reason: String,
    },
    /// The system store could not be read in time.
    #[error("system root certificates: {0}")]
    SystemRoots(String),
    /// No trust anchors at all.
    #[error(
        "no trusted root certificates: the system store is empty and no tls.extra_ca_file is configured"
    )]
    NoRoots,
}

/// The crypto provider every TLS configuration of the proxy uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration trusting the system roots plus `extra_roots`, with ALPN left to the connector.
pub fn client_config(extra_roots: &[CertificateDer<'static>]) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    // File I/O (`SSL_CERT_FILE`, `SSL_CERT_DIR` or the distribution's store), so bounded in time like every read.
    let native = crate::file_read::off_thread(
        std::path::Path::new("the system certificate store"),
        crate::file_read::READ_TIMEOUT,
        rustls_native_certs::load_native_certs,
    )
    .map_err(|e| TlsError::SystemRoots(e.reason()))?;
    for e in &native.errors {
        tracing::debug!(error = %e, "skipping unreadable system certificate");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded system root certificates");
    for (index, cert) in extra_roots.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| TlsError::BadExtraRoot {
                index,
                reason: e.to_string(),
            })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
