//! The command line (DESIGN §3): `run` (default), `check-config`, `token`, `login`, `probe`, plus `completions`
//! and `man`, generated from this definition.
//!
//! Exit codes: 0 success or clean shutdown, 64 bad usage or configuration, 1 start-up or runtime failure —
//! each failure with a one-line reason on stderr. stdout carries only a command's result.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::json;

use crate::app::{App, AppOptions};
use crate::auth::{
    CredentialOptions, CredentialSet, DeviceCodeCredential, DeviceCodeCredentialOptions,
    DeviceCodePrompt, EntraClient, HttpClientOptions, LoginError, LoginOptions, TokenHttpClient,
    TokenRequest, build_credentials, decode_claims_challenge,
};
use crate::config::{Config, ConfigError, Listen};
use crate::env::{Env, ProcessEnv};
use crate::logging::{self, LogFormat};

/// EX_USAGE: bad command line or configuration.
pub const EXIT_USAGE: u8 = 64;
/// Start-up or runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// aml-auth-proxy: adds Entra ID tokens to plain HTTP requests and forwards them to Azure Machine Learning.
#[derive(Debug, Parser)]
#[command(
    name = "aml-auth-proxy",
    version,
    long_version = LONG_VERSION.as_str(),
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default when no subcommand is given).
    Run(RunArgs),
    /// Validate a configuration file: exit 0 and print a summary, or exit 64 listing every problem.
    CheckConfig(CheckConfigArgs),
    /// Acquire a token through the configured credential and print its details as JSON.
    Token(TokenArgs),
    /// Sign in with a device code for a `device_code` credential and persist the refresh token.
    Login(LoginArgs),
    /// HTTP GET a URL; exit 0 on a 2xx answer (for exec probes in images without curl).
    Probe(ProbeArgs),
    /// Print a shell completion script on stdout (e.g. `aml-auth-proxy completions bash`).
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout, or write one page per command with --out-dir.
    Man(ManArgs),
}

/// `--version`: the package version, then the build information `build.rs` collected (commit when known).
static LONG_VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut text = env!("CARGO_PKG_VERSION").to_owned();
    let lines = [
        ("commit", env!("AML_AUTH_PROXY_BUILD_COMMIT")),
        ("target", env!("AML_AUTH_PROXY_BUILD_TARGET")),
        ("profile", env!("AML_AUTH_PROXY_BUILD_PROFILE")),
        ("rustc", env!("AML_AUTH_PROXY_BUILD_RUSTC")),
    ];
    for (name, value) in lines {
        if !value.is_empty() {
            text.push_str(&format!("\n{name}: {value}"));
        }
    }
    text
});

#[derive(Debug, Args, Default)]
struct ConfigArg {
    /// Configuration file (YAML). Without one, `run` uses the built-in default.
    #[arg(long, env = "AML_AUTH_PROXY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
struct LogArgs {
    /// Log format; default: text on a terminal, JSON otherwise.
    #[arg(long, value_enum, env = "AML_AUTH_PROXY_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Log level (`info`, `debug`, …) or tracing directives; default: RUST_LOG, else info.
    #[arg(long, env = "AML_AUTH_PROXY_LOG_LEVEL", value_name = "LEVEL")]
    log_level: Option<String>,
}

#[derive(Debug, Args, Default)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Proxy listen address, IP:port or unix:/absolute/path.sock (overrides `listen`).
    #[arg(long, env = "AML_AUTH_PROXY_LISTEN", value_name = "ADDR")]
    listen: Option<Listen>,
    /// Admin listen address (overrides `admin_listen`).
    #[arg(long, env = "AML_AUTH_PROXY_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Runtime worker threads, 1 to 1024; default: one per CPU the process may use (cgroup quotas included).
    #[arg(long, env = "AML_AUTH_PROXY_WORKER_THREADS", value_name = "N", value_parser = worker_threads)]
    worker_threads: Option<usize>,
    #[command(flatten)]
    log: LogArgs,
}

/// `--worker-threads` / `AML_AUTH_PROXY_WORKER_THREADS`: a whole number from 1 to 1024.
fn worker_threads(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 1024 (--worker-threads or AML_AUTH_PROXY_WORKER_THREADS)".into()),
    }
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
struct TokenArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The scope, e.g. https://management.azure.com/.default.
    #[arg(long)]
    scope: String,
    /// The credential name; default: `default`, else the first route's credential.
    #[arg(long)]
    credential: Option<String>,
    /// Include the access token in the output.
    #[arg(long)]
    show_token: bool,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Args)]
struct LoginArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The `device_code` credential to sign in.
    #[arg(long)]
    credential: Option<String>,
    /// A claims challenge (base64) to satisfy during sign-in.
    #[arg(long, value_name = "B64")]
    claims_challenge: Option<String>,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// The URL to GET, e.g. http://127.0.0.1:9464/readyz.
    url: String,
}

#[derive(Debug, Args)]
struct ManArgs {
    /// Write aml-auth-proxy.1 and a page per command (aml-auth-proxy-run.1, …) into DIR, and list them on stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    let env: Arc<dyn Env> = Arc::new(ProcessEnv);
    match cli.command {
        None => run(cli.run, env),
        Some(Command::Run(args)) => run(args, env),
        Some(Command::CheckConfig(args)) => check_config(&args, env.as_ref()),
        Some(Command::Token(args)) => token(args, env),
        Some(Command::Login(args)) => login(&args, env.as_ref()),
        Some(Command::Probe(args)) => probe(&args.url),
        Some(Command::Completions(args)) => completions(args.shell),
        Some(Command::Man(args)) => man(args.out_dir.as_deref()),
    }
}

/// The clap definition, for generators (`completions`, `man`) and tests.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Writes a command's result to stdout; a write failure (e.g. a closed pipe) is exit 1.
fn print_result(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILURE, format!("cannot write to stdout: {e}")),
    }
}

fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(), "aml-auth-proxy", &mut out);
    print_result(&out)
}

fn man(out_dir: Option<&Path>) -> ExitCode {
    let result = match out_dir {
        None => man_page(),
        Some(dir) => write_man_pages(dir).map(|written| {
            let mut list = String::new();
            for path in written {
                list.push_str(&format!("{}\n", path.display()));
            }
            list.into_bytes()
        }),
    };
    match result {
        Ok(bytes) => print_result(&bytes),
        Err(e) => fail(EXIT_FAILURE, format!("man: {e}")),
    }
}

/// The definition the man pages describe: without the `help` subcommand, which has no page of its own.
fn man_command() -> clap::Command {
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The main manual page: clap_mangen's sections from the CLI definition, then exit status, environment and
/// signals. Its SUBCOMMANDS section refers to the per-command pages [`write_man_pages`] writes.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(man_command());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    out.extend_from_slice(MAN_EXTRA_SECTIONS.as_bytes());
    // clap_mangen would run the `--version` lines together; one line each.
    out.extend_from_slice(b".SH VERSION\n");
    let lines: Vec<String> = LONG_VERSION
        .lines()
        .map(|l| l.replace('-', "\\-"))
        .collect();
    out.extend_from_slice(lines.join("\n.br\n").as_bytes());
    out.push(b'\n');
    Ok(out)
}

/// Writes `aml-auth-proxy.1` and `aml-auth-proxy-<command>.1` for every command into `dir` (created if
/// missing); returns the paths written.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let cmd = man_command();
    let mut written = Vec::new();
    let main = dir.join("aml-auth-proxy.1");
    std::fs::write(&main, man_page()?)?;
    written.push(main);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(clap_mangen::Man::new(sub.clone()).generate_to(dir)?);
    }
    Ok(written)
}

/// Hand-written roff for what clap does not know: exit codes, environment, signals.
const MAN_EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success, or a clean shutdown.
.TP
\fB1\fR
Start\-up or runtime failure, for example a port in use, or a token that could not be acquired.
.TP
\fB64\fR
Bad usage or configuration; every problem is listed with its key path.
.PP
Each failure comes with a one\-line reason on stderr. stdout carries only a command's result.
.SH ENVIRONMENT
.TP
\fBAML_AUTH_PROXY_CONFIG\fR
The configuration file, as \fB\-\-config\fR.
.TP
\fBAML_AUTH_PROXY_LISTEN\fR
The proxy listener, as \fB\-\-listen\fR: \fIIP:port\fR or \fIunix:/path.sock\fR.
.TP
\fBAML_AUTH_PROXY_ADMIN_LISTEN\fR
The admin listener (/healthz, /readyz, /metrics), as \fB\-\-admin\-listen\fR.
.TP
\fBAML_AUTH_PROXY_LOG_FORMAT\fR
\fBtext\fR or \fBjson\fR, as \fB\-\-log\-format\fR; default: text on a terminal, JSON otherwise.
.TP
\fBAML_AUTH_PROXY_LOG_LEVEL\fR
A level or tracing directives, as \fB\-\-log\-level\fR.
.TP
\fBRUST_LOG\fR
Used when neither \fB\-\-log\-level\fR nor \fBAML_AUTH_PROXY_LOG_LEVEL\fR is set; default \fBinfo\fR.
.TP
\fBAZURE_TENANT_ID\fR, \fBAZURE_CLIENT_ID\fR, \fBAZURE_CLIENT_SECRET\fR, \fBAZURE_CLIENT_CERTIFICATE_PATH\fR, \fBAZURE_FEDERATED_TOKEN_FILE\fR, \fBAZURE_AUTHORITY_HOST\fR
Read by the credential sources, as the Azure SDKs read them (see the README).
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Drain: stop accepting connections, turn /readyz to 503, let in\-flight requests finish for up to
\fBlimits.drain_timeout\fR, then exit 0. A second signal stops at once.
.TP
\fBSIGHUP\fR
Reload the configuration file; a file with any problem is refused and the running configuration stays.
.SH "SEE ALSO"
The page of each command, \fBaml\-auth\-proxy\-run\fR(1) and the others above, written by
\fBaml\-auth\-proxy man \-\-out\-dir\fR \fIDIR\fR; \fBaml\-auth\-proxy help\fR \fICOMMAND\fR; the README for the
configuration reference, error codes and deployment.
"#;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("aml-auth-proxy: {message}");
    ExitCode::from(code)
}

fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
    match path {
        Some(p) => crate::config::load(p, env),
        None => Config::builtin(env),
    }
}

/// The async runtime: `worker_threads` workers, else one per CPU the process may use (cgroup quotas included).
fn runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")))
}

/// How long the runtime waits, once a command is done, for blocking-pool work still running (a file read stuck on
/// a hung mount must not keep the process from exiting).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Runs `future` to completion on `rt`, then shuts the runtime down without waiting on stuck blocking work.
fn block_on<F: Future>(rt: tokio::runtime::Runtime, future: F) -> F::Output {
    let output = rt.block_on(future);
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    output
}

fn run(args: RunArgs, env: Arc<dyn Env>) -> ExitCode {
    let _log = logging::init(args.log.log_format, args.log.log_level.as_deref());
    let mut config = match load(args.config.config.as_deref(), env.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    if config.origin == crate::config::ConfigOrigin::BuiltIn {
        tracing::info!(
            "no configuration file given: using the built-in default (/ → Azure Resource Manager, default credential chain)"
        );
    }
    if let Err(e) = apply_listen_overrides(&mut config, args.listen, args.admin_listen) {
        return fail(EXIT_USAGE, e);
    }
    let rt = match runtime(args.worker_threads) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    block_on(rt, async move {
        let (shutdown, force) = match signals() {
            Ok(s) => s,
            Err(e) => return fail(EXIT_FAILURE, format!("cannot install signal handlers: {e}")),
        };
        let app = match App::bind(config, AppOptions::new(env)).await {
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
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if let Some(addr) = admin_listen {
        config.admin_listen = addr;
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
            crate::config::ConfigOrigin::File(path) => Some(path.clone()),
            crate::config::ConfigOrigin::BuiltIn => None,
        };
        ConfigError { file, problems }
    })
}

/// Reloads the configuration on every SIGHUP (a bad file keeps the running configuration; see [`crate::app::Reloader`]).
fn reload_on_sighup(reloader: crate::app::Reloader) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: configuration reload is unavailable");
            return;
        }
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = reloader.reload().await;
        }
    });
}

/// Two futures: the first SIGTERM/SIGINT, and the second one.
fn signals() -> std::io::Result<(
    impl Future<Output = ()>,
    impl Future<Output = ()> + Send + 'static,
)> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    let wait = |count: u32, mut rx: tokio::sync::watch::Receiver<u32>| async move {
        let _ = rx.wait_for(|n| *n >= count).await;
    };
    Ok((wait(1, rx.clone()), wait(2, rx)))
}

fn check_config(args: &CheckConfigArgs, env: &dyn Env) -> ExitCode {
    let Some(path) = args.config.config.as_deref() else {
        return fail(
            EXIT_USAGE,
            "check-config needs --config FILE (or AML_AUTH_PROXY_CONFIG)",
        );
    };
    let config = match crate::config::load(path, env) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "configuration {} is valid: {} route(s), {} credential(s); listen {}, admin {}, cloud {}, authority {}\n",
        path.display(),
        config.routes.len(),
        config.credentials.len(),
        config.listen,
        config.admin_listen,
        config.cloud.name(),
        config.authority_host
    ));
    if let Some(auth) = &config.caller_auth {
        out.push_str(&format!(
            "  callers must send the key in {}{}\n",
            auth.header,
            if config.expose { " (expose: true)" } else { "" }
        ));
    }
    for r in &config.routes {
        out.push_str(&format!(
            "  route {}: {}{} -> {}{} (credential {}, scope {})\n",
            r.name,
            r.host
                .as_deref()
                .map(|h| format!("{h} "))
                .unwrap_or_default(),
            r.path_prefix,
            r.upstream.origin,
            r.upstream.base_path,
            r.credential.as_deref().unwrap_or("none: caller's token"),
            r.scope.as_deref().unwrap_or("-")
        ));
    }
    for (name, spec) in &config.credentials {
        out.push_str(&format!("  credential {name}: {}\n", describe(spec)));
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    ExitCode::SUCCESS
}

/// A one-line, secret-free description of a credential.
fn describe(spec: &CredentialOptions) -> String {
    match spec {
        CredentialOptions::ClientSecret(s) => format!(
            "client_secret (tenant {}, client {})",
            s.tenant_id, s.client_id
        ),
        CredentialOptions::ClientCertificate(s) => format!(
            "client_certificate (tenant {}, client {}, {})",
            s.tenant_id,
            s.client_id,
            s.certificate_file.display()
        ),
        CredentialOptions::Chain(sources) => format!(
            "chain [{}]",
            sources
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.kind().to_owned(),
    }
}

/// The credentials of `config`, built for a one-shot command.
fn credentials(config: Config, env: &dyn Env) -> Result<(CredentialSet, Vec<String>), ExitCode> {
    let tls = crate::tls::client_config(&config.extra_roots).map_err(|e| fail(EXIT_FAILURE, e))?;
    let http = TokenHttpClient::new(
        Arc::new(tls),
        &HttpClientOptions {
            connect_timeout: config.limits.upstream_connect_timeout,
            ..HttpClientOptions::default()
        },
    );
    let entra = EntraClient::new(http, config.authority_host.clone());
    let mut names: Vec<String> = config.credentials.keys().cloned().collect();
    // Order for picking a default: `default`, then the first route's credential, then the rest.
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
    Ok((build_credentials(config.credentials, env, &entra), names))
}

fn token(args: TokenArgs, env: Arc<dyn Env>) -> ExitCode {
    let _log = logging::init(
        args.log.log_format,
        Some(args.log.log_level.as_deref().unwrap_or("warn")),
    );
    let config = match load(args.config.config.as_deref(), env.as_ref()) {
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

/// `login`: device-code sign-in for a `device_code` credential (the named one, else the only one).
///
/// The prompt and a one-line confirmation go to stderr; stdout stays empty (the result is the saved cache file).
/// The first access token is requested for the scope of the first route using the credential, else for Azure
/// Resource Manager in the configured cloud; the refresh token then serves every route's scope. Exit codes: 0
/// signed in and saved, 64 bad usage or configuration, 1 the sign-in failed or could not be saved.
fn login(args: &LoginArgs, env: &dyn Env) -> ExitCode {
    let _log = logging::init(None, Some("warn"));
    let config = match load(args.config.config.as_deref(), env) {
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
    let tls = match crate::tls::client_config(&config.extra_roots) {
        Ok(tls) => Arc::new(tls),
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let rt = match runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    block_on(rt, async move {
        let http = TokenHttpClient::new(
            tls,
            &HttpClientOptions {
                connect_timeout: config.limits.upstream_connect_timeout,
                ..HttpClientOptions::default()
            },
        );
        let entra = EntraClient::new(http, config.authority_host.clone());
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

fn probe(url: &str) -> ExitCode {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return fail(EXIT_USAGE, format!("probe: invalid URL {url:?}: {e}")),
    };
    let rt = match runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    block_on(rt, async move {
        let tls = match crate::tls::client_config(&[]) {
            Ok(t) => Arc::new(t),
            Err(e) => return fail(EXIT_FAILURE, e),
        };
        let client = TokenHttpClient::new(
            tls,
            &HttpClientOptions {
                connect_timeout: Duration::from_secs(2),
                attempt_timeout: Duration::from_secs(5),
            },
        );
        let request =
            match http::Request::get(uri).body(http_body_util::Full::new(bytes::Bytes::new())) {
                Ok(r) => r,
                Err(e) => return fail(EXIT_USAGE, format!("probe: {e}")),
            };
        match client.send(request).await {
            Ok(r) if r.status.is_success() => ExitCode::SUCCESS,
            Ok(r) => fail(EXIT_FAILURE, format!("probe: {url} answered {}", r.status)),
            Err(e) => fail(EXIT_FAILURE, format!("probe: {url}: {e}")),
        }
    })
}

#[cfg(test)]
mod tests;
