//! The Azure CLI hangs, is absent, or prints garbage (F19): a clear error within the timeout, never an echo of
//! its output, and nothing left running. The `az` here is a shell script found through `PATH`.

use std::time::Duration;

use aml_auth_proxy::auth::{
    AzureCliCredential, AzureCliCredentialOptions, CredentialError, TokenCredential,
    TokenErrorKind, TokenRequest,
};
use aml_auth_proxy::env::MapEnv;
use tokio::time::Instant;

use crate::support::proxy::TempDir;
use crate::support::{ARM_SCOPE, eventually, trace_init};

/// A fake `az` (a shell script recording its pid) found through `PATH=<dir>:/usr/bin:/bin`.
struct FakeAz {
    dir: TempDir,
}

impl FakeAz {
    fn new(body: &str) -> Self {
        let dir = TempDir::new();
        dir.file(
            "az",
            &format!("#!/bin/sh\nd=$(dirname \"$0\")\necho $$ > \"$d/pid\"\n{body}\n"),
            0o755,
        );
        Self { dir }
    }

    fn credential(&self, timeout: Duration) -> AzureCliCredential {
        let options = AzureCliCredentialOptions {
            timeout,
            ..AzureCliCredentialOptions::default()
        };
        let env = MapEnv::new().with(
            "PATH",
            format!("{}:/usr/bin:/bin", self.dir.path().display()),
        );
        AzureCliCredential::new(options, &env)
    }

    fn pid(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// The state letter of process `pid` (`Z` for a zombie), `None` once it is gone (killed and reaped).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The parent pid of `pid`, if it exists.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// F19: an `az` that hangs is killed at the timeout and reaped (no zombie, not even briefly after the answer);
/// the error says what happened.
#[tokio::test]
async fn f19_hanging_az_is_killed_at_the_timeout_and_reaped() {
    let _trace = trace_init();
    let az = FakeAz::new("exec sleep 60");
    let cred = az.credential(Duration::from_millis(500));
    let started = Instant::now();
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    let took = started.elapsed();
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert_eq!(e.message, "az did not answer within 500ms");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let pid = az.pid("pid");
    assert_eq!(
        state(pid),
        None,
        "az (pid {pid}) is still there: {:?}",
        state(pid)
    );
}

/// F19 (stricter): an `az` wrapper that does not `exec` its interpreter (the hung work runs in a child process)
/// leaves nothing running either: `az` runs in its own process group and the timeout kills the group.
#[tokio::test]
async fn f19_hanging_az_wrapper_leaves_no_process_behind() {
    let _trace = trace_init();
    let az = FakeAz::new("sleep 60 &\necho $! > \"$d/child\"\nwait");
    let cred = az.credential(Duration::from_millis(500));
    let result = cred.get_token(&TokenRequest::new(ARM_SCOPE)).await;
    assert!(
        matches!(result, Err(CredentialError::Failed(_))),
        "{result:?}"
    );
    let (pid, child) = (az.pid("pid"), az.pid("child"));
    // The wrapper is reaped by the proxy. Its child, orphaned, belongs to the nearest reaper (init here): killed
    // means gone or a zombie that is not ours to reap — it runs no more and holds nothing but its pid.
    let ours = std::process::id();
    let gone = eventually(Duration::from_secs(1), || {
        state(pid).is_none()
            && match state(child) {
                None => true,
                Some('Z') => parent(child).is_some_and(|p| p != ours),
                Some(_) => false,
            }
    })
    .await;
    let states = (state(pid), state(child));
    // Do not leave the sleeper behind whatever the outcome.
    let _ = std::process::Command::new("kill")
        .arg(child.to_string())
        .status();
    assert!(
        gone.is_some(),
        "az {pid} / its child {child} still there: {states:?}"
    );
}

/// F19: an absent `az`, an `az` that fails, and one that prints malformed JSON each give a clear error (no token or
/// output echoed) without hanging; nothing is left running.
#[tokio::test]
async fn f19_absent_failing_or_malformed_az_gives_a_clear_error() {
    let _trace = trace_init();
    let request = TokenRequest::new(ARM_SCOPE);
    let empty = FakeAz::new("exit 0");
    std::fs::remove_file(empty.dir.path().join("az")).unwrap();
    let result = empty
        .credential(Duration::from_secs(10))
        .get_token(&request)
        .await;
    let Err(CredentialError::Unavailable(attempts)) = result else {
        panic!("expected unavailable, got {result:?}");
    };
    assert!(
        attempts[0]
            .reason
            .starts_with("Azure CLI not found on PATH"),
        "{attempts:?}"
    );

    let failing =
        FakeAz::new("echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1");
    let result = failing
        .credential(Duration::from_secs(10))
        .get_token(&request)
        .await;
    let Err(CredentialError::Unavailable(attempts)) = result else {
        panic!("expected unavailable, got {result:?}");
    };
    assert!(attempts[0].reason.contains("az login"), "{attempts:?}");

    let malformed = FakeAz::new(
        "printf '{\"accessToken\": \"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.CANARY.sig\", \"expires_on\": '",
    );
    let started = Instant::now();
    let result = malformed
        .credential(Duration::from_secs(10))
        .get_token(&request)
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let Err(CredentialError::Failed(e)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
    assert!(
        e.message.starts_with("az returned unusable output"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("CANARY"), "{}", e.message);
    for az in [&failing, &malformed] {
        let pid = az.pid("pid");
        assert!(
            eventually(Duration::from_secs(1), || state(pid).is_none())
                .await
                .is_some(),
            "az {pid} left behind: {:?}",
            state(pid)
        );
    }
}
