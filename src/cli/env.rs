//! `env`: print the shell lines that make plain clients (mlflow, curl, an app's HTTP client) go through the proxy
//! for one route, e.g. `export MLFLOW_TRACKING_URI='http://127.0.0.1:8080/ws/mlflow/v1.0/subscriptions/…'`.
//!
//! Every route gets `AML_AUTH_PROXY_URL` (the proxy's URL of the route's prefix). An Azure ML route is resolved
//! through Resource Manager first, with the route's credential, exactly as the proxy resolves it: a workspace
//! route adds `MLFLOW_TRACKING_URI` (the workspace's tracking path under the route), an online endpoint route adds
//! `SCORING_URI` (the scoring URI's path under the route). Use it as `eval "$(aml-auth-proxy env --route ws)"`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::sync::Arc;

use super::args::EnvArgs;
use super::exit::{EXIT_FAILURE, EXIT_USAGE, fail, print_result};
use super::setup::{block_on, entra_client, runtime, token_http_client};
use crate::auth::build_credentials;
use crate::azure_ml::arm::ArmClient;
use crate::azure_ml::{Detail, ResolveContext, resolve};
use crate::config::{Config, Listen, RouteConfig};
use crate::env::Env;
use crate::logging;
use crate::metrics::Metrics;
use crate::token_cache::{CacheKey, CachePolicy, TokenCache};

pub(super) fn env(args: EnvArgs, env: Arc<dyn Env>) -> ExitCode {
    let _log = logging::init(
        args.log.log_format,
        Some(args.log.log_level.as_deref().unwrap_or("warn")),
    );
    let config = match args.config.load(env.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let Some(route) = config.routes.iter().find(|r| r.name == args.route).cloned() else {
        let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        return fail(
            EXIT_USAGE,
            format!(
                "no route named {:?} (routes: {})",
                args.route,
                names.join(", ")
            ),
        );
    };
    let base = match proxy_base(&config.listen) {
        Ok(base) => base,
        Err(message) => return fail(EXIT_USAGE, message),
    };
    let prefix = if route.path_prefix == "/" {
        String::new()
    } else {
        route.path_prefix.clone()
    };
    let mut lines = vec![("AML_AUTH_PROXY_URL", format!("{base}{prefix}"))];
    if let Some(target) = route.azure_ml.clone() {
        let rt = match runtime(Some(1)) {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        let resolved = block_on(rt, async {
            let ctx = context(config, &route, env.as_ref())?;
            resolve(&ctx, &target).await.map_err(|e| {
                fail(
                    EXIT_FAILURE,
                    format!("env: route {}: {}: {}", route.name, e.kind, e.message),
                )
            })
        });
        match resolved {
            Ok(resolved) => lines.push(match &resolved.detail {
                Detail::Workspace { mlflow_path } => (
                    "MLFLOW_TRACKING_URI",
                    format!("{base}{prefix}{mlflow_path}"),
                ),
                Detail::OnlineEndpoint { scoring_path, .. } => {
                    ("SCORING_URI", format!("{base}{prefix}{scoring_path}"))
                }
            }),
            Err(code) => return code,
        }
    }
    let mut out = String::new();
    for (name, value) in lines {
        let _ = writeln!(out, "export {name}={}", shell_quote(&value));
    }
    print_result(out.as_bytes())
}

/// What resolving `route` needs, for one resolution (no background refresh).
fn context(config: Config, route: &RouteConfig, env: &dyn Env) -> Result<ResolveContext, ExitCode> {
    let Some(name) = route.credential.clone() else {
        return Err(fail(
            EXIT_USAGE,
            format!("route {} has no credential", route.name),
        ));
    };
    let http = token_http_client(&config)?;
    let entra = entra_client(&config)?;
    let tenant: Option<Arc<str>> = config
        .credentials
        .get(&name)
        .and_then(|spec| spec.tenant_id())
        .map(Into::into);
    let (cloud, cae, resource_manager) = (config.cloud, config.cae, config.resource_manager);
    let credentials = build_credentials(config.credentials, env, &entra);
    let Some(credential) = credentials.get(&name) else {
        return Err(fail(EXIT_USAGE, format!("no credential named {name:?}")));
    };
    let metrics = Metrics::new().map_err(|e| fail(EXIT_FAILURE, format!("metrics: {e}")))?;
    let policy = CachePolicy {
        client_capabilities: cae,
        ..CachePolicy::default()
    };
    let cache = TokenCache::new(metrics.tokens, policy);
    let arm_tokens = cache.source(
        CacheKey {
            credential: name.as_str().into(),
            tenant: tenant.clone(),
            scope: cloud.management_scope().into(),
            claims: None,
        },
        Arc::clone(&credential),
        false,
    );
    Ok(ResolveContext {
        arm: ArmClient::new(http.clone(), resource_manager, arm_tokens),
        http,
        cache,
        credential,
        credential_name: name.as_str().into(),
        tenant,
        ml_scope: cloud.ml_scope().into(),
        keep_fresh: false,
    })
}

/// `http://HOST:PORT` of the proxy listener as a local client reaches it (a wildcard address becomes loopback).
fn proxy_base(listen: &Listen) -> Result<String, String> {
    let Listen::Tcp(addr) = listen else {
        return Err(format!(
            "the proxy listens on {listen}; plain HTTP clients such as mlflow need a TCP listener (--listen or `listen:`)"
        ));
    };
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(match host {
        IpAddr::V4(ip) => format!("http://{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("http://[{ip}]:{}", addr.port()),
    })
}

/// `value` in single quotes, for POSIX shells.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_and_quoting() {
        let tcp = |s: &str| Listen::Tcp(s.parse().unwrap());
        assert_eq!(
            proxy_base(&tcp("127.0.0.1:8080")).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            proxy_base(&tcp("0.0.0.0:80")).unwrap(),
            "http://127.0.0.1:80"
        );
        assert_eq!(proxy_base(&tcp("[::]:81")).unwrap(), "http://[::1]:81");
        assert!(proxy_base(&Listen::Unix("/run/p.sock".into())).is_err());
        assert_eq!(shell_quote("http://h/a'b"), "'http://h/a'\\''b'");
    }
}
