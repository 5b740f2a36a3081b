//! # aml-auth-proxy
//!
//! A localhost reverse-proxy sidecar: tools send plain, unauthenticated HTTP to it; it adds an Entra ID bearer
//! token from a configured credential and forwards the request over HTTPS to Azure Machine Learning (ARM, the
//! workspace data plane, online endpoints). Conditional Access failures come back to the caller precisely.
//!
//! Code reads in request order:
//! * [`cli`] parses the command line; `main` only calls it.
//! * [`config`] loads and validates the YAML file (or the built-in default) into a checked [`config::Config`].
//! * [`app::App`] binds the listeners and wires everything together; [`server`] runs the accept loops, with a
//!   deadline for each connection's first request and a write-stall guard (callers that stop reading) on every
//!   connection.
//! * [`proxy`] is the request path: admission, then one stack per route, built from its [`proxy::route::Route`];
//!   [`proxy::stack`] is the one place its layers are ordered.
//! * [`token_cache`] holds tokens per (credential, tenant, scope, claims): refresh-ahead, single flight.
//! * [`azure_ml`] resolves Azure ML routes (online endpoints, workspaces) through Resource Manager and reads
//!   endpoint keys and AML tokens as credentials the token cache holds.
//! * [`auth`] obtains tokens (one file per credential kind) and knows nothing about serving HTTP.
//! * [`admin`] serves `/healthz`, `/readyz` and `/metrics`; [`metrics`] owns the Prometheus registry.
//! * [`token_service`] is the optional second listener that answers the managed-identity protocols (App Service,
//!   Azure ML, IMDS) for SDKs that authenticate themselves, from the same credentials and token cache.
//! * [`telemetry`] carries the W3C trace context to upstreams and, when configured, exports spans over OTLP.
//!
//! Beside the proxy, [`emulator`] is the second binary, `aml-azure-emulator`: a loopback stand-in of Entra ID,
//! managed identity, ARM and Azure ML endpoints with failure switches. It uses nothing of the proxy but
//! [`logging`], [`tls::provider`] and the crate root's small helpers (`error_chain`, `lock`).
//!
//! Dependencies run one way: `proxy → token_cache → auth`, and `config → auth` (configuration builds each
//! credential's options; `auth` knows nothing about configuration). Two leaf modules serve all of them: secrets
//! live in [`secret::Secret`], which never prints its value, and [`origin`] holds the rules every outbound URL
//! passes. Tokens are inserted as sensitive header values and never logged. The crate root holds [`BoxError`] and
//! two helpers every module shares: an error's cause chain on one line, and a mutex lock that outlives a panic.

pub mod admin;
pub mod app;
pub mod auth;
pub mod azure_ml;
pub mod cli;
pub mod config;
pub mod emulator;
pub mod env;
pub mod file_read;
pub mod ip;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod token_cache;
pub mod token_service;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Errors carried through the service stack; [`proxy::respond::rescue`] maps them to responses.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and its sources on one line ("client error (Connect): tcp connect error: Connection refused").
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = s.source();
    }
    text
}

/// Escapes text for HTML content and attribute values (the sign-in pages the proxy and the emulator show).
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Locks a mutex. A poisoned lock (a panic while it was held) still yields the data: every critical section in
/// this crate only assigns whole fields, so the data is consistent even then.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Entry points for the fuzz targets under `fuzz/` (and the integration tests' format checks): parsers that are
/// crate-private in normal use. Not a supported API; hidden from the documentation and free to change with the
/// code it wraps.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::auth::claims::{CP1, decode_claims_challenge, with_capabilities};
    pub use crate::auth::expiry::{msi_date, naive_datetime};

    /// The token-body parser every token source shares (`auth::token_response`), as `EntraClient::post_token` and
    /// the device-code flow use it: an access token that can go in a header with a non-zero lifetime, and the
    /// refresh token if one was sent; or an error text.
    pub fn parse_token_response(
        body: &[u8],
    ) -> Result<(crate::auth::AccessToken, Option<crate::secret::Secret>), String> {
        crate::auth::parse_token_response(body, "fuzz")
    }

    /// The proxy's own HTTP/1.1 loop against hyper on the same bytes: every request the loop serves itself must be
    /// the request hyper reads there, framed the same way; `Err` describes the first disagreement.
    pub use crate::server::http1::differential::compare_with_hyper as http1_framing;

    /// The upstream client's own HTTP/1.1 exchange against hyper's client on the same upstream answer
    /// (`answer`, `method`, `request_body`): both fail before a response, or both give the same status, version,
    /// header fields, body and trailers, and the upstream received the same bytes from both; `Err` describes the
    /// first disagreement.
    pub use crate::proxy::client::differential::compare_with_hyper as upstream_framing;
}

#[cfg(test)]
mod test_support;
