//! The clap definition of the whole command line: the top-level [`Cli`], one subcommand per command, and the
//! argument groups they share. `completions`, `man` and the tests read it through [`super::command`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, Listen};
use crate::env::Env;
use crate::logging::LogFormat;

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
    pub(super) command: Option<Command>,
    #[command(flatten)]
    pub(super) run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Run the proxy (the default when no subcommand is given).
    Run(RunArgs),
    /// Validate a configuration file: exit 0 and print a summary, or exit 64 listing every problem.
    CheckConfig(CheckConfigArgs),
    /// Acquire a token through the configured credential and print its details as JSON.
    Token(TokenArgs),
    /// Sign in (browser or device code) for an `interactive_browser` or `device_code` credential and persist the
    /// refresh token.
    Login(LoginArgs),
    /// HTTP GET a URL; exit 0 on a 2xx answer (for exec probes in images without curl).
    Probe(ProbeArgs),
    /// Print shell lines (MLFLOW_TRACKING_URI, SCORING_URI, …) that send plain clients through a route.
    Env(EnvArgs),
    /// Print a shell completion script on stdout (e.g. `aml-auth-proxy completions bash`).
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout, or write one page per command with --out-dir.
    Man(ManArgs),
}

/// `--version`: the package version, then the build information `build.rs` collected (commit when known).
pub(super) static LONG_VERSION: LazyLock<String> = LazyLock::new(|| {
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
pub(super) struct ConfigArg {
    /// Configuration file (YAML). Without one, `run` uses the built-in default.
    #[arg(long, env = "AML_AUTH_PROXY_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub(super) struct LogArgs {
    /// Log format; default: text on a terminal, JSON otherwise.
    #[arg(long, value_enum, env = "AML_AUTH_PROXY_LOG_FORMAT")]
    pub(super) log_format: Option<LogFormat>,
    /// Log level (`info`, `debug`, …) or tracing directives; default: RUST_LOG, else info.
    #[arg(long, env = "AML_AUTH_PROXY_LOG_LEVEL", value_name = "LEVEL")]
    pub(super) log_level: Option<String>,
}

#[derive(Debug, Args, Default)]
pub(super) struct RunArgs {
    #[command(flatten)]
    pub(super) config: ConfigArg,
    /// Proxy listen address, IP:port or unix:/absolute/path.sock (overrides `listen`).
    #[arg(long, env = "AML_AUTH_PROXY_LISTEN", value_name = "ADDR")]
    pub(super) listen: Option<Listen>,
    /// Admin listen address (overrides `admin_listen`).
    #[arg(long, env = "AML_AUTH_PROXY_ADMIN_LISTEN", value_name = "ADDR")]
    pub(super) admin_listen: Option<SocketAddr>,
    /// Threads serving the proxy listener (one single-threaded runtime each), 1 to 1024; default: one per CPU the
    /// process may use (cgroup quotas included).
    #[arg(long, env = "AML_AUTH_PROXY_WORKER_THREADS", value_name = "N", value_parser = worker_threads)]
    pub(super) worker_threads: Option<usize>,
    /// Who handles plain HTTP/1.1 on the data path: `own` (the proxy's own connection loop serves plain requests
    /// and its own upstream exchange sends those with the body in hand and reads plain answers; hyper handles
    /// everything else) or `hyper` (hyper serves every request and makes every upstream exchange).
    #[arg(long, env = "AML_AUTH_PROXY_HTTP1_SERVER", value_name = "SERVER", value_enum, default_value_t = Http1Server::Own)]
    pub(super) http1_server: Http1Server,
    #[command(flatten)]
    pub(super) log: LogArgs,
}

/// `--http1-server`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Http1Server {
    /// The proxy's own connection loop for plain requests, and its own upstream exchange.
    #[default]
    Own,
    /// hyper for every request and every upstream exchange.
    Hyper,
}

#[derive(Debug, Args)]
pub(super) struct CheckConfigArgs {
    #[command(flatten)]
    pub(super) config: ConfigArg,
}

#[derive(Debug, Args)]
pub(super) struct TokenArgs {
    #[command(flatten)]
    pub(super) config: ConfigArg,
    /// The scope, e.g. https://management.azure.com/.default.
    #[arg(long)]
    pub(super) scope: String,
    /// The credential name; default: `default`, else the first route's credential.
    #[arg(long)]
    pub(super) credential: Option<String>,
    /// Include the access token in the output.
    #[arg(long)]
    pub(super) show_token: bool,
    #[command(flatten)]
    pub(super) log: LogArgs,
}

#[derive(Debug, Args)]
pub(super) struct LoginArgs {
    #[command(flatten)]
    pub(super) config: ConfigArg,
    /// The `interactive_browser` or `device_code` credential to sign in; default: the only one.
    #[arg(long)]
    pub(super) credential: Option<String>,
    /// A claims challenge (base64) to satisfy during sign-in.
    #[arg(long, value_name = "B64")]
    pub(super) claims_challenge: Option<String>,
    /// Sign in in a web browser ($BROWSER, else the platform's opener), whatever the credential's kind.
    #[arg(long, conflicts_with = "device_code")]
    pub(super) browser: bool,
    /// Sign in with a device code, whatever the credential's kind.
    #[arg(long)]
    pub(super) device_code: bool,
}

#[derive(Debug, Args)]
pub(super) struct EnvArgs {
    #[command(flatten)]
    pub(super) config: ConfigArg,
    /// The route whose lines are printed.
    #[arg(long, value_name = "NAME")]
    pub(super) route: String,
    #[command(flatten)]
    pub(super) log: LogArgs,
}

#[derive(Debug, Args)]
pub(super) struct ProbeArgs {
    /// The URL to GET, e.g. http://127.0.0.1:9464/readyz.
    pub(super) url: String,
}

#[derive(Debug, Args)]
pub(super) struct ManArgs {
    /// Write aml-auth-proxy.1 and a page per command (aml-auth-proxy-run.1, …) into DIR, and list them on stdout.
    #[arg(long, value_name = "DIR")]
    pub(super) out_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub(super) shell: clap_complete::Shell,
}

/// `--worker-threads` / `AML_AUTH_PROXY_WORKER_THREADS`: a whole number from 1 to 1024.
fn worker_threads(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 1024 (--worker-threads or AML_AUTH_PROXY_WORKER_THREADS)".into()),
    }
}

// === impl ConfigArg ===

impl ConfigArg {
    /// The configuration the command works with: the file given, else the built-in default.
    pub(super) fn load(&self, env: &dyn Env) -> Result<Config, ConfigError> {
        match self.config.as_deref() {
            Some(p) => crate::config::load(p, env),
            None => Config::builtin(env),
        }
    }

    /// The file given, if any.
    pub(super) fn file(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}
