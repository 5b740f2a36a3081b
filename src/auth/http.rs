//! A small HTTP client for token services (Entra ID, IMDS, …): bounded bodies, one timeout per attempt,
//! never follows redirects, never logs bodies.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error_chain;

/// The largest token-service response body read; anything larger is an error (a token response is ~2-8 KiB).
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;

/// Settings of the token-service client.
#[derive(Debug, Clone)]
pub struct HttpClientOptions {
    /// TCP connect (and, inside `attempt_timeout`, TLS) time limit.
    pub connect_timeout: Duration,
    /// Time limit for one request, from sending to the last body byte.
    pub attempt_timeout: Duration,
}

/// A cheap-to-clone HTTP(S) client for token services.
#[derive(Clone)]
pub struct TokenHttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    attempt_timeout: Duration,
}

/// A complete, bounded response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (at most [`MAX_BODY_BYTES`]).
    pub body: Bytes,
}

/// Why a token-service request produced no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No complete response within the attempt timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// Connect, TLS or protocol failure.
    #[error("{0}")]
    Transport(String),
    /// The body exceeded [`MAX_BODY_BYTES`].
    #[error("response body larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
}

// === impl HttpClientOptions ===

impl Default for HttpClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

// === impl TokenHttpClient ===

impl TokenHttpClient {
    /// A client using `tls` for `https://` and plain TCP for `http://` (configuration allows plain http only for
    /// loopback hosts).
    pub fn new(tls: Arc<rustls::ClientConfig>, options: &HttpClientOptions) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Self {
            client,
            attempt_timeout: options.attempt_timeout,
        }
    }

    /// The same client (sharing its connection pool) with another per-attempt timeout, e.g. for probes.
    pub fn with_attempt_timeout(&self, attempt_timeout: Duration) -> Self {
        Self {
            client: self.client.clone(),
            attempt_timeout,
        }
    }

    /// Sends `request` and reads the whole (bounded) response within the attempt timeout.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<HttpResponse, HttpError> {
        let exchange = async {
            let response = self.client.request(request).await;
            let (parts, body) = response
                .map_err(|e| HttpError::Transport(error_chain(&e)))?
                .into_parts();
            let body = Limited::new(body, MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::BodyTooLarge
                    } else {
                        HttpError::Transport(error_chain(e.as_ref()))
                    }
                })?;
            Ok(HttpResponse {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        let limit = self.attempt_timeout;
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| HttpError::Timeout(limit))?
    }
}

impl std::fmt::Debug for TokenHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenHttpClient")
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored), capped at one hour.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}
