//! The path rule against a model of lenient servers, on paths built from the pieces attacks are made of (dots,
//! `;`, `%`, hex digits, `%u`, overlong and fullwidth forms, encoded cut characters): each input byte picks one
//! piece, so the fuzzer explores combinations that raw bytes would rarely reach. Never a panic; an accepted path
//! has no segment that any reading of `common/lenient_servers.rs` turns into a dot segment or splits.
#![no_main]

#[path = "common/lenient_servers.rs"]
mod lenient_servers;

use aml_auth_proxy::proxy::admission::check_path;
use http::Method;
use libfuzzer_sys::fuzz_target;

/// The pieces; an input byte `b` picks `PIECES[b % PIECES.len()]`.
const PIECES: &[&str] = &[
    "/",
    ".",
    "..",
    ";",
    ";x=1",
    "%",
    "%25",
    "2",
    "5",
    "e",
    "E",
    "f",
    "c",
    "u",
    "U",
    "0",
    "a",
    "~",
    ":",
    "-",
    "%2e",
    "%2E",
    "%252e",
    "%2f",
    "%5c",
    "%3b",
    "%3f",
    "%23",
    "%20",
    "%09",
    "%00",
    "%0a",
    "%u",
    "%u002e",
    "002e",
    "%u002f",
    "%c0",
    "%ae",
    "%af",
    "%c1",
    "%9c",
    "%e0",
    "%80",
    "%f0",
    "%c0%ae",
    "%e0%80%ae",
    "%f0%80%80%ae",
    "%c0%af",
    "%c1%9c",
    "%ef%bc%8e",
    "%ef%bc%8f",
    "%e2%80%a5",
    "%c2%a0",
    "%e2%80%8b",
    "\u{ff0e}",
    "\u{2024}",
    "\u{2025}",
    "\u{2026}",
    "\u{fe52}",
    "\u{ff0f}",
    "\u{ff3c}",
    "\u{2215}",
    "\u{ff05}",
    "\u{ff12}",
    "\u{ff45}",
    "\u{ff55}",
    "\u{ff1b}",
    "\u{37e}",
    "\u{e9}",
    "%C3%A9",
    "v1",
    "x",
];

fuzz_target!(|data: &[u8]| {
    let mut path = String::from("/");
    for &b in data.iter().take(64) {
        path.push_str(PIECES[usize::from(b) % PIECES.len()]);
    }
    let Ok(uri) = path.parse::<http::Uri>() else {
        return;
    };
    let path = uri.path();
    if check_path(&Method::GET, path).is_err() {
        return;
    }
    for segment in path.split('/') {
        if let Some(why) = lenient_servers::harmful_reading(segment) {
            panic!("accepted {path:?}: {why}");
        }
    }
});
