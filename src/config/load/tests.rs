//! The whole pipeline, one YAML literal per rule: a full example and the built-in default, syntax errors and
//! unknown keys in document order, the top-level keys (`limits`, `cloud`, `authority_host`, `allowed_hosts`), size
//! and nesting bounds, and a canary secret that no problem ever shows. The rules of each section are tested beside
//! the loader file that checks them.

use std::fs;
use std::path::Path;
use std::time::Duration;

use http::Method;

use super::*;
use crate::auth::UserAssignedId;
use crate::config::load::test_support::{
    CANARY, CREDS, assert_no_canary, ok, parse, parse_env, parse_with, problems, problems_env,
    with_credential, with_defaults, with_route,
};
use crate::env::MapEnv;
use crate::test_support::TempDir;

#[test]
fn acceptance_scenario_reports_every_problem_without_the_secret() {
    let text = "listen: 127.0.0.1:18080
listen_typo: 1
credentials:
  sp:
    client_secret: { tenant_id: ok, client_id: 11111111-2222-3333-4444-555555555555, client_secret: canary-SECRET-7f3a9c }
routes:
  - name: a
    path_prefix: /
    upstream: http://example.com
    scope: https://management.azure.com/.default
    credential: sp
  - name: b
    path_prefix: /b
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
    credential: nosuch
";
    let err = parse(text).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("listen_typo"), "{shown}");
    assert!(shown.contains("example.com"), "{shown}");
    assert!(shown.contains("nosuch"), "{shown}");
    assert_no_canary(&err);
    assert_eq!(
        err.file.as_deref(),
        Some(Path::new("/nonexistent-config-dir/config.yaml"))
    );
    let rendered: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "listen_typo: unknown key `listen_typo`",
            "routes[0].upstream: plain http is only allowed for loopback hosts (got \"http://example.com\")",
            "routes[1].credential: no credential named \"nosuch\"",
        ]
    );
    assert!(
        shown
            .starts_with("invalid configuration /nonexistent-config-dir/config.yaml (3 problems):")
    );
}

#[test]
fn full_design_example_loads_with_the_right_values() {
    let dir = TempDir::new();
    let secret = dir.file("sp-secret", "s3cret-value\n", 0o600);
    dir.file("sp.pem", "not checked here", 0o600);
    let password = dir.file("sp-password", "pw\r\n", 0o400);
    let auth = dir.file("auth.json", "{}", 0o600);
    let cert = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
    let ca = dir.file("ca.pem", cert.cert.pem(), 0o644);
    let text = format!(
        r#"
listen: 127.0.0.1:8081
admin_listen: "[::1]:9465"
cloud: AzureCloud
authority_host: https://login.microsoftonline.com/
allowed_hosts: [LocalHost, 127.0.0.1, "[::1]", proxy.internal]
tls:
  extra_ca_file: {ca}
limits:
  max_in_flight: 500
  request_header_timeout: 10s
  upstream_connect_timeout: 250ms
  upstream_response_timeout: 5m
  replay_buffer_bytes: 0
  drain_timeout: 1m 30s
  write_stall_timeout: 45s
  stream_idle_timeout: 10m
  request_body_min_rate: 4096
  request_body_rate_window: 5s
credentials:
  default:
    chain: [environment, workload_identity, managed_identity, azure_cli, vm]
  training-sp:
    client_secret: {{ tenant_id: "${{AML_TENANT_ID}}", client_id: "${{AML_PRINCIPAL_ID}}", client_secret_file: {secret} }}
  deploy-sp:
    client_certificate: {{ tenant_id: t1, client_id: c1, certificate_file: sp.pem, password_file: {password}, send_certificate_chain: true }}
  aks:
    workload_identity: {{}}
  vm:
    managed_identity: {{ client_id: mi-client }}
  dev:
    azure_cli: {{ tenant_id: t2, subscription: My Sub, timeout: 20s }}
  me:
    device_code: {{ tenant_id: organizations }}
  legacy:
    sdk_auth_file: {{ path: "${{AZURE_AUTH_LOCATION}}" }}
routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
    credential: default
  - name: scoring
    path_prefix: /score/my-endpoint/
    host: Proxy.Internal
    strip_prefix: true
    upstream: https://my-endpoint.eastus.inference.ml.azure.com/score/
    scope: https://ml.azure.com/.default
    credential: aks
    allow: {{ methods: [post, GET], paths: [/score/my-endpoint/*/x/], origins: ["HTTPS://App.Example:8443"] }}
    pass_through_authorization: false
"#,
        ca = ca.display(),
        secret = secret.display(),
        password = password.display(),
    );
    let config_file = dir.file("config.yaml", &text, 0o644);
    let env = MapEnv::new()
        .with("AML_TENANT_ID", "tenant-1")
        .with("AML_PRINCIPAL_ID", "principal-1")
        .with("AZURE_AUTH_LOCATION", auth.display().to_string())
        .with("HOME", "/home/u");
    let config = load(&config_file, &env).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(config.origin, ConfigOrigin::File(config_file.clone()));
    assert_eq!(config.listen, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(config.admin_listen, "[::1]:9465".parse().unwrap());
    assert_eq!(config.cloud, Cloud::AzureCloud);
    assert_eq!(
        config.authority_host.to_string(),
        "https://login.microsoftonline.com"
    );
    assert_eq!(
        config.allowed_hosts,
        ["localhost", "127.0.0.1", "[::1]", "proxy.internal"]
    );
    assert_eq!(config.extra_roots.len(), 1);
    assert_eq!(
        config.limits,
        Limits {
            max_in_flight: 500,
            request_header_timeout: Duration::from_secs(10),
            upstream_connect_timeout: Duration::from_millis(250),
            upstream_response_timeout: Duration::from_secs(300),
            replay_buffer_bytes: 0,
            drain_timeout: Duration::from_secs(90),
            write_stall_timeout: Duration::from_secs(45),
            stream_idle_timeout: Duration::from_secs(600),
            request_body_min_rate: 4096,
            request_body_rate_window: Duration::from_secs(5),
        }
    );

    let creds = &config.credentials;
    assert_eq!(creds.len(), 8);
    match &creds["default"] {
        CredentialOptions::Chain(sources) => {
            let mut expected = ChainSource::default_chain();
            expected.push(ChainSource::Named("vm".to_owned()));
            assert_eq!(sources, &expected);
        }
        other => panic!("{other:?}"),
    }
    match &creds["training-sp"] {
        CredentialOptions::ClientSecret(s) => {
            assert_eq!(
                (s.tenant_id.as_str(), s.client_id.as_str()),
                ("tenant-1", "principal-1")
            );
            assert_eq!(s.client_secret.expose(), "s3cret-value");
        }
        other => panic!("{other:?}"),
    }
    match &creds["deploy-sp"] {
        CredentialOptions::ClientCertificate(c) => {
            assert_eq!(c.certificate_file, dir.path().join("sp.pem"));
            assert_eq!(c.password.as_ref().map(|p| p.expose()), Some("pw"));
            assert!(c.send_certificate_chain);
        }
        other => panic!("{other:?}"),
    }
    match &creds["aks"] {
        CredentialOptions::WorkloadIdentity(w) => assert_eq!(w, &Default::default()),
        other => panic!("{other:?}"),
    }
    match &creds["vm"] {
        CredentialOptions::ManagedIdentity(m) => {
            assert_eq!(
                m.user_assigned,
                Some(UserAssignedId::ClientId("mi-client".to_owned()))
            );
            assert_eq!(m.endpoint, None);
        }
        other => panic!("{other:?}"),
    }
    match &creds["dev"] {
        CredentialOptions::AzureCli(c) => {
            assert_eq!(c.tenant_id.as_deref(), Some("t2"));
            assert_eq!(c.subscription.as_deref(), Some("My Sub"));
            assert_eq!(c.timeout, Duration::from_secs(20));
        }
        other => panic!("{other:?}"),
    }
    match &creds["me"] {
        CredentialOptions::DeviceCode(d) => {
            assert_eq!(d.tenant_id.as_deref(), Some("organizations"));
            assert_eq!(d.client_id, None);
            assert_eq!(
                d.cache_file,
                Path::new("/home/u/.aml-auth-proxy/tokens.json")
            );
        }
        other => panic!("{other:?}"),
    }
    match &creds["legacy"] {
        CredentialOptions::SdkAuthFile(f) => assert_eq!(f.path, auth),
        other => panic!("{other:?}"),
    }

    let [arm, scoring] = &config.routes[..] else {
        panic!("{:?}", config.routes)
    };
    assert_eq!(arm.name, "arm");
    assert_eq!(arm.path_prefix, "/");
    assert_eq!(arm.host, None);
    assert!(!arm.strip_prefix && !arm.pass_through_authorization);
    assert_eq!(
        arm.upstream.origin.to_string(),
        "https://management.azure.com"
    );
    assert_eq!(arm.upstream.base_path, "");
    assert_eq!(
        arm.scope.as_deref(),
        Some("https://management.azure.com/.default")
    );
    assert_eq!(arm.credential.as_deref(), Some("default"));
    assert_eq!(arm.allow, AllowPolicy::default());

    assert_eq!(scoring.path_prefix, "/score/my-endpoint");
    assert_eq!(scoring.host.as_deref(), Some("proxy.internal"));
    assert!(scoring.strip_prefix);
    assert_eq!(
        scoring.upstream.origin.host(),
        "my-endpoint.eastus.inference.ml.azure.com"
    );
    assert_eq!(scoring.upstream.base_path, "/score");
    assert_eq!(scoring.credential.as_deref(), Some("aks"));
    assert_eq!(scoring.allow.methods, Some(vec![Method::POST, Method::GET]));
    assert_eq!(
        scoring.allow.paths,
        Some(vec!["/score/my-endpoint/*/x".to_owned()])
    );
    assert_eq!(scoring.allow.origins, ["https://app.example:8443"]);

    let tokens: Vec<_> = config.route_tokens().collect();
    assert_eq!(
        tokens[1],
        ("scoring", "aks", "https://ml.azure.com/.default")
    );
}

#[test]
fn load_names_an_unreadable_file() {
    let err = load(Path::new("/nonexistent-dir/aml.yaml"), &MapEnv::new()).unwrap_err();
    assert_eq!(
        err.file.as_deref(),
        Some(Path::new("/nonexistent-dir/aml.yaml"))
    );
    assert!(
        err.to_string()
            .contains("cannot read /nonexistent-dir/aml.yaml"),
        "{err}"
    );
}

#[test]
fn builtin_default() {
    let config = builtin(&MapEnv::new()).unwrap();
    assert_eq!(config.origin, ConfigOrigin::BuiltIn);
    assert_eq!(config.listen, Listen::Tcp(DEFAULT_LISTEN));
    assert_eq!(config.admin_listen, DEFAULT_ADMIN_LISTEN);
    assert_eq!(config.cloud, Cloud::AzureCloud);
    assert_eq!(
        config.authority_host.to_string(),
        "https://login.microsoftonline.com"
    );
    assert_eq!(config.allowed_hosts, ["localhost", "127.0.0.1"]);
    assert!(config.extra_roots.is_empty());
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.credentials.len(), 1);
    assert!(
        matches!(&config.credentials["default"], CredentialOptions::Chain(c) if *c == ChainSource::default_chain())
    );
    let [route] = &config.routes[..] else {
        panic!("{:?}", config.routes)
    };
    assert_eq!(route.name, "arm");
    assert_eq!(route.path_prefix, "/");
    assert!(!route.strip_prefix);
    assert_eq!(
        route.upstream.origin.to_string(),
        "https://management.azure.com"
    );
    assert_eq!(route.upstream.base_path, "");
    assert_eq!(
        route.scope.as_deref(),
        Some("https://management.azure.com/.default")
    );
    assert_eq!(route.credential.as_deref(), Some("default"));

    let env = MapEnv::new().with("AZURE_AUTHORITY_HOST", "http://127.0.0.1:4000/");
    assert_eq!(
        builtin(&env).unwrap().authority_host.to_string(),
        "http://127.0.0.1:4000"
    );
    let env = MapEnv::new().with("AZURE_AUTHORITY_HOST", "http://login.example");
    let err = builtin(&env).unwrap_err();
    assert_eq!(err.file, None);
    assert_eq!(
        err.problems[0].to_string(),
        "authority_host: AZURE_AUTHORITY_HOST: plain http is only allowed for loopback hosts (got \"${AZURE_AUTHORITY_HOST}\")"
    );
}

#[test]
fn minimal_config_gets_defaults() {
    let config = ok(&with_defaults(""));
    assert_eq!(config.listen, Listen::Tcp(DEFAULT_LISTEN));
    assert_eq!(config.admin_listen, DEFAULT_ADMIN_LISTEN);
    assert_eq!(config.allowed_hosts, ["localhost", "127.0.0.1"]);
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.routes[0].credential.as_deref(), Some("default"));
}

#[test]
fn syntax_errors_empty_documents_and_non_mappings() {
    let p = problems("listen: [1\n");
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("invalid YAML: ") && p[0].contains("line 2 column 1"),
        "{p:?}"
    );
    let p = problems("a: 1\na: 2\n");
    assert!(
        p[0].contains("duplicate") && p[0].contains("line 1 column 1"),
        "{p:?}"
    );
    assert_eq!(problems(""), ["routes: required key is missing"]);
    assert_eq!(
        problems("# only a comment\n"),
        ["routes: required key is missing"]
    );
    assert_eq!(
        problems("- a\n"),
        ["the top level must be a mapping, got a list"]
    );
    assert_eq!(
        problems("routes: []\n"),
        ["routes: must list at least one route"]
    );
}

#[test]
fn unknown_keys_at_every_level_in_document_order() {
    let text = "listen_typo: 1
limits: { max_inflight: 5, drain_timeout: 0s }
tls: { ca_file: x }
credentials:
  default:
    chain: [azure_cli]
    extra: 1
  sp:
    managed_identity: { clientid: x }
routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
    allow: { verbs: [GET] }
    typo: true
";
    assert_eq!(
        problems(text),
        [
            "listen_typo: unknown key `listen_typo`",
            "limits.max_inflight: unknown key `max_inflight` (did you mean `max_in_flight`?)",
            "limits.drain_timeout: must be greater than zero",
            "tls.ca_file: unknown key `ca_file`",
            "credentials.default.extra: unknown key `extra`",
            "credentials.sp.managed_identity.clientid: unknown key `clientid` (did you mean `client_id`?)",
            "routes[0].allow.verbs: unknown key `verbs`",
            "routes[0].typo: unknown key `typo`",
        ]
    );
}

#[test]
fn stream_limits_have_defaults_and_are_checked_like_the_others() {
    let limits = ok(&with_defaults("")).limits;
    assert_eq!(limits.write_stall_timeout, Duration::from_secs(60));
    assert_eq!(limits.stream_idle_timeout, Duration::from_secs(300));
    assert_eq!(limits.request_body_min_rate, 1024);
    assert_eq!(limits.request_body_rate_window, Duration::from_secs(10));
    let limits = ok(&with_defaults(
        "limits: { write_stall_timeout: 2s, stream_idle_timeout: \"${IDLE:-90s}\", request_body_min_rate: \"512\", request_body_rate_window: 1500ms }",
    ))
    .limits;
    assert_eq!(limits.write_stall_timeout, Duration::from_secs(2));
    assert_eq!(limits.stream_idle_timeout, Duration::from_secs(90));
    assert_eq!(limits.request_body_min_rate, 512);
    assert_eq!(limits.request_body_rate_window, Duration::from_millis(1500));
    assert_eq!(
        problems(&with_defaults(
            "limits: { write_stall_timeout: 0s, stream_idle_timeout: 60, request_body_min_rate: 0, request_body_rate_window: soon }",
        )),
        [
            "limits.write_stall_timeout: must be greater than zero",
            "limits.stream_idle_timeout: a duration needs a unit, like \"60s\" (got 60)",
            "limits.request_body_min_rate: must be at least 1",
            "limits.request_body_rate_window: invalid duration \"soon\": expected number at 0",
        ]
    );
}

#[test]
fn cloud_selects_the_authority_host() {
    let gov = ok(&with_defaults("cloud: AzureUSGovernment"));
    assert_eq!(gov.cloud, Cloud::AzureUsGovernment);
    assert_eq!(
        gov.authority_host.to_string(),
        "https://login.microsoftonline.us"
    );
    let china = ok(&with_defaults("cloud: azurechinacloud"));
    assert_eq!(
        china.authority_host.to_string(),
        "https://login.chinacloudapi.cn"
    );
    assert_eq!(
        problems(&with_defaults("cloud: Mars")),
        [
            "cloud: unknown cloud \"Mars\" (expected AzureCloud, AzureUSGovernment or AzureChinaCloud)"
        ]
    );
}

#[test]
fn authority_host_key_then_env_then_cloud() {
    let env = MapEnv::new().with("AZURE_AUTHORITY_HOST", "https://login.env.example/");
    let from_env = parse_env(&env, &with_defaults("cloud: AzureChinaCloud")).unwrap();
    assert_eq!(
        from_env.authority_host.to_string(),
        "https://login.env.example"
    );
    let text = with_defaults("authority_host: https://Login.Key.Example");
    let from_key = parse_env(&env, &text).unwrap();
    assert_eq!(
        from_key.authority_host.to_string(),
        "https://login.key.example"
    );
    let empty = MapEnv::new().with("AZURE_AUTHORITY_HOST", "");
    assert_eq!(
        parse_env(&empty, &with_defaults(""))
            .unwrap()
            .authority_host
            .host(),
        "login.microsoftonline.com"
    );

    let bad = MapEnv::new().with("AZURE_AUTHORITY_HOST", "https://login.example/tenant");
    assert_eq!(
        problems_env(&bad, &with_defaults("")),
        [
            "authority_host: AZURE_AUTHORITY_HOST: must not have a path (got \"${AZURE_AUTHORITY_HOST}\")"
        ]
    );
    assert!(
        parse_env(
            &bad,
            &with_defaults("authority_host: http://localhost:1234")
        )
        .is_ok()
    );
}

#[test]
fn default_allowed_hosts_name_what_the_listeners_answer_on() {
    let hosts = |extra: &str| ok(&with_defaults(extra)).allowed_hosts;
    assert_eq!(hosts(""), ["localhost", "127.0.0.1"]);
    assert_eq!(
        hosts("listen: \"[::1]:8080\"\nadmin_listen: \"[::1]:9464\""),
        ["localhost", "[::1]"]
    );
    assert_eq!(
        hosts("listen: \"[::1]:8080\""),
        ["localhost", "[::1]", "127.0.0.1"]
    );
    assert_eq!(
        hosts("listen: unix:/run/aml/proxy.sock"),
        ["localhost", "127.0.0.1"]
    );
    let dir = TempDir::new();
    let token_service = format!(
        "token_service:\n  listen: \"[::1]:8081\"\n  secret_file: {}\n  identities: {{ default: default }}\n  \
         allowed_resources: [https://management.azure.com]",
        dir.path().join("identity-secret").display()
    );
    assert_eq!(hosts(&token_service), ["localhost", "127.0.0.1", "[::1]"]);
    assert_eq!(
        hosts("allowed_hosts: [proxy.local]\nlisten: \"[::1]:8080\""),
        ["proxy.local"]
    );
}

#[test]
fn allowed_hosts_and_listeners() {
    let config = ok(&with_defaults(
        "allowed_hosts: [Proxy.Local, \"[::1]\", 10.1.2.3, proxy.local]",
    ));
    assert_eq!(config.allowed_hosts, ["proxy.local", "[::1]", "10.1.2.3"]);
    let p = problems(&with_defaults(
        "allowed_hosts: [\"localhost:8080\", \"http://x\", \"*.example.com\", \"::1\", \"[::1]:80\", ok.host]",
    ));
    assert_eq!(
        p,
        [
            "allowed_hosts[0]: \"localhost:8080\" must not contain a port",
            "allowed_hosts[1]: \"http://x\" must be a host name, without a scheme",
            "allowed_hosts[2]: \"*.example.com\" is not a host name (wildcards are not supported)",
            "allowed_hosts[3]: \"::1\" is an IPv6 address; write it in brackets, like \"[::1]\"",
            "allowed_hosts[4]: \"[::1]:80\" must not contain a port",
        ]
    );
    assert_eq!(
        problems(&with_defaults("allowed_hosts: []")),
        ["allowed_hosts: must not be empty"]
    );
    assert_eq!(
        problems(&with_defaults("listen: 127.0.0.1:9464")),
        ["admin_listen: must differ from listen (both are 127.0.0.1:9464)"]
    );
    assert!(
        parse(&with_defaults(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0"
        ))
        .is_ok()
    );
}

#[test]
fn deep_nesting_and_oversized_files_are_refused_before_parsing() {
    let n = 100_000;
    let flow = format!("routes: {}{}\n", "[".repeat(n), "]".repeat(n));
    let block = format!("routes:\n{}x\n", "- ".repeat(n));
    for (text, message) in [
        (
            &flow,
            "`[`/`{` collections nest more than 64 levels deep at line 1; a configuration may nest at most 64 levels",
        ),
        (
            &block,
            "indented collections (or `- ` chains) nest more than 64 levels deep at line 2; a configuration may nest at most 64 levels",
        ),
    ] {
        assert_eq!(problems(text), [message]);
    }
    // 64 levels are fine (the parser then reports what is wrong with the document).
    let ok_depth = format!("routes: {}{}\n", "[".repeat(64), "]".repeat(64));
    assert!(
        problems(&ok_depth)[0].starts_with("routes[0]: "),
        "{:?}",
        problems(&ok_depth)
    );

    let large = format!(
        "{}\n{}",
        "#".repeat(MAX_CONFIG_BYTES as usize),
        with_defaults("")
    );
    assert_eq!(
        problems(&large),
        [
            "the configuration is larger than 1048576 bytes (1 MiB), the limit for a configuration file"
        ]
    );
    let dir = TempDir::new();
    let file = dir.path().join("huge.yaml");
    fs::File::create(&file)
        .unwrap()
        .set_len(200 * 1024 * 1024)
        .unwrap();
    let err = load(&file, &MapEnv::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid configuration {0} (1 problem):\n  {0} is larger than 1048576 bytes (1 MiB), the limit for a configuration file",
            file.display()
        )
    );
}

#[test]
fn canary_secret_never_appears_in_errors() {
    let dir = TempDir::new();
    dir.file("leaky", CANARY, 0o666);
    let env = MapEnv::new().with("SECRET", CANARY);
    let bad_configs = [
        // Type error on a secret key.
        with_credential(
            "    client_secret: { tenant_id: t, client_id: c, client_secret: [canary-SECRET-7f3a9c] }",
        ),
        // Both alternatives given.
        with_credential(
            "    client_secret: { tenant_id: t, client_id: c, client_secret: canary-SECRET-7f3a9c, client_secret_file: leaky }",
        ),
        // Secret via a variable, with other problems around it.
        with_credential(
            "    client_secret: { tenant_id: \"bad tenant\", client_id: c, client_secret: \"${SECRET}\", x: 1 }",
        ),
        // Malformed reference inside a secret.
        with_credential(
            "    client_secret: { tenant_id: t, client_id: c, client_secret: \"canary-SECRET-7f3a9c${\" }",
        ),
        // Password of a certificate credential, with a missing certificate.
        with_credential(
            "    client_certificate: { tenant_id: t, client_id: c, certificate_file: nope.pem, password: canary-SECRET-7f3a9c }",
        ),
        // Secret in URL user information and a query.
        with_route(
            "    path_prefix: /\n    upstream: \"https://u:canary-SECRET-7f3a9c@h\"\n    scope: https://h/.default",
        ),
        with_route(
            "    path_prefix: /\n    upstream: \"https://h/?sig=canary-SECRET-7f3a9c\"\n    scope: https://h/.default",
        ),
        with_defaults("authority_host: \"http://canary-SECRET-7f3a9c@login.example\""),
        // Secret-bearing file readable by others.
        with_credential(
            "    client_secret: { tenant_id: t, client_id: c, client_secret_file: leaky }",
        ),
        // A secret where a mapping is expected, and a YAML syntax error after a secret.
        with_credential("    client_secret: canary-SECRET-7f3a9c"),
        format!(
            "{}  - [\n",
            with_credential(
                "    client_secret: { tenant_id: t, client_id: c, client_secret: \"canary-SECRET-7f3a9c\" }"
            )
        ),
    ];
    for text in &bad_configs {
        let err = parse_with(&env, dir.path(), text).expect_err(text);
        assert_no_canary(&err);
    }
}

#[test]
fn anchors_and_merge_keys() {
    let text = format!(
        "{CREDS}routes:
  - &arm {{ name: arm, path_prefix: /, upstream: https://h, scope: https://h/.default }}
  - <<: *arm
    name: arm2
    path_prefix: /two
"
    );
    let config = ok(&text);
    let second = &config.routes[1];
    assert_eq!(
        (second.name.as_str(), second.path_prefix.as_str()),
        ("arm2", "/two")
    );
    assert_eq!(second.scope.as_deref(), Some("https://h/.default"));
}
