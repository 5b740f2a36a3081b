//! The proxy under test, in process: `TestProxy::start(yaml)` binds both listeners on 127.0.0.1:0 (unless the
//! YAML sets `listen`, e.g. to a `unix:` socket) and serves until stopped or dropped. `World` bundles the usual mocks (a test CA, a mock Entra ID, a TLS upstream that
//! checks tokens against it) and writes configurations that point at them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aml_auth_proxy::app::{App, AppOptions};
use aml_auth_proxy::config::{self, ConfigOrigin, Listen};
use aml_auth_proxy::env::MapEnv;
use aml_auth_proxy::token_cache::CachePolicy;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{ARM_SCOPE, MockAad, TestCa, Upstream};

/// A client id used by test service principals.
pub(crate) const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// The client secret of test service principals: a canary that must never appear in any output.
pub(crate) const CANARY_SECRET: &str = "canary-SECRET-5d1e0b7a";

/// A route block (an item of `routes:`): `name` on `prefix` → `upstream` (any URL, possibly with a base path),
/// `strip` stripping the prefix, credential `credential`, the ARM scope, then `extra` (further keys, indented four
/// spaces, each line ending in `\n`).
pub(crate) fn route_block(
    name: &str,
    prefix: &str,
    upstream: &str,
    strip: bool,
    credential: &str,
    extra: &str,
) -> String {
    format!(
        "  - name: {name}\n    path_prefix: {prefix}\n    strip_prefix: {strip}\n    upstream: {upstream}\n    scope: {ARM_SCOPE}\n    credential: {credential}\n{extra}"
    )
}

/// A route block `name` on `prefix` → `upstream` (the prefix is not stripped), credential `sp`.
pub(crate) fn route_to(name: &str, prefix: &str, upstream: &str) -> String {
    route_block(name, prefix, upstream, false, "sp", "")
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("aml-auth-proxy-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` with `content` and `mode`, returning its path.
    pub(crate) fn file(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Creates a FIFO (named pipe) `name`, mode 0600, returning its path. Opening it for reading would wait for a
    /// writer forever.
    pub(crate) fn fifo(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        rustix::fs::mkfifoat(rustix::fs::CWD, &p, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        p
    }
}

/// Releases anything blocked reading the FIFO `path` (it sees end of file): a test that found the proxy blocked
/// calls this before failing, so the stuck read cannot also hang the test's runtime on shutdown.
pub(crate) fn release_fifo(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path);
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running proxy.
pub(crate) struct TestProxy {
    /// Where the proxy listens: TCP (see [`TestProxy::addr`]) or a Unix socket ([`TestProxy::socket_path`]).
    pub(crate) listen: Listen,
    pub(crate) admin: SocketAddr,
    /// Where the token service listens, when the configuration has one.
    pub(crate) token_service: Option<Listen>,
    /// Reloads the configuration of the running proxy.
    pub(crate) reloader: aml_auth_proxy::app::Reloader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// Starts the proxy with `yaml` (listen addresses default to 127.0.0.1:0), an empty environment and the
    /// production cache policy.
    pub(crate) async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, MapEnv::new(), CachePolicy::default()).await
    }

    /// Starts the proxy with an environment and cache policy.
    pub(crate) async fn start_with(yaml: &str, env: MapEnv, policy: CachePolicy) -> Self {
        let mut text = String::new();
        if !yaml.contains("\nlisten:") && !yaml.starts_with("listen:") {
            text.push_str("listen: 127.0.0.1:0\n");
        }
        if !yaml.contains("admin_listen:") {
            text.push_str("admin_listen: 127.0.0.1:0\n");
        }
        text.push_str(yaml);
        let config = config::from_yaml_str(&text, &env, ConfigOrigin::BuiltIn, Path::new("/"))
            .unwrap_or_else(|e| panic!("test configuration is invalid: {e}\n{text}"));
        let mut options = AppOptions::new(Arc::new(env));
        options.cache_policy = policy;
        // As `run` serves: the proxy listener on threads of its own.
        options.proxy_threads = std::num::NonZeroUsize::new(2);
        // CI runs the request-path suites a second time with hyper serving every HTTP/1 request, as
        // `--http1-server hyper` does, so that both servers are held to the same rules.
        options.http1_loop = std::env::var("AML_AUTH_PROXY_HTTP1_SERVER").as_deref() != Ok("hyper");
        let app = App::bind(config, options).await.unwrap();
        let (listen, admin, reloader) = (app.proxy_listen(), app.admin_addr(), app.reloader());
        let token_service = app.token_service_listen();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run(
            async {
                let _ = stopped.await;
            },
            std::future::pending(),
        ));
        Self {
            listen,
            admin,
            token_service,
            reloader,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Applies `yaml` to the running proxy, as a SIGHUP reload of a file with that content would (listen
    /// addresses default to 127.0.0.1:0, which a reload leaves as they are).
    pub(crate) async fn reload(&self, yaml: &str) -> Result<(), String> {
        let mut text = String::new();
        if !yaml.contains("\nlisten:") && !yaml.starts_with("listen:") {
            text.push_str(&format!("listen: {}\n", self.listen));
        }
        if !yaml.contains("admin_listen:") {
            text.push_str(&format!("admin_listen: {}\n", self.admin));
        }
        text.push_str(yaml);
        match config::from_yaml_str(&text, &MapEnv::new(), ConfigOrigin::BuiltIn, Path::new("/")) {
            Ok(config) => self.reloader.apply(config).await,
            Err(e) => Err(e.to_string()),
        }
    }

    /// The proxy's TCP address (panics for a Unix-socket proxy).
    pub(crate) fn addr(&self) -> SocketAddr {
        match &self.listen {
            Listen::Tcp(addr) => *addr,
            Listen::Unix(path) => panic!("the proxy listens on unix:{}", path.display()),
        }
    }

    /// The proxy's Unix socket (panics for a TCP proxy).
    pub(crate) fn socket_path(&self) -> &Path {
        match &self.listen {
            Listen::Unix(path) => path,
            Listen::Tcp(addr) => panic!("the proxy listens on {addr}"),
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// `http://127.0.0.1:ADMIN{path}`.
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Starts the graceful drain and waits until the proxy has stopped.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Polls `/readyz` until it answers 200 (at most 10 s).
    pub(crate) async fn wait_ready(&self) {
        for _ in 0..1000 {
            if super::get(&self.admin_url("/readyz")).await.0 == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("/readyz did not become 200");
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The usual mocks: a CA (written to a file the proxy trusts), Entra ID, and a TLS upstream that accepts only
/// tokens Entra ID issued and that have not expired.
pub(crate) struct World {
    pub(crate) ca: TestCa,
    pub(crate) aad: MockAad,
    pub(crate) upstream: Upstream,
    pub(crate) dir: TempDir,
    pub(crate) ca_file: PathBuf,
}

impl World {
    pub(crate) async fn new() -> Self {
        let ca = TestCa::new();
        let aad = MockAad::start().await;
        let upstream = Upstream::builder()
            .tls(&ca)
            .validate_tokens(aad.registry())
            .start()
            .await;
        let dir = TempDir::new();
        let ca_file = ca.write_ca_file(dir.path());
        Self {
            ca,
            aad,
            upstream,
            dir,
            ca_file,
        }
    }

    /// A configuration header: authority host = the mock, the test CA trusted.
    pub(crate) fn header(&self) -> String {
        format!(
            "authority_host: {}\ntls:\n  extra_ca_file: {}\n",
            self.aad.base_url(),
            self.ca_file.display()
        )
    }

    /// A `client_secret` credential `name` in tenant `tenant` (the tenant picks the mock's behaviour).
    pub(crate) fn sp(name: &str, tenant: &str) -> String {
        format!(
            "  {name}:\n    client_secret: {{ tenant_id: {tenant}, client_id: {CLIENT_ID}, client_secret: {CANARY_SECRET} }}\n"
        )
    }

    /// A route `name` on `prefix` to the upstream (with `strip_prefix`), scope ARM, credential `cred`.
    pub(crate) fn route(&self, name: &str, prefix: &str, cred: &str, extra: &str) -> String {
        let strip = prefix != "/";
        route_block(name, prefix, &self.upstream.base_url(), strip, cred, extra)
    }

    /// A full configuration from credential and route blocks.
    pub(crate) fn config(&self, credentials: &str, routes: &str) -> String {
        format!(
            "{}credentials:\n{credentials}routes:\n{routes}",
            self.header()
        )
    }

    /// A proxy with one `client_secret` credential `sp` in tenant `tenant` and one route `/` → upstream.
    pub(crate) async fn simple_proxy(&self, tenant: &str) -> TestProxy {
        TestProxy::start(&self.config(&Self::sp("sp", tenant), &self.route("arm", "/", "sp", "")))
            .await
    }
}
