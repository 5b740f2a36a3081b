//! `token`: acquire a token through a configured credential and print its details as JSON on stdout (the token
//! itself only with `--show-token`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use serde_json::json;

use super::args::TokenArgs;
use super::exit::{EXIT_FAILURE, EXIT_USAGE, fail};
use super::setup::{block_on, entra_client, runtime};
use crate::auth::{CredentialSet, TokenRequest, build_credentials_in};
use crate::config::Config;
use crate::env::Env;
use crate::logging;

pub(super) fn token(args: TokenArgs, env: Arc<dyn Env>) -> ExitCode {
    let _log = logging::init(
        args.log.log_format,
        Some(args.log.log_level.as_deref().unwrap_or("warn")),
    );
    if let Err(message) = crate::config::check_scope(&args.scope) {
        return fail(EXIT_USAGE, format!("--scope: {message}"));
    }
    let config = match args.config.load(env.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let rt = match runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let cae = config.cae;
    block_on(rt, async move {
        let (set, names) = match credentials(config, env.as_ref()) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let name = match args.credential.or_else(|| names.first().cloned()) {
            Some(n) => n,
            None => return fail(EXIT_USAGE, "the configuration defines no credential"),
        };
        let Some(credential) = set.get(&name) else {
            return fail(EXIT_USAGE, format!("no credential named {name:?}"));
        };
        match credential
            .get_token(&TokenRequest::new(args.scope.as_str()).with_client_capabilities(cae))
            .await
        {
            Ok(t) => {
                let expires_on = std::time::SystemTime::now()
                    .checked_add(t.expires_in)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .unwrap_or_default()
                    .as_secs();
                let mut out = json!({
                    "credential": name,
                    "source": &*t.source,
                    "scope": args.scope,
                    "expires_on": expires_on,
                    "token_type": "Bearer",
                });
                if args.show_token {
                    out["access_token"] = json!(t.token.expose());
                }
                let _ = writeln!(std::io::stdout(), "{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                let e = e.into_token_error().with_credential(&name);
                let mut line = format!(
                    "token: {} (credential {name}, source {}): {}",
                    e.kind, e.source, e.message
                );
                if let Some(code) = e.aad.as_ref().and_then(|a| a.first_code()) {
                    line.push_str(&format!(" [AADSTS{code}]"));
                }
                fail(EXIT_FAILURE, line)
            }
        }
    })
}

/// The credentials of `config`, built for a one-shot command, and their names in the order a default is picked
/// from: `default`, then the first route's credential, then the rest.
fn credentials(config: Config, env: &dyn Env) -> Result<(CredentialSet, Vec<String>), ExitCode> {
    let entra = entra_client(&config)?;
    let mut names: Vec<String> = config.credentials.keys().cloned().collect();
    if let Some(first) = config.routes.iter().find_map(|r| r.credential.clone()) {
        names.retain(|n| *n != first);
        names.insert(0, first);
    }
    if let Some(pos) = names
        .iter()
        .position(|n| n == crate::config::DEFAULT_CREDENTIAL)
    {
        let d = names.remove(pos);
        names.insert(0, d);
    }
    let file = config.origin.file_for_hints();
    Ok((
        build_credentials_in(config.credentials, env, &entra, file.as_deref()),
        names,
    ))
}
