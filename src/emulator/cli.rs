//! The `aml-azure-emulator` command line.
//!
//! It prints one JSON line on stdout once every listener is up (the [`super::Urls`]), logs one line per request on
//! stderr, and runs until SIGTERM or SIGINT (exit 0). Exit 64 for bad usage (including a non-loopback `--host`
//! without `--allow-non-loopback`), 1 when a port cannot be bound or the CA file cannot be written.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use super::{
    DEFAULT_IDENTITY_SECRET, DEFAULT_PORT, DEFAULT_TENANT, Emulator, EmulatorOptions,
    EndpointOptions, FaultSpec, StartError, WorkspaceOptions,
};
use crate::cli::EXIT_USAGE;
use crate::logging::{self, LogFormat};

/// aml-azure-emulator: a cloud-free stand-in of Entra ID, managed identity, Azure Resource Manager and Azure ML
/// endpoints, with switches for the failures applications must handle (Conditional Access, MFA, CAE claims
/// challenges, throttling, outages, slow answers, short-lived tokens).
///
/// Listeners, on consecutive loopback ports from --port: Entra ID + managed identity + control API (PORT),
/// Resource Manager (PORT+1), an echoing upstream that is also the workspace data plane (PORT+2), one scoring
/// listener per online endpoint (PORT+3, …). The URLs are printed as one JSON line on stdout at start-up.
#[derive(Debug, Parser)]
#[command(name = "aml-azure-emulator", version, about, long_about)]
struct Args {
    /// Address to listen on. Loopback only, unless --allow-non-loopback.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    host: IpAddr,
    /// First port; the others follow it. 0 picks a free port for every listener.
    #[arg(long, env = "AML_AZURE_EMULATOR_PORT", default_value_t = DEFAULT_PORT, value_name = "PORT")]
    port: u16,
    /// Allow a non-loopback --host. The emulator authenticates nobody: never expose it.
    #[arg(long)]
    allow_non_loopback: bool,
    /// Serve HTTPS with a certificate authority made at start-up (Azure SDKs need https authority hosts).
    #[arg(long, requires = "ca_file")]
    tls: bool,
    /// With --tls: where to write the CA certificate (PEM) clients must trust.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca_file: Option<PathBuf>,
    /// Lifetime of Entra ID access tokens.
    #[arg(long, default_value = "3599s", value_parser = duration, value_name = "DURATION")]
    token_lifetime: Duration,
    /// Lifetime of managed-identity tokens.
    #[arg(long, default_value = "86399s", value_parser = duration, value_name = "DURATION")]
    mi_token_lifetime: Duration,
    /// Lifetime of online endpoints' AML tokens (refresh after half of it).
    #[arg(long, default_value = "86340s", value_parser = duration, value_name = "DURATION")]
    aml_token_lifetime: Duration,
    /// Tenant of managed-identity tokens, and of user sign-ins on `common`/`organizations`.
    #[arg(long, default_value = DEFAULT_TENANT, value_name = "TENANT")]
    tenant: String,
    /// What managed-identity callers send as X-IDENTITY-HEADER (App Service) or `secret` (Azure ML).
    #[arg(long, default_value = DEFAULT_IDENTITY_SECRET, value_name = "SECRET")]
    identity_secret: String,
    /// Subscription id of the workspace.
    #[arg(long, value_name = "ID")]
    subscription_id: Option<String>,
    /// Resource group of the workspace.
    #[arg(long, value_name = "NAME")]
    resource_group: Option<String>,
    /// Workspace name.
    #[arg(long, value_name = "NAME")]
    workspace: Option<String>,
    /// An online endpoint, NAME=MODE with MODE key, amltoken or aadtoken; repeatable. Default: ep-aad=aadtoken,
    /// ep-key=key, ep-amltoken=amltoken.
    #[arg(long = "endpoint", value_name = "NAME=MODE")]
    endpoints: Vec<EndpointOptions>,
    /// A failure rule in force from the start; repeatable. KIND[=VALUE][,on=TARGET][,tenant=…][,client=…]
    /// [,scope=…][,grant=…][,path=…][,endpoint=…][,after=N][,count=N]. Kinds: conditional-access, mfa,
    /// invalid-client, throttle[=SECONDS], status[=CODE], latency=DURATION, lifetime=DURATION,
    /// cae[=revoke|acrs:VALUE], deny=read|listkeys|token|regeneratekeys|score. Example:
    /// --fault throttle=30,on=token,count=2
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<FaultSpec>,
    /// Device-code polls answered `authorization_pending` before the sign-in completes.
    #[arg(long, default_value_t = 1, value_name = "N")]
    device_code_pending_polls: u32,
    /// Log format; default: text on a terminal, JSON otherwise.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log level (`info` logs one line per request) or tracing directives; default: RUST_LOG, else info.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

/// A humantime duration of at least one second.
fn duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 30s, 5m, 1h)"))?;
    if d < Duration::from_secs(1) {
        return Err("at least 1s".to_owned());
    }
    Ok(d)
}

/// The clap definition (for tests of the help text).
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let args = match crate::cli::parse_or_exit::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    let _log = logging::init(args.log_format, args.log_level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aml-azure-emulator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let defaults = WorkspaceOptions::default();
    let options = EmulatorOptions {
        host: args.host,
        port: args.port,
        allow_non_loopback: args.allow_non_loopback,
        tls_ca_file: args.ca_file,
        token_lifetime: args.token_lifetime,
        managed_identity_lifetime: args.mi_token_lifetime,
        aml_token_lifetime: args.aml_token_lifetime,
        tenant: args.tenant,
        identity_secret: args.identity_secret,
        workspace: WorkspaceOptions {
            subscription_id: args.subscription_id.unwrap_or(defaults.subscription_id),
            resource_group: args.resource_group.unwrap_or(defaults.resource_group),
            name: args.workspace.unwrap_or(defaults.name),
            location: defaults.location,
        },
        endpoints: if args.endpoints.is_empty() {
            EndpointOptions::defaults()
        } else {
            args.endpoints
        },
        faults: args.faults,
        device_code_pending_polls: args.device_code_pending_polls,
    };
    let emulator = match Emulator::start(options).await {
        Ok(e) => e,
        Err(StartError::Usage(e)) => {
            eprintln!("aml-azure-emulator: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(StartError::Failed(e)) => {
            eprintln!("aml-azure-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let line = match serde_json::to_string(emulator.urls()) {
        Ok(line) => line,
        Err(e) => {
            eprintln!("aml-azure-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            eprintln!("aml-azure-emulator: cannot write the start-up line to stdout");
            return ExitCode::FAILURE;
        }
    }
    tracing::info!(
        target: "aml_auth_proxy::emulator",
        authority_host = %emulator.urls().authority_host,
        resource_manager = %emulator.urls().resource_manager,
        upstream = %emulator.urls().upstream,
        "listening"
    );
    wait_for_signal().await;
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn flags_become_options() {
        let args = Args::try_parse_from([
            "aml-azure-emulator",
            "--port",
            "0",
            "--endpoint",
            "scorer=key",
            "--fault",
            "throttle=30,count=1",
            "--token-lifetime",
            "2m",
        ])
        .unwrap();
        assert_eq!(args.port, 0);
        assert_eq!(args.endpoints[0].name, "scorer");
        assert_eq!(args.faults[0].to_string(), "throttle=30,on=token,count=1");
        assert_eq!(args.token_lifetime, Duration::from_secs(120));
        for bad in [
            &["x", "--fault", "explode"][..],
            &["x", "--endpoint", "e=password"],
            &["x", "--endpoint", "1x=key"],
            &["x", "--tls"],
            &["x", "--token-lifetime", "10ms"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
