//! `routes:`: credentials and pass-through, names and prefixes, duplicates, `allow` policies and `forward_headers`.

use http::Method;

use crate::config::load::test_support::{CREDS, ok, problems, with_route};

#[test]
fn route_credentials_default_and_pass_through() {
    let no_default = "credentials:
  sp:
    azure_cli: {}
routes:
  - { name: a, path_prefix: /, upstream: https://h, scope: https://h/.default }
  - { name: b, path_prefix: /b, upstream: https://h, pass_through_authorization: true }
  - { name: c, path_prefix: /c, upstream: https://h, credential: sp }
";
    assert_eq!(
        problems(no_default),
        [
            "routes[0].credential: required key is missing (and no credential named \"default\" is configured)",
            "routes[2].scope: required key is missing",
        ]
    );
    let text = format!(
        "{CREDS}routes:\n  - {{ name: p, path_prefix: /, upstream: https://h, pass_through_authorization: true }}\n"
    );
    let route = &ok(&text).routes[0];
    assert!(route.pass_through_authorization);
    assert_eq!(
        (route.credential.as_deref(), route.scope.as_deref()),
        (None, None)
    );
    let text = format!(
        "{CREDS}routes:\n  - {{ name: p, path_prefix: /, upstream: https://h, scope: https://h/.default, pass_through_authorization: true }}\n"
    );
    assert_eq!(ok(&text).routes[0].credential.as_deref(), Some("default"));
}

#[test]
fn route_names_prefixes_and_duplicates() {
    let text = format!(
        "{CREDS}routes:
  - {{ name: a, path_prefix: /x/, upstream: https://h, scope: https://h/.default }}
  - {{ name: a, path_prefix: /y, upstream: https://h, scope: https://h/.default }}
  - {{ name: b, path_prefix: /x, upstream: https://h, scope: https://h/.default }}
  - {{ name: c, path_prefix: /x, host: API.example, upstream: https://h, scope: https://h/.default }}
  - {{ name: \"d e\", path_prefix: x, upstream: https://h, scope: \"s t\" }}
"
    );
    assert_eq!(
        problems(&text),
        [
            "routes[1].name: duplicate route name \"a\" (also routes[0])",
            "routes[2].path_prefix: routes[0] already serves this host and path_prefix \"/x\"",
            "routes[4].name: invalid name \"d e\": use letters, digits, `_`, `.` and `-`",
            "routes[4].path_prefix: must start with `/` (got \"x\")",
            "routes[4].scope: invalid scope \"s t\": use letters, digits, `_`, `.`, `:`, `/` and `-`",
        ]
    );
    for (prefix, message) in [
        ("/a?b", "must not contain `?` or `#`"),
        ("/a%2e", "must not contain `%` (write the path unencoded)"),
        ("/a\\\\b", "must not contain `\\`"),
        ("/a//b", "must not contain `//`"),
        ("/a/../b", "must not contain `.` or `..` segments"),
        ("/a/./b", "must not contain `.` or `..` segments"),
        ("/a b", "must not contain whitespace or control characters"),
    ] {
        let text = with_route(&format!(
            "    path_prefix: \"{prefix}\"\n    upstream: https://h\n    scope: https://h/.default"
        ));
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(&format!("routes[0].path_prefix: {message} (got ")),
            "{prefix}: {p:?}"
        );
    }
    assert_eq!(
        problems(&with_route("    upstream: https://h")),
        [
            "routes[0].path_prefix: required key is missing",
            "routes[0].scope: required key is missing"
        ]
    );
    assert_eq!(
        problems(&format!(
            "{CREDS}routes:\n  - {{ path_prefix: /, scope: https://h/.default }}\n  - x\n"
        )),
        [
            "routes[0].name: required key is missing",
            "routes[0].upstream: required key is missing",
            "routes[1]: expected a mapping, got a string",
        ]
    );
}

#[test]
fn allow_policies() {
    let base = "    path_prefix: /\n    upstream: https://h\n    scope: https://h/.default\n";
    let text = with_route(&format!(
        "{base}    allow: {{ origins: [], paths: [/], methods: [patch] }}"
    ));
    let allow = ok(&text).routes[0].allow.clone();
    assert_eq!(allow.methods, Some(vec![Method::PATCH]));
    assert_eq!(allow.paths, Some(vec!["/".to_owned()]));
    assert!(allow.origins.is_empty());
    let text = with_route(&format!(
        "{base}    allow:\n      methods: [GET, POST, \"GE T\", []]\n      paths: [score, /a/../b]\n      origins: [\"https://a.example/\", \"ftp://b\", \"https://c.example:99999\", \"http://localhost:3000\"]"
    ));
    assert_eq!(
        problems(&text),
        [
            "routes[0].allow.methods[2]: invalid HTTP method \"GE T\"",
            "routes[0].allow.methods[3]: expected a string, got a list",
            "routes[0].allow.paths[0]: must start with `/` (got \"score\")",
            "routes[0].allow.paths[1]: must be a clean path (no `\\`, `//`, `.` or `..` segments) (got \"/a/../b\")",
            "routes[0].allow.origins[0]: must be an origin like https://host[:port] (got \"https://a.example/\")",
            "routes[0].allow.origins[1]: must be an origin like https://host[:port] (got \"ftp://b\")",
            "routes[0].allow.origins[2]: has an invalid port (got \"https://c.example:99999\")",
        ]
    );
    assert_eq!(
        problems(&with_route(&format!("{base}    allow: {{ methods: [] }}"))),
        ["routes[0].allow.methods: must not be empty"]
    );
}

#[test]
fn forward_headers_name_only_headers_dropped_by_default() {
    let base = "    path_prefix: /\n    upstream: https://h\n    scope: https://h/.default\n";
    let route = |keys: &str| with_route(&format!("{base}{keys}"));
    assert!(ok(&route("")).routes[0].forward_headers.is_empty());
    let text =
        route("    forward_headers: [X-HTTP-Method-Override, x-real-ip, X-Envoy-Original-Path]");
    let names: Vec<String> = ok(&text).routes[0]
        .forward_headers
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        names,
        [
            "x-http-method-override",
            "x-real-ip",
            "x-envoy-original-path"
        ]
    );
    let text = route(
        "    forward_headers: [x-forwarded-for, Metadata, x-original-url, content-type, \"bad name\", [x]]",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 6, "{found:#?}");
    for (i, problem) in found.iter().enumerate() {
        assert!(
            problem.starts_with(&format!("routes[0].forward_headers[{i}]: ")),
            "{problem}"
        );
    }
    assert!(found[0].contains("always dropped"), "{}", found[0]);
    assert!(found[1].contains("always dropped"), "{}", found[1]);
    assert!(found[2].contains("always dropped"), "{}", found[2]);
    assert!(
        found[3].contains("only headers the proxy drops by default"),
        "{}",
        found[3]
    );
    assert!(
        found[4].contains("only headers the proxy drops by default"),
        "{}",
        found[4]
    );
    assert_eq!(
        found[5],
        "routes[0].forward_headers[5]: expected a string, got a list"
    );
    assert_eq!(
        problems(&route("    forward_headers: x-real-ip")),
        ["routes[0].forward_headers: expected a list, got a string"]
    );
}
