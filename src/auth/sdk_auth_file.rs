//! The JSON file written by `az ad sp create-for-rbac --sdk-auth`: `clientId`, `tenantId`,
//! `clientSecret` (or `clientCertificate`, a PEM path) and `activeDirectoryEndpointUrl`, which becomes the
//! authority host. The file is read when the credential is built; its content never reaches a log or error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::lenient_json::{self, WireError};
use super::{
    ClientCertificateCredential, ClientCertificateCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, DelegateCredential, EntraClient, Secret, TokenCredential,
    Unusable, is_valid_tenant,
};
use crate::file_read::{self, Access};

const SOURCE: &str = "sdk_auth_file";

/// sdk-auth files larger than this are refused (the JSON `az` writes is under 1 KiB).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The `sdk_auth_file` credential.
pub type SdkAuthFileCredential = DelegateCredential;

/// The fields read from the file. No `Debug`: it holds the client secret.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SdkAuthFile {
    #[serde(default, deserialize_with = "lenient_json::text")]
    client_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_json::text")]
    tenant_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_json::text")]
    client_secret: Option<String>,
    /// A PEM file, relative to the auth file unless absolute.
    #[serde(default, deserialize_with = "lenient_json::text")]
    client_certificate: Option<String>,
    /// The authority host.
    #[serde(default, deserialize_with = "lenient_json::text")]
    active_directory_endpoint_url: Option<String>,
}

/// Settings of an [`SdkAuthFileCredential`] (`sdk_auth_file: { path }` in configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkAuthFileCredentialOptions {
    /// The JSON file.
    pub path: PathBuf,
}

impl SdkAuthFileCredential {
    /// Reads and checks `path`. A missing file makes the credential unavailable; a malformed one is a
    /// configuration error (`CredentialRejected`) that names the file and the key, never a value.
    pub fn from_file(options: SdkAuthFileCredentialOptions, entra: &EntraClient) -> Self {
        let path = &options.path;
        // Bounded in size and time; a FIFO or device is refused without being opened.
        let inner = match file_read::read(path, MAX_FILE_BYTES, Access::Any) {
            Ok(bytes) => parse(path, &bytes, entra).map_err(Unusable::Invalid),
            Err(e) => Err(Unusable::Unavailable(format!(
                "{}: {}",
                path.display(),
                e.reason()
            ))),
        };
        Self::new(SOURCE, inner)
    }
}

/// Builds the inner credential from the file's JSON.
fn parse(
    path: &Path,
    bytes: &[u8],
    entra: &EntraClient,
) -> Result<Arc<dyn TokenCredential>, String> {
    let shown = path.display();
    let file: SdkAuthFile = lenient_json::from_object(bytes).map_err(|e| match e {
        WireError::NotJson { line } => format!("{shown} is not JSON (line {line})"),
        WireError::Unusable { line } => format!("{shown}: {} (line {line})", e.reason()),
        WireError::NotObject => format!("{shown} is {}", e.reason()),
    })?;
    fn text(field: &Option<String>) -> Option<&str> {
        field.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
    let client_id = text(&file.client_id).ok_or_else(|| format!("{shown}: clientId is missing"))?;
    let tenant_id = text(&file.tenant_id).ok_or_else(|| format!("{shown}: tenantId is missing"))?;
    if !is_valid_tenant(tenant_id) {
        return Err(format!("{shown}: tenantId is not a valid tenant id"));
    }
    let entra = match text(&file.active_directory_endpoint_url) {
        Some(url) => {
            let origin = crate::origin::authority_origin(url)
                .map_err(|why| format!("{shown}: activeDirectoryEndpointUrl {why}"))?;
            entra.with_authority(origin)
        }
        None => entra.clone(),
    };
    if let Some(secret) = text(&file.client_secret) {
        let options = ClientSecretCredentialOptions {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: Secret::new(secret),
        };
        let credential = ClientSecretCredential::new(options, entra).with_source(SOURCE);
        return Ok(Arc::new(credential));
    }
    if let Some(certificate) = text(&file.client_certificate) {
        let options = ClientCertificateCredentialOptions {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            certificate_file: resolve(path, certificate),
            password: None,
            send_certificate_chain: false,
        };
        let credential = ClientCertificateCredential::with_source(options, entra, SOURCE);
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
