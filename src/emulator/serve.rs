//! Listeners and the plumbing every role shares: accept loops (HTTP/1.1 and HTTP/2, over TLS with ALPN in `--tls`
//! mode), dispatch by role, one access line per request on stderr, and small request/response helpers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::State;

/// The response body of every role.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// The largest body read from token, control and ARM requests (they carry small forms and JSON documents).
pub(crate) const SMALL_BODY: usize = 1 << 20;

/// Which Azure service a listener plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Entra ID, the managed-identity endpoints and the control API.
    Login,
    /// Azure Resource Manager.
    Arm,
    /// The echoing upstream and workspace data plane.
    Upstream,
    /// The scoring listener of the online endpoint at this index.
    Scoring(usize),
}

// === impl Role ===

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Login => "login",
            Role::Arm => "arm",
            Role::Upstream => "upstream",
            Role::Scoring(_) => "scoring",
        }
    }
}

/// Accepts connections until `stop` fires; each connection is served until it ends or `stop` fires.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    role: Role,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(target: "aml_auth_proxy::emulator", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, state, mut stop) = (tls.clone(), state.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, role, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Connection errors (a client hanging up) are not the emulator's concern.
            let served = async {
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                _ = stop.changed() => {}
            }
        });
    }
}

async fn handle(state: Arc<State>, role: Role, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    // The path only: query strings carry codes, states and the like.
    let path = req.uri().path().to_owned();
    let response = match role {
        Role::Login => {
            let lower = path.to_ascii_lowercase();
            if lower.starts_with("/__control") || lower.starts_with("/__stats") {
                super::control::handle(&state, req).await
            } else if lower == "/metadata/identity/oauth2/token" {
                super::managed_identity::imds(&state, req).await
            } else if lower == "/msi/token" {
                super::managed_identity::msi(&state, req).await
            } else {
                super::entra::handle(&state, req).await
            }
        }
        Role::Arm => super::arm::handle(&state, req).await,
        Role::Upstream => super::upstream::handle(&state, req).await,
        Role::Scoring(index) => super::scoring::handle(&state, index, req).await,
    };
    tracing::info!(
        target: "aml_auth_proxy::emulator",
        role = role.name(),
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        "request"
    );
    response
}

// === request helpers ===

/// Reads a whole body of at most `limit` bytes; a larger one is answered 413.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Response<Body>> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({"error": {"code": "RequestTooLarge", "message": format!("request bodies here are limited to {limit} bytes")}}),
        )),
    }
}

/// What a streamed body held: its length, SHA-256 (hex) and its first `keep` bytes.
pub(crate) struct BodySummary {
    pub(crate) len: u64,
    pub(crate) sha256: String,
    pub(crate) head: Bytes,
    /// Whether `head` is the whole body.
    pub(crate) complete: bool,
}

/// Reads a body of any size, keeping only its first `keep` bytes.
pub(crate) async fn summarize_body(mut body: Incoming, keep: usize) -> BodySummary {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut head = BytesMut::new();
    let mut len = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            ctx.update(&data);
            len += data.len() as u64;
            let room = keep.saturating_sub(head.len());
            head.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    let sha256 = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    BodySummary {
        len,
        sha256,
        complete: head.len() as u64 == len,
        head: head.freeze(),
    }
}

/// Query parameters in order (names may repeat).
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The first value of `name` in `pairs`.
pub(crate) fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A form body as a map (the last value of a repeated name wins).
pub(crate) fn form(body: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// A header's value as text.
pub(crate) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token of `Authorization: Bearer <token>` (scheme compared case-insensitively).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let (scheme, token) = header_text(headers, "authorization")?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

// === response helpers ===

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A JSON answer, compact as Azure sends it.
pub(crate) fn json(status: StatusCode, value: &Value) -> Response<Body> {
    body_response(status, value.to_string(), "application/json; charset=utf-8")
}

/// A JSON answer, indented for people reading it in a terminal.
pub(crate) fn json_pretty(status: StatusCode, value: &Value) -> Response<Body> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    body_response(status, text, "application/json; charset=utf-8")
}

/// A body with a content type.
pub(crate) fn body_response(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An empty answer.
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Adds a header (values that are not valid header text are left out).
pub(crate) fn with_header(
    mut response: Response<Body>,
    name: impl TryInto<HeaderName>,
    value: impl AsRef<str>,
) -> Response<Body> {
    if let (Ok(name), Ok(value)) = (name.try_into(), HeaderValue::from_str(value.as_ref())) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// `Cache-Control: no-store` and `Pragma: no-cache`, as token services send.
pub(crate) fn no_store(response: Response<Body>) -> Response<Body> {
    let response = with_header(response, header::CACHE_CONTROL, "no-store, no-cache");
    with_header(response, header::PRAGMA, "no-cache")
}

/// A body fed by a channel; it ends when the sender is dropped.
pub(crate) struct ChannelBody(mpsc::Receiver<Bytes>);

impl ChannelBody {
    /// A body and the sender that feeds it.
    pub(crate) fn channel() -> (mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = mpsc::channel(1);
        (tx, Self(rx).boxed())
    }
}

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
