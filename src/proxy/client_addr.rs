//! The caller's address, recorded per connection so the forwarded request can say who asked
//! (`X-Forwarded-For`), which also makes IMDS refuse it should it ever be reached (IMDS refuses requests that carry
//! `X-Forwarded-For`), and
//! the connection's slot for the upstream connection it last used.

use std::net::IpAddr;
use std::task::{Context, Poll};

use http::{HeaderValue, Request};
use tower::Service;

use super::client::Affinity;

/// Request extension: the IP address of the connection's peer (`None` over a Unix-domain socket), its
/// `X-Forwarded-For` value (made once per connection; `unknown` without an address), and the connection's
/// upstream [`Affinity`].
#[derive(Debug, Clone)]
pub struct ClientAddr {
    /// The peer's address.
    pub ip: Option<IpAddr>,
    /// `ip` as a header value.
    pub header: HeaderValue,
    /// The upstream connection this caller connection last used.
    pub affinity: Affinity,
}

/// Inserts [`ClientAddr`] into every request of one connection.
#[derive(Debug, Clone)]
pub struct WithClientAddr<S> {
    inner: S,
    addr: ClientAddr,
}

// === impl WithClientAddr ===

impl<S> WithClientAddr<S> {
    /// Wraps `inner` for a connection from `ip`.
    pub fn new(inner: S, ip: Option<IpAddr>) -> Self {
        let header = ip
            .and_then(|ip| HeaderValue::try_from(ip.to_string()).ok())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Self {
            inner,
            addr: ClientAddr {
                ip,
                header,
                affinity: Affinity::default(),
            },
        }
    }
}

impl<S, B> Service<Request<B>> for WithClientAddr<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        req.extensions_mut().insert(self.addr.clone());
        self.inner.call(req)
    }
}
