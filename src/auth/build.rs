//! Builds the configured credentials (chains refer to other credentials by name).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{
    AzureCliCredential, ChainCredential, ClientCertificateCredential, ClientSecretCredential,
    DeviceCodeCredential, EntraClient, EnvironmentCredential, ManagedIdentityCredential,
    ManagedIdentityOptions, SdkAuthFileCredential, TokenCredential, UnavailableCredential,
    WorkloadIdentityCredential,
};
use crate::config::{
    AzureCliSpec, ChainSource, CredentialSpec, DeviceCodeSpec, ManagedIdentitySpec, UserAssignedId,
    WorkloadIdentitySpec,
};
use crate::env::Env;

/// The credentials of a configuration, by name.
#[derive(Debug, Default)]
pub struct CredentialSet {
    by_name: HashMap<String, Arc<dyn TokenCredential>>,
}

// === impl CredentialSet ===

impl CredentialSet {
    /// The credential named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn TokenCredential>> {
        self.by_name.get(name).cloned()
    }

    /// Adds or replaces a credential (tests and embedding).
    pub fn insert(&mut self, name: impl Into<String>, credential: Arc<dyn TokenCredential>) {
        self.by_name.insert(name.into(), credential);
    }
}

/// Builds every credential. Configuration validation has already rejected unknown names and cycles; a chain
/// entry that is somehow missing becomes an unavailable source rather than a panic.
pub fn build_credentials(
    specs: BTreeMap<String, CredentialSpec>,
    env: &dyn Env,
    entra: &EntraClient,
) -> CredentialSet {
    let mut set = CredentialSet::default();
    let mut chains = Vec::new();
    for (name, spec) in specs {
        let credential: Arc<dyn TokenCredential> = match spec {
            CredentialSpec::ClientSecret(s) => Arc::new(ClientSecretCredential::new(
                s.tenant_id,
                s.client_id,
                s.client_secret,
                entra.clone(),
            )),
            CredentialSpec::WorkloadIdentity(spec) => {
                Arc::new(WorkloadIdentityCredential::new(&spec, env, entra.clone()))
            }
            CredentialSpec::ManagedIdentity(spec) => managed_identity(&spec, env, entra, false),
            CredentialSpec::AzureCli(spec) => Arc::new(AzureCliCredential::new(&spec, env)),
            CredentialSpec::DeviceCode(spec) => {
                Arc::new(DeviceCodeCredential::new(&spec, entra.clone()).with_name(name.clone()))
            }
            CredentialSpec::SdkAuthFile(spec) => {
                Arc::new(SdkAuthFileCredential::new(&spec.path, entra))
            }
            CredentialSpec::Chain(sources) => {
                chains.push((name, sources));
                continue;
            }
            CredentialSpec::ClientCertificate(spec) => {
                Arc::new(ClientCertificateCredential::new(&spec, entra.clone()))
            }
        };
        set.by_name.insert(name, credential);
    }
    // Chains may refer to chains: build in dependency order (validation guarantees there is no cycle).
    let mut pending = chains;
    while !pending.is_empty() {
        let before = pending.len();
        let mut next = Vec::new();
        for (name, sources) in pending {
            let ready = sources.iter().all(|s| match s {
                ChainSource::Named(n) => set.by_name.contains_key(n),
                _ => true,
            });
            if ready {
                let chain = build_chain(&sources, &set, env, entra);
                set.by_name.insert(name, Arc::new(chain));
            } else {
                next.push((name, sources));
            }
        }
        if next.len() == before {
            // Unresolvable references: build with what exists.
            for (name, sources) in next {
                let chain = build_chain(&sources, &set, env, entra);
                set.by_name.insert(name, Arc::new(chain));
            }
            break;
        }
        pending = next;
    }
    set
}

/// A managed-identity credential. Inside a chain IMDS is probed first, so a machine without IMDS moves on.
fn managed_identity(
    spec: &ManagedIdentitySpec,
    env: &dyn Env,
    entra: &EntraClient,
    in_chain: bool,
) -> Arc<dyn TokenCredential> {
    let options = ManagedIdentityOptions {
        in_chain,
        ..ManagedIdentityOptions::default()
    };
    Arc::new(ManagedIdentityCredential::new(
        spec,
        env,
        entra.http().clone(),
        options,
    ))
}

fn build_chain(
    sources: &[ChainSource],
    set: &CredentialSet,
    env: &dyn Env,
    entra: &EntraClient,
) -> ChainCredential {
    let built = sources
        .iter()
        .map(|source| {
            let credential: Arc<dyn TokenCredential> = match source {
                ChainSource::Environment => Arc::new(EnvironmentCredential::from_env(env, entra)),
                ChainSource::WorkloadIdentity => Arc::new(WorkloadIdentityCredential::new(
                    &WorkloadIdentitySpec::default(),
                    env,
                    entra.clone(),
                )),
                ChainSource::ManagedIdentity => {
                    // As DefaultAzureCredential does: AZURE_CLIENT_ID names a user-assigned identity.
                    let spec = ManagedIdentitySpec {
                        user_assigned: env
                            .non_empty("AZURE_CLIENT_ID")
                            .map(UserAssignedId::ClientId),
                        endpoint: None,
                    };
                    managed_identity(&spec, env, entra, true)
                }
                ChainSource::AzureCli => Arc::new(AzureCliCredential::new(
                    &AzureCliSpec {
                        tenant_id: None,
                        subscription: None,
                        timeout: Duration::from_secs(10),
                    },
                    env,
                )),
                ChainSource::DeviceCode => match env.non_empty("HOME") {
                    Some(home) => {
                        let spec = DeviceCodeSpec {
                            tenant_id: None,
                            client_id: None,
                            cache_file: PathBuf::from(home).join(".aml-auth-proxy/tokens.json"),
                        };
                        Arc::new(DeviceCodeCredential::new(&spec, entra.clone()))
                    }
                    None => Arc::new(UnavailableCredential::new(
                        "device_code",
                        "HOME is not set, so there is no default cache file (~/.aml-auth-proxy/tokens.json)",
                    )),
                },
                ChainSource::Named(n) => set
                    .get(n)
                    .unwrap_or_else(|| {
                        Arc::new(UnavailableCredential::new("chain", format!("no credential named {n:?}")))
                    }),
            };
            (source.name().to_owned(), credential)
        })
        .collect();
    ChainCredential::new(built)
}
