//! The JSON file written by `az ad sp create-for-rbac --sdk-auth` (PROTOCOLS §9): `clientId`, `tenantId`,
//! `clientSecret` (or `clientCertificate`, a PEM path) and `activeDirectoryEndpointUrl`, which becomes the
//! authority host. The file is read when the credential is built; its content never reaches a log or error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::file_read::{self, Access};

use super::{
    AccessToken, BoxFuture, ClientCertificateCredential, ClientSecretCredential, CredentialError,
    EntraClient, Secret, TokenCredential, TokenError, TokenErrorKind, TokenRequest,
    is_valid_tenant,
};

const SOURCE: &str = "sdk_auth_file";

/// sdk-auth files larger than this are refused (the JSON `az` writes is under 1 KiB).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The `sdk_auth_file` credential.
#[derive(Debug)]
pub struct SdkAuthFileCredential {
    inner: Result<Arc<dyn TokenCredential>, CredentialErrorKind>,
}

#[derive(Debug)]
enum CredentialErrorKind {
    Unavailable(String),
    Invalid(String),
}

// === impl SdkAuthFileCredential ===

impl SdkAuthFileCredential {
    /// Reads and checks `path`. A missing file makes the credential unavailable; a malformed one is a
    /// configuration error (`CredentialRejected`) that names the file and the key, never a value.
    pub fn new(path: &Path, entra: &EntraClient) -> Self {
        // Bounded in size and time; a FIFO or device is refused without being opened.
        let inner = match file_read::read(path, MAX_FILE_BYTES, Access::Any) {
            Ok(bytes) => parse(path, &bytes, entra).map_err(CredentialErrorKind::Invalid),
            Err(e) => Err(CredentialErrorKind::Unavailable(format!(
                "{}: {}",
                path.display(),
                e.reason()
            ))),
        };
        Self { inner }
    }
}

/// Builds the inner credential from the file's JSON.
fn parse(
    path: &Path,
    bytes: &[u8],
    entra: &EntraClient,
) -> Result<Arc<dyn TokenCredential>, String> {
    let shown = path.display();
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("{shown} is not JSON (line {})", e.line()))?;
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let client_id = text("clientId").ok_or_else(|| format!("{shown}: clientId is missing"))?;
    let tenant_id = text("tenantId").ok_or_else(|| format!("{shown}: tenantId is missing"))?;
    if !is_valid_tenant(tenant_id) {
        return Err(format!("{shown}: tenantId is not a valid tenant id"));
    }
    let entra = match text("activeDirectoryEndpointUrl") {
        Some(url) => {
            let origin = crate::config::authority_origin(url)
                .map_err(|why| format!("{shown}: activeDirectoryEndpointUrl {why}"))?;
            entra.with_authority(origin)
        }
        None => entra.clone(),
    };
    if let Some(secret) = text("clientSecret") {
        let credential = ClientSecretCredential::new(
            tenant_id.to_owned(),
            client_id.to_owned(),
            Secret::new(secret),
            entra,
        )
        .with_source(SOURCE);
        return Ok(Arc::new(credential));
    }
    if let Some(certificate) = text("clientCertificate") {
        let certificate = resolve(path, certificate);
        let credential = ClientCertificateCredential::from_file(
            tenant_id.to_owned(),
            client_id.to_owned(),
            &certificate,
            None,
            false,
            entra,
            SOURCE,
        );
        return Ok(Arc::new(credential));
    }
    Err(format!(
        "{shown}: neither clientSecret nor clientCertificate is set"
    ))
}

/// A relative certificate path is relative to the auth file.
fn resolve(auth_file: &Path, certificate: &str) -> PathBuf {
    let p = PathBuf::from(certificate);
    if p.is_absolute() {
        p
    } else {
        auth_file.parent().map_or(p.clone(), |dir| dir.join(&p))
    }
}

impl TokenCredential for SdkAuthFileCredential {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<AccessToken, CredentialError>> {
        match &self.inner {
            Ok(inner) => inner.get_token(request),
            Err(CredentialErrorKind::Unavailable(why)) => {
                let e = CredentialError::unavailable(SOURCE, why.clone());
                Box::pin(async move { Err(e) })
            }
            Err(CredentialErrorKind::Invalid(why)) => {
                let e = CredentialError::Failed(TokenError::new(
                    TokenErrorKind::CredentialRejected,
                    SOURCE,
                    why.clone(),
                ));
                Box::pin(async move { Err(e) })
            }
        }
    }

    fn kind(&self) -> &'static str {
        SOURCE
    }
}
