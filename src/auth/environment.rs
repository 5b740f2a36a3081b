//! The `environment` source: a service principal described by environment variables.
//!
//! Precedence (as azure-identity's EnvironmentCredential, plus the Azure ML guide's names):
//! `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`; then `AZURE_CLIENT_CERTIFICATE_PATH`;
//! then `AML_TENANT_ID` + `AML_PRINCIPAL_ID` + `AML_PRINCIPAL_PASS`; then `AZURE_AUTH_LOCATION`.

use std::sync::Arc;

use super::{
    ClientCertificateCredential, ClientCertificateCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, DelegateCredential, EntraClient, SdkAuthFileCredential,
    SdkAuthFileCredentialOptions, Secret, TokenCredential, Unusable, is_valid_tenant,
};
use crate::env::Env;

const SOURCE: &str = "environment";

/// The `environment` chain source. The variables are read once, when the credential is built.
pub type EnvironmentCredential = DelegateCredential;

impl EnvironmentCredential {
    /// Reads the variables from `env`.
    pub fn from_env(env: &dyn Env, entra: &EntraClient) -> Self {
        let var = |n: &str| env.non_empty(n);
        let azure = (var("AZURE_TENANT_ID"), var("AZURE_CLIENT_ID"));
        let inner =
            if let (Some(t), Some(c), Some(s)) = (&azure.0, &azure.1, var("AZURE_CLIENT_SECRET")) {
                secret(t, c, s, "AZURE_TENANT_ID", entra)
            } else if let (Some(t), Some(c), Some(path)) =
                (&azure.0, &azure.1, var("AZURE_CLIENT_CERTIFICATE_PATH"))
            {
                certificate(t, c, &path, env, entra)
            } else if let (Some(t), Some(c), Some(s)) = (
                var("AML_TENANT_ID"),
                var("AML_PRINCIPAL_ID"),
                var("AML_PRINCIPAL_PASS"),
            ) {
                secret(&t, &c, s, "AML_TENANT_ID", entra)
            } else if let Some(path) = var("AZURE_AUTH_LOCATION") {
                let options = SdkAuthFileCredentialOptions { path: path.into() };
                Ok(Arc::new(SdkAuthFileCredential::from_file(options, entra))
                    as Arc<dyn TokenCredential>)
            } else {
                Err(Unusable::Unavailable(missing_message(env)))
            };
        Self::new(SOURCE, inner)
    }
}

type Inner = Result<Arc<dyn TokenCredential>, Unusable>;

fn secret(
    tenant: &str,
    client: &str,
    secret: String,
    tenant_var: &str,
    entra: &EntraClient,
) -> Inner {
    valid_tenant(tenant, tenant_var)?;
    let options = ClientSecretCredentialOptions {
        tenant_id: tenant.to_owned(),
        client_id: client.to_owned(),
        client_secret: Secret::new(secret),
    };
    let credential = ClientSecretCredential::new(options, entra.clone()).with_source(SOURCE);
    Ok(Arc::new(credential))
}

/// `AZURE_CLIENT_CERTIFICATE_PATH` (+ `AZURE_CLIENT_CERTIFICATE_PASSWORD`, `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`).
fn certificate(
    tenant: &str,
    client: &str,
    path: &str,
    env: &dyn Env,
    entra: &EntraClient,
) -> Inner {
    valid_tenant(tenant, "AZURE_TENANT_ID")?;
    let password = env
        .var("AZURE_CLIENT_CERTIFICATE_PASSWORD")
        .map(Secret::new);
    let chain = env
        .var("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
        .map(|v| ClientCertificateCredential::parse_flag(&v));
    // The value is not logged: a secret set in the wrong variable must not reach the logs.
    if chain == Some(None) {
        tracing::warn!(
            "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN is not a boolean; not sending the chain"
        );
    }
    let options = ClientCertificateCredentialOptions {
        tenant_id: tenant.to_owned(),
        client_id: client.to_owned(),
        certificate_file: path.into(),
        password,
        send_certificate_chain: chain.flatten().unwrap_or(false),
    };
    let credential = ClientCertificateCredential::with_source(options, entra.clone(), SOURCE);
    Ok(Arc::new(credential))
}

/// `tenant`, from the variable `var`, must be a valid tenant id.
fn valid_tenant(tenant: &str, var: &str) -> Result<(), Unusable> {
    if is_valid_tenant(tenant) {
        return Ok(());
    }
    let why = format!("{var} is not a valid tenant id (allowed: letters, digits, '.', '-')");
    Err(Unusable::Invalid(why))
}

fn missing_message(env: &dyn Env) -> String {
    let missing: Vec<&str> = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]
        .into_iter()
        .filter(|n| env.non_empty(n).is_none())
        .collect();
    format!(
        "environment variables not set: {} (or AZURE_CLIENT_CERTIFICATE_PATH; or AML_TENANT_ID, AML_PRINCIPAL_ID and AML_PRINCIPAL_PASS; or AZURE_AUTH_LOCATION)",
        missing.join(", ")
    )
}
