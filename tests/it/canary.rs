//! The canary: the client secret, every token Entra ID issued, and a caller's own bearer token must never
//! appear in the binary's output, in any answer the proxy gives, or in a metrics scrape — even at trace level.
//! Also: `run` keeps stdout empty, logs are JSON lines when stderr is not a terminal, and
//! there is exactly one access line per request, with the path but never the query string.

// clippy's `allow-*-in-tests` covers `#[test]` functions only, not the helpers of an integration-test crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a broken expectation must fail the test loudly"
)]

use aml_auth_proxy::auth::{EnvironmentCredential, TokenRequest, build_credentials};
use aml_auth_proxy::config::{self, ConfigOrigin};
use aml_auth_proxy::env::MapEnv;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::support::process::{ClosedPort, Output, RunningProxy};
use crate::support::proxy::{CANARY_SECRET, CLIENT_ID, TempDir, World};
use crate::support::{ARM_SCOPE, Behavior, MockAad, entra_client, request, trace_init};

/// A caller's own bearer token: replaced by the proxy, never forwarded, echoed or logged.
const CALLER_TOKEN: &str = "caller-canary-token";
/// A query-string value: access lines carry the path only.
const QUERY_CANARY: &str = "query-canary-4b1d";
const CA_FIXTURE: &str = "aad_error_53003_blocked_by_conditional_access.json";

/// How the child is asked to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Logging {
    /// `RUST_LOG=trace`, default format (JSON: stderr is a pipe).
    RustLogTrace,
    /// `--log-level trace --log-format text`.
    FlagsTraceText,
    /// `RUST_LOG` at trace for the HTTP and TLS crates too (JSON).
    EverythingTrace,
}

/// One request the test makes through the proxy, and what its access line must say.
struct Call {
    method: Method,
    path_and_query: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    status: StatusCode,
    /// The route the access line names; `None` for an unrouted request (any name).
    route: Option<&'static str>,
    /// The upstream's JSON echo of the request (which by design shows the headers the upstream saw).
    echo: bool,
    /// The tenant whose token the upstream must have seen.
    tenant: Option<&'static str>,
}

impl Call {
    fn path(&self) -> &'static str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query, |(p, _)| p)
    }
}

const CALLER_AUTH: (&str, &str) = ("authorization", "Bearer caller-canary-token");
const CALLER_PROXY_AUTH: (&str, &str) = ("proxy-authorization", "Bearer caller-canary-token");

const CALLS: [Call; 6] = [
    Call {
        method: Method::GET,
        path_and_query: "/arm/subscriptions/abc?api-version=2024-04-01&q=query-canary-4b1d",
        headers: &[],
        body: "",
        status: StatusCode::OK,
        route: Some("arm"),
        echo: true,
        tenant: Some("canary-inline"),
    },
    Call {
        method: Method::GET,
        path_and_query: "/arm/caller?api-version=2024-04-01",
        headers: &[CALLER_AUTH, CALLER_PROXY_AUTH],
        body: "",
        status: StatusCode::OK,
        route: Some("arm"),
        echo: true,
        tenant: Some("canary-inline"),
    },
    Call {
        method: Method::POST,
        path_and_query: "/files/jobs?api-version=2024-04-01",
        headers: &[CALLER_AUTH, ("content-type", "application/json")],
        body: "{\"job\":1}",
        status: StatusCode::OK,
        route: Some("files"),
        echo: true,
        tenant: Some("canary-file"),
    },
    Call {
        method: Method::GET,
        path_and_query: "/blocked/workspaces?api-version=2024-04-01",
        headers: &[CALLER_AUTH],
        body: "",
        status: StatusCode::FORBIDDEN,
        route: Some("blocked"),
        echo: false,
        tenant: None,
    },
    Call {
        method: Method::GET,
        path_and_query: "/no-such-route/x?q=query-canary-4b1d",
        headers: &[CALLER_AUTH],
        body: "",
        status: StatusCode::NOT_FOUND,
        route: None,
        echo: false,
        tenant: None,
    },
    Call {
        method: Method::GET,
        path_and_query: "/arm/stream?chunks=3&interval_ms=10",
        headers: &[CALLER_AUTH],
        body: "",
        status: StatusCode::OK,
        route: Some("arm"),
        echo: false,
        tenant: Some("canary-inline"),
    },
];

/// Everything the test received, to be searched for canaries.
#[derive(Default)]
struct Received {
    /// (what, text) pairs: bodies and rendered header maps.
    items: Vec<(String, String)>,
}

impl Received {
    fn headers(&mut self, what: &str, headers: &HeaderMap) {
        let text: String = headers
            .iter()
            .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        self.items.push((format!("{what} headers"), text));
    }

    fn body(&mut self, what: &str, body: &Bytes) {
        self.items.push((
            format!("{what} body"),
            String::from_utf8_lossy(body).into_owned(),
        ));
    }
}

/// Asserts none of `forbidden` occurs in `text`.
#[track_caller]
fn assert_clean(what: &str, text: &str, forbidden: &[String]) {
    for f in forbidden {
        assert!(!text.contains(f.as_str()), "{what} contains {f:?}:\n{text}");
    }
}

async fn canary_run(logging: Logging) {
    let world = World::new().await;
    world.aad.set_behavior(
        "cablocked",
        Behavior::fixture(StatusCode::BAD_REQUEST, CA_FIXTURE),
    );
    let imds = ClosedPort::new();
    let secret_file = world
        .dir
        .file("sp-secret", &format!("{CANARY_SECRET}\n"), 0o600);
    let credentials = format!(
        "{}  filesp:\n    client_secret: {{ tenant_id: canary-file, client_id: {CLIENT_ID}, client_secret_file: {} }}\n{}",
        World::sp("sp", "canary-inline"),
        secret_file.display(),
        World::sp("blocked", "cablocked"),
    );
    let routes = format!(
        "{}{}{}",
        world.route("arm", "/arm", "sp", ""),
        world.route("files", "/files", "filesp", ""),
        world.route("blocked", "/blocked", "blocked", ""),
    );
    let yaml = world.config(&credentials, &routes);
    let (args, env): (&[&str], &[(&str, &str)]) = match logging {
        Logging::RustLogTrace => (&[], &[("RUST_LOG", "trace")]),
        Logging::FlagsTraceText => (&["--log-level", "trace", "--log-format", "text"], &[]),
        Logging::EverythingTrace => (
            &[],
            &[(
                "RUST_LOG",
                "trace,hyper=trace,hyper_util=trace,h2=trace,rustls=trace,tower=trace,tower_http=trace",
            )],
        ),
    };
    let proxy = RunningProxy::start(&world.dir, &imds, &yaml, args, env).await;

    let mut received = Received::default();
    let mut echoes = Vec::new();
    for call in &CALLS {
        let (status, headers, body) = request(
            call.method.clone(),
            &proxy.url(call.path_and_query),
            call.headers,
            call.body,
        )
        .await;
        let what = format!("{} {}", call.method, call.path_and_query);
        assert_eq!(
            status,
            call.status,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
        received.headers(&what, &headers);
        if call.echo {
            echoes.push((call, body));
        } else {
            received.body(&what, &body);
        }
    }
    for path in ["/metrics", "/readyz", "/healthz"] {
        let (status, headers, body) = request(Method::GET, &proxy.admin_url(path), &[], "").await;
        assert!(
            status == StatusCode::OK
                || (path == "/readyz" && status == StatusCode::SERVICE_UNAVAILABLE),
            "{path}: {status}"
        );
        received.headers(path, &headers);
        received.body(path, &body);
    }
    let metrics = received
        .items
        .iter()
        .find(|(w, _)| w == "/metrics body")
        .map(|(_, t)| t.clone())
        .unwrap();
    assert!(metrics.contains("aml_auth_proxy_"), "{metrics}");

    let out = proxy.stop().await;
    assert_eq!(
        out.code(),
        Some(0),
        "{logging:?}: unclean exit: {}",
        out.stderr
    );

    // The canaries: the secret, every token the mock issued, the caller's token.
    let registry = world.aad.registry();
    let issued: Vec<String> = registry.all().into_iter().map(|t| t.token).collect();
    assert!(!issued.is_empty(), "the mock issued no token");
    let mut forbidden: Vec<String> = vec![CANARY_SECRET.to_owned(), CALLER_TOKEN.to_owned()];
    forbidden.extend(issued.iter().cloned());

    assert_clean(
        &format!("{logging:?} stdout+stderr"),
        &out.all(),
        &forbidden,
    );
    for (what, text) in &received.items {
        assert_clean(what, text, &forbidden);
    }
    assert_clean("metrics scrape", &metrics, &forbidden);

    // Upstream echoes show what the upstream saw: the minted token, never the caller's.
    for (call, body) in &echoes {
        let echo: Value = serde_json::from_slice(body).unwrap();
        let seen = echo["headers"].as_object().unwrap();
        for (name, value) in seen {
            assert!(
                !value.to_string().contains(CALLER_TOKEN),
                "{}: the upstream saw the caller's token in {name}: {value}",
                call.path_and_query
            );
        }
        assert!(
            !seen.contains_key("proxy-authorization"),
            "Proxy-Authorization was forwarded: {echo}"
        );
        let token = echo["token"].as_str().unwrap();
        assert_eq!(seen["authorization"], format!("Bearer {token}"));
        let minted = registry
            .get(token)
            .unwrap_or_else(|| panic!("the upstream saw a token the mock never issued: {token}"));
        assert_eq!(Some(minted.tenant.as_str()), call.tenant, "{echo}");
        assert!(
            !body
                .windows(CANARY_SECRET.len())
                .any(|w| w == CANARY_SECRET.as_bytes())
        );
    }
    for r in world.upstream.requests() {
        assert_eq!(
            r.rejection, None,
            "{} reached the upstream with a bad token",
            r.path
        );
        for (name, value) in &r.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(CALLER_TOKEN),
                "{}: the upstream saw the caller's token in {name}",
                r.path
            );
        }
        assert!(!r.path.starts_with("/blocked") && !r.path.starts_with("/no-such-route"));
    }

    // Logs: stderr only; JSON lines unless text was asked for; one access line per request.
    assert!(
        out.stdout.is_empty(),
        "run wrote to stdout:\n{}",
        out.stdout
    );
    match logging {
        Logging::FlagsTraceText => check_text_access_lines(&out),
        Logging::RustLogTrace | Logging::EverythingTrace => check_json_access_lines(&out),
    }
}

/// Every stderr line is a JSON object with a level and a message; the access lines match [`CALLS`] one to one.
fn check_json_access_lines(out: &Output) {
    let mut access = Vec::new();
    for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let record: serde_json::Map<String, Value> = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not a JSON object ({e}): {line}"));
        assert!(record.contains_key("level"), "no level: {line}");
        let target = record
            .get("target")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Every event of the proxy itself has a message (flattened); some dependency events carry only fields.
        if target.starts_with("aml_auth_proxy") {
            assert!(
                record.contains_key("message") || record.contains_key("fields"),
                "no message: {line}"
            );
        }
        if target == "aml_auth_proxy::access" {
            access.push(record);
        }
    }
    assert_eq!(
        access.len(),
        CALLS.len(),
        "one access line per request: {access:#?}"
    );
    for call in &CALLS {
        let matching: Vec<_> = access
            .iter()
            .filter(|r| {
                r["method"] == call.method.as_str()
                    && r["path"] == call.path()
                    && r["status"] == call.status.as_u16()
                    && call.route.is_none_or(|name| r["route"] == name)
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "access lines for {} {}: {access:#?}",
            call.method,
            call.path_and_query
        );
        assert!(matching[0]["route"].is_string(), "{:?}", matching[0]);
    }
    for r in &access {
        let path = r["path"].as_str().unwrap();
        assert!(
            !path.contains('?'),
            "query string in the access line: {r:?}"
        );
        let line = Value::Object(r.clone()).to_string();
        assert!(
            !line.contains(QUERY_CANARY) && !line.contains("api-version"),
            "query string in the access line: {line}"
        );
    }
}

/// Text format: one `aml_auth_proxy::access` line per request, naming its path without the query.
fn check_text_access_lines(out: &Output) {
    assert!(
        out.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "--log-format text produced JSON:\n{}",
        out.stderr
    );
    let access: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("aml_auth_proxy::access"))
        .collect();
    assert_eq!(
        access.len(),
        CALLS.len(),
        "one access line per request: {access:#?}"
    );
    for call in &CALLS {
        let matching = access
            .iter()
            .filter(|l| {
                l.contains(&format!("method={}", call.method))
                    && (l.contains(&format!("path={} ", call.path()))
                        || l.contains(&format!("path=\"{}\"", call.path())))
                    && l.contains(&format!("status={}", call.status.as_u16()))
            })
            .count();
        assert_eq!(
            matching, 1,
            "access lines for {} {}: {access:#?}",
            call.method, call.path_and_query
        );
    }
    for l in &access {
        assert!(
            !l.contains(QUERY_CANARY) && !l.contains("api-version"),
            "query string logged: {l}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_never_leaks_with_rust_log_trace_and_json_logs() {
    let _trace = trace_init();
    canary_run(Logging::RustLogTrace).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_never_leaks_with_log_level_trace_and_text_logs() {
    let _trace = trace_init();
    canary_run(Logging::FlagsTraceText).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_never_leaks_with_http_and_tls_crates_at_trace() {
    let _trace = trace_init();
    canary_run(Logging::EverythingTrace).await;
}

// === Debug of configuration and credential types ===

/// A configuration holding the canary three ways: inline, via `${VAR}`, and in a 0600 file.
fn canary_config(dir: &TempDir) -> (String, MapEnv) {
    let file = dir.file("secret", &format!("{CANARY_SECRET}\n"), 0o600);
    let text = format!(
        "authority_host: http://127.0.0.1:9
credentials:
  inline:
    client_secret: {{ tenant_id: contoso, client_id: {CLIENT_ID}, client_secret: {CANARY_SECRET} }}
  fromenv:
    client_secret: {{ tenant_id: contoso, client_id: {CLIENT_ID}, client_secret: \"${{CANARY_VAR}}\" }}
  fromfile:
    client_secret: {{ tenant_id: contoso, client_id: {CLIENT_ID}, client_secret_file: {} }}
  default:
    chain: [environment, inline, fromenv, fromfile]
routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: {ARM_SCOPE}
    credential: default
",
        file.display()
    );
    let env = MapEnv::new()
        .with("CANARY_VAR", CANARY_SECRET)
        .with("AZURE_TENANT_ID", "contoso")
        .with("AZURE_CLIENT_ID", CLIENT_ID)
        .with("AZURE_CLIENT_SECRET", CANARY_SECRET);
    (text, env)
}

#[test]
fn debug_of_config_and_credentials_never_shows_the_secret() {
    let _trace = trace_init();
    let dir = TempDir::new();
    let (text, env) = canary_config(&dir);
    for origin in [
        ConfigOrigin::BuiltIn,
        ConfigOrigin::File(dir.path().join("config.yaml")),
    ] {
        let config = config::from_yaml_str(&text, &env, origin, dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        // The secret really was loaded, all three ways…
        for name in ["inline", "fromenv", "fromfile"] {
            match &config.credentials[name] {
                aml_auth_proxy::auth::CredentialOptions::ClientSecret(s) => {
                    assert_eq!(s.client_secret.expose(), CANARY_SECRET, "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // …and no Debug rendering shows it.
        for shown in [format!("{config:?}"), format!("{config:#?}")] {
            assert!(!shown.contains(CANARY_SECRET), "{shown}");
            assert!(shown.contains("fromfile"), "{shown}");
        }
        let set = build_credentials(
            config.credentials,
            &env,
            &entra_client(&config.authority_host.to_string()),
        );
        let shown = format!("{set:?} {set:#?}");
        assert!(!shown.contains(CANARY_SECRET), "{shown}");
    }
    let environment = EnvironmentCredential::from_env(
        &env,
        &entra_client(
            &config::from_yaml_str(&text, &env, ConfigOrigin::BuiltIn, dir.path())
                .unwrap()
                .authority_host
                .to_string(),
        ),
    );
    let shown = format!("{environment:?} {environment:#?} {env:?}");
    // Configured: the variables built a client-secret credential, whose secret shows redacted.
    assert!(
        shown.contains("inner: Ok(ClientSecretCredential") && shown.contains("Secret(***)"),
        "{shown}"
    );
    assert!(!shown.contains(CANARY_SECRET), "{shown}");

    // A configuration with problems next to the secret: neither the error's Display nor its Debug shows it.
    let broken = text.replace("tenant_id: contoso", "tenant_id: contoso, bogus: 1");
    let err = config::from_yaml_str(&broken, &env, ConfigOrigin::BuiltIn, dir.path()).unwrap_err();
    let shown = format!("{err} {err:?} {err:#?}");
    assert!(shown.contains("bogus"), "{shown}");
    assert!(!shown.contains(CANARY_SECRET), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_of_tokens_and_token_errors_never_shows_the_token() {
    let _trace = trace_init();
    let aad = MockAad::start().await;
    aad.set_behavior(
        "cablocked",
        Behavior::fixture(StatusCode::BAD_REQUEST, CA_FIXTURE),
    );
    let dir = TempDir::new();
    let text = format!(
        "authority_host: {}
credentials:
  sp:
    client_secret: {{ tenant_id: debugtenant, client_id: {CLIENT_ID}, client_secret: {CANARY_SECRET} }}
  blocked:
    client_secret: {{ tenant_id: cablocked, client_id: {CLIENT_ID}, client_secret: {CANARY_SECRET} }}
routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: {ARM_SCOPE}
    credential: sp
",
        aad.base_url()
    );
    let env = MapEnv::new();
    let config = config::from_yaml_str(&text, &env, ConfigOrigin::BuiltIn, dir.path()).unwrap();
    let set = build_credentials(
        config.credentials,
        &env,
        &entra_client(&config.authority_host.to_string()),
    );
    let token = set
        .get("sp")
        .unwrap()
        .get_token(&TokenRequest::new(ARM_SCOPE))
        .await
        .unwrap();
    let issued = aad.registry().all();
    assert_eq!(issued.len(), 1);
    assert_eq!(token.token.expose(), issued[0].token);
    let shown = format!("{token:?} {token:#?}");
    assert!(!shown.contains(&issued[0].token), "{shown}");

    let err = set
        .get("blocked")
        .unwrap()
        .get_token(&TokenRequest::new(ARM_SCOPE))
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?} {err:#?}");
    assert!(shown.contains("53003"), "{shown}");
    assert!(!shown.contains(CANARY_SECRET), "{shown}");
    let token_error = err.into_token_error();
    let shown = format!("{token_error} {token_error:?}");
    assert!(!shown.contains(CANARY_SECRET), "{shown}");
}
