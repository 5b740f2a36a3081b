//! Who may connect: listeners, `expose`, `caller_auth`, Unix sockets and their allowed uids.

use super::*;
use crate::config::load::test_support::{
    assert_no_canary, ok, parse, parse_with, problems, with_defaults,
};
use crate::config::{DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, Listen};
use crate::env::MapEnv;
use crate::test_support::TempDir;

#[test]
fn listen_values() {
    assert_eq!(
        parse_listen("127.0.0.1:8080"),
        Ok(Listen::Tcp("127.0.0.1:8080".parse().unwrap()))
    );
    assert_eq!(
        parse_listen("unix:/run/p.sock"),
        Ok(Listen::Unix("/run/p.sock".into()))
    );
    for bad in [
        "unix:",
        "unix:p.sock",
        "unix:~/p.sock",
        "unix:/run/",
        "unix:/run/../p.sock",
        "unix:/./p.sock",
        "localhost:8080",
        "/run/p.sock",
    ] {
        assert!(parse_listen(bad).is_err(), "{bad}");
    }
    let long = format!("unix:/{}", "a".repeat(MAX_SOCKET_PATH_BYTES));
    assert!(
        parse_listen(&long)
            .unwrap_err()
            .contains("at most 107 bytes")
    );
    let fits = format!("unix:/{}", "a".repeat(MAX_SOCKET_PATH_BYTES - 1));
    assert!(parse_listen(&fits).is_ok());
}

#[test]
fn loopback_listeners() {
    let admin: SocketAddr = "127.0.0.1:9464".parse().unwrap();
    for local in [
        "127.0.0.1:8080",
        "127.1.2.3:8080",
        "[::1]:8080",
        "[::ffff:127.0.0.1]:8080",
        "unix:/run/p.sock",
    ] {
        let listen = parse_listen(local).unwrap();
        assert!(listen.is_local(), "{local}");
        assert!(
            listener_problems(&listen, admin, false, false).is_empty(),
            "{local}"
        );
    }
    for exposed in [
        "0.0.0.0:8080",
        "[::]:8080",
        "10.1.2.3:8080",
        "[::ffff:10.0.0.1]:8080",
    ] {
        let listen = parse_listen(exposed).unwrap();
        let p = listener_problems(&listen, admin, false, false);
        assert_eq!(p.len(), 1, "{exposed}: {p:?}");
        assert_eq!(p[0].path, "listen");
        assert!(p[0].message.contains("expose: true"), "{p:?}");
        assert!(listener_problems(&listen, admin, true, true).is_empty());
    }
}

#[test]
fn reserved_caller_headers() {
    assert!(check_caller_header("x-team-key").is_ok());
    for bad in [
        "Authorization",
        "proxy-authorization",
        "host",
        "cookie",
        "sec-fetch-site",
        "x bad",
        "",
    ] {
        assert!(check_caller_header(bad).is_err(), "{bad}");
    }
}

/// A caller key long enough to be accepted; it contains the canary.
const CALLER_KEY: &str = "canary-SECRET-7f3a9c-caller-key";

#[test]
fn who_may_connect_defaults() {
    let config = ok(&with_defaults(""));
    assert_eq!(config.listen, Listen::Tcp(DEFAULT_LISTEN));
    assert!(!config.expose);
    assert!(config.caller_auth.is_none());
    assert_eq!(config.unix_allowed_uids, None);
    assert!(config.check_listeners().is_ok());
}

#[test]
fn non_loopback_listen_needs_expose_and_caller_auth() {
    for addr in [
        "0.0.0.0:8080",
        "\"[::]:8080\"",
        "192.168.1.20:8080",
        "\"[::ffff:10.0.0.1]:8080\"",
    ] {
        let p = problems(&with_defaults(&format!("listen: {addr}")));
        assert_eq!(p.len(), 1, "{addr}: {p:?}");
        assert!(
            p[0].starts_with("listen: ")
                && p[0].contains("is not a loopback address")
                && p[0].contains(
                    "any machine that can reach it could use this proxy's Azure identity"
                )
                && p[0].contains("`expose: true`")
                && p[0].contains("`caller_auth`"),
            "{addr}: {p:?}"
        );
    }
    for local in [
        "127.0.0.1:8080",
        "127.0.0.2:8080",
        "\"[::1]:8080\"",
        "\"[::ffff:127.0.0.1]:8080\"",
    ] {
        assert!(
            parse(&with_defaults(&format!("listen: {local}"))).is_ok(),
            "{local}"
        );
    }
    // `expose: true` alone is not enough: it needs caller_auth, wherever the proxy listens.
    let p = problems(&with_defaults("listen: 0.0.0.0:8080\nexpose: true"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("expose: `expose: true` needs `caller_auth`"),
        "{p:?}"
    );
    assert_eq!(
        problems(&with_defaults("expose: true")).len(),
        1,
        "expose without caller_auth is refused even on loopback"
    );
    assert_eq!(
        problems(&with_defaults("expose: maybe")),
        ["expose: expected true or false (got \"maybe\")"]
    );
}

#[test]
fn exposed_listen_with_caller_auth_loads() {
    let dir = TempDir::new();
    dir.file("key", format!("{CALLER_KEY}\n"), 0o600);
    let text = with_defaults(
        "listen: 0.0.0.0:8080\nadmin_listen: \"[::]:9464\"\nexpose: true\ncaller_auth:\n  secret_file: key",
    );
    let config = parse_with(&MapEnv::new(), dir.path(), &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.expose);
    assert_eq!(config.listen, Listen::Tcp("0.0.0.0:8080".parse().unwrap()));
    let auth = config.caller_auth.as_ref().unwrap();
    assert_eq!(auth.header, "x-aml-auth-proxy-key");
    assert!(
        auth.secret.matches(CALLER_KEY.as_bytes()),
        "one newline is stripped"
    );
    assert!(
        !format!("{config:?}").contains("canary"),
        "Debug shows no key"
    );
    assert!(config.check_listeners().is_ok());
}

#[test]
fn non_loopback_admin_listen_needs_expose() {
    let p = problems(&with_defaults("admin_listen: 0.0.0.0:9464"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("admin_listen: 0.0.0.0:9464 is not a loopback address")
            && p[0].contains("reveals route and credential names and token expiry")
            && p[0].contains("`expose: true`"),
        "{p:?}"
    );
    let dir = TempDir::new();
    dir.file("key", CALLER_KEY, 0o600);
    let text = with_defaults(
        "admin_listen: 0.0.0.0:9464\nexpose: true\ncaller_auth: { secret_file: key }",
    );
    assert!(parse_with(&MapEnv::new(), dir.path(), &text).is_ok());
}

#[test]
fn caller_auth_rules() {
    let dir = TempDir::new();
    dir.file("key", CALLER_KEY, 0o600);
    dir.file("shared", CALLER_KEY, 0o644);
    dir.file("short", "canary-short", 0o600);
    dir.file("spaces", "canary key with spaces in it", 0o600);
    dir.file("empty", "", 0o600);
    let env = MapEnv::new();
    let load = |auth: &str| {
        parse_with(
            &env,
            dir.path(),
            &with_defaults(&format!("caller_auth: {auth}")),
        )
    };
    let shown = |auth: &str| -> Vec<String> {
        let err = load(auth).expect_err(auth);
        assert_no_canary(&err);
        err.problems.iter().map(ToString::to_string).collect()
    };

    let config = load("{ header: X-Team-Key, secret_file: key }").unwrap();
    assert_eq!(config.caller_auth.unwrap().header, "x-team-key");
    assert!(
        !ok(&with_defaults("")).expose,
        "caller_auth alone does not expose"
    );

    assert_eq!(
        shown("{ header: x-team-key }"),
        ["caller_auth.secret_file: required key is missing"]
    );
    assert_eq!(
        shown("{}"),
        ["caller_auth.secret_file: required key is missing"]
    );
    assert_eq!(
        shown("{ secret_file: key, secret: inline }"),
        ["caller_auth.secret: unknown key `secret`"]
    );
    assert_eq!(
        shown("[key]"),
        ["caller_auth: expected a mapping, got a list"]
    );
    let p = shown("{ secret_file: shared }");
    assert!(
        p[0].starts_with("caller_auth.secret_file: ") && p[0].contains("chmod 600"),
        "{p:?}"
    );
    let p = shown("{ secret_file: short }");
    assert!(p[0].contains("shorter than 16 characters"), "{p:?}");
    let p = shown("{ secret_file: spaces }");
    assert!(p[0].contains("printable ASCII without spaces"), "{p:?}");
    let p = shown("{ secret_file: empty }");
    assert!(p[0].contains("is empty"), "{p:?}");
    let p = shown("{ secret_file: missing-file }");
    assert!(p[0].contains("cannot open"), "{p:?}");
    for reserved in [
        "Authorization",
        "host",
        "proxy-authorization",
        "cookie",
        "sec-fetch-site",
    ] {
        let p = shown(&format!("{{ header: {reserved}, secret_file: key }}"));
        assert!(
            p[0].starts_with("caller_auth.header: ") && p[0].contains("already has a meaning"),
            "{reserved}: {p:?}"
        );
    }
    let p = shown("{ header: \"bad header\", secret_file: key }");
    assert!(p[0].contains("not a valid HTTP header name"), "{p:?}");
    // An invalid caller_auth is reported for itself, not as missing for `expose`.
    let text = with_defaults("expose: true\ncaller_auth: { secret_file: short }");
    let err = parse_with(&env, dir.path(), &text).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].path, "caller_auth.secret_file");
}

#[test]
fn unix_socket_listen() {
    let config = ok(&with_defaults(
        "listen: unix:/run/aml-auth-proxy/proxy.sock",
    ));
    assert_eq!(
        config.listen,
        Listen::Unix("/run/aml-auth-proxy/proxy.sock".into())
    );
    assert_eq!(
        config.listen.to_string(),
        "unix:/run/aml-auth-proxy/proxy.sock"
    );
    assert!(
        config.check_listeners().is_ok(),
        "a Unix socket needs no expose"
    );
    assert_eq!(
        problems(&with_defaults("listen: unix:proxy.sock")),
        [
            "listen: \"unix:proxy.sock\": a Unix socket path must be absolute, like unix:/run/aml-auth-proxy/proxy.sock"
        ]
    );
    assert_eq!(problems(&with_defaults("listen: \"unix:\"")).len(), 1);
    assert!(
        problems(&with_defaults("listen: unix:/run/../x.sock"))[0].contains("without `.` or `..`")
    );
    let long = format!("listen: unix:/{}", "s".repeat(120));
    assert!(problems(&with_defaults(&long))[0].contains("at most 107 bytes"));
    // The admin listener stays TCP (probes).
    assert_eq!(
        problems(&with_defaults("admin_listen: unix:/run/admin.sock")),
        [
            "admin_listen: invalid address \"unix:/run/admin.sock\" (expected IP:port, like 127.0.0.1:8080)"
        ]
    );
}

#[test]
fn unix_allowed_uids() {
    let config = ok(&with_defaults(
        "listen: unix:/run/p.sock\nunix_allowed_uids: [1000, 0, \"1001\", 1000]",
    ));
    assert_eq!(config.unix_allowed_uids, Some(vec![1000, 0, 1001]));
    assert_eq!(
        problems(&with_defaults("unix_allowed_uids: []")),
        ["unix_allowed_uids: must not be empty"]
    );
    assert_eq!(
        problems(&with_defaults("unix_allowed_uids: [-1, 4294967296, x]")),
        [
            "unix_allowed_uids[0]: expected a non-negative integer (got -1)",
            "unix_allowed_uids[1]: 4294967296 is not a valid uid",
            "unix_allowed_uids[2]: expected a non-negative integer (got \"x\")",
        ]
    );
    assert_eq!(
        problems(&with_defaults("unix_allowed_uids: 1000")),
        ["unix_allowed_uids: expected a list, got a number"]
    );
}

#[test]
fn check_listeners_after_overrides() {
    let mut config = ok(&with_defaults(""));
    config.listen = Listen::Tcp("0.0.0.0:8080".parse().unwrap());
    let p = config.check_listeners().unwrap_err();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].path, "listen");
    config.listen = Listen::Unix("/run/p.sock".into());
    assert!(config.check_listeners().is_ok());
    config.admin_listen = "10.0.0.1:9464".parse().unwrap();
    assert_eq!(
        config.check_listeners().unwrap_err()[0].path,
        "admin_listen"
    );
    config.admin_listen = DEFAULT_ADMIN_LISTEN;
    config.listen = Listen::Tcp(DEFAULT_ADMIN_LISTEN);
    let p = config.check_listeners().unwrap_err();
    assert_eq!(
        p[0].to_string(),
        "admin_listen: must differ from listen (both are 127.0.0.1:9464)"
    );
    config.expose = true;
    config.listen = Listen::Tcp(DEFAULT_LISTEN);
    assert_eq!(config.check_listeners().unwrap_err()[0].path, "expose");
}
