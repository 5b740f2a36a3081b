//! aml-auth-proxy
pub mod auth;
pub mod config;
pub mod env;
pub mod ids;
pub mod tls;
pub mod metrics;
pub mod token_cache;
