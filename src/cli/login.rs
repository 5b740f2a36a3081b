//! `login`: device-code sign-in for a `device_code` credential (the named one, else the only one).
//!
//! The prompt and a one-line confirmation go to stderr; stdout stays empty (the result is the saved cache file).
//! The first access token is requested for the scope of the first route using the credential, else for Azure
//! Resource Manager in the configured cloud; the refresh token then serves every route's scope. Exit codes: 0
//! signed in and saved, 64 bad usage or configuration, 1 the sign-in failed or could not be saved.

use std::io::Write;
use std::process::ExitCode;

use super::args::LoginArgs;
use super::exit::{EXIT_FAILURE, EXIT_USAGE, fail};
use super::setup::{block_on, entra_client, runtime};
use crate::auth::{
    CredentialOptions, DeviceCodeCredential, DeviceCodeCredentialOptions, DeviceCodePrompt,
    LoginError, LoginOptions, decode_claims_challenge,
};
use crate::config::Config;
use crate::env::Env;
use crate::logging;

pub(super) fn login(args: &LoginArgs, env: &dyn Env) -> ExitCode {
    let _log = logging::init(None, Some("warn"));
    let config = match args.config.load(env) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let claims = match args
        .claims_challenge
        .as_deref()
        .map(decode_claims_challenge)
    {
        None => None,
        Some(Ok(claims)) => Some(claims),
        Some(Err(e)) => return fail(EXIT_USAGE, format!("login: --claims-challenge: {e}")),
    };
    let (name, spec) = match login_credential(&config, args.credential.as_deref()) {
        Ok(found) => found,
        Err(why) => return fail(EXIT_USAGE, format!("login: {why}")),
    };
    let scope = config
        .routes
        .iter()
        .find(|r| r.credential.as_deref() == Some(name.as_str()))
        .and_then(|r| r.scope.clone())
        .unwrap_or_else(|| format!("{}/.default", config.cloud.resource_manager()));
    let entra = match entra_client(&config) {
        Ok(entra) => entra,
        Err(code) => return code,
    };
    let rt = match runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    block_on(rt, async move {
        let credential = DeviceCodeCredential::new(spec, entra).with_name(&name);
        let options = LoginOptions::new(scope).with_claims(claims);
        let shown = |prompt: &DeviceCodePrompt| {
            let _ = writeln!(std::io::stderr(), "{}", prompt.text());
        };
        match credential.login(&options, shown).await {
            Ok(done) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "aml-auth-proxy: signed in (credential {name}, tenant {}); refresh token saved to {}",
                    done.tenant,
                    done.cache_file.display()
                );
                ExitCode::SUCCESS
            }
            Err(LoginError::Token(e)) => {
                let mut line = format!("login: sign-in failed: {}: {}", e.kind, e.message);
                if let Some(code) = e.aad.as_ref().and_then(|a| a.first_code()) {
                    line.push_str(&format!(" [AADSTS{code}]"));
                }
                fail(EXIT_FAILURE, line)
            }
            Err(e) => fail(EXIT_FAILURE, format!("login: {e}")),
        }
    })
}

/// The `device_code` credential to sign in: the one named, else the only one in the configuration.
fn login_credential(
    config: &Config,
    named: Option<&str>,
) -> Result<(String, DeviceCodeCredentialOptions), String> {
    if let Some(name) = named {
        return match config.credentials.get(name) {
            Some(CredentialOptions::DeviceCode(spec)) => Ok((name.to_owned(), spec.clone())),
            Some(other) => Err(format!(
                "credential {name:?} is a {} credential; login signs in device_code credentials",
                other.kind()
            )),
            None => Err(format!(
                "the configuration has no credential named {name:?}"
            )),
        };
    }
    let mut found: Vec<(String, DeviceCodeCredentialOptions)> = config
        .credentials
        .iter()
        .filter_map(|(n, s)| match s {
            CredentialOptions::DeviceCode(spec) => Some((n.clone(), spec.clone())),
            _ => None,
        })
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err("the configuration has no device_code credential".to_owned()),
        _ => Err(format!(
            "the configuration has several device_code credentials ({}): choose one with --credential",
            found
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
