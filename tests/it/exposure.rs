//! Who may connect: any process that can reach the listener can use the proxy's Azure
//! identity. So a non-loopback `listen` is refused unless `expose: true` *and* `caller_auth` are set (also when
//! it comes from `--listen`); `caller_auth` refuses requests without the key before any route, token or upstream
//! is touched, and the key never travels on or into a log; a `unix:` listener is a 0600 socket whose peers' uids
//! are checked, replaces a stale socket file and removes its own on shutdown.

// clippy's `allow-*-in-tests` covers `#[test]` functions only, not the helpers of an integration-test crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a broken expectation must fail the test loudly"
)]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aml_auth_proxy::app::{App, AppOptions};
use aml_auth_proxy::config::{self, ConfigOrigin};
use aml_auth_proxy::env::MapEnv;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::support::process::{
    ClosedPort, EXIT_TIMEOUT, Output, RunningProxy, check_config, command, free_addr, run_to_end,
};
use crate::support::proxy::{CANARY_SECRET, TempDir, TestProxy, World};
use crate::support::{BoxError, expect_proxy_error, get, json_body, request, trace_init};

/// The caller key: a canary that must never appear in any output or reach the upstream.
const KEY: &str = "caller-key-canary-3f9d0c2e41b7";
/// A wrong key a caller sends: must not be logged either.
const WRONG_KEY: &str = "wrong-key-canary-8a7b6c5d4e3f";
const KEY_HEADER: &str = "x-aml-auth-proxy-key";

/// A minimal valid configuration without listen addresses (no network needed to check it).
const MINIMAL: &str = "credentials:
  default:
    chain: [environment]
routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
    credential: default
";

#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.code(), Some(code), "unexpected exit: {out:#?}");
}

/// Writes the caller key to a 0600 file and returns the `caller_auth` block using it.
fn caller_auth(dir: &TempDir) -> String {
    let file = dir.file("caller-key", &format!("{KEY}\n"), 0o600);
    format!("caller_auth:\n  secret_file: {}\n", file.display())
}

/// The uid this test runs as (the owner of a file it creates).
fn our_uid(dir: &TempDir) -> u32 {
    dir.file("whoami", "", 0o600).metadata().unwrap().uid()
}

/// A configuration for `world` with one `client_secret` credential in tenant `tenant` and one route `/`.
fn world_config(world: &World, tenant: &str, extra: &str) -> String {
    format!(
        "{extra}{}",
        world.config(&World::sp("sp", tenant), &world.route("arm", "/", "sp", ""))
    )
}

// === the binary refuses to expose itself ===

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_a_non_loopback_listen_flag_without_expose() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let port = free_addr().port();
    let file = dir.file(
        "config.yaml",
        &format!("admin_listen: {}\n{MINIMAL}", free_addr()),
        0o600,
    );
    for (flag, value) in [
        ("--listen", format!("0.0.0.0:{port}")),
        ("--listen", format!("[::]:{port}")),
    ] {
        let mut cmd = command(dir.path(), &imds);
        cmd.arg("run")
            .arg("--config")
            .arg(&file)
            .arg(flag)
            .arg(&value);
        let out = run_to_end(cmd).await;
        assert_exit(&out, 64);
        assert!(out.stdout.is_empty(), "{out:#?}");
        assert!(
            out.stderr
                .contains(&format!("--listen: {value} is not a loopback address"))
                && out.stderr.contains("`expose: true`")
                && out.stderr.contains("`caller_auth`"),
            "{out:#?}"
        );
    }
    // The same through the environment, with the built-in default (no file).
    let mut cmd = command(dir.path(), &imds);
    cmd.env("AML_AUTH_PROXY_LISTEN", format!("0.0.0.0:{port}"));
    let out = run_to_end(cmd).await;
    assert_exit(&out, 64);
    assert!(out.stderr.contains("is not a loopback address"), "{out:#?}");
    // And the admin port.
    let mut cmd = command(dir.path(), &imds);
    cmd.arg("run")
        .arg("--config")
        .arg(&file)
        .arg("--admin-listen")
        .arg(format!("0.0.0.0:{port}"));
    let out = run_to_end(cmd).await;
    assert_exit(&out, 64);
    assert!(
        out.stderr.contains(&format!(
            "--admin-listen: 0.0.0.0:{port} is not a loopback address"
        )),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_a_non_loopback_listen_in_the_file_and_expose_without_caller_auth() {
    let _trace = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let port = free_addr().port();
    let file = dir.file(
        "exposed.yaml",
        &format!("listen: 0.0.0.0:{port}\n{MINIMAL}"),
        0o600,
    );
    let mut cmd = command(dir.path(), &imds);
    cmd.arg("run").arg("--config").arg(&file);
    let out = run_to_end(cmd).await;
    assert_exit(&out, 64);
    assert!(
        out.stderr
            .contains(&format!("listen: 0.0.0.0:{port} is not a loopback address")),
        "{out:#?}"
    );

    // `expose: true` alone: still refused, naming `caller_auth` — from the file and with the flag.
    let file = dir.file(
        "expose-only.yaml",
        &format!("expose: true\n{MINIMAL}"),
        0o600,
    );
    for args in [
        vec![],
        vec!["--listen".to_owned(), format!("0.0.0.0:{port}")],
    ] {
        let mut cmd = command(dir.path(), &imds);
        cmd.arg("run").arg("--config").arg(&file).args(&args);
        let out = run_to_end(cmd).await;
        assert_exit(&out, 64);
        assert!(
            out.stderr
                .contains("expose: `expose: true` needs `caller_auth`"),
            "{args:?}: {out:#?}"
        );
    }
    // check-config agrees.
    let out = check_config(dir.path(), &imds, &file).await;
    assert_exit(&out, 64);
    assert!(out.stderr.contains("needs `caller_auth`"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_exposed_with_caller_auth_serves_and_never_logs_the_key() {
    let _trace = trace_init();
    let world = World::new().await;
    let imds = ClosedPort::new();
    let yaml = world_config(
        &world,
        "exposed",
        &format!("expose: true\n{}", caller_auth(&world.dir)),
    );
    let file = world.dir.file("config.yaml", &yaml, 0o600);
    let proxy = RunningProxy::start_with(|listen, admin| {
        let mut cmd = command(world.dir.path(), &imds);
        cmd.arg("run")
            .arg("--config")
            .arg(&file)
            .arg("--listen")
            .arg(format!("0.0.0.0:{}", listen.port()))
            .arg("--admin-listen")
            .arg(admin.to_string())
            .env(
                "RUST_LOG",
                "trace,hyper=trace,hyper_util=trace,h2=trace,tower=trace,tower_http=trace",
            );
        (cmd, Some(file.clone()))
    })
    .await;

    let url = proxy.url("/subscriptions?api-version=2022-12-01");
    let refused = request(Method::GET, &url, &[], "").await;
    expect_proxy_error(&refused, StatusCode::UNAUTHORIZED, "CallerNotAuthenticated");
    let wrong = request(Method::GET, &url, &[(KEY_HEADER, WRONG_KEY)], "").await;
    expect_proxy_error(&wrong, StatusCode::UNAUTHORIZED, "CallerNotAuthenticated");
    assert_eq!(world.upstream.count(), 0);
    let (status, _, body) = request(Method::GET, &url, &[(KEY_HEADER, KEY)], "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(!String::from_utf8_lossy(&body).contains(KEY));
    // Probes need no key.
    assert_eq!(get(&proxy.admin_url("/healthz")).await.0, StatusCode::OK);

    let out = proxy.stop().await;
    assert_exit(&out, 0);
    assert!(
        out.stderr.contains("listening beyond loopback"),
        "the exposure is logged: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("\"level\":\"TRACE\""),
        "the child did not log at trace level"
    );
    for canary in [KEY, WRONG_KEY, CANARY_SECRET] {
        assert!(
            !out.all().contains(canary),
            "{canary} appears in the output at trace level"
        );
    }
    assert_eq!(world.upstream.count(), 1);
    for r in world.upstream.requests() {
        assert!(!r.headers.contains_key(KEY_HEADER), "{:?}", r.headers);
    }
}

// === caller authentication, in process ===

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_the_right_key_are_refused_before_any_token_or_upstream_use() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = TestProxy::start(&world_config(&world, "callers", &caller_auth(&world.dir))).await;
    proxy.wait_ready().await;
    let fetched = world.aad.total_count();
    let url = proxy.url("/subscriptions?api-version=2022-12-01");

    let cases: [(&str, &[(&str, &str)]); 6] = [
        ("no key", &[]),
        ("wrong key", &[(KEY_HEADER, WRONG_KEY)]),
        ("empty key", &[(KEY_HEADER, "")]),
        ("key prefix", &[(KEY_HEADER, &KEY[..KEY.len() - 1])]),
        ("key in another header", &[("x-api-key", KEY)]),
        ("key twice", &[(KEY_HEADER, KEY), (KEY_HEADER, KEY)]),
    ];
    for (what, headers) in cases {
        let answer = request(Method::POST, &url, headers, "{}").await;
        let error = expect_proxy_error(&answer, StatusCode::UNAUTHORIZED, "CallerNotAuthenticated");
        assert_eq!(
            answer.1.get("www-authenticate").unwrap(),
            "AmlAuthProxyKey header=\"x-aml-auth-proxy-key\"",
            "{what}"
        );
        let text = error.to_string();
        assert!(
            !text.contains(KEY) && !text.contains(WRONG_KEY),
            "{what}: {text}"
        );
    }
    // Refused first: a foreign Host or an unknown path without the key reveals nothing about hosts or routes.
    let foreign = request(Method::GET, &url, &[("host", "evil.example")], "").await;
    expect_proxy_error(&foreign, StatusCode::UNAUTHORIZED, "CallerNotAuthenticated");

    assert_eq!(
        world.upstream.count(),
        0,
        "a refused request reached the upstream"
    );
    assert_eq!(
        world.aad.total_count(),
        fetched,
        "a refused request caused a token request"
    );

    // The admin listener asks for no key (probes), but keeps its Host check.
    assert_eq!(get(&proxy.admin_url("/readyz")).await.0, StatusCode::OK);
    let admin_foreign = request(
        Method::GET,
        &proxy.admin_url("/metrics"),
        &[("host", "evil.example")],
        "",
    )
    .await;
    expect_proxy_error(
        &admin_foreign,
        StatusCode::MISDIRECTED_REQUEST,
        "HostNotAllowed",
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_right_key_is_accepted_and_never_forwarded() {
    let _trace = trace_init();
    let world = World::new().await;
    let dir = TempDir::new();
    let key_file = dir.file("team-key", KEY, 0o600);
    let extra = format!(
        "caller_auth: {{ header: X-Team-Key, secret_file: {} }}\n",
        key_file.display()
    );
    let proxy = TestProxy::start(&world_config(&world, "callers", &extra)).await;

    let url = proxy.url("/subscriptions?api-version=2022-12-01");
    let (status, _, body) = request(Method::GET, &url, &[("X-Team-Key", KEY)], "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let echo = json_body(&body);
    let seen = echo["headers"].as_object().unwrap();
    assert!(
        !seen.contains_key("x-team-key"),
        "the upstream saw the key: {echo}"
    );
    assert!(!echo.to_string().contains(KEY), "{echo}");
    // The default header name means nothing here.
    let answer = request(Method::GET, &url, &[(KEY_HEADER, KEY)], "").await;
    expect_proxy_error(&answer, StatusCode::UNAUTHORIZED, "CallerNotAuthenticated");

    let requests = world.upstream.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.rejection, None, "the upstream got a valid token");
    assert!(r.token.is_some());
    for (name, value) in &r.headers {
        assert!(
            !String::from_utf8_lossy(value.as_bytes()).contains(KEY),
            "the key reached the upstream in {name}"
        );
    }
    proxy.stop().await;
}

// === Unix-domain socket ===

/// Sends `req` over a fresh connection to the socket at `path`.
async fn uds_request(
    path: &Path,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, HeaderMap, Bytes), BoxError> {
    let exchange = async {
        let stream = UnixStream::connect(path).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, BoxError>((parts.status, parts.headers, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| -> BoxError { "request over the Unix socket timed out".into() })?
}

/// `GET path` with `Host: localhost`, as `curl --unix-socket` sends it.
fn get_request(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Whether a connection to the socket is closed without an HTTP answer.
async fn connection_is_closed(path: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(path).await else {
        return true;
    };
    let head = "GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return true;
    }
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(n)) => n == 0,
        Ok(Err(_)) => true,
        Err(_) => panic!("the connection was neither answered nor closed"),
    }
}

fn socket_in(dir: &TempDir) -> PathBuf {
    dir.path().join("proxy.sock")
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_is_0600_reaches_the_upstream_with_a_token_and_is_removed_on_shutdown() {
    let _trace = trace_init();
    let world = World::new().await;
    let dir = TempDir::new();
    let socket = socket_in(&dir);
    let extra = format!("listen: unix:{}\n", socket.display());
    let proxy = TestProxy::start(&world_config(&world, "uds", &extra)).await;
    assert_eq!(proxy.socket_path(), socket);

    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), our_uid(&dir));

    let (status, _, body) = uds_request(
        &socket,
        get_request("/subscriptions?api-version=2022-12-01"),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let r = world.upstream.last_request().unwrap();
    assert_eq!(r.path, "/subscriptions");
    assert_eq!(r.rejection, None);
    let token = r.token.expect("the upstream got a token");
    assert!(world.aad.registry().is_valid(&token));

    // The Host check holds over the socket too.
    let foreign = Request::get("/x")
        .header("host", "evil.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = uds_request(&socket, foreign).await.unwrap();
    expect_proxy_error(&answer, StatusCode::MISDIRECTED_REQUEST, "HostNotAllowed");

    proxy.stop().await;
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "the socket file is still there after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_closes_connections_from_uids_not_allowed() {
    let _trace = trace_init();
    let world = World::new().await;
    let dir = TempDir::new();
    let uid = our_uid(&dir);
    let socket = socket_in(&dir);

    // A list without our uid: our own connection is closed at once, nothing reaches the upstream.
    let other = uid.wrapping_add(1);
    let extra = format!(
        "listen: unix:{}\nunix_allowed_uids: [{other}]\n",
        socket.display()
    );
    let proxy = TestProxy::start(&world_config(&world, "uds", &extra)).await;
    assert!(connection_is_closed(&socket).await);
    assert!(uds_request(&socket, get_request("/x")).await.is_err());
    assert_eq!(world.upstream.count(), 0);
    proxy.stop().await;

    // A list with it: served.
    let extra = format!(
        "listen: unix:{}\nunix_allowed_uids: [{other}, {uid}]\n",
        socket.display()
    );
    let proxy = TestProxy::start(&world_config(&world, "uds", &extra)).await;
    let (status, _, _) = uds_request(&socket, get_request("/x")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(world.upstream.count(), 1);
    proxy.stop().await;
}

/// Binds an app for `yaml` and returns the start-up error.
async fn bind_error(yaml: &str) -> String {
    let text = format!("admin_listen: 127.0.0.1:0\n{yaml}");
    let env = MapEnv::new();
    let config = config::from_yaml_str(&text, &env, ConfigOrigin::BuiltIn, Path::new("/")).unwrap();
    match App::bind(config, AppOptions::new(Arc::new(env))).await {
        Ok(app) => panic!("the app started: {app:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_replaces_a_stale_socket_but_nothing_else() {
    let _trace = trace_init();
    let world = World::new().await;
    let dir = TempDir::new();
    let socket = socket_in(&dir);
    let yaml = world_config(
        &world,
        "uds",
        &format!("listen: unix:{}\n", socket.display()),
    );

    // A socket file nobody listens on (a crashed proxy's) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(
        std::fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    let proxy = TestProxy::start(&yaml).await;
    let (status, _, _) = uds_request(&socket, get_request("/x")).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // A live socket is not taken over: a second proxy on the same path fails, and the first keeps serving.
    let e = bind_error(&yaml).await;
    assert!(
        e.contains(&format!("cannot listen on unix:{}", socket.display()))
            && e.contains("another process is listening"),
        "{e}"
    );
    let (status, _, _) = uds_request(&socket, get_request("/x")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    proxy.stop().await;

    // Anything that is not a socket is left alone.
    let file = dir.file("proxy.sock", "not a socket", 0o600);
    let e = bind_error(&yaml).await;
    assert!(e.contains("is not a socket; refusing to replace it"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a socket");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_listens_on_a_unix_socket_from_the_command_line() {
    let _trace = trace_init();
    let world = World::new().await;
    let imds = ClosedPort::new();
    let socket = socket_in(&world.dir);
    let file = world
        .dir
        .file("config.yaml", &world_config(&world, "uds", ""), 0o600);
    let proxy = RunningProxy::start_with(|_, admin| {
        let mut cmd = command(world.dir.path(), &imds);
        cmd.arg("run")
            .arg("--config")
            .arg(&file)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--admin-listen")
            .arg(admin.to_string());
        (cmd, Some(file.clone()))
    })
    .await;
    let mode = std::fs::symlink_metadata(&socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    let (status, _, body) = uds_request(
        &socket,
        get_request("/subscriptions?api-version=2022-12-01"),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(world.upstream.last_request().unwrap().token.is_some());
    let out = proxy.stop().await;
    assert_exit(&out, 0);
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "the socket file is still there after exit"
    );

    // A relative socket path is a usage error.
    let mut cmd = command(world.dir.path(), &imds);
    cmd.arg("run")
        .arg("--config")
        .arg(&file)
        .arg("--listen")
        .arg("unix:proxy.sock");
    let out = tokio::time::timeout(EXIT_TIMEOUT, run_to_end(cmd))
        .await
        .unwrap();
    assert_exit(&out, 64);
    assert!(out.stderr.contains("must be absolute"), "{out:#?}");
}
