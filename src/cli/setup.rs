//! What the commands that do work set up: the async runtime, run to completion and shut down without waiting on
//! stuck blocking work, and an Entra ID client for one-shot commands.

use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::exit::{EXIT_FAILURE, fail};
use crate::auth::{EntraClient, HttpClientOptions, TokenHttpClient};
use crate::config::Config;

/// How long the runtime waits, once a command is done, for blocking-pool work still running (a file read stuck on
/// a hung mount must not keep the process from exiting).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The async runtime: `worker_threads` workers, else one per CPU the process may use (cgroup quotas included).
pub(super) fn runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")))
}

/// The runtime of `run`: one thread for the admin and token-service listeners, token refreshers and signals,
/// while the proxy listener gets [`proxy_threads`] threads of its own.
pub(super) fn main_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")))
}

/// How many threads serve the proxy listener: `worker_threads`, else one per CPU the process may use (cgroup
/// quotas and CPU affinity included).
pub(super) fn proxy_threads(worker_threads: Option<usize>) -> NonZeroUsize {
    worker_threads
        .and_then(NonZeroUsize::new)
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(NonZeroUsize::MIN)
}

/// Runs `future` to completion on `rt`, then shuts the runtime down without waiting on stuck blocking work.
pub(super) fn block_on<F: Future>(rt: tokio::runtime::Runtime, future: F) -> F::Output {
    let output = rt.block_on(future);
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    output
}

/// A client of the configured authority host, as [`token_http_client`] connects.
pub(super) fn entra_client(config: &Config) -> Result<EntraClient, ExitCode> {
    let http = token_http_client(config)?;
    Ok(EntraClient::new(http, config.authority_host.clone()))
}

/// An HTTP client for token requests, trusting the configured extra roots and connecting within the configured
/// upstream connect timeout.
pub(super) fn token_http_client(config: &Config) -> Result<TokenHttpClient, ExitCode> {
    let tls = crate::tls::client_config(&config.extra_roots).map_err(|e| fail(EXIT_FAILURE, e))?;
    Ok(TokenHttpClient::new(
        Arc::new(tls),
        &HttpClientOptions {
            connect_timeout: config.limits.upstream_connect_timeout,
            ..HttpClientOptions::default()
        },
    ))
}
