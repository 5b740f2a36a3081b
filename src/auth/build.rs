//! The credentials of a configuration: each named entry's options, by kind, built into credentials by name
//! (chains refer to other credentials by name).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    AzureCliCredential, AzureCliCredentialOptions, AzureDeveloperCliCredential,
    AzureDeveloperCliCredentialOptions, AzurePowerShellCredential,
    AzurePowerShellCredentialOptions, ChainCredential, ChainSource, ClientCertificateCredential,
    ClientCertificateCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    DelegateCredential, DeviceCodeCredential, DeviceCodeCredentialOptions, EntraClient,
    EnvironmentCredential, InteractiveBrowserCredential, InteractiveBrowserCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, SdkAuthFileCredential,
    SdkAuthFileCredentialOptions, TokenCredential, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use crate::env::Env;

/// Where the built-in `device_code` and `interactive_browser` sources keep the refresh token, under `$HOME`.
const DEFAULT_CACHE_FILE: &str = ".aml-auth-proxy/tokens.json";

/// One named credential (`credentials.<name>` in configuration): its kind and that kind's options.
#[derive(Debug)]
pub enum CredentialOptions {
    /// A service principal with a client secret.
    ClientSecret(ClientSecretCredentialOptions),
    /// A service principal with a certificate.
    ClientCertificate(ClientCertificateCredentialOptions),
    /// AKS workload identity (federated token file).
    WorkloadIdentity(WorkloadIdentityCredentialOptions),
    /// Managed identity (IMDS, App Service, Arc, Azure ML compute, Cloud Shell).
    ManagedIdentity(ManagedIdentityCredentialOptions),
    /// The Azure CLI's signed-in account.
    AzureCli(AzureCliCredentialOptions),
    /// The Azure Developer CLI's signed-in account.
    AzureDeveloperCli(AzureDeveloperCliCredentialOptions),
    /// Azure PowerShell's signed-in account.
    AzurePowerShell(AzurePowerShellCredentialOptions),
    /// A user signed in with `aml-auth-proxy login` (device code).
    DeviceCode(DeviceCodeCredentialOptions),
    /// A user signed in with `aml-auth-proxy login` in a web browser (authorization code with PKCE).
    InteractiveBrowser(InteractiveBrowserCredentialOptions),
    /// The JSON written by `az ad sp create-for-rbac --sdk-auth`.
    SdkAuthFile(SdkAuthFileCredentialOptions),
    /// Sources tried in order; the first that can serve wins and sticks.
    Chain(Vec<ChainSource>),
}

/// The credentials of a configuration, by name.
#[derive(Debug, Default)]
pub struct CredentialSet {
    by_name: HashMap<String, Arc<dyn TokenCredential>>,
}

// === impl CredentialOptions ===

impl CredentialOptions {
    /// The kind's key as written in configuration files (`client_secret`, `chain`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialOptions::ClientSecret(_) => "client_secret",
            CredentialOptions::ClientCertificate(_) => "client_certificate",
            CredentialOptions::WorkloadIdentity(_) => "workload_identity",
            CredentialOptions::ManagedIdentity(_) => "managed_identity",
            CredentialOptions::AzureCli(_) => "azure_cli",
            CredentialOptions::AzureDeveloperCli(_) => "azure_developer_cli",
            CredentialOptions::AzurePowerShell(_) => "azure_powershell",
            CredentialOptions::DeviceCode(_) => "device_code",
            CredentialOptions::InteractiveBrowser(_) => "interactive_browser",
            CredentialOptions::SdkAuthFile(_) => "sdk_auth_file",
            CredentialOptions::Chain(_) => "chain",
        }
    }

    /// The configured tenant, where the kind has one.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            CredentialOptions::ClientSecret(o) => Some(&o.tenant_id),
            CredentialOptions::ClientCertificate(o) => Some(&o.tenant_id),
            CredentialOptions::WorkloadIdentity(o) => o.tenant_id.as_deref(),
            CredentialOptions::AzureCli(o) => o.tenant_id.as_deref(),
            CredentialOptions::AzureDeveloperCli(o) => o.tenant_id.as_deref(),
            CredentialOptions::AzurePowerShell(o) => o.tenant_id.as_deref(),
            CredentialOptions::DeviceCode(o) => o.tenant_id.as_deref(),
            CredentialOptions::InteractiveBrowser(o) => o.session.tenant_id.as_deref(),
            _ => None,
        }
    }
}

// === impl CredentialSet ===

impl CredentialSet {
    /// The credential named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn TokenCredential>> {
        self.by_name.get(name).cloned()
    }
}

/// Builds every credential. Configuration validation has already rejected unknown names and cycles; a chain
/// entry that is somehow missing becomes an unavailable source rather than a panic.
pub fn build_credentials(
    options: BTreeMap<String, CredentialOptions>,
    env: &dyn Env,
    entra: &EntraClient,
) -> CredentialSet {
    build_credentials_in(options, env, entra, None)
}

/// [`build_credentials`] for a configuration read from `config_file`: the chains' built-in `device_code` and
/// `interactive_browser` sources name it in their hints (`aml-auth-proxy login --config FILE`), as configured
/// credentials of those kinds do.
pub fn build_credentials_in(
    options: BTreeMap<String, CredentialOptions>,
    env: &dyn Env,
    entra: &EntraClient,
    config_file: Option<&Path>,
) -> CredentialSet {
    let mut set = CredentialSet::default();
    let mut chains = Vec::new();
    for (name, options) in options {
        let credential: Arc<dyn TokenCredential> = match options {
            CredentialOptions::ClientSecret(o) => {
                Arc::new(ClientSecretCredential::new(o, entra.clone()))
            }
            CredentialOptions::WorkloadIdentity(o) => {
                Arc::new(WorkloadIdentityCredential::new(o, env, entra.clone()))
            }
            CredentialOptions::ManagedIdentity(o) => {
                Arc::new(ManagedIdentityCredential::new(o, env, entra.http().clone()))
            }
            CredentialOptions::AzureCli(o) => Arc::new(AzureCliCredential::new(o, env)),
            CredentialOptions::AzureDeveloperCli(o) => {
                Arc::new(AzureDeveloperCliCredential::new(o, env))
            }
            CredentialOptions::AzurePowerShell(o) => {
                Arc::new(AzurePowerShellCredential::new(o, env))
            }
            CredentialOptions::DeviceCode(o) => {
                Arc::new(DeviceCodeCredential::new(o, entra.clone()).with_name(name.clone()))
            }
            CredentialOptions::InteractiveBrowser(o) => Arc::new(
                InteractiveBrowserCredential::new(o, entra.clone()).with_name(name.clone()),
            ),
            CredentialOptions::SdkAuthFile(o) => {
                Arc::new(SdkAuthFileCredential::from_file(o, entra))
            }
            CredentialOptions::Chain(sources) => {
                chains.push((name, sources));
                continue;
            }
            CredentialOptions::ClientCertificate(o) => {
                Arc::new(ClientCertificateCredential::new(o, entra.clone()))
            }
        };
        set.by_name.insert(name, credential);
    }
    // Chains may refer to chains: build in dependency order (validation guarantees there is no cycle; should one
    // remain, its chains are built with what exists).
    let mut pending = chains;
    while !pending.is_empty() {
        let (ready, waiting): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, sources)| {
            sources.iter().all(|s| match s {
                ChainSource::Named(n) => set.by_name.contains_key(n),
                _ => true,
            })
        });
        let (ready, waiting) = match ready.is_empty() {
            true => (waiting, Vec::new()),
            false => (ready, waiting),
        };
        for (name, sources) in ready {
            let chain = build_chain(&sources, &set, env, entra, config_file);
            set.by_name.insert(name, Arc::new(chain));
        }
        pending = waiting;
    }
    set
}

fn build_chain(
    sources: &[ChainSource],
    set: &CredentialSet,
    env: &dyn Env,
    entra: &EntraClient,
    config_file: Option<&Path>,
) -> ChainCredential {
    // The device-code and browser sources use the default cache file under HOME.
    let signed_in = env
        .non_empty("HOME")
        .map(|home| DeviceCodeCredentialOptions {
            tenant_id: None,
            client_id: None,
            cache_file: PathBuf::from(home).join(DEFAULT_CACHE_FILE),
            config_file: config_file.map(Path::to_path_buf),
        });
    let no_home =
        "HOME is not set, so there is no default cache file (~/.aml-auth-proxy/tokens.json)";
    let built = sources
        .iter()
        .map(|source| {
            let credential: Arc<dyn TokenCredential> = match source {
                ChainSource::Environment => Arc::new(EnvironmentCredential::from_env(env, entra)),
                ChainSource::WorkloadIdentity => Arc::new(WorkloadIdentityCredential::new(
                    WorkloadIdentityCredentialOptions::default(),
                    env,
                    entra.clone(),
                )),
                ChainSource::ManagedIdentity => {
                    // As DefaultAzureCredential does: AZURE_CLIENT_ID names a user-assigned identity. Inside a
                    // chain IMDS is probed first, so a machine without IMDS moves on.
                    let options = ManagedIdentityCredentialOptions {
                        user_assigned: env
                            .non_empty("AZURE_CLIENT_ID")
                            .map(UserAssignedId::ClientId),
                        in_chain: true,
                        ..ManagedIdentityCredentialOptions::default()
                    };
                    Arc::new(ManagedIdentityCredential::new(
                        options,
                        env,
                        entra.http().clone(),
                    ))
                }
                // The developer tools with their default options: the tool's current account.
                ChainSource::AzureCli => Arc::new(AzureCliCredential::new(Default::default(), env)),
                ChainSource::AzureDeveloperCli => {
                    Arc::new(AzureDeveloperCliCredential::new(Default::default(), env))
                }
                ChainSource::AzurePowerShell => {
                    Arc::new(AzurePowerShellCredential::new(Default::default(), env))
                }
                ChainSource::InteractiveBrowser => match signed_in.clone() {
                    Some(options) => {
                        let options =
                            InteractiveBrowserCredentialOptions::from_device_code(options);
                        Arc::new(InteractiveBrowserCredential::new(options, entra.clone()))
                    }
                    None => Arc::new(DelegateCredential::unavailable(
                        "interactive_browser",
                        no_home,
                    )),
                },
                ChainSource::DeviceCode => match signed_in.clone() {
                    Some(options) => Arc::new(DeviceCodeCredential::new(options, entra.clone())),
                    None => Arc::new(DelegateCredential::unavailable("device_code", no_home)),
                },
                ChainSource::Named(n) => set.get(n).unwrap_or_else(|| {
                    Arc::new(DelegateCredential::unavailable(
                        "chain",
                        format!("no credential named {n:?}"),
                    ))
                }),
            };
            (source.name().to_owned(), credential)
        })
        .collect();
    ChainCredential::new(built)
}
