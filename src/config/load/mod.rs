//! Loading: YAML text → a checked [`Config`], or a [`ConfigError`] listing every problem.
//!
//! The text is parsed into a [`serde_yaml::Value`] and walked by hand, in document order, so that every
//! problem is found in one pass and named by its key path (`routes[1].credential`). `${VAR}` /
//! `${VAR:-default}` are expanded in each string scalar as it is read, so an expansion can never inject
//! YAML structure. Credential references are checked against the names the document declares, wherever
//! in the document they are. Messages never contain the value of a secret key.

mod azure_ml;
mod credentials;
mod files;
mod listen;
mod nesting;
mod routes;
mod suggest;
mod syntax;
mod telemetry;
mod token_service;
mod url;
mod walk;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use serde_yaml::Value;

use super::{
    AllowPolicy, CallerAuth, Cloud, Config, ConfigError, ConfigOrigin, DEFAULT_ADMIN_LISTEN,
    DEFAULT_CREDENTIAL, DEFAULT_LISTEN, HttpsOrigin, Limits, Listen, RouteConfig, Upstream,
};
use crate::auth::{ChainSource, CredentialOptions};
use crate::env::Env;
use crate::file_read::{self, Access, FileError};
use crate::origin::{UrlRule, check_url};
pub(super) use listen::{listener_problems, parse_listen};
use walk::{Field, Walker};

/// Configuration files larger than this are refused before they are parsed (the largest example is about 3 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

pub use files::secret_mode_refused;
pub use nesting::MAX_NESTING;
pub use token_service::{check_identity_secret, check_identity_secret_owner};

/// The environment variable that selects the built-in chain's sources (`dev`, `prod`, or one source).
const TOKEN_CREDENTIALS_VAR: &str = "AZURE_TOKEN_CREDENTIALS";

/// The environment variable that overrides the cloud's authority host when the key is absent.
const AUTHORITY_HOST_VAR: &str = "AZURE_AUTHORITY_HOST";

/// The top-level keys as walked, before the cross-field checks.
#[derive(Default)]
struct TopLevel {
    listen: Field<Listen>,
    admin_listen: Field<SocketAddr>,
    expose: Field<bool>,
    caller_auth: Field<CallerAuth>,
    unix_allowed_uids: Field<Vec<u32>>,
    cloud: Field<Cloud>,
    authority_host: Field<HttpsOrigin>,
    resource_manager: Field<HttpsOrigin>,
    allowed_hosts: Field<Vec<String>>,
    cae: Field<bool>,
    extra_roots: Field<Vec<CertificateDer<'static>>>,
    limits: Field<Limits>,
    credentials: BTreeMap<String, CredentialOptions>,
    routes: Field<Vec<RouteConfig>>,
    token_service: Field<super::TokenServiceConfig>,
    /// `token_service.listen` (or its default) when valid, even if the rest of the block is not.
    token_service_listen: Option<Listen>,
    telemetry: Field<Option<crate::telemetry::otlp::OtlpConfig>>,
}

/// Reads and checks a configuration file. Relative paths in it are resolved against its directory.
///
/// Every problem is reported at once, each with its key path; the error names `path`.
pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let refused = |message: String| ConfigError::single(Some(path.to_path_buf()), "", message);
    let bytes = file_read::read(path, MAX_CONFIG_BYTES, Access::Any).map_err(|e| {
        refused(match e {
            FileError::Open { error, .. } => format!("cannot read {}: {error}", path.display()),
            FileError::TooLarge { .. } => format!(
                "{} is larger than {MAX_CONFIG_BYTES} bytes (1 MiB), the limit for a configuration file",
                path.display()
            ),
            other => other.to_string(),
        })
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| refused(format!("{} is not valid UTF-8", path.display())))?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    from_yaml_str(text, env, ConfigOrigin::File(path.to_path_buf()), base_dir)
}

/// Parses and checks configuration text. `${VAR}` references are looked up in `env`; relative paths are
/// resolved against `base_dir`. For [`ConfigOrigin::File`] the error names that file.
pub fn from_yaml_str(
    text: &str,
    env: &dyn Env,
    origin: ConfigOrigin,
    base_dir: &Path,
) -> Result<Config, ConfigError> {
    let file = match &origin {
        ConfigOrigin::File(path) => Some(path.clone()),
        ConfigOrigin::BuiltIn => None,
    };
    // Both checks run before the parser, whose time grows with the square of the nesting depth.
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::single(
            file,
            "",
            format!(
                "the configuration is larger than {MAX_CONFIG_BYTES} bytes (1 MiB), the limit for a configuration file"
            ),
        ));
    }
    nesting::check(text).map_err(|message| ConfigError::single(file.clone(), "", message))?;
    let mut root: Value = serde_yaml::from_str(text)
        .map_err(|e| ConfigError::single(file.clone(), "", syntax_error(&e)))?;
    root.apply_merge().map_err(|e| {
        ConfigError::single(file.clone(), "", format!("invalid YAML merge key: {e}"))
    })?;
    let mut w = Walker::new(env, base_dir);
    let config = document(&mut w, &root, origin).map(name_config_file);
    w.finish(file, config)
}

/// Gives the credentials whose messages name a command to run (`aml-auth-proxy login`) the configuration file, so
/// that the command works as printed: `--config FILE`, made absolute so it works from any directory.
fn name_config_file(mut config: Config) -> Config {
    let Some(file) = config.origin.file_for_hints() else {
        return config;
    };
    for options in config.credentials.values_mut() {
        match options {
            CredentialOptions::DeviceCode(o) => o.config_file = Some(file.clone()),
            CredentialOptions::InteractiveBrowser(o) => o.session.config_file = Some(file.clone()),
            _ => {}
        }
    }
    config
}

/// The built-in default (no configuration file): ARM at `/` with the default credential chain.
pub(super) fn builtin(env: &dyn Env) -> Result<Config, ConfigError> {
    let mut w = Walker::new(env, Path::new("."));
    // AZURE_TOKEN_CREDENTIALS narrows the built-in chain as it does azure-identity's DefaultAzureCredential.
    let chain = ChainSource::token_credentials_chain(env.var(TOKEN_CREDENTIALS_VAR).as_deref())
        .map_err(|message| w.problem(TOKEN_CREDENTIALS_VAR, message))
        .ok();
    let cloud = Cloud::AzureCloud;
    let authority_host = authority_host(&mut w, Field::Absent, cloud);
    let route = builtin_route(&mut w, cloud);
    let resource_manager = cloud_resource_manager(&mut w, cloud);
    let config = authority_host
        .zip(route)
        .zip(chain)
        .zip(resource_manager)
        .map(
            |(((authority_host, route), chain), resource_manager)| Config {
                listen: Listen::Tcp(DEFAULT_LISTEN),
                admin_listen: DEFAULT_ADMIN_LISTEN,
                expose: false,
                caller_auth: None,
                unix_allowed_uids: None,
                cloud,
                authority_host,
                resource_manager,
                allowed_hosts: default_allowed_hosts(
                    &Listen::Tcp(DEFAULT_LISTEN),
                    DEFAULT_ADMIN_LISTEN,
                    None,
                ),
                cae: true,
                extra_roots: Vec::new(),
                limits: Limits::default(),
                credentials: BTreeMap::from([(
                    DEFAULT_CREDENTIAL.to_owned(),
                    CredentialOptions::Chain(chain),
                )]),
                routes: vec![route],
                token_service: None,
                telemetry: None,
                origin: ConfigOrigin::BuiltIn,
            },
        );
    w.finish(None, config)
}

/// The built-in route `arm`: `/` → the cloud's Resource Manager with the default credential.
fn builtin_route(w: &mut Walker<'_>, cloud: Cloud) -> Option<RouteConfig> {
    let arm = cloud.resource_manager();
    let url = check_url(arm, UrlRule::Upstream)
        .map_err(|message| w.problem("routes[0].upstream", message))
        .ok()?;
    Some(RouteConfig {
        name: "arm".to_owned(),
        path_prefix: "/".to_owned(),
        host: None,
        strip_prefix: false,
        upstream: Upstream {
            origin: url.origin,
            base_path: String::new(),
        },
        scope: Some(format!("{arm}/.default")),
        credential: Some(DEFAULT_CREDENTIAL.to_owned()),
        allow: AllowPolicy::default(),
        pass_through_authorization: false,
        forward_headers: Vec::new(),
        azure_ml: None,
    })
}

/// The whole document: a mapping (an empty document counts as an empty one).
fn document(w: &mut Walker<'_>, root: &Value, origin: ConfigOrigin) -> Option<Config> {
    if !matches!(root, Value::Mapping(_) | Value::Null) {
        w.problem(
            "",
            format!("the top level must be a mapping, got {}", walk::kind(root)),
        );
        return None;
    }
    let names = credentials::declared_names(root);
    let mut top = TopLevel::default();
    w.fields("", root, |w, key, p, v| {
        match key {
            "listen" => top.listen.set(w.listen(p, v)),
            "admin_listen" => top.admin_listen.set(socket_addr(w, p, v)),
            "expose" => top.expose.set(w.boolean(p, v)),
            "caller_auth" => top.caller_auth.set(w.caller_auth(p, v)),
            "unix_allowed_uids" => top.unix_allowed_uids.set(w.allowed_uids(p, v)),
            "cloud" => top.cloud.set(cloud(w, p, v)),
            "authority_host" => top.authority_host.set(w.origin(p, v)),
            "resource_manager" => top.resource_manager.set(w.origin(p, v)),
            "allowed_hosts" => top.allowed_hosts.set(allowed_hosts(w, p, v)),
            "cae" => top.cae.set(w.boolean(p, v)),
            "tls" => top.extra_roots.set(tls(w, p, v)),
            "limits" => top.limits.set(limits(w, p, v)),
            "credentials" => top.credentials = credentials::section(w, p, v, &names),
            "routes" => top.routes.set(routes::section(w, p, v, &names)),
            "token_service" => {
                let (block, listen) = token_service::section(w, p, v, &names);
                top.token_service.set(block);
                top.token_service_listen = listen;
            }
            "telemetry" => top.telemetry.set(telemetry::section(w, p, v)),
            _ => return false,
        }
        true
    });
    top.into_config(w, origin)
}

/// A `listen`-style socket address.
fn socket_addr(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<SocketAddr> {
    let text = w.string(path, value)?;
    text.parse()
        .map_err(|_| {
            w.problem(
                path,
                format!("invalid address {text:?} (expected IP:port, like 127.0.0.1:8080)"),
            )
        })
        .ok()
}

/// `cloud`: one of the cloud names (case-insensitive).
fn cloud(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<Cloud> {
    let text = w.string(path, value)?;
    let cloud = Cloud::from_name(&text);
    if cloud.is_none() {
        w.problem(
            path,
            format!(
                "unknown cloud {text:?} (expected AzureCloud, AzureUSGovernment or AzureChinaCloud)"
            ),
        );
    }
    cloud
}

/// `allowed_hosts`: a non-empty list of host names or IP literals, lower-cased, without duplicates.
fn allowed_hosts(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<Vec<String>> {
    let mut hosts = w.list(path, value, true, |w, p, v| w.host(p, v))?;
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| seen.insert(h.clone()));
    Some(hosts)
}

/// `tls: { extra_ca_file }`: the extra trust anchors (none when the key is absent).
fn tls(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<Vec<CertificateDer<'static>>> {
    let mut roots = Field::Absent;
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "extra_ca_file" => roots.set(w.ca_file(p, v)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return None;
    }
    roots.or(Vec::new())
}

/// `limits:`; absent keys keep [`Limits::default`]. Everything must be positive except `replay_buffer_bytes`.
fn limits(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<Limits> {
    let mut limits = Limits::default();
    let mut all_valid = true;
    let is_map = w.fields(path, value, |w, key, p, v| {
        let ok = match key {
            "max_in_flight" => store(&mut limits.max_in_flight, size(w, p, v, 1)),
            "request_header_timeout" => store(
                &mut limits.request_header_timeout,
                w.positive_duration(p, v),
            ),
            "upstream_connect_timeout" => store(
                &mut limits.upstream_connect_timeout,
                w.positive_duration(p, v),
            ),
            "upstream_response_timeout" => store(
                &mut limits.upstream_response_timeout,
                w.positive_duration(p, v),
            ),
            "replay_buffer_bytes" => store(&mut limits.replay_buffer_bytes, size(w, p, v, 0)),
            "drain_timeout" => store(&mut limits.drain_timeout, w.positive_duration(p, v)),
            "write_stall_timeout" => {
                store(&mut limits.write_stall_timeout, w.positive_duration(p, v))
            }
            "stream_idle_timeout" => {
                store(&mut limits.stream_idle_timeout, w.positive_duration(p, v))
            }
            "request_body_min_rate" => store(&mut limits.request_body_min_rate, size(w, p, v, 1)),
            "request_body_rate_window" => store(
                &mut limits.request_body_rate_window,
                w.positive_duration(p, v),
            ),
            _ => return false,
        };
        all_valid &= ok;
        true
    });
    (is_map && all_valid).then_some(limits)
}

/// Stores `value` when valid; false when it was not.
fn store<T>(slot: &mut T, value: Option<T>) -> bool {
    value.map(|v| *slot = v).is_some()
}

/// A count of at least `min` that fits in `usize`.
fn size(w: &mut Walker<'_>, path: &str, value: &Value, min: u64) -> Option<usize> {
    let n = w.count(path, value)?;
    if n < min {
        w.problem(path, format!("must be at least {min}"));
        return None;
    }
    usize::try_from(n)
        .map_err(|_| w.problem(path, format!("{n} is too large")))
        .ok()
}

/// The authority host: the key if given, else `AZURE_AUTHORITY_HOST`, else the cloud's.
fn authority_host(
    w: &mut Walker<'_>,
    key: Field<HttpsOrigin>,
    cloud: Cloud,
) -> Option<HttpsOrigin> {
    let (text, source) = match key {
        Field::Valid(origin) => return Some(origin),
        Field::Invalid => return None,
        Field::Absent => match w.env().non_empty(AUTHORITY_HOST_VAR) {
            Some(text) => {
                w.value_from_env("authority_host", AUTHORITY_HOST_VAR, &text);
                (text, Some(AUTHORITY_HOST_VAR))
            }
            None => (cloud.authority_host().to_owned(), None),
        },
    };
    match check_url(&text, UrlRule::Origin) {
        Ok(url) => Some(url.origin),
        Err(message) => {
            let from = source.map(|var| format!("{var}: ")).unwrap_or_default();
            w.problem("authority_host", format!("{from}{message}"));
            None
        }
    }
}

/// The `Host` names accepted when `allowed_hosts` is not given: `localhost`, and the loopback address of each
/// family the listeners (proxy, admin, token service) answer on (`127.0.0.1` for an IPv4 listener, `[::1]` for an IPv6 one, both for `[::]`,
/// which takes IPv4 too; a listener on another address adds that address). So the list names only addresses a
/// caller can reach the proxy at: with the default `127.0.0.1` listeners it is `localhost, 127.0.0.1`.
pub fn default_allowed_hosts(
    listen: &Listen,
    admin_listen: SocketAddr,
    token_service: Option<&Listen>,
) -> Vec<String> {
    use std::net::IpAddr;
    let mut hosts = vec!["localhost".to_owned()];
    let mut add = |host: String| {
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    };
    let tcp = |listen: &Listen| match listen {
        Listen::Tcp(addr) => Some(addr.ip()),
        Listen::Unix(_) => None,
    };
    let ips = tcp(listen)
        .into_iter()
        .chain([admin_listen.ip()])
        .chain(token_service.and_then(tcp));
    for ip in ips {
        match ip.to_canonical() {
            IpAddr::V4(v4) if v4.is_loopback() || v4.is_unspecified() => {
                add("127.0.0.1".to_owned())
            }
            IpAddr::V4(v4) => add(v4.to_string()),
            IpAddr::V6(v6) if v6.is_unspecified() => {
                add("127.0.0.1".to_owned());
                add("[::1]".to_owned());
            }
            IpAddr::V6(v6) if v6.is_loopback() => add("[::1]".to_owned()),
            IpAddr::V6(v6) => add(format!("[{v6}]")),
        }
    }
    hosts
}

/// Checks a scope the way a route's `scope` is checked: a resource's default scope, `<resource>/.default`, with a
/// usable resource. The message says what to write instead.
pub fn check_scope(scope: &str) -> Result<(), String> {
    syntax::check_route_scope(scope)
}

/// The cloud's Resource Manager, as an origin.
fn cloud_resource_manager(w: &mut Walker<'_>, cloud: Cloud) -> Option<HttpsOrigin> {
    check_url(cloud.resource_manager(), UrlRule::Origin)
        .map_err(|message| w.problem("resource_manager", message))
        .ok()
        .map(|url| url.origin)
}

/// A parser error as one problem, with the line and column.
fn syntax_error(error: &serde_yaml::Error) -> String {
    let text = error.to_string();
    match error.location() {
        Some(at) if !text.contains(" line ") => {
            format!(
                "invalid YAML: {text} at line {} column {}",
                at.line(),
                at.column()
            )
        }
        _ => format!("invalid YAML: {text}"),
    }
}

// === impl TopLevel ===

impl TopLevel {
    /// Cross-field checks and defaults; `None` when anything was invalid.
    fn into_config(self, w: &mut Walker<'_>, origin: ConfigOrigin) -> Option<Config> {
        let listen = self.listen.or(Listen::Tcp(DEFAULT_LISTEN));
        let admin_listen = self.admin_listen.or(DEFAULT_ADMIN_LISTEN);
        let expose = self.expose.or(false);
        if let (Some(l), Some(a), Some(e)) = (&listen, admin_listen, expose) {
            // A `caller_auth` that is present but invalid has its own problems; do not also claim it is missing.
            for p in listener_problems(l, a, e, self.caller_auth.is_present()) {
                w.problem(&p.path, p.message);
            }
        }
        if let (Some(ts_listen), Some(expose)) = (&self.token_service_listen, expose) {
            let exposure = token_service::Exposure {
                listen: listen.as_ref(),
                admin_listen,
                expose,
                caller_auth: self.caller_auth.is_present(),
            };
            token_service::listener_problems(w, ts_listen, &exposure);
        }
        let cloud = self.cloud.or(Cloud::AzureCloud);
        let authority_host = match cloud {
            Some(cloud) => authority_host(w, self.authority_host, cloud),
            None => None,
        };
        let resource_manager = match (self.resource_manager, cloud) {
            (Field::Absent, Some(cloud)) => cloud_resource_manager(w, cloud),
            (given, _) => given.valid(),
        };
        let mut routes = self.routes.required(w, "routes");
        // Azure ML routes reach Resource Manager until their target is resolved.
        if let (Some(routes), Some(arm)) = (&mut routes, &resource_manager) {
            for route in routes.iter_mut().filter(|r| r.azure_ml.is_some()) {
                route.upstream.origin = arm.clone();
            }
        }
        let allowed_hosts = match (&listen, admin_listen) {
            (Some(l), Some(a)) => self.allowed_hosts.or(default_allowed_hosts(
                l,
                a,
                self.token_service_listen.as_ref(),
            )),
            _ => self.allowed_hosts.valid(),
        };
        Some(Config {
            listen: listen?,
            admin_listen: admin_listen?,
            expose: expose?,
            caller_auth: self.caller_auth.optional()?,
            unix_allowed_uids: self.unix_allowed_uids.optional()?,
            cloud: cloud?,
            authority_host: authority_host?,
            resource_manager: resource_manager?,
            allowed_hosts: allowed_hosts?,
            cae: self.cae.or(true)?,
            extra_roots: self.extra_roots.or(Vec::new())?,
            limits: self.limits.or(Limits::default())?,
            credentials: self.credentials,
            routes: routes?,
            token_service: self.token_service.optional()?,
            telemetry: self.telemetry.or(None)?,
            origin,
        })
    }
}
