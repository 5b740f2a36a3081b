//! A stand-in for Entra ID and an Azure ML upstream, for running the real binary against real clients
//! (`tests/interop/run.sh`) without Azure. Loopback only.
//!
//! ```text
//! cargo run --example mock_azure -- --dir DIR [--ttl SECONDS]
//! ```
//!
//! It writes a fresh self-signed CA to `DIR/ca.pem` (point the proxy's `tls.extra_ca_file` at it), serves two
//! HTTPS listeners on `127.0.0.1:0` (HTTP/1.1 and HTTP/2 by ALPN) and prints one JSON line on stdout:
//! `{"authority_host": "https://127.0.0.1:A", "upstream": "https://127.0.0.1:U", "ca_file": "DIR/ca.pem"}`.
//! It runs until SIGTERM or SIGINT.
//!
//! **Entra ID** (`authority_host`):
//! - `POST /{tenant}/oauth2/v2.0/token`, client credentials (`client_id`, `scope`, and `client_secret` or
//!   `client_assertion`): a fresh opaque token `at.<tenant>.<n>` valid for `--ttl` seconds (default 3600).
//!   Tenant `ca-blocked` answers Entra ID's AADSTS53003 Conditional Access refusal instead.
//! - `GET /__stats`: `{"token_requests": {tenant: count}, "issued": count}`.
//!
//! **Azure ML upstream** (`upstream`): every request needs `Authorization: Bearer <token>` with a token the
//! mock issued and that has not expired; otherwise 401 with the `WWW-Authenticate` Azure sends. Then:
//! - a path ending in `/lro`: 202 with `Location`, `Azure-AsyncOperation` and `Operation-Location` on this
//!   server, `Retry-After: 0`;
//! - a path ending in `/operations/1/status`: `{"status": "Succeeded"}`;
//! - `/stream?chunks=N&interval_ms=M`: `text/event-stream`, `data: i` events, one every M ms (default 5, 100);
//! - `/status/<code>`: that status;
//! - anything else: 200 with the request echoed as JSON: `method`, `path`, `query`, `version`, `authority`
//!   (`:authority` or `Host`), `token`,
//!   `token_scope` (the scope the token was issued for), `headers` (lower-case name → value, or a list of
//!   values), `body` (as text).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, Infallible>;

/// Largest request body read (the proxy's clients send small JSON documents).
const MAX_BODY: usize = 1024 * 1024;

/// Entra ID's answer for a Conditional Access block (the shape of the recorded fixture, ids made up).
const CA_BLOCKED: &str = r#"{"error":"invalid_grant","error_description":"AADSTS53003: Access has been blocked by Conditional Access policies. The access policy does not allow token issuance. Trace ID: 0b7c1d2e-0000-4000-8000-000000000001 Correlation ID: 5f1c2d3e-0000-4000-8000-000000000002 Timestamp: 2026-11-28 12:00:00Z","error_codes":[53003],"timestamp":"2026-11-28 12:00:00Z","trace_id":"0b7c1d2e-0000-4000-8000-000000000001","correlation_id":"5f1c2d3e-0000-4000-8000-000000000002","error_uri":"https://login.microsoftonline.com/error?code=53003","suberror":"message_only"}"#;

/// `WWW-Authenticate` for a missing, unknown or expired token.
const INVALID_TOKEN: &str = r#"Bearer authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="invalid_token", error_description="The access token is invalid or expired""#;

#[derive(Debug, Parser)]
#[command(about = "Mock Entra ID and Azure ML upstream on loopback, for interop tests")]
struct Args {
    /// Directory for the generated CA certificate (ca.pem).
    #[arg(long)]
    dir: PathBuf,
    /// Lifetime of issued tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

/// What both listeners share.
#[derive(Debug, Default)]
struct State {
    ttl: u64,
    next: AtomicU64,
    /// token → (scope, expiry)
    issued: Mutex<HashMap<String, (String, SystemTime)>>,
    token_requests: Mutex<HashMap<String, u64>>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let (ca_pem, tls) = certificates()?;
    std::fs::create_dir_all(&args.dir)?;
    let ca_file = args.dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem)?;

    let state = Arc::new(State {
        ttl: args.ttl,
        ..State::default()
    });
    let aad = TcpListener::bind(("127.0.0.1", 0)).await?;
    let upstream = TcpListener::bind(("127.0.0.1", 0)).await?;
    let (aad_addr, upstream_addr) = (aad.local_addr()?, upstream.local_addr()?);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(serve(aad, acceptor.clone(), state.clone(), Role::Aad));
    tokio::spawn(serve(
        upstream,
        acceptor,
        state,
        Role::Upstream(upstream_addr),
    ));

    let ready = json!({
        "authority_host": format!("https://{aad_addr}"),
        "upstream": format!("https://{upstream_addr}"),
        "ca_file": ca_file,
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}")?;
    stdout.flush()?;
    drop(stdout);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// A CA and a leaf for `localhost` / `127.0.0.1` signed by it: the CA's PEM and a server config for the leaf.
fn certificates() -> Result<(String, Arc<rustls::ServerConfig>), BoxError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "aml-auth-proxy interop CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "aml-auth-proxy interop server");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((ca_cert.pem(), Arc::new(config)))
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Aad,
    /// The upstream, with its own address (for the URLs in LRO headers).
    Upstream(SocketAddr),
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    role: Role,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, role, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

async fn handle(state: &State, role: Role, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
    {
        Ok(b) if b.len() <= MAX_BODY => b,
        _ => return json_response(StatusCode::BAD_REQUEST, &json!({"error": "bad body"})),
    };
    match role {
        Role::Aad => aad(state, &parts, &body),
        Role::Upstream(addr) => upstream(state, addr, &parts, &body),
    }
}

fn aad(state: &State, parts: &http::request::Parts, body: &[u8]) -> Response<Body> {
    if parts.method == Method::GET && parts.uri.path() == "/__stats" {
        let requests = lock(&state.token_requests).clone();
        let issued = lock(&state.issued).len();
        return json_response(
            StatusCode::OK,
            &json!({"token_requests": requests, "issued": issued}),
        );
    }
    let segments: Vec<&str> = parts.uri.path().split('/').collect();
    let tenant = match segments.as_slice() {
        ["", tenant, "oauth2", "v2.0", "token"] if parts.method == Method::POST => *tenant,
        _ => return json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
    };
    *lock(&state.token_requests)
        .entry(tenant.to_owned())
        .or_default() += 1;
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| form.get(name).filter(|v| !v.is_empty());
    let has_credential = field("client_secret").is_some() || field("client_assertion").is_some();
    let scope = match (
        field("grant_type").map(String::as_str),
        field("client_id"),
        field("scope"),
    ) {
        (Some("client_credentials"), Some(_), Some(scope)) if has_credential => scope.clone(),
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_request", "error_description": "AADSTS900144: a required field is missing", "error_codes": [900144]}),
            );
        }
    };
    if tenant == "ca-blocked" {
        let mut r = Response::new(full(CA_BLOCKED));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let n = state.next.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("at.{tenant}.{n}");
    let expiry = SystemTime::now() + Duration::from_secs(state.ttl);
    lock(&state.issued).insert(token.clone(), (scope, expiry));
    json_response(
        StatusCode::OK,
        &json!({"token_type": "Bearer", "expires_in": state.ttl, "ext_expires_in": state.ttl, "access_token": token}),
    )
}

fn upstream(
    state: &State,
    addr: SocketAddr,
    parts: &http::request::Parts,
    body: &[u8],
) -> Response<Body> {
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let scope = token.as_ref().and_then(|t| {
        let issued = lock(&state.issued);
        issued
            .get(t)
            .filter(|(_, expiry)| *expiry > SystemTime::now())
            .map(|(scope, _)| scope.clone())
    });
    let Some(scope) = scope else {
        let mut r = json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid or expired."}}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(INVALID_TOKEN),
        );
        return r;
    };
    let path = parts.uri.path();
    let query = parts.uri.query();
    if path.ends_with("/lro") {
        let base = format!("https://{addr}");
        let mut r = json_response(StatusCode::ACCEPTED, &json!({"status": "InProgress"}));
        let headers = r.headers_mut();
        let urls = [
            (
                header::LOCATION.as_str(),
                format!("{base}/operations/1/result?api-version=2024-04-01"),
            ),
            (
                "azure-asyncoperation",
                format!("{base}/operations/1/status?api-version=2024-04-01"),
            ),
            (
                "operation-location",
                format!("{base}/operations/1/status?api-version=2024-04-01"),
            ),
        ];
        for (name, url) in urls {
            if let Ok(value) = HeaderValue::try_from(url) {
                headers.insert(name, value);
            }
        }
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        return r;
    }
    if path.ends_with("/operations/1/status") {
        return json_response(StatusCode::OK, &json!({"status": "Succeeded"}));
    }
    if path == "/stream" {
        return stream(
            query_u64(query, "chunks", 5),
            Duration::from_millis(query_u64(query, "interval_ms", 100)),
        );
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|s| !s.is_informational())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return json_response(status, &json!({"status": status.as_u16()}));
    }
    // HTTP/2 carries the authority in the URI (`:authority`), HTTP/1.1 in `Host`.
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            let host = parts.headers.get(header::HOST)?;
            host.to_str().ok().map(str::to_owned)
        });
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<Value> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let value = match <[Value; 1]>::try_from(values) {
            Ok([single]) => single,
            Err(many) => Value::Array(many),
        };
        headers.insert(name.as_str().to_owned(), value);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "method": parts.method.as_str(),
            "path": path,
            "query": query,
            "version": format!("{:?}", parts.version),
            "authority": authority,
            "token": token,
            "token_scope": scope,
            "headers": headers,
            "body": String::from_utf8_lossy(body),
        }),
    )
}

/// Server-sent events: `data: i`, the first at once, then one every `interval`.
fn stream(chunks: u64, interval: Duration) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for i in 0..chunks {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            if tx
                .send(Bytes::from(format!("data: {i}\n\n")))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A body whose frames arrive through a channel; it ends when the sender is dropped.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|b| Ok(Frame::data(b))))
    }
}

fn query_u64(query: Option<&str>, name: &str, default: u64) -> u64 {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default)
}

fn full(body: impl Into<Bytes>) -> Body {
    BodyExt::boxed(Full::new(body.into()))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Locks a mutex, carrying on with the data if a handler panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
