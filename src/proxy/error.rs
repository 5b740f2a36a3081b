//! Errors the proxy itself generates, each with its status and stable code (the `code` of the JSON error answer
//! and of the `x-aml-auth-proxy-error` header: part of the proxy's interface, never renamed).

use std::time::Duration;

use http::{HeaderName, Method, StatusCode};

/// A request the proxy answers itself instead of forwarding.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `caller_auth` is configured and the request lacks the key, or carries a wrong one (or several).
    #[error("{message}")]
    CallerNotAuthenticated {
        /// The header that must carry the key (for `WWW-Authenticate`).
        header: HeaderName,
        /// What was wrong; never the key or what the caller sent.
        message: String,
    },
    /// No route matches the request path (and host). The message lists the routes' path prefixes.
    #[error("{0}")]
    NoRoute(std::sync::Arc<str>),
    /// The `Host` header (or the request target's authority) is not an allowed host name.
    #[error("{0}")]
    HostNotAllowed(String),
    /// A browser cross-origin request.
    #[error("{0}")]
    OriginNotAllowed(String),
    /// The route's `allow.methods` refused the method.
    #[error("method {method} is not allowed on this route")]
    MethodNotAllowed {
        /// The refused method.
        method: Method,
        /// What the route allows (for the `Allow` header).
        allowed: Vec<Method>,
    },
    /// The route's `allow.paths` refused the path.
    #[error("path is not allowed on this route")]
    PathNotAllowed,
    /// A malformed or dangerous request target.
    #[error("{0}")]
    BadRequest(&'static str),
    /// Connect, TLS or protocol error to the upstream.
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// No response headers within `upstream_response_timeout`.
    #[error("the upstream sent no response headers within {}s", .0.as_secs())]
    UpstreamTimeout(Duration),
    /// More than `max_in_flight` requests.
    #[error("more than {0} requests in flight")]
    Overloaded(usize),
    /// The request body stopped arriving (`stream_idle_timeout`), or arrived so slowly that its slot was given to
    /// another request at `max_in_flight`.
    #[error("the request body arrived too slowly")]
    RequestBodyTimeout,
}

// === impl ProxyError ===

impl ProxyError {
    /// The status code of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::CallerNotAuthenticated { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::HostNotAllowed(_) => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::OriginNotAllowed(_) | ProxyError::PathNotAllowed => StatusCode::FORBIDDEN,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The stable error code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::CallerNotAuthenticated { .. } => "CallerNotAuthenticated",
            ProxyError::NoRoute(_) => "NoRoute",
            ProxyError::HostNotAllowed(_) => "HostNotAllowed",
            ProxyError::OriginNotAllowed(_) => "OriginNotAllowed",
            ProxyError::MethodNotAllowed { .. } => "MethodNotAllowed",
            ProxyError::PathNotAllowed => "PathNotAllowed",
            ProxyError::BadRequest(_) => "BadRequest",
            ProxyError::UpstreamUnavailable(_) => "UpstreamUnavailable",
            ProxyError::UpstreamTimeout(_) => "UpstreamTimeout",
            ProxyError::Overloaded(_) => "Overloaded",
            ProxyError::RequestBodyTimeout => "RequestBodyTimeout",
        }
    }
}
