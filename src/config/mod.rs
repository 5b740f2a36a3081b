//! Configuration: the checked model the rest of the proxy uses, and how it is loaded.
//!
//! Loading is one pipeline (see [`load()`]): read the YAML file, expand `${VAR}` / `${VAR:-default}` in string
//! values, walk the document collecting *every* problem with its key path, then run the cross-field checks
//! (credential references, duplicate routes, secret-file permissions, who may connect). Only a fully valid
//! document becomes a [`Config`]; a bad one becomes a [`ConfigError`] listing all problems. Values of secret keys
//! are never echoed. Command-line overrides of the listeners go through [`Config::check_listeners`] again.

pub mod forward_headers;
mod load;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, Method};
use rustls_pki_types::CertificateDer;

use crate::auth::CredentialOptions;
use crate::env::Env;
pub use crate::origin::HttpsOrigin;
use crate::secret::Secret;

pub use load::{
    MAX_CONFIG_BYTES, MAX_NESTING, check_identity_secret, check_identity_secret_owner, check_scope,
    default_allowed_hosts, from_yaml_str, load, secret_mode_refused,
};

/// The default proxy listener.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// The default admin listener.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);
/// The name of the credential the built-in default configuration defines.
pub const DEFAULT_CREDENTIAL: &str = "default";
/// The header that carries the caller key when `caller_auth.header` is not given.
pub const DEFAULT_CALLER_AUTH_HEADER: &str = "x-aml-auth-proxy-key";
/// The prefix of a Unix-domain socket `listen` address (`unix:/run/aml-auth-proxy.sock`).
pub const UNIX_PREFIX: &str = "unix:";

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Proxy listener: a loopback TCP address unless `expose` is set, or a Unix-domain socket.
    pub listen: Listen,
    /// Admin listener address (`/healthz`, `/readyz`, `/metrics`); loopback unless `expose` is set.
    pub admin_listen: SocketAddr,
    /// The operator's explicit opt-in to non-loopback listeners (which then need `caller_auth`). Default `false`.
    pub expose: bool,
    /// When set, every proxy request must carry this shared secret (the admin listener does not ask for it).
    pub caller_auth: Option<CallerAuth>,
    /// Peer uids a Unix-domain socket listener accepts; `None` means only the proxy's own uid.
    pub unix_allowed_uids: Option<Vec<u32>>,
    /// The Azure cloud (authority host, ARM and ML audiences).
    pub cloud: Cloud,
    /// Entra ID authority host: the `authority_host` key, else `AZURE_AUTHORITY_HOST`, else the cloud's.
    pub authority_host: HttpsOrigin,
    /// Azure Resource Manager, where Azure ML routes read endpoints, keys, tokens and workspaces: the
    /// `resource_manager` key, else the cloud's.
    pub resource_manager: HttpsOrigin,
    /// Accepted `Host` header names, lower-case, without port (`[::1]` keeps its brackets).
    pub allowed_hosts: Vec<String>,
    /// Request tokens with the `CP1` client capability, so Azure sends claims challenges (continuous access
    /// evaluation) that the proxy can satisfy, instead of silently rejecting revoked sessions. Default `true`.
    pub cae: bool,
    /// Extra trust anchors for upstreams and token endpoints, already parsed from `tls.extra_ca_file`.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Resource limits and timeouts.
    pub limits: Limits,
    /// Named credentials, by name.
    pub credentials: BTreeMap<String, CredentialOptions>,
    /// Routes, in file order.
    pub routes: Vec<RouteConfig>,
    /// The token service (`token_service:`): managed-identity endpoints for SDKs; `None` when absent (off).
    pub token_service: Option<TokenServiceConfig>,
    /// Span export over OTLP (`telemetry.otlp`); `None`: off (the default).
    pub telemetry: Option<crate::telemetry::otlp::OtlpConfig>,
    /// Where this configuration came from.
    pub origin: ConfigOrigin,
}

/// `token_service:`: a second listener answering the managed-identity protocols the Azure SDKs speak (App Service,
/// Azure ML compute and, opted in, IMDS) with tokens of the configured credentials.
#[derive(Debug)]
pub struct TokenServiceConfig {
    /// Its listener: loopback TCP unless `expose` (with `caller_auth`), or a Unix-domain socket.
    pub listen: Listen,
    /// The file holding the secret callers send (`X-IDENTITY-HEADER` / `secret`); created at start-up if absent.
    pub secret_file: PathBuf,
    /// The secret, when `secret_file` existed when the configuration was loaded.
    pub secret: Option<Secret>,
    /// Also answer the IMDS protocol (which has no secret).
    pub imds: bool,
    /// Requested identity → configured credential, in file order; the id `default` serves callers naming none.
    pub identities: Vec<IdentityMapping>,
    /// Resources that may be issued, normalised by [`resource_name`].
    pub allowed_resources: Vec<String>,
}

/// One `token_service.identities` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityMapping {
    /// `default`, or the client id, object (principal) id or resource id callers name, as written.
    pub id: String,
    /// The credential that serves it.
    pub credential: String,
}

/// The name of the identity callers get when they name none.
pub const DEFAULT_IDENTITY: &str = "default";

/// Where the proxy listens (`listen`, `--listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address, `IP:port`.
    Tcp(SocketAddr),
    /// A Unix-domain socket at this absolute path (`unix:/path.sock`), created with mode 0600.
    Unix(PathBuf),
}

/// `caller_auth: { header, secret_file }`: the shared secret every proxy request must carry.
#[derive(Debug)]
pub struct CallerAuth {
    /// The header carrying the key, lower-case (default [`DEFAULT_CALLER_AUTH_HEADER`]).
    pub header: HeaderName,
    /// The key, read from `secret_file` (a private file); compared in constant time, never logged.
    pub secret: Secret,
}

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// A YAML file.
    File(PathBuf),
    /// The built-in default (no file given).
    BuiltIn,
}

/// An Azure cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Azure public cloud.
    AzureCloud,
    /// Azure US Government.
    AzureUsGovernment,
    /// Azure operated by 21Vianet (China).
    AzureChinaCloud,
}

/// Resource limits and timeouts (`limits:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Requests in flight beyond this get 503 `Overloaded`.
    pub max_in_flight: usize,
    /// Time allowed for a client to send complete request headers.
    pub request_header_timeout: Duration,
    /// Time allowed to connect (TCP + TLS) to an upstream or token endpoint.
    pub upstream_connect_timeout: Duration,
    /// Time allowed until the upstream's response headers; bodies may stream longer.
    pub upstream_response_timeout: Duration,
    /// Request bodies up to this size can be replayed after a claims challenge.
    pub replay_buffer_bytes: usize,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    /// A caller whose socket accepts no response bytes for this long, while some wait to be sent, is disconnected.
    pub write_stall_timeout: Duration,
    /// A request or response body that moves no byte for this long is ended (upgraded connections excepted).
    pub stream_idle_timeout: Duration,
    /// Uploads slower than this (bytes per second, over a [`Limits::request_body_rate_window`]) may be evicted
    /// to admit a request when `max_in_flight` is reached.
    pub request_body_min_rate: usize,
    /// The period over which an upload's rate is measured; also its grace period.
    pub request_body_rate_window: Duration,
}

/// A route (`routes[i]`).
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Path prefix this route serves; matched on segment boundaries; longest wins.
    pub path_prefix: String,
    /// If set, the `Host` header's name must equal this too (lower-case, no port).
    pub host: Option<String>,
    /// Remove `path_prefix` before forwarding.
    pub strip_prefix: bool,
    /// Where requests go.
    pub upstream: Upstream,
    /// The token scope (`…/.default`); `None` only for pass-through routes without a credential.
    pub scope: Option<String>,
    /// The credential name; `None` only for pass-through routes without a credential.
    pub credential: Option<String>,
    /// Least-privilege policy.
    pub allow: AllowPolicy,
    /// Forward a caller's own `Authorization` instead of replacing it.
    pub pass_through_authorization: bool,
    /// Headers of [`forward_headers::DROPPED_HEADERS`] (or its prefixes) this route forwards anyway.
    pub forward_headers: Vec<HeaderName>,
    /// An Azure ML online endpoint or workspace whose upstream and credential are read from Resource Manager
    /// (`online_endpoint:` / `workspace:`). Such a route has no `scope`; its `upstream` is Resource Manager
    /// until the target is resolved, and it always strips its prefix.
    pub azure_ml: Option<AzureMlTarget>,
}

/// What an Azure ML route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureMlTarget {
    /// `online_endpoint:`: scoring an online endpoint.
    OnlineEndpoint(OnlineEndpointConfig),
    /// `workspace:`: the workspace's data plane (MLflow tracking and the other workspace services).
    Workspace(WorkspaceId),
}

/// A workspace, as Resource Manager names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceId {
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Workspace name.
    pub name: String,
}

/// `online_endpoint: { subscription_id, resource_group, workspace, name, auth }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineEndpointConfig {
    /// The workspace the endpoint belongs to.
    pub workspace: WorkspaceId,
    /// The endpoint name.
    pub name: String,
    /// How scoring requests are authorized.
    pub auth: EndpointAuth,
}

/// `online_endpoint.auth`: the endpoint's `authMode`, or `auto` to read it from Resource Manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointAuth {
    /// Read `authMode` from the endpoint.
    Auto,
    /// `Key`: a key from `listKeys`.
    Key,
    /// `AMLToken`: a token from the endpoint's `token` action.
    AmlToken,
    /// `AADToken`: an Entra ID token for Azure ML.
    AadToken,
}

/// A route's upstream: an origin plus a base path (no query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Scheme and authority.
    pub origin: HttpsOrigin,
    /// Base path without a trailing slash (`""` for the root).
    pub base_path: String,
}

/// `allow: { methods, paths, origins }`. `None` means "anything".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowPolicy {
    /// Allowed methods.
    pub methods: Option<Vec<Method>>,
    /// Allowed request paths (as the caller sends them): segment prefixes; a `*` segment matches any one segment.
    pub paths: Option<Vec<String>>,
    /// Browser origins allowed to call this route (exact `scheme://host[:port]`).
    pub origins: Vec<String>,
}

/// A configuration that cannot be used: every problem found, each with its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, if any.
    pub file: Option<PathBuf>,
    /// The problems, in document order.
    pub problems: Vec<Problem>,
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `routes[1].credential`; empty for the whole document.
    pub path: String,
    /// What is wrong; never contains a secret value.
    pub message: String,
}

// === impl Config ===

impl Config {
    /// The built-in default (no configuration file): `/` → ARM with the default credential chain.
    pub fn builtin(env: &dyn Env) -> Result<Self, ConfigError> {
        load::builtin(env)
    }

    /// The who-may-connect rules, for use after command-line overrides of `listen` / `admin_listen`: loopback
    /// listeners unless `expose: true`, `expose: true` only with `caller_auth`, two different TCP listeners.
    /// The loader applies the same rules, so a loaded configuration passes until something changes it.
    pub fn check_listeners(&self) -> Result<(), Vec<Problem>> {
        let problems = load::listener_problems(
            &self.listen,
            self.admin_listen,
            self.expose,
            self.caller_auth.is_some(),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The scopes every route needs, as (route name, credential, scope). Azure ML routes need tokens that are
    /// known only once their target is resolved, and are not listed.
    pub fn route_tokens(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.routes
            .iter()
            .filter_map(|r| match (&r.credential, &r.scope) {
                (Some(c), Some(s)) => Some((r.name.as_str(), c.as_str(), s.as_str())),
                _ => None,
            })
    }
}

// === impl ConfigOrigin ===

impl ConfigOrigin {
    /// The file as commands printed in hints name it (`aml-auth-proxy login --config FILE`): absolute, so that the
    /// command works from any directory. `None` for the built-in default.
    pub fn file_for_hints(&self) -> Option<PathBuf> {
        match self {
            ConfigOrigin::File(file) => {
                Some(std::path::absolute(file).unwrap_or_else(|_| file.clone()))
            }
            ConfigOrigin::BuiltIn => None,
        }
    }
}

// === impl TokenServiceConfig ===

impl TokenServiceConfig {
    /// True when `resource` (a resource or a `/.default` scope) is in `allowed_resources`.
    pub fn allows(&self, resource: &str) -> bool {
        let name = resource_name(resource);
        self.allowed_resources
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
    }
}

/// A resource as `allowed_resources` compares it: without a trailing `/.default`, then without trailing `/`
/// (`https://ml.azure.com/.default`, `https://ml.azure.com/` and `https://ml.azure.com` are one resource).
pub fn resource_name(resource: &str) -> &str {
    resource
        .strip_suffix("/.default")
        .unwrap_or(resource)
        .trim_end_matches('/')
}

// === impl Listen ===

impl Listen {
    /// The TCP address, if this is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Listen::Tcp(addr) => Some(*addr),
            Listen::Unix(_) => None,
        }
    }

    /// True for a TCP address only this host can reach (`127.0.0.0/8`, `::1`, `::ffff:127.0.0.0/104`) and for a
    /// Unix-domain socket.
    pub fn is_local(&self) -> bool {
        match self {
            Listen::Tcp(addr) => is_loopback(addr.ip()),
            Listen::Unix(_) => true,
        }
    }
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Self {
        Listen::Tcp(addr)
    }
}

impl FromStr for Listen {
    type Err = String;

    /// `IP:port`, or `unix:` followed by an absolute path of at most 107 bytes.
    fn from_str(text: &str) -> Result<Self, String> {
        load::parse_listen(text)
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

/// True for loopback addresses, IPv4-mapped ones included.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

// === impl Cloud ===

impl Cloud {
    /// The cloud's name as written in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::AzureCloud => "AzureCloud",
            Cloud::AzureUsGovernment => "AzureUSGovernment",
            Cloud::AzureChinaCloud => "AzureChinaCloud",
        }
    }

    /// Parses a cloud name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Cloud::AzureCloud,
            Cloud::AzureUsGovernment,
            Cloud::AzureChinaCloud,
        ]
        .into_iter()
        .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// The Entra ID authority host.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::AzureCloud => "https://login.microsoftonline.com",
            Cloud::AzureUsGovernment => "https://login.microsoftonline.us",
            Cloud::AzureChinaCloud => "https://login.chinacloudapi.cn",
        }
    }

    /// The Entra ID scope of Azure ML data-plane tokens (online endpoints in `AADToken` mode).
    pub fn ml_scope(self) -> &'static str {
        match self {
            Cloud::AzureCloud => "https://ml.azure.com/.default",
            Cloud::AzureUsGovernment => "https://ml.azure.us/.default",
            Cloud::AzureChinaCloud => "https://ml.azure.cn/.default",
        }
    }

    /// The Entra ID scope of Resource Manager tokens (also used by the workspace data plane).
    pub fn management_scope(self) -> String {
        format!("{}/.default", self.resource_manager())
    }

    /// The Azure Resource Manager endpoint.
    pub fn resource_manager(self) -> &'static str {
        match self {
            Cloud::AzureCloud => "https://management.azure.com",
            Cloud::AzureUsGovernment => "https://management.usgovcloudapi.net",
            Cloud::AzureChinaCloud => "https://management.chinacloudapi.cn",
        }
    }
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: 10_000,
            request_header_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(300),
            replay_buffer_bytes: 65_536,
            drain_timeout: Duration::from_secs(25),
            write_stall_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(300),
            request_body_min_rate: 1024,
            request_body_rate_window: Duration::from_secs(10),
        }
    }
}

// === impl ConfigError ===

impl ConfigError {
    /// A single problem.
    pub fn single(
        file: Option<PathBuf>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file,
            problems: vec![Problem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "invalid configuration {}", p.display())?,
            None => f.write_str("invalid configuration")?,
        }
        write!(
            f,
            " ({} problem{}):",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}
