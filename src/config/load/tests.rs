//! One YAML literal per rule; files are created in a private temporary directory per test.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;

use super::*;
use crate::auth::{ChainSource, CredentialOptions, UserAssignedId};
use crate::config::AllowPolicy;
use crate::env::MapEnv;

const CANARY: &str = "canary-SECRET-7f3a9c";

const CREDS: &str = "credentials:\n  default:\n    chain: [azure_cli]\n";

const ARM_ROUTE: &str = "routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
";

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("aml-auth-proxy-cfg-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` with `content` and permission `mode`.
    fn file(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn parse_with(env: &MapEnv, dir: &Path, text: &str) -> Result<Config, ConfigError> {
    from_yaml_str(text, env, ConfigOrigin::File(dir.join("config.yaml")), dir)
}

fn parse_env(env: &MapEnv, text: &str) -> Result<Config, ConfigError> {
    parse_with(env, Path::new("/nonexistent-config-dir"), text)
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_env(&MapEnv::new(), text)
}

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Rendered problems (`path: message`).
fn problems_env(env: &MapEnv, text: &str) -> Vec<String> {
    match parse_env(env, text) {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

fn problems(text: &str) -> Vec<String> {
    problems_env(&MapEnv::new(), text)
}

/// A config that is valid apart from `extra` (top-level keys other than credentials/routes).
fn with_defaults(extra: &str) -> String {
    format!("{extra}\n{CREDS}{ARM_ROUTE}")
}

/// A config with one route using credential `sp` defined by `credential` (indented under `sp:`).
fn with_credential(credential: &str) -> String {
    format!(
        "credentials:\n  sp:\n{credential}\nroutes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
    credential: sp\n"
    )
}

/// A config with one route whose extra keys are `route` (indented like route keys).
fn with_route(route: &str) -> String {
    format!("{CREDS}routes:\n  - name: r\n{route}\n")
}

fn assert_no_canary(err: &ConfigError) {
    let display = err.to_string();
    let debug = format!("{err:?}");
    assert!(!display.contains(CANARY), "secret in Display: {display}");
    assert!(!debug.contains(CANARY), "secret in Debug: {debug}");
    assert!(
        !display.contains("canary"),
        "secret fragment in Display: {display}"
    );
}

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
    let ca = dir.file("ca.pem", &cert.cert.pem(), 0o644);
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
    assert_eq!(config.allowed_hosts, ["localhost", "127.0.0.1", "[::1]"]);
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
    assert_eq!(config.allowed_hosts, ["localhost", "127.0.0.1", "[::1]"]);
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
            "limits.max_inflight: unknown key `max_inflight`",
            "limits.drain_timeout: must be greater than zero",
            "tls.ca_file: unknown key `ca_file`",
            "credentials.default.extra: unknown key `extra`",
            "credentials.sp.managed_identity.clientid: unknown key `clientid`",
            "routes[0].allow.verbs: unknown key `verbs`",
            "routes[0].typo: unknown key `typo`",
        ]
    );
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
        "    path_prefix: /\n    upstream: https://h\n    scope: s\n    strip_prefix: TRUE\n    pass_through_authorization: false",
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
        "    path_prefix: /\n    upstream: https://h\n    scope: s\n    strip_prefix: yes",
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
fn url_rules() {
    let ok_route = |upstream: &str| {
        ok(&with_route(&format!(
            "    path_prefix: /\n    upstream: {upstream}\n    scope: s"
        )))
    };
    assert_eq!(
        ok_route("http://127.0.0.2:8080").routes[0]
            .upstream
            .origin
            .port(),
        8080
    );
    assert_eq!(
        ok_route("http://[::1]/base/").routes[0].upstream.base_path,
        "/base"
    );
    assert_eq!(
        ok_route("http://LOCALHOST").routes[0]
            .upstream
            .origin
            .host(),
        "localhost"
    );
    let bad_route = |upstream: &str| {
        problems(&with_route(&format!(
            "    path_prefix: /\n    upstream: \"{upstream}\"\n    scope: s"
        )))
    };
    assert_eq!(
        bad_route("https://user:canary@example.com"),
        ["routes[0].upstream: must not contain user information"]
    );
    assert_eq!(
        bad_route("https://example.com/?sig=canary"),
        ["routes[0].upstream: must not contain a query or fragment"]
    );
    assert_eq!(
        bad_route("http://10.0.0.1"),
        [
            "routes[0].upstream: plain http is only allowed for loopback hosts (got \"http://10.0.0.1\")"
        ]
    );
    assert_eq!(
        bad_route("example.com"),
        ["routes[0].upstream: must be an absolute URL like https://host (got \"example.com\")"]
    );
    assert_eq!(
        problems(&with_defaults(
            "authority_host: https://login.example/tenant"
        )),
        ["authority_host: must not have a path (got \"https://login.example/tenant\")"]
    );
    let mi = "    managed_identity: { endpoint: \"http://127.0.0.1:5000/msi/token\" }";
    match &ok(&with_credential(mi)).credentials["sp"] {
        CredentialOptions::ManagedIdentity(m) => {
            assert_eq!(
                m.endpoint.as_ref().map(ToString::to_string).as_deref(),
                Some("http://127.0.0.1:5000/msi/token")
            );
        }
        other => panic!("{other:?}"),
    }
    let p = problems(&with_credential(
        "    managed_identity: { endpoint: \"http://169.254.169.254/metadata?api-version=1\" }",
    ));
    assert_eq!(
        p,
        ["credentials.sp.managed_identity.endpoint: must not contain a query or fragment"]
    );
    // IMDS's own link-local address may be named in plain http; other hosts may not.
    let config = ok(&with_credential(
        "    managed_identity: { endpoint: \"http://169.254.169.254/metadata/identity/oauth2/token\" }",
    ));
    assert!(matches!(
        config.credentials["sp"],
        CredentialOptions::ManagedIdentity(_)
    ));
    let p = problems(&with_credential(
        "    managed_identity: { endpoint: \"http://10.1.2.3/metadata\" }",
    ));
    assert!(
        p[0].contains("plain http is only allowed for loopback hosts"),
        "{p:?}"
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
fn tls_extra_ca_file() {
    let dir = TempDir::new();
    let cert = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
    dir.file(
        "ca.pem",
        &format!("{}{}", cert.cert.pem(), other.cert.pem()),
        0o644,
    );
    dir.file("empty.pem", "no certificates here\n", 0o644);
    let env = MapEnv::new();
    let config = parse_with(
        &env,
        dir.path(),
        &with_defaults("tls: { extra_ca_file: ca.pem }"),
    )
    .unwrap();
    assert_eq!(config.extra_roots.len(), 2);
    let err = parse_with(
        &env,
        dir.path(),
        &with_defaults("tls: { extra_ca_file: empty.pem }"),
    )
    .unwrap_err();
    let expected = format!(
        "tls.extra_ca_file: {} contains no PEM certificate",
        dir.path().join("empty.pem").display()
    );
    assert_eq!(err.problems[0].to_string(), expected);
    let err = parse_with(
        &env,
        dir.path(),
        &with_defaults("tls: { extra_ca_file: missing.pem }"),
    )
    .unwrap_err();
    assert!(err.problems[0].to_string().contains("cannot open"), "{err}");
}

#[test]
fn group_read_is_accepted_only_on_root_owned_secret_files() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new();
    let file = dir.file("key", &format!("{CANARY}\n"), 0o440);
    let env = MapEnv::new();
    let cred = with_credential(
        "    client_secret: { tenant_id: t, client_id: c, client_secret_file: key }",
    );
    if fs::metadata(&file).unwrap().uid() == 0 {
        // What kubelet makes of a Secret with `defaultMode: 0400` in a pod with `fsGroup`: root:<fsGroup>, 0440.
        assert!(parse_with(&env, dir.path(), &cred).is_ok());
        std::os::unix::fs::chown(&file, Some(65532), None).unwrap();
    }
    // Owned by anyone else, group read is refused.
    let err = parse_with(&env, dir.path(), &cred).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("is readable by group or others (mode 0440); chmod 600 it (group read is accepted only on a root-owned file"),
        "{shown}"
    );
    assert_no_canary(&err);
}

#[test]
fn secret_files_must_be_private_and_are_never_shown() {
    let dir = TempDir::new();
    let shared = dir.file("shared", &format!("{CANARY}\n"), 0o644);
    dir.file("group", "x", 0o620);
    dir.file("crlf", "abc\r\n\n", 0o600);
    dir.file("empty", "\n", 0o600);
    let env = MapEnv::new();
    let cred = |file: &str| {
        with_credential(&format!(
            "    client_secret: {{ tenant_id: t, client_id: c, client_secret_file: {file} }}"
        ))
    };

    let err = parse_with(&env, dir.path(), &cred("shared")).unwrap_err();
    let expected = format!(
        "credentials.sp.client_secret.client_secret_file: {} is readable by group or others (mode 0644); chmod 600 it",
        shared.display()
    );
    assert_eq!(
        err.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [expected]
    );
    assert_no_canary(&err);

    let err = parse_with(&env, dir.path(), &cred("group")).unwrap_err();
    assert!(
        err.to_string()
            .contains("is accessible by group or others (mode 0620)"),
        "{err}"
    );

    let config = parse_with(&env, dir.path(), &cred("crlf")).unwrap();
    match &config.credentials["sp"] {
        CredentialOptions::ClientSecret(s) => assert_eq!(
            s.client_secret.expose(),
            "abc\r\n",
            "only one newline is stripped"
        ),
        other => panic!("{other:?}"),
    }
    let err = parse_with(&env, dir.path(), &cred("empty")).unwrap_err();
    assert!(err.to_string().ends_with("/empty is empty"), "{err}");
    let err = parse_with(&env, dir.path(), &cred("nope")).unwrap_err();
    assert!(
        err.to_string().contains("cannot open") && err.to_string().contains("/nope"),
        "{err}"
    );
    let err = parse_with(&env, dir.path(), &cred(".")).unwrap_err();
    assert!(
        err.to_string()
            .contains("is a directory, not a regular file"),
        "{err}"
    );

    let sdk = with_credential("    sdk_auth_file: { path: shared }");
    let err = parse_with(&env, dir.path(), &sdk).unwrap_err();
    assert!(
        err.to_string().contains("sdk_auth_file.path: ") && err.to_string().contains("(mode 0644)"),
        "{err}"
    );
    assert_no_canary(&err);
    assert_eq!(
        problems(&with_credential("    sdk_auth_file: {}")),
        ["credentials.sp.sdk_auth_file.path: required key is missing"]
    );
}

/// Runs `f` on a thread; fails the test if it has not returned within 10 s (a hang guard, not a timing).
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("loading the configuration blocked")
}

#[test]
fn fifos_and_devices_are_refused_without_blocking_naming_the_key() {
    let dir = TempDir::new();
    let fifo = dir.path().join("fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let shown = fifo.display().to_string();
    let cases = [
        (
            with_credential(
                "    client_secret: { tenant_id: t, client_id: c, client_secret_file: fifo }",
            ),
            "credentials.sp.client_secret.client_secret_file",
        ),
        (
            with_credential(
                "    client_certificate: { tenant_id: t, client_id: c, certificate_file: fifo }",
            ),
            "credentials.sp.client_certificate.certificate_file",
        ),
        (
            with_credential("    sdk_auth_file: { path: fifo }"),
            "credentials.sp.sdk_auth_file.path",
        ),
        (
            with_defaults("tls: { extra_ca_file: fifo }"),
            "tls.extra_ca_file",
        ),
    ];
    for (text, key) in cases {
        let base = dir.path().to_path_buf();
        let err = within(move || {
            parse_with(&MapEnv::new(), &base, &text).expect_err("a FIFO was accepted")
        });
        let problems: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [format!(
                "{key}: {shown} is a FIFO (named pipe), not a regular file"
            )]
        );
    }
    // /dev/zero would never end; /dev/null would read as empty: both are refused as devices.
    for device in ["/dev/zero", "/dev/null"] {
        let text = with_credential(&format!(
            "    client_secret: {{ tenant_id: t, client_id: c, client_secret_file: {device} }}"
        ));
        let err = within(move || parse_env(&MapEnv::new(), &text).unwrap_err());
        assert!(
            err.to_string().contains(&format!(
                "{device} is a character device, not a regular file"
            )),
            "{err}"
        );
    }
    // The configuration file itself.
    let err = within(move || load(&fifo, &MapEnv::new()).unwrap_err());
    assert_eq!(err.file.as_deref(), Some(Path::new(&shown)));
    assert!(
        err.to_string().contains(&format!(
            "{shown} is a FIFO (named pipe), not a regular file"
        )),
        "{err}"
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
fn secret_files_follow_symlinks() {
    let dir = TempDir::new();
    dir.file("real", "value\n", 0o600);
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
    let text = with_credential(
        "    client_secret: { tenant_id: t, client_id: c, client_secret_file: link }",
    );
    let config = parse_with(&MapEnv::new(), dir.path(), &text).unwrap();
    match &config.credentials["sp"] {
        CredentialOptions::ClientSecret(s) => assert_eq!(s.client_secret.expose(), "value"),
        other => panic!("{other:?}"),
    }
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
            "    path_prefix: /\n    upstream: \"https://u:canary-SECRET-7f3a9c@h\"\n    scope: s",
        ),
        with_route(
            "    path_prefix: /\n    upstream: \"https://h/?sig=canary-SECRET-7f3a9c\"\n    scope: s",
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

/// A secret put in the wrong key through `${VAR}` (or `AZURE_AUTHORITY_HOST`) is never shown: problems name the
/// variable instead, whatever the validator would have quoted.
#[test]
fn values_from_the_environment_are_never_shown_in_problems() {
    let placements = [
        (
            "upstream",
            with_route("    path_prefix: /\n    upstream: \"${SECRET}\"\n    scope: s"),
        ),
        (
            "upstream host",
            with_route("    path_prefix: /\n    upstream: \"https://${SECRET}:0/x\"\n    scope: s"),
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
                "    path_prefix: /\n    upstream: https://h\n    scope: s\n    credential: \"${SECRET}\"",
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

#[test]
fn credential_kinds_exactly_one() {
    assert_eq!(
        problems(&with_credential("    {}")),
        [
            "credentials.sp: needs exactly one of: client_secret, client_certificate, workload_identity, managed_identity, azure_cli, device_code, sdk_auth_file, chain"
        ]
    );
    assert_eq!(
        problems(&with_credential(
            "    azure_cli: {}\n    managed_identity: {}"
        )),
        ["credentials.sp: has more than one kind (azure_cli, managed_identity); give exactly one"]
    );
    assert_eq!(
        problems(&with_credential("    azure_cli: 1")),
        ["credentials.sp.azure_cli: expected a mapping, got a number"]
    );
    let p = problems(
        "credentials:\n  bad name:\n    azure_cli: {}\n  ok:\n    azure_cli:\nroutes:\n  - { name: r, path_prefix: /, upstream: https://h, scope: s, credential: ok }",
    );
    assert_eq!(
        p,
        ["credentials.bad name: invalid name \"bad name\": use letters, digits, `_`, `.` and `-`"]
    );
}

#[test]
fn empty_and_null_bodies_are_empty_mappings() {
    for body in [
        "workload_identity:",
        "workload_identity: {}",
        "managed_identity:",
        "managed_identity: {}",
        "azure_cli:",
    ] {
        let config = parse_env(
            &MapEnv::new().with("HOME", "/h"),
            &with_credential(&format!("    {body}")),
        )
        .unwrap_or_else(|e| panic!("{body}: {e}"));
        match &config.credentials["sp"] {
            CredentialOptions::WorkloadIdentity(w) => assert_eq!(w, &Default::default()),
            CredentialOptions::ManagedIdentity(m) => assert_eq!(m, &Default::default()),
            CredentialOptions::AzureCli(c) => assert_eq!(c.timeout, Duration::from_secs(10)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn client_secret_and_certificate_rules() {
    assert_eq!(
        problems(&with_credential("    client_secret: { client_id: c }")),
        [
            "credentials.sp.client_secret.tenant_id: required key is missing",
            "credentials.sp.client_secret: needs `client_secret` or `client_secret_file`",
        ]
    );
    assert_eq!(
        problems(&with_credential(
            "    client_secret: { tenant_id: \"invalid_tenant@id\", client_id: \"a b\", client_secret: x }"
        )),
        [
            "credentials.sp.client_secret.tenant_id: invalid tenant id \"invalid_tenant@id\": use letters, digits, `.` and `-`",
            "credentials.sp.client_secret.client_id: \"a b\" must not contain whitespace",
        ]
    );
    assert_eq!(
        problems(&with_credential(
            "    client_secret: { tenant_id: t, client_id: c, client_secret: \"\" }"
        )),
        ["credentials.sp.client_secret.client_secret: must not be empty"]
    );
    let dir = TempDir::new();
    dir.file("cert.pem", "x", 0o600);
    dir.file("pw", "x", 0o600);
    let text = with_credential(
        "    client_certificate: { tenant_id: t, client_id: c, certificate_file: cert.pem, password: a, password_file: pw }",
    );
    let err = parse_with(&MapEnv::new(), dir.path(), &text).unwrap_err();
    assert_eq!(
        err.problems[0].to_string(),
        "credentials.sp.client_certificate: give either `password` or `password_file`, not both"
    );
    let text = with_credential(
        "    client_certificate: { tenant_id: t, client_id: c, certificate_file: cert.pem }",
    );
    match &parse_with(&MapEnv::new(), dir.path(), &text)
        .unwrap()
        .credentials["sp"]
    {
        CredentialOptions::ClientCertificate(c) => {
            assert!(c.password.is_none() && !c.send_certificate_chain)
        }
        other => panic!("{other:?}"),
    }
    // The certificate file holds the private key: it is protected like a secret file.
    dir.file("open.pem", "x", 0o644);
    let text = with_credential(
        "    client_certificate: { tenant_id: t, client_id: c, certificate_file: open.pem }",
    );
    let err = parse_with(&MapEnv::new(), dir.path(), &text).unwrap_err();
    assert!(
        err.problems[0]
            .to_string()
            .contains("open.pem is readable by group or others (mode 0644)"),
        "{err}"
    );
}

#[test]
fn managed_identity_cli_device_code_rules() {
    assert_eq!(
        problems(&with_credential(
            "    managed_identity: { client_id: a, resource_id: b }"
        )),
        [
            "credentials.sp.managed_identity: give at most one of `client_id`, `object_id` or `resource_id`"
        ]
    );
    match &ok(&with_credential(
        "    managed_identity: { resource_id: /subscriptions/x/rg }",
    ))
    .credentials["sp"]
    {
        CredentialOptions::ManagedIdentity(m) => {
            assert_eq!(
                m.user_assigned,
                Some(UserAssignedId::ResourceId("/subscriptions/x/rg".to_owned()))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        problems(&with_credential(
            "    azure_cli: { subscription: \"a;rm -rf\", timeout: 0s }"
        )),
        [
            "credentials.sp.azure_cli.subscription: invalid subscription \"a;rm -rf\": use letters, digits, `_`, `.`, `-` and spaces",
            "credentials.sp.azure_cli.timeout: must be greater than zero",
        ]
    );
    assert_eq!(
        problems(&with_credential("    device_code: {}")),
        [
            "credentials.sp.device_code.cache_file: cannot expand ~/.aml-auth-proxy/tokens.json: HOME is not set"
        ]
    );
    let dir = TempDir::new();
    let text = with_credential("    device_code: { cache_file: cache/tokens.json }");
    match &parse_with(&MapEnv::new(), dir.path(), &text)
        .unwrap()
        .credentials["sp"]
    {
        CredentialOptions::DeviceCode(d) => {
            assert_eq!(d.cache_file, dir.path().join("cache/tokens.json"))
        }
        other => panic!("{other:?}"),
    }
    let text = with_credential("    workload_identity: { token_file: ~/token }");
    match &parse_env(&MapEnv::new().with("HOME", "/home/me"), &text)
        .unwrap()
        .credentials["sp"]
    {
        CredentialOptions::WorkloadIdentity(w) => {
            assert_eq!(w.token_file.as_deref(), Some(Path::new("/home/me/token")))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn chains_references_duplicates_and_cycles() {
    let text = "credentials:
  a:
    chain: [b, azure_cli]
  b:
    chain: [environment, c]
  c:
    chain: [a]
  d:
    chain: [d, azure_cli, azure_cli, nosuch]
  e:
    chain: []
  f:
    chain: [e]
routes:
  - { name: r, path_prefix: /, upstream: https://h, scope: s, credential: a }
";
    assert_eq!(
        problems(text),
        [
            "credentials.d.chain[0]: \"d\" is this credential itself",
            "credentials.d.chain[2]: duplicate entry \"azure_cli\"",
            "credentials.d.chain[3]: no credential named \"nosuch\" (built-in sources: environment, workload_identity, managed_identity, azure_cli, device_code)",
            "credentials.e.chain: must not be empty",
            "credentials.a.chain: chain cycle: a -> b -> c -> a",
        ]
    );
    let nested = "credentials:
  inner:
    chain: [managed_identity]
  default:
    chain: [inner, azure_cli]
  sp:
    managed_identity: {}
  other:
    chain: [inner, sp]
routes:
  - { name: r, path_prefix: /, upstream: https://h, scope: s }
";
    let config = ok(nested);
    assert!(matches!(&config.credentials["other"], CredentialOptions::Chain(c) if c.len() == 2));
}

#[test]
fn route_credentials_default_and_pass_through() {
    let no_default = "credentials:
  sp:
    azure_cli: {}
routes:
  - { name: a, path_prefix: /, upstream: https://h, scope: s }
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
        "{CREDS}routes:\n  - {{ name: p, path_prefix: /, upstream: https://h, scope: s, pass_through_authorization: true }}\n"
    );
    assert_eq!(ok(&text).routes[0].credential.as_deref(), Some("default"));
}

#[test]
fn route_names_prefixes_and_duplicates() {
    let text = format!(
        "{CREDS}routes:
  - {{ name: a, path_prefix: /x/, upstream: https://h, scope: s }}
  - {{ name: a, path_prefix: /y, upstream: https://h, scope: s }}
  - {{ name: b, path_prefix: /x, upstream: https://h, scope: s }}
  - {{ name: c, path_prefix: /x, host: API.example, upstream: https://h, scope: s }}
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
            "    path_prefix: \"{prefix}\"\n    upstream: https://h\n    scope: s"
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
            "{CREDS}routes:\n  - {{ path_prefix: /, scope: s }}\n  - x\n"
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
    let base = "    path_prefix: /\n    upstream: https://h\n    scope: s\n";
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
    let base = "    path_prefix: /\n    upstream: https://h\n    scope: s\n";
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

#[test]
fn anchors_and_merge_keys() {
    let text = format!(
        "{CREDS}routes:
  - &arm {{ name: arm, path_prefix: /, upstream: https://h, scope: s }}
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
    assert_eq!(second.scope.as_deref(), Some("s"));
}

#[test]
fn home_relative_secret_file() {
    let dir = TempDir::new();
    dir.file("secret", "from-home", 0o600);
    let env = MapEnv::new().with("HOME", dir.path().display().to_string());
    let text = with_credential(
        "    client_secret: { tenant_id: t, client_id: c, client_secret_file: ~/secret }",
    );
    match &parse_env(&env, &text).unwrap().credentials["sp"] {
        CredentialOptions::ClientSecret(s) => assert_eq!(s.client_secret.expose(), "from-home"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        problems(&text),
        [
            "credentials.sp.client_secret.client_secret_file: cannot expand ~/secret: HOME is not set"
        ]
    );
}

#[test]
fn credential_names_may_not_shadow_built_in_chain_sources() {
    let text = "credentials:\n  azure_cli:\n    azure_cli: {}\nroutes:\n  - name: a\n    path_prefix: /\n    upstream: https://management.azure.com\n    scope: https://management.azure.com/.default\n    credential: azure_cli\n";
    let e = from_yaml_str(text, &MapEnv::new(), ConfigOrigin::BuiltIn, Path::new("/")).unwrap_err();
    assert!(
        e.to_string().contains(
            "credentials.azure_cli: \"azure_cli\" is the name of a built-in chain source"
        ),
        "{e}"
    );
}

#[test]
fn upstreams_may_not_be_link_local() {
    for upstream in [
        "https://169.254.169.254",
        "https://[fe80::1]:8443/x",
        "https://[::ffff:169.254.169.254]",
        "https://[::ffff:a9fe:a9fe]",
        "https://[64:ff9b::a9fe:a9fe]",
    ] {
        let text = format!(
            "credentials:\n  sp:\n    azure_cli: {{}}\nroutes:\n  - name: a\n    path_prefix: /\n    upstream: {upstream}\n    scope: https://management.azure.com/.default\n    credential: sp\n"
        );
        let e = from_yaml_str(&text, &MapEnv::new(), ConfigOrigin::BuiltIn, Path::new("/"))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("routes[0].upstream: must not be a link-local address"),
            "{e}"
        );
    }
}

#[test]
fn numeric_spellings_of_imds_are_refused_for_every_url_key() {
    for host in [
        "0xa9fea9fe",
        "2852039166",
        "169.254.43518",
        "0251.0376.0251.0376",
    ] {
        let text = format!(
            "authority_host: https://{host}
credentials:
  mi:
    managed_identity: {{ endpoint: \"http://{host}/metadata/identity/oauth2/token\" }}
routes:
  - name: a
    path_prefix: /
    upstream: https://{host}
    scope: https://management.azure.com/.default
    credential: mi
"
        );
        let p = problems(&text);
        assert_eq!(p.len(), 3, "{p:?}");
        for (problem, key) in p.iter().zip([
            "authority_host",
            "credentials.mi.managed_identity.endpoint",
            "routes[0].upstream",
        ]) {
            assert!(
                problem.starts_with(&format!(
                    "{key}: \"{host}\" is not an IP address as written"
                )),
                "{problem}"
            );
        }
    }
    // IMDS itself, written as IMDS is written, stays a valid managed-identity endpoint.
    let config = ok(&format!(
        "{}credentials:\n  mi:\n    managed_identity: {{ endpoint: \"http://169.254.169.254/metadata/identity/oauth2/token\" }}\n",
        ARM_ROUTE.replace("    scope:", "    credential: mi\n    scope:")
    ));
    assert_eq!(config.credentials.len(), 1);
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
    dir.file("key", &format!("{CALLER_KEY}\n"), 0o600);
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
