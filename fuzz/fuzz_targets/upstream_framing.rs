//! The upstream client's own HTTP/1.1 exchange against hyper's client (`fuzzing::upstream_framing`): on any bytes
//! an upstream may answer with, the proxy's own exchange and hyper's client give the caller the same thing (no
//! response, or the same status, version, header fields, body and trailers) and send the upstream the same bytes.
//! The first input byte picks the request (`GET`, `POST` with a small body, `HEAD`, `DELETE`); the rest is the answer.

#![no_main]

use libfuzzer_sys::fuzz_target;

const METHODS: [(&str, &[u8]); 4] = [
    ("GET", b""),
    ("POST", br#"{"input":[1,2,3]}"#),
    ("HEAD", b""),
    ("DELETE", b""),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, answer)) = data.split_first() else {
        return;
    };
    let (method, body) = METHODS[usize::from(pick) % METHODS.len()];
    if let Err(disagreement) = aml_auth_proxy::fuzzing::upstream_framing(answer, method, body) {
        panic!("the own exchange and hyper's client disagree: {disagreement}");
    }
});
