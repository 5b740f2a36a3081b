//! The `aml-azure-emulator` binary: its start-up line, `--help`, exit codes, `--tls` and SIGTERM.

use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tokio::process::Command;

use crate::support::process::{ChildProc, EXIT_TIMEOUT, Output, run_to_end};
use crate::support::proxy::TempDir;
use crate::support::tls::provider;
use crate::support::{json_body, trace_init};

use super::{APP, post_form};

/// The emulator binary cargo built for this test target.
pub(crate) const EMULATOR: &str = env!("CARGO_BIN_EXE_aml-azure-emulator");

/// The binary with `args`, an empty environment but `HOME`.
fn command(home: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(EMULATOR);
    cmd.env_clear()
        .env("HOME", home)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A running emulator binary and the URLs of its start-up line.
pub(crate) struct RunningEmulator {
    pub(crate) child: ChildProc,
    pub(crate) urls: Value,
}

impl RunningEmulator {
    /// Spawns `cmd` and waits for its start-up line (at most 30 s).
    pub(crate) async fn spawn(cmd: Command) -> Self {
        let mut child = ChildProc::spawn(cmd);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let stdout = child.stdout_so_far();
            if let Some(line) = stdout.lines().next().filter(|_| stdout.contains('\n')) {
                let urls = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("the start-up line is not JSON ({e}): {line}"));
                return Self { child, urls };
            }
            if let Some(status) = child.try_exit() {
                panic!(
                    "aml-azure-emulator exited ({status}) before its start-up line: {}",
                    child.stderr_so_far()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no start-up line within 30 s: {}",
                child.stderr_so_far()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then everything it printed once it exited.
    pub(crate) async fn stop(self) -> Output {
        self.child.sigterm();
        self.child.finish(EXIT_TIMEOUT).await
    }
}

#[tokio::test]
async fn the_binary_prints_its_urls_serves_and_exits_0_on_sigterm() {
    let _trace = trace_init();
    let dir = TempDir::new();
    let running = RunningEmulator::spawn(command(
        dir.path(),
        &[
            "--port",
            "0",
            "--fault",
            "mfa,tenant=stepup",
            "--log-format",
            "json",
        ],
    ))
    .await;
    let urls = running.urls.clone();
    for key in [
        "authority_host",
        "resource_manager",
        "upstream",
        "control",
        "stats",
    ] {
        assert!(
            urls[key]
                .as_str()
                .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
            "{key}: {urls}"
        );
    }
    assert_eq!(urls["online_endpoints"]["ep-key"]["auth_mode"], "Key");
    assert_eq!(urls["ca_file"], Value::Null);

    let authority = urls["authority_host"].as_str().unwrap();
    let secret = "emulator-binary-canary-secret";
    let form = |tenant: &str| {
        (
            format!("{authority}/{tenant}/oauth2/v2.0/token"),
            [
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", secret),
                ("scope", "https://ml.azure.com/.default"),
            ],
        )
    };
    let (url, pairs) = form("contoso");
    let (status, _, body) = post_form(&url, &pairs).await;
    assert_eq!(status, StatusCode::OK);
    let token = json_body(&body)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (url, pairs) = form("stepup");
    let (status, _, body) = post_form(&url, &pairs).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the --fault rule is in force"
    );
    assert_eq!(json_body(&body)["error_codes"][0], 50079);

    let output = running.stop().await;
    assert_eq!(output.code(), Some(0), "{output:#?}");
    assert_eq!(
        output.stdout.lines().count(),
        1,
        "stdout is the start-up line only"
    );
    // One JSON access line per request on stderr, without the secret or the token.
    let access: Vec<Value> = output
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "request")
        .collect();
    assert_eq!(access.len(), 2, "{}", output.stderr);
    assert_eq!(access[0]["path"], "/contoso/oauth2/v2.0/token");
    assert!(!output.stderr.contains(secret));
    assert!(!output.stderr.contains(&token));
}

#[tokio::test]
async fn usage_errors_exit_64_and_a_busy_port_exits_1() {
    let _trace = trace_init();
    let dir = TempDir::new();
    let help = run_to_end(command(dir.path(), &["--help"])).await;
    assert_eq!(help.code(), Some(0));
    for needle in [
        "--fault",
        "--tls",
        "Entra ID",
        "conditional-access",
        "--allow-non-loopback",
    ] {
        assert!(
            help.stdout.contains(needle),
            "--help lacks {needle}: {}",
            help.stdout
        );
    }
    let version = run_to_end(command(dir.path(), &["--version"])).await;
    assert_eq!(
        version.stdout.trim(),
        format!("aml-azure-emulator {}", env!("CARGO_PKG_VERSION"))
    );

    for (args, needle) in [
        (
            &["--host", "0.0.0.0", "--port", "0"][..],
            "not a loopback address",
        ),
        (&["--fault", "explode"], "unknown kind `explode`"),
        (&["--tls"], "--ca-file"),
        (&["--endpoint", "x"], "NAME=MODE"),
        (
            &[
                "--port",
                "0",
                "--endpoint",
                "twin=key",
                "--endpoint",
                "twin=aadtoken",
            ],
            "given twice",
        ),
    ] {
        let out = run_to_end(command(dir.path(), args)).await;
        assert_eq!(out.code(), Some(64), "{args:?}: {out:#?}");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Someone else holds the first port.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = run_to_end(command(dir.path(), &["--port", &port])).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("cannot listen on"), "{}", out.stderr);
}

#[tokio::test]
async fn tls_mode_writes_a_ca_that_clients_trust_and_speaks_h2() {
    let _trace = trace_init();
    let dir = TempDir::new();
    let ca_file = dir.path().join("emulator-ca.pem");
    let ca_arg = ca_file.display().to_string();
    let running = RunningEmulator::spawn(command(
        dir.path(),
        &["--port", "0", "--tls", "--ca-file", &ca_arg],
    ))
    .await;
    assert_eq!(running.urls["ca_file"], ca_arg.as_str());
    let authority = running.urls["authority_host"].as_str().unwrap();
    assert!(authority.starts_with("https://127.0.0.1:"), "{authority}");

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr: std::net::SocketAddr = authority.trim_start_matches("https://").parse().unwrap();
    for name in ["localhost", "127.0.0.1"] {
        let (alpn, status, body) = h2_token_request(&config, addr, name).await;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let claims = super::claims(json_body(&body)["access_token"].as_str().unwrap());
        assert_eq!(claims["iss"], format!("{authority}/contoso/v2.0"));
    }
    assert_eq!(running.stop().await.code(), Some(0));
}

/// One client-credentials token request over TLS + HTTP/2 to `addr`, verifying the certificate for
/// `server_name`: the negotiated ALPN protocol, the status and the body.
async fn h2_token_request(
    config: &rustls::ClientConfig,
    addr: std::net::SocketAddr,
    server_name: &str,
) -> (Option<Vec<u8>>, StatusCode, Bytes) {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let form = format!(
        "grant_type=client_credentials&client_id={APP}&client_secret=s&scope=https%3A%2F%2Fml.azure.com%2F.default"
    );
    let request = Request::post(format!(
        "https://{server_name}:{}/contoso/oauth2/v2.0/token",
        addr.port()
    ))
    .header("content-type", "application/x-www-form-urlencoded")
    .body(Full::new(Bytes::from(form)))
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (alpn, status, body)
}
