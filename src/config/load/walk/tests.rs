//! The walker as a document sees it: `${VAR}` expansion (which can never inject structure or show a value from
//! the environment), typed scalars in their native and string forms, and durations.

use std::time::Duration;

use super::*;
use crate::config::load::test_support::{
    ARM_ROUTE, CANARY, ok, parse_env, problems, problems_env, with_credential, with_defaults,
    with_route,
};
use crate::env::MapEnv;

#[test]
fn expands_variables_defaults_and_dollars() {
    let env = MapEnv::new().with("A", "x").with("E", "");
    let text = |raw: &str| expand(raw, &env).map(|e| e.text);
    assert_eq!(
        expand("${A}-${B:-d}-$$-$x-${E:-e}-${E}", &env),
        Ok(Expanded {
            text: "x-d-$-$x-e-".to_owned(),
            values: vec![("A".to_owned(), "x".to_owned())],
        })
    );
    assert_eq!(text("a$"), Ok("a$".to_owned()));
    assert_eq!(
        expand("${B}${C}", &env),
        Err(ExpandError::Unset(vec!["B".into(), "C".into()]))
    );
    assert_eq!(expand("${A", &env), Err(ExpandError::Malformed));
    assert_eq!(expand("${1A}", &env), Err(ExpandError::Malformed));
    assert_eq!(text("${A:-a}b}"), Ok("xb}".to_owned()));
}

#[test]
fn variables_are_expanded_in_string_scalars() {
    let text = "listen: ${LISTEN}
admin_listen: \"${ADMIN:-127.0.0.1:9999}\"
limits:
  max_in_flight: \"${N:-100}\"
  drain_timeout: ${DRAIN:-2s}
credentials:
  default:
    chain: [\"${SOURCE}\"]
routes:
  - name: r
    path_prefix: /a$$b
    strip_prefix: \"${S:-true}\"
    upstream: https://${HOST}
    scope: \"${SCOPE:-https://ml.azure.com/.default}\"
";
    let env = MapEnv::new()
        .with("LISTEN", "127.0.0.1:7000")
        .with("SOURCE", "azure_cli")
        .with("HOST", "Example.com")
        .with("S", "");
    let config = parse_env(&env, text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, "127.0.0.1:7000".parse().unwrap());
    assert_eq!(config.admin_listen, "127.0.0.1:9999".parse().unwrap());
    assert_eq!(config.limits.max_in_flight, 100);
    assert_eq!(config.limits.drain_timeout, Duration::from_secs(2));
    let route = &config.routes[0];
    assert_eq!(route.path_prefix, "/a$b");
    assert!(route.strip_prefix, "an empty value takes the :- default");
    assert_eq!(route.upstream.origin.to_string(), "https://example.com");
    assert_eq!(
        route.scope.as_deref(),
        Some("https://ml.azure.com/.default")
    );
}

#[test]
fn expansion_cannot_inject_structure() {
    let env = MapEnv::new()
        .with("T", "x\nlisten_typo: 1")
        .with("U", "[a, b]");
    let text =
        with_credential("    workload_identity: { tenant_id: \"${T}\", client_id: \"${U}\" }");
    let p = problems_env(&env, &text);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with("credentials.sp.workload_identity.tenant_id: invalid tenant id"),
        "{p:?}"
    );
    assert!(
        p[1].starts_with("credentials.sp.workload_identity.client_id: "),
        "{p:?}"
    );
}

#[test]
fn unset_variables_are_named() {
    let text = with_defaults("listen: ${PROXY_LISTEN}\ncloud: ${CLOUD:-AzureCloud}");
    assert_eq!(
        problems(&text),
        [
            "listen: environment variable PROXY_LISTEN is not set (use ${PROXY_LISTEN:-default} for a default)"
        ]
    );
    let p = problems(&with_defaults("authority_host: \"${A}${B}\""));
    assert_eq!(p.len(), 2);
    assert!(
        p[0].contains("variable A is not set") && p[1].contains("variable B is not set"),
        "{p:?}"
    );
    let p = problems(&with_defaults("listen: \"${BROKEN\""));
    assert!(
        p[0].starts_with("listen: invalid variable reference"),
        "{p:?}"
    );
}

#[test]
fn typed_scalars_accept_native_and_string_forms() {
    let text = with_route(
        "    path_prefix: /\n    upstream: https://h\n    scope: https://h/.default\n    strip_prefix: TRUE\n    pass_through_authorization: false",
    );
    assert!(ok(&text).routes[0].strip_prefix);
    let text = with_defaults("limits: { max_in_flight: 5, replay_buffer_bytes: \"1024\" }");
    let limits = ok(&text).limits;
    assert_eq!(
        (limits.max_in_flight, limits.replay_buffer_bytes),
        (5, 1024)
    );
    assert_eq!(
        problems(&with_defaults(
            "limits: { max_in_flight: 0, replay_buffer_bytes: -1 }"
        )),
        [
            "limits.max_in_flight: must be at least 1",
            "limits.replay_buffer_bytes: expected a non-negative integer (got -1)",
        ]
    );
    assert_eq!(
        problems(&with_defaults("limits: { max_in_flight: lots }")),
        ["limits.max_in_flight: expected a non-negative integer (got \"lots\")"]
    );
    let text = with_route(
        "    path_prefix: /\n    upstream: https://h\n    scope: https://h/.default\n    strip_prefix: yes",
    );
    assert_eq!(
        problems(&text),
        ["routes[0].strip_prefix: expected true or false (got \"yes\")"]
    );
    assert_eq!(
        problems(&with_defaults("listen: 8080")),
        ["listen: expected a string, got a number (quote it)"]
    );
    assert_eq!(
        problems(&with_defaults("listen: localhost:80")),
        [
            "listen: invalid address \"localhost:80\" (expected IP:port, like 127.0.0.1:8080, or unix:/absolute/path.sock)"
        ]
    );
}

#[test]
fn durations() {
    let text = with_defaults(
        "limits: { request_header_timeout: 250ms, upstream_connect_timeout: 1s, upstream_response_timeout: 5m, drain_timeout: \"${D:-1h}\" }",
    );
    let limits = ok(&text).limits;
    assert_eq!(limits.request_header_timeout, Duration::from_millis(250));
    assert_eq!(limits.upstream_connect_timeout, Duration::from_secs(1));
    assert_eq!(limits.upstream_response_timeout, Duration::from_secs(300));
    assert_eq!(limits.drain_timeout, Duration::from_secs(3600));
    let p = problems(&with_defaults(
        "limits: { request_header_timeout: 30, upstream_connect_timeout: \"30\", drain_timeout: 0ms, upstream_response_timeout: [1s] }",
    ));
    assert_eq!(
        p,
        [
            "limits.request_header_timeout: a duration needs a unit, like \"30s\" (got 30)",
            "limits.upstream_connect_timeout: invalid duration \"30\": time unit needed, for example 30sec or 30ms",
            "limits.drain_timeout: must be greater than zero",
            "limits.upstream_response_timeout: expected a duration like \"30s\", got a list",
        ]
    );
}

/// A secret put in the wrong key through `${VAR}` (or `AZURE_AUTHORITY_HOST`) is never shown: problems name the
/// variable instead, whatever the validator would have quoted.
#[test]
fn values_from_the_environment_are_never_shown_in_problems() {
    let placements = [
        (
            "upstream",
            with_route(
                "    path_prefix: /\n    upstream: \"${SECRET}\"\n    scope: https://h/.default",
            ),
        ),
        (
            "upstream host",
            with_route(
                "    path_prefix: /\n    upstream: \"https://${SECRET}:0/x\"\n    scope: https://h/.default",
            ),
        ),
        (
            "authority_host",
            with_defaults("authority_host: \"${SECRET}\""),
        ),
        (
            "duration",
            with_defaults("limits: { drain_timeout: \"${SECRET}\" }"),
        ),
        (
            "count",
            with_defaults("limits: { max_in_flight: \"${SECRET}\" }"),
        ),
        ("boolean", with_defaults("cae: \"${SECRET}\"")),
        ("cloud", with_defaults("cloud: \"${SECRET}\"")),
        ("listen", with_defaults("listen: \"${SECRET}\"")),
        (
            "allowed_hosts",
            with_defaults("allowed_hosts: [\"${SECRET}:1\"]"),
        ),
        (
            "tenant",
            with_credential(
                "    client_secret: { tenant_id: \"${SECRET}@t\", client_id: c, client_secret: x }",
            ),
        ),
        (
            "file",
            with_credential(
                "    client_secret: { tenant_id: t, client_id: c, client_secret_file: \"${SECRET}\" }",
            ),
        ),
        (
            "credential",
            with_route(
                "    path_prefix: /\n    upstream: https://h\n    scope: https://h/.default\n    credential: \"${SECRET}\"",
            ),
        ),
        (
            "chain",
            "credentials:\n  default:\n    chain: [\"${SECRET}\"]\n".to_owned() + ARM_ROUTE,
        ),
    ];
    let canaries = [
        CANARY.to_owned(),
        "canary SECRET 7f3a9c".to_owned(),
        "canary\"SECRET\\7f3a9c".to_owned(),
        "canary:SECRET/7f3a9c?x".to_owned(),
    ];
    for canary in &canaries {
        let env = MapEnv::new().with("SECRET", canary.as_str());
        for (what, text) in &placements {
            let err = parse_env(&env, text).expect_err(what);
            let shown = format!("{err}\n{err:?}").to_ascii_lowercase();
            assert!(
                !shown.contains("canary") && !shown.contains("7f3a9c"),
                "{what} with {canary:?}: {err}"
            );
            assert!(err.to_string().contains("${SECRET}"), "{what}: {err}");
        }
        let from_var = MapEnv::new().with("AZURE_AUTHORITY_HOST", canary.as_str());
        let err = parse_env(&from_var, &with_defaults("")).unwrap_err();
        assert!(
            !err.to_string().to_ascii_lowercase().contains("canary"),
            "{err}"
        );
        assert!(err.to_string().contains("${AZURE_AUTHORITY_HOST}"), "{err}");
    }
    // The messages stay useful: the scalar as the file writes it, or the variable's name.
    let env = MapEnv::new().with("SECRET", CANARY);
    assert_eq!(
        problems_env(&env, &placements[0].1),
        ["routes[0].upstream: must be an absolute URL like https://host (got \"${SECRET}\")"]
    );
    assert_eq!(
        problems_env(&env, &placements[3].1),
        ["limits.drain_timeout: invalid duration \"${SECRET}\": expected number at 0"]
    );
    // Literal values from the file are still quoted.
    assert_eq!(
        problems(&with_defaults("limits: { drain_timeout: soon }")),
        ["limits.drain_timeout: invalid duration \"soon\": expected number at 0"]
    );
}
