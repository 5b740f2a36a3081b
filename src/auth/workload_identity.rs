//! AKS workload identity: the projected service-account token in `AZURE_FEDERATED_TOKEN_FILE` is
//! exchanged at Entra ID as a client assertion.
//!
//! The file is re-read when the copy in memory is older than [`REREAD_AFTER`] (kubelet rotates it at 80 % of its
//! lifetime, and it is valid for at least an hour), and at once when Entra ID says the assertion expired
//! (AADSTS700024). A file that cannot be read after it once could is a transient failure: the cache keeps serving
//! the token it holds and retries with backoff.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::token_endpoint::ClientAuth;
use super::{
    AccessToken, Credential, CredentialError, EntraClient, Secret, TokenRequest, Unusable,
    is_valid_tenant,
};
use crate::env::Env;
use crate::file_read::{self, Access};
use crate::lock;

/// How long a read of the federated token file is trusted.
pub(crate) const REREAD_AFTER: Duration = Duration::from_secs(5 * 60);

/// Federated token files larger than this are refused (a service-account token is a few KiB).
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Entra ID's "the client assertion has expired" code.
const ASSERTION_EXPIRED: i64 = 700_024;

const SOURCE: &str = "workload_identity";

/// The `workload_identity` credential.
#[derive(Debug)]
pub struct WorkloadIdentityCredential {
    config: Result<Settings, Unusable>,
    entra: EntraClient,
    assertion: Mutex<Option<Cached>>,
    reread_after: Duration,
}

/// Settings of a [`WorkloadIdentityCredential`] (`workload_identity: { tenant_id, client_id, token_file }` in
/// configuration), each defaulting to the variable the AKS workload identity webhook sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadIdentityCredentialOptions {
    /// Overrides `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// Overrides `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// Overrides `AZURE_FEDERATED_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
}

#[derive(Debug)]
struct Settings {
    tenant_id: String,
    client_id: String,
    token_file: PathBuf,
}

#[derive(Debug)]
struct Cached {
    assertion: Arc<Secret>,
    read_at: Instant,
}

// === impl WorkloadIdentityCredential ===

impl WorkloadIdentityCredential {
    /// Settings from `options`, each falling back to `AZURE_TENANT_ID` / `AZURE_CLIENT_ID` /
    /// `AZURE_FEDERATED_TOKEN_FILE`. Missing settings make the credential unavailable (it names them).
    pub fn new(
        options: WorkloadIdentityCredentialOptions,
        env: &dyn Env,
        entra: EntraClient,
    ) -> Self {
        let tenant_id = setting(options.tenant_id, env, "AZURE_TENANT_ID");
        let client_id = setting(options.client_id, env, "AZURE_CLIENT_ID");
        let token_file = setting(options.token_file, env, "AZURE_FEDERATED_TOKEN_FILE");
        let config = match (tenant_id, client_id, token_file) {
            (Ok(tenant_id), Ok(client_id), Ok(token_file)) if is_valid_tenant(&tenant_id) => {
                Ok(Settings {
                    tenant_id,
                    client_id,
                    token_file,
                })
            }
            (Ok(_), Ok(_), Ok(_)) => Err(Unusable::Invalid(
                "the tenant id (AZURE_TENANT_ID) is not valid: use letters, digits, '.' and '-'"
                    .to_owned(),
            )),
            (t, c, f) => {
                let missing: Vec<&str> =
                    [t.err(), c.err(), f.err()].into_iter().flatten().collect();
                Err(Unusable::Unavailable(format!(
                    "not configured: {} not set (the AKS workload identity webhook sets them for pods labelled azure.workload.identity/use: \"true\")",
                    missing.join(", ")
                )))
            }
        };
        Self {
            config,
            entra,
            assertion: Mutex::new(None),
            reread_after: REREAD_AFTER,
        }
    }

    /// Trusts a read of the file for `d` instead of five minutes (tests).
    pub fn with_reread_after(mut self, d: Duration) -> Self {
        self.reread_after = d;
        self
    }

    /// The assertion: the cached copy if fresh (and not `force`), else the file's current content.
    async fn assertion(
        &self,
        settings: &Settings,
        force: bool,
    ) -> Result<Arc<Secret>, CredentialError> {
        if !force
            && let Some(cached) = &*lock(&self.assertion)
            && cached.read_at.elapsed() < self.reread_after
        {
            return Ok(Arc::clone(&cached.assertion));
        }
        // Off the async workers and bounded in time and size; a FIFO or device is refused without being opened.
        let file = settings.token_file.display();
        let bytes = file_read::read_async(&settings.token_file, MAX_TOKEN_FILE_BYTES, Access::Any)
            .await
            .map_err(|e| self.file_error(format!("federated token file {file}: {}", e.reason())))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| self.file_error(format!("federated token file {file} is not text")))?
            .trim();
        if text.is_empty() {
            return Err(self.file_error(format!("federated token file {file} is empty")));
        }
        let assertion = Arc::new(Secret::new(text));
        *lock(&self.assertion) = Some(Cached {
            assertion: Arc::clone(&assertion),
            read_at: Instant::now(),
        });
        Ok(assertion)
    }

    /// Never read yet: the source is not present here (a chain moves on). Read before: a transient failure, so the
    /// cached token keeps serving while the file comes back.
    fn file_error(&self, message: String) -> CredentialError {
        if lock(&self.assertion).is_none() {
            CredentialError::unavailable(SOURCE, message)
        } else {
            CredentialError::service_unavailable(SOURCE, message)
        }
    }

    async fn exchange(
        &self,
        s: &Settings,
        assertion: &Secret,
        request: &TokenRequest,
    ) -> Result<AccessToken, CredentialError> {
        self.entra
            .client_credentials(
                SOURCE,
                &s.tenant_id,
                &s.client_id,
                ClientAuth::Assertion(assertion.expose()),
                request,
            )
            .await
    }
}

impl Credential for WorkloadIdentityCredential {
    const KIND: &'static str = SOURCE;

    async fn token(&self, request: &TokenRequest) -> Result<AccessToken, CredentialError> {
        let settings = self.config.as_ref().map_err(|why| why.error(SOURCE))?;
        let assertion = self.assertion(settings, false).await?;
        let result = self.exchange(settings, &assertion, request).await;
        let expired = matches!(&result, Err(CredentialError::Failed(e))
            if e.aad.as_ref().is_some_and(|a| a.error_codes.contains(&ASSERTION_EXPIRED)));
        if !expired {
            return result;
        }
        // Entra ID says the assertion expired: the file has probably been rotated since we read it.
        let fresh = self.assertion(settings, true).await?;
        if fresh.expose() == assertion.expose() {
            return result;
        }
        tracing::info!(file = %settings.token_file.display(), "federated token expired; re-read the rotated file");
        self.exchange(settings, &fresh, request).await
    }
}

/// The configured value, else the variable `name`; `Err(name)` when neither is set.
fn setting<T: From<String>>(
    given: Option<T>,
    env: &dyn Env,
    name: &'static str,
) -> Result<T, &'static str> {
    given
        .or_else(|| env.non_empty(name).map(T::from))
        .ok_or(name)
}
