//! The request rules that run before any route or token: the Host allowlist (on `Host` and on the request
//! target's authority) and the path rules. Never a panic; an accepted path never carries a dot segment, a
//! backslash, NUL or an encoded `/`, `\`, `.`, and no reading a lenient server might make of one of its segments
//! (`common/lenient_servers.rs`) is a dot segment or holds a separator; an accepted host is one of the allowed
//! names, with a port from 1 to 65535 written without leading zeros.
#![no_main]

#[path = "common/lenient_servers.rs"]
mod lenient_servers;

use aml_auth_proxy::proxy::admission::{HostAllowlist, check_path};
use http::{Method, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (host, target, method) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("/"),
        parts.next().unwrap_or("GET"),
    );
    let allowed = HostAllowlist::new(vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]);
    let mut builder = Request::builder();
    if let Ok(method) = Method::from_bytes(method.as_bytes()) {
        builder = builder.method(method);
    }
    let Ok(req) = builder.uri(target).header("host", host).body(()) else {
        return;
    };
    if let Ok(name) = allowed.check(&req) {
        assert!(
            ["localhost", "127.0.0.1", "[::1]"].contains(&name),
            "accepted {name:?}"
        );
        let target_authority = req.uri().authority().map(|a| a.as_str());
        for authority in std::iter::once(host).chain(target_authority) {
            assert_valid_port(authority);
        }
    }
    let path = req.uri().path();
    if check_path(req.method(), path).is_ok() {
        assert!(path.starts_with('/') && !path.starts_with("//"));
        assert!(!path.contains('\\') && !path.contains('\0'));
        assert!(!path.split('/').any(|s| s == "." || s == ".."));
        let lower = path.to_ascii_lowercase();
        for encoded in ["%2f", "%5c", "%2e", "%00"] {
            assert!(!lower.contains(encoded), "accepted {path:?}");
        }
        for segment in path.split('/') {
            if let Some(why) = lenient_servers::harmful_reading(segment) {
                panic!("accepted {path:?}: {why}");
            }
        }
    }
});

/// The port of an accepted `host[:port]` / `[v6][:port]` is 1–65535 in plain decimal.
fn assert_valid_port(authority: &str) {
    if authority.ends_with(']') {
        return;
    }
    if let Some((_, port)) = authority.rsplit_once(':') {
        assert!(
            !port.starts_with('0') && port.parse::<u16>().is_ok_and(|p| p > 0),
            "accepted port {port:?} in {authority:?}"
        );
    }
}
