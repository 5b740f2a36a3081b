//! A scriptable mock of the managed-identity endpoints (IMDS, App Service, Azure ML, Cloud Shell, Azure Arc).
//!
//! [`MockIdentity`] serves plain HTTP on `127.0.0.1:0`, on every path, and records every request as an
//! [`IdentityRequest`]. What a request gets is decided in this order:
//! 1. one-shot replies queued with [`MockIdentity::script`] (each used once, in order);
//! 2. the handler given to [`MockIdentity::start_with`] (default [`MockIdentity::imds_like`]: IMDS's 400 without
//!    `Metadata: true`, else a token in IMDS's all-strings format).
//!
//! Tokens it issues are `mi.<n>`. Nothing here contacts anything but loopback.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{BoxBody, BoxError, ServeOptions, Server, ServerHandle, full, now_unix, read_body};

/// Decides the reply to a request that no script entry answered.
pub(crate) type Handler = Arc<dyn Fn(&IdentityRequest, &Issuer) -> Reply + Send + Sync>;

/// One request the mock received.
#[derive(Clone, Debug)]
pub(crate) struct IdentityRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    /// Decoded query parameters (last value wins), in name order.
    pub(crate) query: BTreeMap<String, String>,
    /// The raw query string, if any.
    pub(crate) raw_query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// What the mock answers.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    /// `status` with `body` (sent verbatim, `Content-Type: application/json`) and extra headers.
    Json {
        status: StatusCode,
        body: String,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Drop the connection without a response.
    Close,
}

/// Issues unique token strings.
#[derive(Debug, Default)]
pub(crate) struct Issuer(AtomicU64);

/// A running mock; dropping it stops the server.
pub(crate) struct MockIdentity {
    handle: ServerHandle,
    state: Arc<State>,
}

struct State {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<IdentityRequest>>,
    handler: Handler,
    issuer: Issuer,
}

// === impl IdentityRequest ===

impl IdentityRequest {
    /// A header's value as text (`None` if absent or not text).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body, decoded as a form.
    pub(crate) fn form(&self) -> BTreeMap<String, String> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

// === impl Reply ===

impl Reply {
    /// `status` with a JSON body.
    pub(crate) fn json(status: u16, body: impl Into<String>) -> Self {
        Reply::Json {
            status: StatusCode::from_u16(status).expect("status"),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// `status` with an IMDS-style error body.
    pub(crate) fn error(status: u16, error: &str, description: &str) -> Self {
        Self::json(
            status,
            serde_json::json!({"error": error, "error_description": description}).to_string(),
        )
    }

    /// Adds a response header.
    pub(crate) fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Reply::Json { headers, .. } = &mut self {
            headers.push((
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("header value"),
            ));
        }
        self
    }

    /// 200 in IMDS's format: every number a string, `expires_in` and `expires_on`.
    pub(crate) fn imds_token(token: &str, ttl: u64) -> Self {
        let now = now_unix();
        Self::json(
            200,
            serde_json::json!({
                "access_token": token,
                "client_id": "00000000-0000-0000-0000-0000000000c1",
                "expires_in": ttl.to_string(),
                "expires_on": (now + ttl).to_string(),
                "ext_expires_in": ttl.to_string(),
                "not_before": now.to_string(),
                "resource": "https://management.azure.com",
                "token_type": "Bearer",
            })
            .to_string(),
        )
    }

    /// 200 in the App Service / Azure ML format: `expires_on` only, given verbatim (an epoch string or a
    /// legacy date).
    pub(crate) fn expires_on_token(token: &str, expires_on: &str) -> Self {
        Self::json(
            200,
            serde_json::json!({
                "access_token": token,
                "expires_on": expires_on,
                "resource": "https://management.azure.com",
                "token_type": "Bearer",
            })
            .to_string(),
        )
    }
}

// === impl Issuer ===

impl Issuer {
    /// A fresh token string `mi.<n>`.
    pub(crate) fn next(&self) -> String {
        format!("mi.{}", self.0.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

// === impl MockIdentity ===

impl MockIdentity {
    /// A mock that behaves like IMDS ([`MockIdentity::imds_like`]).
    pub(crate) async fn start() -> Self {
        Self::start_with(Arc::new(Self::imds_like)).await
    }

    /// A mock whose unscripted replies come from `handler`.
    pub(crate) async fn start_with(handler: Handler) -> Self {
        let server = Server::bind().await;
        let state = Arc::new(State {
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            handler,
            issuer: Issuer::default(),
        });
        let shared = state.clone();
        let handle = server.spawn(ServeOptions::default(), move |req| {
            let state = shared.clone();
            async move { state.serve(req).await }
        });
        Self { handle, state }
    }

    /// IMDS: 400 `Required metadata header not specified` without `Metadata: true`, else a 24 h token.
    pub(crate) fn imds_like(request: &IdentityRequest, issuer: &Issuer) -> Reply {
        if request.header("metadata") != Some("true") {
            return Reply::error(
                400,
                "invalid_request",
                "Required metadata header not specified",
            );
        }
        Reply::imds_token(&issuer.next(), 86399)
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.handle.addr())
    }

    /// `http://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Queues one-shot replies, used in order before the handler.
    pub(crate) fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Every request received so far.
    pub(crate) fn requests(&self) -> Vec<IdentityRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub(crate) fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// The last request.
    pub(crate) fn last(&self) -> IdentityRequest {
        self.requests().pop().expect("the mock received no request")
    }
}

impl State {
    async fn serve(&self, req: Request<Incoming>) -> Result<Response<BoxBody>, BoxError> {
        let (parts, body) = req.into_parts();
        let (body, _) = read_body(body).await?;
        let raw_query = parts.uri.query().map(str::to_owned);
        let request = IdentityRequest {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: form_urlencoded::parse(raw_query.as_deref().unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
            raw_query,
            headers: parts.headers,
            body,
        };
        self.requests.lock().unwrap().push(request.clone());
        let scripted = self.script.lock().unwrap().pop_front();
        let reply = scripted.unwrap_or_else(|| (self.handler)(&request, &self.issuer));
        match reply {
            Reply::Close => Err("closing the connection without a response".into()),
            Reply::Json {
                status,
                body,
                headers,
            } => {
                let mut response = Response::new(full(body));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                for (name, value) in headers {
                    response.headers_mut().append(name, value);
                }
                Ok(response)
            }
        }
    }
}
