//! # aml-auth-proxy
//!
//! A localhost reverse-proxy sidecar: tools send plain, unauthenticated HTTP to it; it adds an Entra ID bearer
//! token from a configured credential and forwards the request over HTTPS to Azure Machine Learning (ARM, the
//! workspace data plane, online endpoints). Conditional Access failures come back to the caller precisely.
//!
//! Code reads in request order:
//! * [`cli`] parses the command line; `main` only calls it.
//! * [`config`] loads and validates the YAML file (or the built-in default) into a checked [`config::Config`].
//! * [`app::App`] binds the listeners and wires everything together; [`server`] runs the accept loops, with
//!   [`first_bytes`] (a deadline for each connection's first request) and [`write_stall`] (callers that stop
//!   reading) on every connection.
//! * [`proxy`] is the request path; [`proxy::stack`] is the one place its layers are ordered.
//! * [`token_cache`] holds tokens per (credential, tenant, scope, claims): refresh-ahead, single flight.
//! * [`auth`] obtains tokens (one file per credential kind) and knows nothing about serving HTTP.
//! * [`admin`] serves `/healthz`, `/readyz` and `/metrics`; [`metrics`] owns the Prometheus registry.
//!
//! Beside the proxy, [`emulator`] is the second binary, `aml-azure-emulator`: a loopback stand-in of Entra ID,
//! managed identity, ARM and Azure ML endpoints with failure switches. It uses nothing of the proxy but
//! [`logging`], [`tls::provider`] and the small helpers ([`ids`], [`sync`]).
//!
//! Dependencies run one way: `proxy → token_cache → auth`, and `config → auth` (configuration builds each
//! credential's options; `auth` knows nothing about configuration). Two leaf modules serve all of them: secrets
//! live in [`secret::Secret`], which never prints its value, and [`origin`] holds the rules every outbound URL
//! passes. Tokens are inserted as sensitive header values and never logged.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod emulator;
pub mod env;
pub mod error;
pub mod file_read;
pub mod first_bytes;
pub mod ids;
pub mod ip;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod sync;
pub mod tls;
pub mod token_cache;
pub mod write_stall;

pub use error::BoxError;

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
}
