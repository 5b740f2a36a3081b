//! The fault suite: one or more tests per fault the proxy must survive, numbered F1–F20 and named `fNN_…` after
//! it, each asserting that fault's pass criteria (or stricter). F21, the leak soak, is a script:
//! `benches/soak/run.sh`.
//!
//! One file per area:
//! * `token_service`: F1 token endpoint down, F2 slow or hanging, F3 5xx, F4 429 with `Retry-After`, F20 malformed
//!   or huge answers.
//! * `managed_identity`: F5 IMDS unavailable, 404, 410, 429.
//! * `federated_token`: F6 federated token file rotated, missing, unreadable; assertion expired.
//! * `clock`: F7 clock skew and jumps.
//! * `upstream`: F8 token revoked mid-life, F9 upstream resets mid-stream, F10 slow upstream.
//! * `streams`: F11 the caller disconnects mid-download or mid-upload, F12 large streams in bounded memory.
//! * `load`: F13 thundering herd, F14 no dropped request across token rotations, F17 overload.
//! * `lifecycle`: F15 configuration reload with bad files (SIGHUP), F16 SIGTERM drain.
//! * `tls`: F18 upstream TLS failure.
//! * `azure_cli`: F19 Azure CLI hangs, is absent, or prints garbage.
//!
//! Three kinds of test live here:
//! * **Paused clock.** Where time is the subject (refresh schedules, backoff, Retry-After, wait budgets), the token
//!   cache is driven through its public API on tokio's paused clock with a scripted credential
//!   ([`crate::support::scripted`]): hours pass in milliseconds and call counts are exact.
//! * **In process, real sockets.** The proxy ([`TestProxy`](crate::support::proxy::TestProxy)) against the
//!   in-process mocks, or against raw-TCP upstreams ([`crate::support::raw`]) when a fault needs byte-level
//!   control (a reset mid-body, a cancelled download). Lifetimes are short so that real time stays within a few
//!   seconds.
//! * **The real binary** ([`RunningProxy`](crate::support::process::RunningProxy)) where the process itself is the
//!   subject: signals, a crash loop, RSS and file descriptors.
//!
//! Everything listens on 127.0.0.1:0; nothing leaves loopback.

mod azure_cli;
mod clock;
mod federated_token;
mod lifecycle;
mod load;
mod managed_identity;
mod streams;
mod tls;
mod token_service;
mod upstream;
