//! The proxy's own HTTP/1.1 loop against hyper (`fuzzing::http1_framing`): on any bytes a caller may send, every
//! request the loop serves itself is the request hyper reads at that place in the connection (method, target,
//! version, header fields in order, body, keep-alive or close), and where the loop waits for more of a head hyper
//! has not read a request either.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(disagreement) = aml_auth_proxy::fuzzing::http1_framing(data) {
        panic!("the loop and hyper disagree: {disagreement}");
    }
});
