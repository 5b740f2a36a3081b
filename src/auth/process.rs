//! Running a developer tool that prints a token (`az`, `azd`, `pwsh`).
//!
//! The tool is looked up on the `PATH` of the [`Env`](crate::env::Env), absolute entries only (a relative entry
//! would resolve against the proxy's working directory), and run as an argument vector, never through a shell, with
//! stdin `/dev/null`, working directory `/`, and the proxy's environment plus that `PATH` and the tool's variables.
//! It gets its own process group: at the deadline the group is killed, so what a wrapper started goes too (bash →
//! python), and the process is reaped. stdout holds the token: it is bounded (more is an error) and never logged.
//! stderr is kept up to 64 KiB and the rest drained, so the tool never blocks on a full pipe. A tool that is not
//! installed (not on the `PATH`, not executable, or a wrapper whose interpreter is missing: exit 127) makes the
//! credential unavailable, so a chain moves on; any other failure to run it is `TokenServiceUnavailable`.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::CredentialError;

/// The most stdout accepted unless the credential says otherwise: a token response is a few KiB.
pub(crate) const OUTPUT_LIMIT: usize = 256 * 1024;
/// The most stderr kept for classification; the rest is read and dropped.
const STDERR_LIMIT: usize = 64 * 1024;
/// How long a killed tool gets to be reaped before it is left to tokio's background reaper.
const REAP_GRACE: Duration = Duration::from_secs(1);
/// Spawn attempts when the executable is momentarily busy (ETXTBSY: being written while another thread forks).
const SPAWN_ATTEMPTS: u32 = 6;

/// A tool to run, and where to find it.
#[derive(Debug, Clone)]
pub struct Tool {
    /// The credential kind its errors and logs name (`azure_cli`).
    pub(crate) source: &'static str,
    /// The executable's name on the `PATH` (`az`).
    pub(crate) name: &'static str,
    /// How messages name the tool (`Azure CLI`).
    pub(crate) display: &'static str,
    /// Extra environment for the child (`AZURE_CORE_NO_COLOR=true`).
    pub(crate) env: &'static [(&'static str, &'static str)],
    /// An explicit program (tests, unusual installs); otherwise `name` is searched on `search_path`.
    pub(crate) program: Option<PathBuf>,
    /// `PATH` from the `Env`: where the tool is searched, and the child's `PATH`.
    pub(crate) search_path: Option<String>,
    /// The most stdout accepted.
    pub(crate) output_limit: usize,
}

/// What one run of the tool left behind.
pub struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Zeroizing<Vec<u8>>,
    pub(crate) stderr: String,
}

/// Why reading the tool's output stopped early.
#[derive(Debug)]
enum ReadFailure {
    /// stdout grew past the limit.
    Oversize,
    Io(io::Error),
}

// === impl Tool ===

impl Tool {
    /// The executable `name` of the credential `source`, `display` in messages, searched on the `PATH` (none yet)
    /// and run with `env` added, its stdout bounded by [`OUTPUT_LIMIT`].
    pub(crate) const fn new(
        source: &'static str,
        name: &'static str,
        display: &'static str,
        env: &'static [(&'static str, &'static str)],
    ) -> Self {
        Self {
            source,
            name,
            display,
            env,
            program: None,
            search_path: None,
            output_limit: OUTPUT_LIMIT,
        }
    }

    /// The program to run: the explicit one, else the first executable `name` in an absolute `PATH` entry.
    pub(crate) async fn locate(&self) -> Result<PathBuf, CredentialError> {
        if let Some(program) = &self.program {
            return Ok(program.clone());
        }
        let Some(path) = self.search_path.as_deref() else {
            return Err(self.not_installed("PATH is not set"));
        };
        for dir in std::env::split_paths(path).filter(|d| d.is_absolute()) {
            let candidate = dir.join(self.name);
            if is_executable(&candidate).await {
                return Ok(candidate);
            }
        }
        Err(self.not_installed(&format!("install it, or put `{}` on the PATH", self.name)))
    }

    /// Runs `program args` until it exits or `deadline` passes (`timeout` is how messages say it), reading
    /// stdout and stderr within their bounds.
    pub(crate) async fn run(
        &self,
        program: &Path,
        args: &[String],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Output, CredentialError> {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir("/")
            .envs(self.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(path) = &self.search_path {
            command.env("PATH", path);
        }
        tracing::debug!(source = self.source, program = %program.display(), args = ?args, "running the tool");
        let mut child = spawn(&mut command)
            .await
            .map_err(|e| self.spawn_error(program, &e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            self.stop(&mut child).await;
            return Err(self.failed(format!("could not capture {}'s output", self.name)));
        };
        let limit = self.output_limit;
        let finished = tokio::time::timeout_at(deadline, async {
            let (stdout, stderr) = tokio::try_join!(
                read_bounded(stdout, limit, true),
                read_bounded(stderr, STDERR_LIMIT, false)
            )?;
            let status = child.wait().await.map_err(ReadFailure::Io)?;
            let stderr = String::from_utf8_lossy(&stderr).into_owned();
            Ok::<_, ReadFailure>(Output {
                status,
                stdout,
                stderr,
            })
        })
        .await;
        let why = match finished {
            Ok(Ok(output)) => return Ok(output),
            Ok(Err(ReadFailure::Oversize)) => format!(
                "{} returned unusable output: more than {limit} bytes on stdout",
                self.name
            ),
            Ok(Err(ReadFailure::Io(e))) => format!("reading {}'s output failed: {e}", self.name),
            Err(_elapsed) => format!(
                "{} did not answer within {}",
                self.name,
                humantime::format_duration(timeout)
            ),
        };
        self.stop(&mut child).await;
        Err(self.failed(why))
    }

    /// `<Tool> not found on PATH (<why>)`: unavailable.
    pub(crate) fn not_installed(&self, why: &str) -> CredentialError {
        CredentialError::unavailable(
            self.source,
            format!("{} not found on PATH ({why})", self.display),
        )
    }

    fn failed(&self, why: String) -> CredentialError {
        CredentialError::service_unavailable(self.source, why)
    }

    fn spawn_error(&self, program: &Path, e: &io::Error) -> CredentialError {
        let shown = program.display();
        match e.kind() {
            io::ErrorKind::NotFound => self.not_installed(&format!("{shown}: {e}")),
            io::ErrorKind::PermissionDenied => CredentialError::unavailable(
                self.source,
                format!("{} at {shown} cannot be run: {e}", self.display),
            ),
            _ => self.failed(format!("could not start {} ({shown}): {e}", self.name)),
        }
    }

    /// Kills `child` and its process group, and reaps it (bounded by [`REAP_GRACE`]; `kill_on_drop` and tokio's
    /// reaper cover the rest).
    async fn stop(&self, child: &mut Child) {
        let source = self.source;
        // The group first, while the child (the group leader) is known to be unreaped, so the id cannot be reused.
        if let Some(pid) = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
            && let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)
        {
            tracing::debug!(source, error = %e, "could not kill the tool's process group");
        }
        if let Err(e) = child.start_kill() {
            tracing::debug!(source, error = %e, "could not kill the tool (it may have exited)");
        }
        match tokio::time::timeout(REAP_GRACE, child.wait()).await {
            Ok(Ok(status)) => tracing::debug!(source, %status, "the tool stopped"),
            Ok(Err(e)) => tracing::debug!(source, error = %e, "waiting for the tool failed"),
            Err(_) => tracing::warn!(
                source,
                "the tool did not exit after SIGKILL; it will be reaped in the background"
            ),
        }
    }
}

/// True for a regular file with an execute bit.
async fn is_executable(path: &Path) -> bool {
    let meta = tokio::fs::metadata(path).await;
    meta.is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Spawns, retrying briefly while the executable is busy (ETXTBSY).
async fn spawn(command: &mut Command) -> io::Result<Child> {
    let mut delay = Duration::from_millis(5);
    for _ in 1..SPAWN_ATTEMPTS {
        match command.spawn() {
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            result => return result,
        }
    }
    command.spawn()
}

/// The first `limit` bytes of `pipe`. The rest is an error that stops reading at once when `strict` (stdout), else
/// read and dropped (stderr).
async fn read_bounded(
    mut pipe: impl AsyncRead + Unpin,
    limit: usize,
    strict: bool,
) -> Result<Zeroizing<Vec<u8>>, ReadFailure> {
    let mut out = Zeroizing::new(Vec::with_capacity(limit.min(16 * 1024)));
    let mut chunk = Zeroizing::new(vec![0u8; 8 * 1024]);
    loop {
        let n = pipe.read(&mut chunk).await.map_err(ReadFailure::Io)?;
        if n == 0 {
            return Ok(out);
        }
        if strict && out.len() + n > limit {
            return Err(ReadFailure::Oversize);
        }
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..n.min(room)]);
    }
}
