//! Upstream TLS failures (F18): an untrusted certificate, or one for another name, is a 502 before any request
//! (so any token) is sent, never a fallback to plaintext; and no configuration can switch verification off.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{Method, StatusCode};
use tokio::net::TcpListener;

use crate::support::process::{ClosedPort, check_config};
use crate::support::proxy::{TempDir, TestProxy, World, route_to};
use crate::support::{TestCa, expect_proxy_error, full, get, request, trace_init};

/// What a [`Sniffer`] saw.
#[derive(Default)]
struct Seen {
    first_bytes: Mutex<Vec<Vec<u8>>>,
    handshake_failures: AtomicUsize,
    authorizations: Mutex<Vec<Option<String>>>,
}

/// An HTTPS upstream that records the first bytes of every connection (a TLS ClientHello, or plaintext?), the
/// outcome of each handshake, and the `Authorization` of any request that gets through.
struct Sniffer {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Sniffer {
    async fn start(config: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let shared = seen.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (seen, acceptor) = (shared.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let mut first = [0u8; 5];
                    let n = tcp.peek(&mut first).await.unwrap_or(0);
                    seen.first_bytes.lock().unwrap().push(first[..n].to_vec());
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        seen.handshake_failures.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let record = seen.clone();
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            record.authorizations.lock().unwrap().push(auth);
                            async {
                                Ok::<_, std::convert::Infallible>(http::Response::new(full(
                                    "secure",
                                )))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Every connection opened with a TLS handshake record (0x16 0x03 …), never plaintext HTTP.
    fn only_tls(&self) -> bool {
        let first = self.seen.first_bytes.lock().unwrap();
        !first.is_empty() && first.iter().all(|b| b.starts_with(&[0x16, 0x03]))
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// F18: an upstream whose certificate is not trusted, and one whose certificate names another host (trusted CA),
/// both give 502 `UpstreamUnavailable` with the fixed JSON body; the upstream never sees a request (so never an
/// `Authorization`), and the proxy never falls back to plaintext. A trusted, matching certificate is the control.
#[tokio::test]
async fn f18_untrusted_or_mismatched_certificates_are_502_and_no_token_is_sent() {
    let _trace = trace_init();
    let world = World::new().await;
    let untrusted = TestCa::untrusted();
    let mismatch_ca = TestCa::with_sans(&["aml.example.invalid"]);
    let alpn: &[&[u8]] = &[b"h2", b"http/1.1"];
    let bad_cert = Sniffer::start(untrusted.server_config(alpn)).await;
    let wrong_name = Sniffer::start(mismatch_ca.server_config(alpn)).await;
    let good = Sniffer::start(world.ca.server_config(alpn)).await;
    // Trust the world's CA and the mismatch CA (so that only the name is wrong).
    let dir = TempDir::new();
    let bundle = dir.file(
        "bundle.pem",
        &format!("{}{}", world.ca.ca_pem(), mismatch_ca.ca_pem()),
        0o600,
    );
    let routes = format!(
        "{}{}{}",
        route_to("untrusted", "/untrusted", &bad_cert.url()),
        route_to("mismatch", "/mismatch", &wrong_name.url()),
        route_to("good", "/good", &good.url())
    );
    let yaml = format!(
        "authority_host: {}\ntls:\n  extra_ca_file: {}\ncredentials:\n{}routes:\n{}",
        world.aad.base_url(),
        bundle.display(),
        World::sp("sp", "tlsfail"),
        routes
    );
    let proxy = TestProxy::start(&yaml).await;
    proxy.wait_ready().await;
    for (path, sniffer) in [("/untrusted/x", &bad_cert), ("/mismatch/x", &wrong_name)] {
        for method in [Method::GET, Method::POST] {
            let answer = request(method, &proxy.url(path), &[], "payload").await;
            let error = expect_proxy_error(&answer, StatusCode::BAD_GATEWAY, "UpstreamUnavailable");
            let text = error.to_string();
            assert!(text.contains("127.0.0.1"), "names the upstream: {text}");
            assert!(
                !text.contains("at.tlsfail"),
                "no token in the answer: {text}"
            );
            let keys: Vec<&String> = error.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["code", "message"], "a fixed body: {text}");
        }
        assert!(
            sniffer.seen.authorizations.lock().unwrap().is_empty(),
            "{path}: a request got through"
        );
        assert!(sniffer.seen.handshake_failures.load(Ordering::SeqCst) >= 1);
        assert!(
            sniffer.only_tls(),
            "{path}: plaintext seen: {:?}",
            sniffer.seen.first_bytes.lock().unwrap()
        );
    }
    // The control: the same sniffer with a good certificate sees the request and its token.
    assert_eq!(get(&proxy.url("/good/x")).await.0, StatusCode::OK);
    let auth = good.seen.authorizations.lock().unwrap().clone();
    assert_eq!(auth.len(), 1);
    assert!(
        auth[0]
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer at.tlsfail."))
    );
    assert!(good.only_tls());
    proxy.stop().await;
}

/// F18: TLS verification cannot be switched off: every spelling of "insecure" is an unknown key, refused with its
/// key path (only `tls.extra_ca_file` exists); `check-config` exits 64 on it.
#[tokio::test]
async fn f18_no_configuration_disables_certificate_verification() {
    let _trace = trace_init();
    let world = World::new().await;
    // A valid configuration without any `tls` block; each attempt adds one.
    let base = format!(
        "authority_host: {}\ncredentials:\n{}routes:\n{}",
        world.aad.base_url(),
        World::sp("sp", "x"),
        world.route("arm", "/", "sp", "")
    );
    let parse = |text: &str| {
        aml_auth_proxy::config::from_yaml_str(
            text,
            &aml_auth_proxy::env::MapEnv::new(),
            aml_auth_proxy::config::ConfigOrigin::BuiltIn,
            std::path::Path::new("/"),
        )
    };
    assert!(parse(&base).is_ok(), "the base configuration is valid");
    let attempts = [
        ("tls:\n  insecure: true\n", "tls.insecure"),
        ("tls:\n  verify: false\n", "tls.verify"),
        (
            "tls:\n  danger_accept_invalid_certs: true\n",
            "tls.danger_accept_invalid_certs",
        ),
        ("insecure_skip_verify: true\n", "insecure_skip_verify"),
    ];
    for (extra, key) in attempts {
        let e = parse(&format!("{extra}{base}")).expect_err(key).to_string();
        assert!(e.contains(key) && e.contains("unknown key"), "{key}: {e}");
    }
    // A route-level switch does not exist either.
    let text = base.replace(
        "    credential: sp\n",
        "    credential: sp\n    tls: { insecure: true }\n",
    );
    let e = parse(&text).expect_err("route tls").to_string();
    assert!(e.contains("unknown key"), "{e}");

    // The binary says so too.
    let dir = TempDir::new();
    let file = dir.file(
        "insecure.yaml",
        &format!("tls:\n  insecure: true\n{base}"),
        0o600,
    );
    let imds = ClosedPort::new();
    let out = check_config(dir.path(), &imds, &file).await;
    assert_eq!(out.code(), Some(64), "{out:#?}");
    assert!(out.stderr.contains("tls.insecure"), "{}", out.stderr);
}
