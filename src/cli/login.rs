//! `login`: signs a user in for an `interactive_browser` or `device_code` credential (the named one, else the
//! only one) and persists the refresh token to the credential's cache file.
//!
//! How: an `interactive_browser` credential (or any, with `--browser`) signs in in a web browser; a `device_code`
//! credential (or any, with `--device-code`) with a device code. For the browser, the authorize URL is always
//! printed on stderr and opened with the command in `$BROWSER` (the URL replaces a `%s` in it, else is its last
//! argument), else the platform's opener (`open` on macOS, `xdg-open` in a graphical session elsewhere). When
//! there is no way to open a browser, the sign-in falls back to the device code, as the Azure ML SDK's
//! `InteractiveLoginAuthentication` does.
//!
//! The prompt and a one-line confirmation go to stderr; stdout stays empty (the result is the saved cache file).
//! The first access token is requested for the scope of the first route using the credential, else for Azure
//! Resource Manager in the configured cloud; the refresh token then serves every route's scope. With `cae` on,
//! every sign-in request carries the `CP1` capability. Exit codes: 0 signed in and saved, 64 bad usage or
//! configuration, 1 the sign-in failed (an error redirect names Entra ID's error and description) or could not
//! be saved.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use super::args::LoginArgs;
use super::exit::{EXIT_FAILURE, EXIT_USAGE, fail};
use super::setup::{block_on, entra_client, runtime};
use crate::auth::{
    ChainSource, CredentialOptions, DeviceCodeCredential, DeviceCodeCredentialOptions,
    DeviceCodePrompt, InteractiveBrowserCredential, InteractiveBrowserCredentialOptions,
    LoginError, LoginOutcome, TokenRequest, decode_claims_challenge,
};
use crate::config::Config;
use crate::env::Env;
use crate::logging;

/// The credential being signed in.
enum Target {
    DeviceCode(DeviceCodeCredentialOptions),
    Browser(InteractiveBrowserCredentialOptions),
}

/// How to open a URL in a browser: a command, the URL replacing `%s` in it or appended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Opener {
    argv: Vec<String>,
}

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
    let (name, target) = match login_credential(&config, args.credential.as_deref(), env) {
        Ok(found) => found,
        Err(why) => return fail(EXIT_USAGE, format!("login: {why}")),
    };
    let scope = config
        .routes
        .iter()
        .find(|r| r.credential.as_deref() == Some(name.as_str()))
        .and_then(|r| r.scope.clone())
        .unwrap_or_else(|| format!("{}/.default", config.cloud.resource_manager()));
    let options = TokenRequest::new(scope)
        .with_claims(claims)
        .with_client_capabilities(config.cae);
    let entra = match entra_client(&config) {
        Ok(entra) => entra,
        Err(code) => return code,
    };
    let target = match (target, args.browser, args.device_code) {
        (Target::DeviceCode(o), true, _) => {
            Target::Browser(InteractiveBrowserCredentialOptions::from_device_code(o))
        }
        (Target::Browser(o), _, true) => Target::DeviceCode(o.session),
        (target, _, _) => target,
    };
    let opener = find_opener(env);
    let rt = match runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    block_on(rt, async move {
        let outcome = match target {
            Target::DeviceCode(spec) => {
                let credential = DeviceCodeCredential::new(spec, entra).with_name(&name);
                credential.login(&options, show_prompt).await
            }
            Target::Browser(spec) => {
                let credential = InteractiveBrowserCredential::new(spec, entra).with_name(&name);
                let result = match opener {
                    Ok(opener) => {
                        credential
                            .login(&options, |url| open_browser(&opener, url))
                            .await
                    }
                    Err(why) => Err(LoginError::NoBrowser(why)),
                };
                match result {
                    Err(LoginError::NoBrowser(why)) => {
                        let _ = writeln!(
                            std::io::stderr(),
                            "aml-auth-proxy: no browser can be opened ({why}); signing in with a device code instead"
                        );
                        credential
                            .login_with_device_code(&options, show_prompt)
                            .await
                    }
                    other => other,
                }
            }
        };
        report(&name, outcome)
    })
}

/// The device-code instructions, on stderr.
fn show_prompt(prompt: &DeviceCodePrompt) {
    let _ = writeln!(std::io::stderr(), "{}", prompt.text());
}

/// The one-line result: what was saved, or why nothing was.
fn report(name: &str, outcome: Result<LoginOutcome, LoginError>) -> ExitCode {
    match outcome {
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
}

/// The credential to sign in: the one named, else the only `interactive_browser` or `device_code` credential in
/// the configuration, else a chain's built-in `interactive_browser` or `device_code` source (the built-in
/// configuration with `AZURE_TOKEN_CREDENTIALS=interactive_browser`, say), which keeps its sign-in in
/// `~/.aml-auth-proxy/tokens.json`.
fn login_credential(
    config: &Config,
    named: Option<&str>,
    env: &dyn Env,
) -> Result<(String, Target), String> {
    let target = |spec: &CredentialOptions| match spec {
        CredentialOptions::DeviceCode(o) => Some(Target::DeviceCode(o.clone())),
        CredentialOptions::InteractiveBrowser(o) => Some(Target::Browser(o.clone())),
        _ => None,
    };
    if let Some(name) = named {
        return match config.credentials.get(name) {
            Some(spec) => target(spec).map(|t| (name.to_owned(), t)).ok_or_else(|| {
                format!(
                    "credential {name:?} is a {} credential; login signs in interactive_browser and device_code credentials",
                    spec.kind()
                )
            }),
            None => Err(format!(
                "the configuration has no credential named {name:?}"
            )),
        };
    }
    let mut found: Vec<(String, Target)> = config
        .credentials
        .iter()
        .filter_map(|(n, s)| target(s).map(|t| (n.clone(), t)))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => chain_source(config, env).unwrap_or_else(|| {
            Err("the configuration has no interactive_browser or device_code credential".to_owned())
        }),
        _ => Err(format!(
            "the configuration has several credentials that sign in ({}): choose one with --credential",
            found
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A chain's first built-in `interactive_browser` or `device_code` source, with its default cache file; an
/// error when that needs `HOME` and it is not set.
fn chain_source(config: &Config, env: &dyn Env) -> Option<Result<(String, Target), String>> {
    let source = config.credentials.values().find_map(|spec| match spec {
        CredentialOptions::Chain(sources) => sources
            .iter()
            .find(|s| matches!(s, ChainSource::InteractiveBrowser | ChainSource::DeviceCode)),
        _ => None,
    })?;
    let Some(home) = env.non_empty("HOME") else {
        return Some(Err(format!(
            "the {} source keeps its sign-in in ~/.aml-auth-proxy/tokens.json, but HOME is not set",
            source.name()
        )));
    };
    let options = DeviceCodeCredentialOptions {
        tenant_id: None,
        client_id: None,
        cache_file: PathBuf::from(home).join(".aml-auth-proxy/tokens.json"),
        config_file: None,
    };
    let target = match source {
        ChainSource::InteractiveBrowser => Target::Browser(
            InteractiveBrowserCredentialOptions::from_device_code(options),
        ),
        _ => Target::DeviceCode(options),
    };
    Some(Ok((source.name().to_owned(), target)))
}

/// How this machine opens a URL: `$BROWSER`, else the platform's opener; an error says why there is none.
fn find_opener(env: &dyn Env) -> Result<Opener, String> {
    if let Some(browser) = env.non_empty("BROWSER") {
        // Like Python's webbrowser: a `:`-separated list; the first entry is used.
        let first = browser.split(':').map(str::trim).find(|s| !s.is_empty());
        let argv: Vec<String> = first
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if argv.is_empty() {
            return Err("BROWSER names no command".to_owned());
        }
        return Ok(Opener { argv });
    }
    if cfg!(target_os = "macos") {
        return Ok(Opener {
            argv: vec!["open".to_owned()],
        });
    }
    let graphical =
        env.non_empty("DISPLAY").is_some() || env.non_empty("WAYLAND_DISPLAY").is_some();
    if !graphical {
        return Err(
            "BROWSER is not set and there is no graphical session (DISPLAY and WAYLAND_DISPLAY are unset)"
                .to_owned(),
        );
    }
    match on_path(env.var("PATH").as_deref(), "xdg-open") {
        Some(program) => Ok(Opener {
            argv: vec![program.to_string_lossy().into_owned()],
        }),
        None => Err("BROWSER is not set and xdg-open is not on the PATH".to_owned()),
    }
}

/// The first executable `name` in an absolute entry of `path`.
fn on_path(path: Option<&str>, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Prints the URL on stderr and starts the browser on it (not waited for: a browser may run for as long as the
/// user keeps it). A browser that cannot be started ends the browser sign-in (the caller falls back to a device
/// code); one that exits with a failure is reported, and the sign-in keeps waiting for the URL to be opened by hand.
fn open_browser(opener: &Opener, url: &str) -> Result<(), String> {
    let _ = writeln!(
        std::io::stderr(),
        "aml-auth-proxy: to sign in, open this page in a browser (it is being opened with {}):\n{url}",
        opener.argv[0]
    );
    let mut argv = opener.argv.clone();
    if argv.iter().any(|a| a.contains("%s")) {
        for a in &mut argv {
            *a = a.replace("%s", url);
        }
    } else {
        argv.push(url.to_owned());
    }
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    let shown = argv[0].clone();
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await
            && !status.success()
        {
            let _ = writeln!(
                std::io::stderr(),
                "aml-auth-proxy: {shown} exited with {status}; open the page above yourself, this sign-in keeps waiting"
            );
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    #[test]
    fn browser_comes_first_and_no_graphical_session_means_no_browser() {
        let env = MapEnv::new().with("BROWSER", "/opt/b/run --new-window %s:firefox");
        assert_eq!(
            find_opener(&env).unwrap().argv,
            ["/opt/b/run", "--new-window", "%s"]
        );
        if !cfg!(target_os = "macos") {
            let why = find_opener(&MapEnv::new().with("PATH", "/usr/bin:/bin")).unwrap_err();
            assert!(why.contains("no graphical session"), "{why}");
            let why = find_opener(
                &MapEnv::new()
                    .with("DISPLAY", ":0")
                    .with("PATH", "/nonexistent"),
            )
            .unwrap_err();
            assert!(why.contains("xdg-open is not on the PATH"), "{why}");
        }
        assert!(find_opener(&MapEnv::new().with("BROWSER", " : ")).is_err());
    }
}
