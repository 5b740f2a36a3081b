//! `aml-azure-emulator`: a cloud-free stand-in of the Azure services the proxy (and any Azure client) talks to,
//! with switches for the failures that matter — so the proxy can be tried without a subscription, and applications
//! can test their Conditional Access handling in CI.
//!
//! One process plays several hosts, each on its own loopback port (consecutive from `--port`, default 8181):
//!
//! | port | plays | module |
//! |---|---|---|
//! | base | Entra ID (`login.microsoftonline.com`), IMDS, App Service and Azure ML managed identity, the control API | `entra`, `managed_identity`, `control` |
//! | base + 1 | Azure Resource Manager: workspaces and online endpoints | `arm` |
//! | base + 2 | an echoing upstream that doubles as the workspace data plane (with its MLflow tracking service) | `upstream`, `mlflow` |
//! | base + 3 … | one scoring listener per online endpoint | `scoring` |
//!
//! Tokens are RS256 JWTs signed with a key made at start-up (`jwt`); the resource roles verify them. Failure
//! switches ([`FaultSpec`]) come from `--fault` flags or `POST /__control/faults`; `GET /__stats` counts what each
//! role saw. [`Emulator::start`] runs it in-process (integration tests); [`cli::main`] is the binary.

pub mod cli;

mod arm;
mod control;
mod entra;
mod faults;
mod issue;
mod jwt;
mod managed_identity;
mod mlflow;
mod recorded;
mod scoring;
mod serve;
mod stats;
mod tls;
mod upstream;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::{ArmAction, CaeDemand, FaultKind, FaultSpec, FaultSpecError, Target};

use self::faults::Faults;
use self::jwt::Signer;
use self::serve::Role;
use self::stats::Stats;

/// The default first port: Entra ID and managed identity on 8181, ARM on 8182, the upstream on 8183, scoring
/// endpoints from 8184.
pub const DEFAULT_PORT: u16 = 8181;

/// The tenant managed-identity tokens are issued in, and the default of the demo configuration.
pub const DEFAULT_TENANT: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";

/// The `X-IDENTITY-HEADER` / `secret` value managed-identity callers must send unless `--identity-secret` says
/// otherwise (a well-known test value: the emulator guards nothing).
pub const DEFAULT_IDENTITY_SECRET: &str = "emulator-identity-secret";

/// How the emulator is set up. [`Default`] is what the binary runs with no flags.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// The address every listener binds (loopback unless `allow_non_loopback`).
    pub host: IpAddr,
    /// The first port; the others follow it. 0 gives every listener an ephemeral port.
    pub port: u16,
    /// Allow a non-loopback `host` (the emulator has no authentication at all).
    pub allow_non_loopback: bool,
    /// Serve HTTPS with a generated CA, written (PEM) to this file.
    pub tls_ca_file: Option<PathBuf>,
    /// Lifetime of Entra ID access tokens.
    pub token_lifetime: Duration,
    /// Lifetime of managed-identity tokens (Azure issues them for about 24 h).
    pub managed_identity_lifetime: Duration,
    /// Lifetime of online endpoints' AML tokens (refresh after half of it).
    pub aml_token_lifetime: Duration,
    /// The tenant of managed-identity tokens.
    pub tenant: String,
    /// The secret managed-identity callers must present.
    pub identity_secret: String,
    /// The workspace ARM knows.
    pub workspace: WorkspaceOptions,
    /// The online endpoints of that workspace, each with its own scoring listener.
    pub endpoints: Vec<EndpointOptions>,
    /// Failure rules in force from the start.
    pub faults: Vec<FaultSpec>,
    /// How many device-code polls are answered `authorization_pending` before the sign-in completes.
    pub device_code_pending_polls: u32,
}

/// The one workspace ARM serves.
#[derive(Debug, Clone)]
pub struct WorkspaceOptions {
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group.
    pub resource_group: String,
    /// Workspace name.
    pub name: String,
    /// Azure region shown in resources.
    pub location: String,
}

/// One online endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointOptions {
    /// Its name.
    pub name: String,
    /// How callers of its scoring URI authenticate.
    pub auth_mode: AuthMode,
}

/// An online endpoint's `authMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `Key`: a primary or secondary key from `listKeys`.
    Key,
    /// `AMLToken`: a token from ARM's `…/token`.
    AmlToken,
    /// `AADToken`: an Entra ID token for `https://ml.azure.com`.
    AadToken,
}

/// Why the emulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad options (exit 64).
    #[error("{0}")]
    Usage(String),
    /// A listener could not be bound, or the key or CA could not be made or written (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// Where everything listens: the start-up line of the binary, and what tests and users configure clients with.
#[derive(Debug, Clone, Serialize)]
pub struct Urls {
    /// Entra ID: `authority_host` / `AZURE_AUTHORITY_HOST`.
    pub authority_host: String,
    /// Managed identity.
    pub managed_identity: ManagedIdentityUrls,
    /// Azure Resource Manager: `resource_manager`, a route's `upstream`.
    pub resource_manager: String,
    /// The echoing upstream (also the workspace data plane).
    pub upstream: String,
    /// The workspace ARM knows.
    pub workspace: WorkspaceUrls,
    /// Online endpoints by name.
    pub online_endpoints: BTreeMap<String, EndpointUrls>,
    /// The control API.
    pub control: String,
    /// `GET` for the counters.
    pub stats: String,
    /// The CA file clients must trust (`--tls` only).
    pub ca_file: Option<String>,
}

/// Managed-identity endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct ManagedIdentityUrls {
    /// IMDS base URL (`AZURE_POD_IDENTITY_AUTHORITY_HOST`); the token path is `/metadata/identity/oauth2/token`.
    pub imds: String,
    /// `IDENTITY_ENDPOINT` (App Service, api-version 2019-08-01) and `MSI_ENDPOINT` (Azure ML, 2017-09-01).
    pub identity_endpoint: String,
    /// `IDENTITY_HEADER` / `MSI_SECRET`.
    pub identity_header: String,
}

/// The workspace.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceUrls {
    /// ARM resource id.
    pub id: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group.
    pub resource_group: String,
    /// Workspace name.
    pub name: String,
    /// `properties.discoveryUrl`.
    pub discovery_url: String,
    /// `properties.mlFlowTrackingUri`.
    pub mlflow_tracking_uri: String,
}

/// One online endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointUrls {
    /// `Key`, `AMLToken` or `AADToken`.
    pub auth_mode: &'static str,
    /// `properties.scoringUri`.
    pub scoring_uri: String,
}

/// A running emulator. Dropping it stops every listener.
#[derive(Debug)]
pub struct Emulator {
    state: Arc<State>,
    stop: watch::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
}

/// What every role shares.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) settings: Settings,
    pub(crate) urls: Urls,
    pub(crate) signer: Signer,
    pub(crate) faults: Faults,
    pub(crate) stats: Stats,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) flows: Mutex<entra::Flows>,
    /// The workspace's MLflow tracking store.
    pub(crate) mlflow: mlflow::Store,
    /// Fires when the emulator stops (ends background body producers).
    pub(crate) stop: watch::Receiver<()>,
}

/// The options the roles read.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) token_lifetime: Duration,
    pub(crate) managed_identity_lifetime: Duration,
    pub(crate) aml_token_lifetime: Duration,
    pub(crate) tenant: String,
    pub(crate) identity_secret: String,
    pub(crate) workspace: WorkspaceOptions,
    pub(crate) device_code_pending_polls: u32,
}

/// An online endpoint and its current keys.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) name: String,
    pub(crate) auth_mode: AuthMode,
    /// The scoring listener's origin (`http://127.0.0.1:PORT`): the audience of its AML tokens.
    pub(crate) origin: String,
    pub(crate) keys: Mutex<Keys>,
}

/// An endpoint's keys.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) primary: String,
    pub(crate) secondary: String,
}

// === impl EmulatorOptions ===

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            allow_non_loopback: false,
            tls_ca_file: None,
            token_lifetime: Duration::from_secs(3599),
            managed_identity_lifetime: Duration::from_secs(86399),
            aml_token_lifetime: Duration::from_secs(86340),
            tenant: DEFAULT_TENANT.to_owned(),
            identity_secret: DEFAULT_IDENTITY_SECRET.to_owned(),
            workspace: WorkspaceOptions::default(),
            endpoints: EndpointOptions::defaults(),
            faults: Vec::new(),
            device_code_pending_polls: 1,
        }
    }
}

impl EmulatorOptions {
    /// The defaults on ephemeral ports (`port: 0`), for tests.
    pub fn ephemeral() -> Self {
        Self {
            port: 0,
            ..Self::default()
        }
    }
}

// === impl WorkspaceOptions ===

impl Default for WorkspaceOptions {
    fn default() -> Self {
        Self {
            subscription_id: "00000000-1111-2222-3333-444444444444".to_owned(),
            resource_group: "emulator-rg".to_owned(),
            name: "emulator-ws".to_owned(),
            location: "local".to_owned(),
        }
    }
}

impl WorkspaceOptions {
    /// The workspace's ARM resource id.
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }
}

// === impl EndpointOptions ===

impl EndpointOptions {
    /// One endpoint per auth mode: `ep-aad` (AADToken), `ep-key` (Key), `ep-amltoken` (AMLToken), in that order
    /// (so `ep-aad` scores on base + 3).
    pub fn defaults() -> Vec<Self> {
        [
            ("ep-aad", AuthMode::AadToken),
            ("ep-key", AuthMode::Key),
            ("ep-amltoken", AuthMode::AmlToken),
        ]
        .into_iter()
        .map(|(name, auth_mode)| Self {
            name: name.to_owned(),
            auth_mode,
        })
        .collect()
    }
}

impl std::str::FromStr for EndpointOptions {
    type Err = String;

    /// `NAME=MODE`, MODE one of `key`, `amltoken`, `aadtoken` (ARM's spelling and `aml_token`/`aad_token` too).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, mode) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected NAME=MODE, e.g. my-endpoint=key"))?;
        let valid_name = (3..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_name {
            return Err(format!(
                "`{name}`: an endpoint name is 3 to 32 letters, digits and dashes, starting with a letter"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            auth_mode: mode.parse()?,
        })
    }
}

// === impl AuthMode ===

impl AuthMode {
    /// ARM's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Key => "Key",
            AuthMode::AmlToken => "AMLToken",
            AuthMode::AadToken => "AADToken",
        }
    }
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().replace('_', "").as_str() {
            "key" => Ok(AuthMode::Key),
            "amltoken" => Ok(AuthMode::AmlToken),
            "aadtoken" => Ok(AuthMode::AadToken),
            _ => Err(format!(
                "`{text}`: an auth mode is key, amltoken or aadtoken"
            )),
        }
    }
}

// === impl Emulator ===

impl Emulator {
    /// Binds every listener, makes the signing key (and the CA in TLS mode) and starts serving.
    pub async fn start(options: EmulatorOptions) -> Result<Self, StartError> {
        if !options.allow_non_loopback && !options.host.is_loopback() {
            return Err(StartError::Usage(format!(
                "{} is not a loopback address: the emulator has no authentication, so it binds loopback only unless --allow-non-loopback is given",
                options.host
            )));
        }
        let mut names = std::collections::HashSet::new();
        for endpoint in &options.endpoints {
            if !names.insert(endpoint.name.to_ascii_lowercase()) {
                return Err(StartError::Usage(format!(
                    "online endpoint `{}` is given twice",
                    endpoint.name
                )));
            }
        }
        let listeners = bind_all(&options).await?;

        let signer = tokio::task::spawn_blocking(Signer::generate)
            .await
            .map_err(|e| StartError::Failed(format!("signing key: {e}")))?
            .map_err(StartError::Failed)?;
        let tls = match &options.tls_ca_file {
            None => None,
            Some(path) => {
                let generated = tls::generate(options.host).map_err(StartError::Failed)?;
                std::fs::write(path, &generated.ca_pem).map_err(|e| {
                    StartError::Failed(format!("writing the CA to {}: {e}", path.display()))
                })?;
                Some(tokio_rustls::TlsAcceptor::from(generated.config))
            }
        };

        let scheme = if tls.is_some() { "https" } else { "http" };
        let origin = |addr: SocketAddr| {
            // A wildcard bind is reached through loopback.
            let ip = match addr.ip() {
                ip if ip.is_unspecified() && ip.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                ip if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
        };
        let addr_of = |role: Role| {
            listeners
                .iter()
                .find(|(r, _)| *r == role)
                .and_then(|(_, l)| l.local_addr().ok())
        };
        let (Some(login), Some(arm), Some(upstream)) = (
            addr_of(Role::Login),
            addr_of(Role::Arm),
            addr_of(Role::Upstream),
        ) else {
            return Err(StartError::Failed("a listener has no address".to_owned()));
        };
        let (login, arm, upstream) = (origin(login), origin(arm), origin(upstream));

        let mut endpoints = Vec::new();
        let mut endpoint_urls = BTreeMap::new();
        for (index, spec) in options.endpoints.iter().enumerate() {
            let Some(addr) = addr_of(Role::Scoring(index)) else {
                return Err(StartError::Failed("a listener has no address".to_owned()));
            };
            let endpoint_origin = origin(addr);
            endpoint_urls.insert(
                spec.name.clone(),
                EndpointUrls {
                    auth_mode: spec.auth_mode.as_str(),
                    scoring_uri: format!("{endpoint_origin}/score"),
                },
            );
            endpoints.push(Endpoint {
                name: spec.name.clone(),
                auth_mode: spec.auth_mode,
                origin: endpoint_origin,
                keys: Mutex::new(Keys::fresh()),
            });
        }
        let ws = &options.workspace;
        let data_host = upstream.split_once("://").map_or("", |(_, h)| h);
        let urls = Urls {
            authority_host: login.clone(),
            managed_identity: ManagedIdentityUrls {
                imds: login.clone(),
                identity_endpoint: format!("{login}/msi/token"),
                identity_header: options.identity_secret.clone(),
            },
            resource_manager: arm,
            upstream: upstream.clone(),
            workspace: WorkspaceUrls {
                id: ws.id(),
                subscription_id: ws.subscription_id.clone(),
                resource_group: ws.resource_group.clone(),
                name: ws.name.clone(),
                discovery_url: format!("{upstream}/discovery"),
                mlflow_tracking_uri: format!(
                    "azureml://{data_host}/mlflow/v1.0/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{}",
                    ws.subscription_id, ws.resource_group, ws.name
                ),
            },
            online_endpoints: endpoint_urls,
            control: format!("{login}/__control"),
            stats: format!("{login}/__stats"),
            ca_file: options
                .tls_ca_file
                .as_ref()
                .map(|p| p.display().to_string()),
        };

        let (stop_tx, stop_rx) = watch::channel(());
        let faults = Faults::default();
        for spec in options.faults {
            faults.add(spec);
        }
        let state = Arc::new(State {
            settings: Settings {
                token_lifetime: options.token_lifetime,
                managed_identity_lifetime: options.managed_identity_lifetime,
                aml_token_lifetime: options.aml_token_lifetime,
                tenant: options.tenant,
                identity_secret: options.identity_secret,
                workspace: options.workspace,
                device_code_pending_polls: options.device_code_pending_polls,
            },
            urls,
            signer,
            faults,
            stats: Stats::default(),
            endpoints,
            flows: Mutex::new(entra::Flows::default()),
            mlflow: mlflow::Store::default(),
            stop: stop_rx.clone(),
        });
        let tasks = listeners
            .into_iter()
            .map(|(role, listener)| {
                tokio::spawn(serve::accept_loop(
                    listener,
                    tls.clone(),
                    state.clone(),
                    role,
                    stop_rx.clone(),
                ))
            })
            .collect();
        Ok(Self {
            state,
            stop: stop_tx,
            tasks,
        })
    }

    /// Where everything listens.
    pub fn urls(&self) -> &Urls {
        &self.state.urls
    }

    /// Adds a failure rule; returns its id.
    pub fn add_fault(&self, spec: FaultSpec) -> u64 {
        self.state.faults.add(spec)
    }

    /// Removes a failure rule.
    pub fn remove_fault(&self, id: u64) -> bool {
        self.state.faults.remove(id)
    }

    /// Removes every failure rule.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// The `/__stats` document.
    pub fn stats(&self) -> serde_json::Value {
        control::stats_document(&self.state)
    }

    /// Forgets the counters.
    pub fn reset_stats(&self) {
        self.state.stats.reset();
    }

    /// Stops accepting, ends every connection and waits for the accept loops to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(());
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        for task in &self.tasks {
            task.abort();
        }
    }
}

// === impl Keys ===

impl Keys {
    pub(crate) fn fresh() -> Self {
        Self {
            primary: jwt::random_b64(32),
            secondary: jwt::random_b64(32),
        }
    }
}

/// Binds the login, ARM, upstream and scoring listeners on consecutive ports from `options.port` (or each on an
/// ephemeral port when it is 0).
async fn bind_all(options: &EmulatorOptions) -> Result<Vec<(Role, TcpListener)>, StartError> {
    let mut roles = vec![Role::Login, Role::Arm, Role::Upstream];
    roles.extend((0..options.endpoints.len()).map(Role::Scoring));
    let last = u32::from(options.port) + roles.len() as u32 - 1;
    if options.port != 0 && last > u32::from(u16::MAX) {
        return Err(StartError::Usage(format!(
            "--port {}: the emulator needs {} consecutive ports",
            options.port,
            roles.len()
        )));
    }
    let mut bound = Vec::with_capacity(roles.len());
    for (offset, role) in roles.into_iter().enumerate() {
        let port = if options.port == 0 {
            0
        } else {
            options.port + offset as u16
        };
        let addr = SocketAddr::new(options.host, port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StartError::Failed(format!("cannot listen on {addr}: {e}")))?;
        bound.push((role, listener));
    }
    Ok(bound)
}
