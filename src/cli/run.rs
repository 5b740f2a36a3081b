//! `run` (also the default with no command): load the configuration, bind, serve until a signal, drain.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use super::args::{Http1Server, RunArgs};
use super::exit::{EXIT_FAILURE, EXIT_USAGE, fail};
use super::setup::{block_on, main_runtime, proxy_threads};
use super::signals::{reload_on_sighup, signals};
use crate::app::{App, AppOptions};
use crate::config::{Config, ConfigError, ConfigOrigin, Listen};
use crate::env::Env;
use crate::logging;

pub(super) fn run(args: RunArgs, env: Arc<dyn Env>) -> ExitCode {
    let _log = logging::init(args.log.log_format, args.log.log_level.as_deref());
    let mut config = match args.config.load(env.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    if config.origin == ConfigOrigin::BuiltIn {
        tracing::info!(
            "no configuration file given: using the built-in default (/ → Azure Resource Manager, default credential chain)"
        );
    }
    if let Err(e) = apply_listen_overrides(&mut config, args.listen, args.admin_listen) {
        return fail(EXIT_USAGE, e);
    }
    let rt = match main_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    block_on(rt, async move {
        let (shutdown, force) = match signals() {
            Ok(s) => s,
            Err(e) => return fail(EXIT_FAILURE, format!("cannot install signal handlers: {e}")),
        };
        let options = AppOptions {
            proxy_threads: Some(proxy_threads(args.worker_threads)),
            http1_loop: args.http1_server == Http1Server::Own,
            ..AppOptions::new(env)
        };
        let app = match App::bind(config, options).await {
            Ok(app) => app,
            Err(e) => return fail(EXIT_FAILURE, e),
        };
        reload_on_sighup(app.reloader());
        app.run(shutdown, force).await;
        ExitCode::SUCCESS
    })
}

/// Applies `--listen` / `--admin-listen` and checks the who-may-connect rules again, so an override cannot open
/// the proxy to other hosts without `expose: true` and `caller_auth`. Problems caused by an override name the flag.
fn apply_listen_overrides(
    config: &mut Config,
    listen: Option<Listen>,
    admin_listen: Option<SocketAddr>,
) -> Result<(), ConfigError> {
    let (listen_given, admin_given) = (listen.is_some(), admin_listen.is_some());
    // The default `allowed_hosts` follows the listeners: recomputed for the overridden ones.
    let token_service = config.token_service.as_ref().map(|t| t.listen.clone());
    let default_hosts = config.allowed_hosts
        == crate::config::default_allowed_hosts(
            &config.listen,
            config.admin_listen,
            token_service.as_ref(),
        );
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if let Some(addr) = admin_listen {
        config.admin_listen = addr;
    }
    if default_hosts {
        config.allowed_hosts = crate::config::default_allowed_hosts(
            &config.listen,
            config.admin_listen,
            token_service.as_ref(),
        );
    }
    config.check_listeners().map_err(|mut problems| {
        for p in &mut problems {
            match p.path.as_str() {
                "listen" if listen_given => p.path = "--listen".to_owned(),
                "admin_listen" if admin_given => p.path = "--admin-listen".to_owned(),
                _ => {}
            }
        }
        let file = match &config.origin {
            ConfigOrigin::File(path) => Some(path.clone()),
            ConfigOrigin::BuiltIn => None,
        };
        ConfigError { file, problems }
    })
}
