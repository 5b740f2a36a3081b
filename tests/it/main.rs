//! Integration tests: the proxy in process, against in-process mocks of Entra ID and an Azure ML upstream,
//! all on 127.0.0.1:0. One binary, one module per area; `faults` is the fault suite (F1–F20). `cli`, `canary`,
//! `exposure` and some of the faults run the real binary as a child process (clean environment, loopback only)
//! against the same in-process mocks.

// clippy's `allow-*-in-tests` covers `#[test]` functions only, not the helpers of an integration-test crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a failed expectation must fail the test loudly"
)]

mod support;

mod admin;
mod aml_routes;
mod azure_cli;
mod canary;
mod claims;
mod cli;
mod client_certificate;
mod credentials;
mod deploy;
mod developer_tools;
mod device_code;
mod docs;
mod emulator;
mod examples;
mod exposure;
mod faults;
mod files;
mod hardening;
mod interactive_browser;
mod managed_identity;
mod newcomer;
mod proxy;
mod reload;
mod security;
mod token_service;
mod tokens;
mod traces;
mod websocket;
