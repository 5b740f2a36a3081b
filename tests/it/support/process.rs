//! The real `aml-auth-proxy` binary as a child process, for black-box tests of the command line.
//!
//! - [`command`] builds a [`Command`] with a **clean environment**: only `PATH=/nonexistent-dir` (so no `az`
//!   can be found), `HOME` (a test directory) and `AZURE_POD_IDENTITY_AUTHORITY_HOST` pointing at a closed
//!   loopback port (so nothing can ever reach 169.254.169.254); tests add the variables under test.
//! - [`ChildProc`] owns a spawned child: stdout and stderr are drained continuously into buffers (a chatty
//!   child can never block on a full pipe), and dropping it kills and reaps the child, so a failed assertion
//!   never leaves a process behind.
//! - [`RunningProxy`] starts `run` on fresh loopback ports and waits until `/healthz` answers.
//! - [`ClosedPort`] is a loopback address that is guaranteed to refuse connections for as long as it lives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::BoxError;
use super::proxy::TempDir;

/// The binary under test, built by cargo for this test target.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_aml-auth-proxy");

/// Upper bound for a one-shot command (`check-config`, `token`, `probe`…) and for a proxy to exit after a
/// signal. Generous: it only turns a hang into a failure, it measures nothing.
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for `run` to answer `/healthz`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause between polls.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// A free loopback port: bound on `127.0.0.1:0`, then released for the child to bind.
pub(crate) fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
pub(crate) fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb * 1024
}

/// A loopback address that refuses connections: a socket bound to it but never listening, held until drop,
/// so no other test can start listening there in the meantime.
#[derive(Debug)]
pub(crate) struct ClosedPort {
    _socket: TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    pub(crate) fn new() -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("local_addr");
        Self {
            _socket: socket,
            addr,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The binary with a clean environment (see the module docs). `imds` is the closed port IMDS is sent to.
pub(crate) fn command(home: &Path, imds: &ClosedPort) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/nonexistent-dir")
        .env("HOME", home)
        .env(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            format!("http://{}", imds.addr()),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// What a finished child left behind.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// The exit code (`None` if the child was killed by a signal).
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout followed by stderr.
    pub(crate) fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A pipe being drained into a buffer.
#[derive(Debug)]
struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    task: Option<JoinHandle<()>>,
}

impl Captured {
    fn start(pipe: Option<impl AsyncRead + Unpin + Send + 'static>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let task = pipe.map(|mut pipe| {
            let buf = buf.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buf.lock()
                        .expect("capture lock")
                        .extend_from_slice(&chunk[..n]);
                }
            })
        });
        Self { buf, task }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().expect("capture lock")).into_owned()
    }

    /// Waits for end of file (the child has exited, so it comes at once), then returns everything.
    async fn finish(&mut self) -> String {
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.text()
    }
}

/// A spawned child; dropping it kills and reaps it.
#[derive(Debug)]
pub(crate) struct ChildProc {
    child: Child,
    pid: u32,
    stdout: Captured,
    stderr: Captured,
}

impl ChildProc {
    /// Spawns `cmd` with stdout and stderr captured.
    pub(crate) fn spawn(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn aml-auth-proxy");
        let pid = child.id().expect("child pid");
        let stdout = Captured::start(child.stdout.take());
        let stderr = Captured::start(child.stderr.take());
        Self {
            child,
            pid,
            stdout,
            stderr,
        }
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// stderr so far.
    pub(crate) fn stderr_so_far(&self) -> String {
        self.stderr.text()
    }

    /// stdout so far.
    pub(crate) fn stdout_so_far(&self) -> String {
        self.stdout.text()
    }

    /// Sends SIGTERM with `kill -TERM <pid>`.
    pub(crate) fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`TERM`, `HUP`, …) with `kill -<name> <pid>`.
    pub(crate) fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{name} {} failed: {status}",
            self.pid
        );
    }

    /// How many file descriptors the child has open (0 once it is gone).
    pub(crate) fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(Iterator::count)
            .unwrap_or(0)
    }

    /// The exit status if the child has exited.
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `limit` for the child to exit.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait for child"))
    }

    /// Waits up to `limit` for the child to exit and returns its output; panics (after killing it) if it does
    /// not exit in time.
    pub(crate) async fn finish(mut self, limit: Duration) -> Output {
        let Some(status) = self.wait_exit(limit).await else {
            let stderr = self.stderr.text();
            panic!(
                "aml-auth-proxy (pid {}) did not exit within {limit:?}; stderr so far:\n{stderr}",
                self.pid
            );
        };
        let stdout = self.stdout.finish().await;
        let stderr = self.stderr.finish().await;
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = self.child.start_kill();
        // Reap it (SIGKILL takes effect at once); bounded, so Drop can never hang.
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Runs a one-shot command to completion (at most [`EXIT_TIMEOUT`]).
pub(crate) async fn run_to_end(cmd: Command) -> Output {
    ChildProc::spawn(cmd).finish(EXIT_TIMEOUT).await
}

/// Runs `check-config --config <file>` ([`command`] in `home`) to completion.
pub(crate) async fn check_config(home: &Path, imds: &ClosedPort, file: &Path) -> Output {
    let mut cmd = command(home, imds);
    cmd.arg("check-config").arg("--config").arg(file);
    run_to_end(cmd).await
}

/// `GET url` with a bound on the whole exchange; transport failures are returned, not panicked on.
pub(crate) async fn try_get(url: &str) -> Result<(StatusCode, HeaderMap, Bytes), BoxError> {
    let exchange = async {
        let uri: http::Uri = url.parse()?;
        let resp = super::http_client()
            .get(uri)
            .await
            .map_err(|e| -> BoxError { Box::new(e) })?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, BoxError>((parts.status, parts.headers, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| -> BoxError { "GET timed out".into() })?
}

/// Whether `addr` refuses new work: the TCP connect fails, or the connection is closed without an HTTP answer.
/// Returns `false` when a request on a fresh connection is answered.
pub(crate) async fn refuses_connections(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return true;
    };
    let request = format!(
        "GET /__refusal-probe HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return true;
    }
    let mut first = [0u8; 8];
    match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut first)).await {
        Ok(Ok(n)) => n == 0 || !first[..n].starts_with(b"HTTP/"),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// A child running `aml-auth-proxy run` on loopback ports, answering `/healthz`.
#[derive(Debug)]
pub(crate) struct RunningProxy {
    pub(crate) child: ChildProc,
    /// The proxy listener.
    pub(crate) listen: SocketAddr,
    /// The admin listener.
    pub(crate) admin: SocketAddr,
    /// The configuration file, if one was written.
    pub(crate) config: Option<PathBuf>,
    /// The closed port IMDS is sent to, when this proxy holds it ([`RunningProxy::start_in`]).
    imds: Option<ClosedPort>,
}

impl RunningProxy {
    /// Writes `listen:` / `admin_listen:` (fresh ports) followed by `yaml` to `dir/config.yaml`, then runs
    /// `run --config <file> <args>` with the clean environment plus `env`.
    pub(crate) async fn start(
        dir: &TempDir,
        imds: &ClosedPort,
        yaml: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with(|listen, admin| {
            let text = format!("listen: {listen}\nadmin_listen: {admin}\n{yaml}");
            let file = dir.file("config.yaml", &text, 0o600);
            let mut cmd = command(dir.path(), imds);
            cmd.arg("run").arg("--config").arg(&file).args(args);
            cmd.envs(env.iter().copied());
            (cmd, Some(file))
        })
        .await
    }

    /// Like [`RunningProxy::start`] without extra arguments or environment; IMDS is sent to a closed port the
    /// proxy holds for as long as it runs.
    pub(crate) async fn start_in(dir: &TempDir, yaml: &str) -> Self {
        let imds = ClosedPort::new();
        let mut proxy = Self::start(dir, &imds, yaml, &[], &[]).await;
        proxy.imds = Some(imds);
        proxy
    }

    /// Starts the child `make(listen, admin)` builds for two fresh ports and waits for `/healthz`. If the
    /// child lost a race for a port (exit 1, "cannot listen on"), it is retried on new ports.
    pub(crate) async fn start_with(
        make: impl Fn(SocketAddr, SocketAddr) -> (Command, Option<PathBuf>),
    ) -> Self {
        let mut last = String::new();
        for _attempt in 0..3 {
            let (listen, admin) = (free_addr(), free_addr());
            if listen == admin {
                continue;
            }
            let (cmd, config) = make(listen, admin);
            let mut child = ChildProc::spawn(cmd);
            match wait_healthy(&mut child, admin).await {
                Ok(()) => {
                    return Self {
                        child,
                        listen,
                        admin,
                        config,
                        imds: None,
                    };
                }
                Err(status) => {
                    let out = child.finish(EXIT_TIMEOUT).await;
                    if status.code() == Some(1) && out.stderr.contains("cannot listen on") {
                        last = out.stderr;
                        continue;
                    }
                    panic!("aml-auth-proxy run did not start: {out:#?}");
                }
            }
        }
        panic!("aml-auth-proxy run could not bind fresh ports three times: {last}");
    }

    /// `http://<listen>{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// `http://<admin>{path}`.
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// SIGTERM, then the output once the child has exited.
    pub(crate) async fn stop(self) -> Output {
        self.child.sigterm();
        self.child.finish(EXIT_TIMEOUT).await
    }
}

/// Polls `/healthz` until it answers 200; `Err(status)` if the child exits first. Panics on timeout.
async fn wait_healthy(child: &mut ChildProc, admin: SocketAddr) -> Result<(), ExitStatus> {
    let url = format!("http://{admin}/healthz");
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_exit() {
            return Err(status);
        }
        if let Ok((status, _, _)) = try_get(&url).await
            && status == StatusCode::OK
        {
            return Ok(());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "aml-auth-proxy did not answer {url} within {READY_TIMEOUT:?}; stderr:\n{}",
            child.stderr_so_far()
        );
        tokio::time::sleep(POLL).await;
    }
}
