//! Name resolution for upstreams that never yields a link-local address: a forwarded request, which carries a
//! token, must not reach IMDS (169.254.169.254) or another link-local service, whatever a DNS name resolves to
//! (the proxy must never become a way to reach IMDS). Configuration refuses link-local IP literals in every spelling (the connector does not
//! resolve a literal, so that check is what stops one); this covers names, whatever form their addresses take.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower::Service;

/// The system resolver, minus link-local addresses.
#[derive(Clone, Debug)]
pub struct NoLinkLocal(GaiResolver);

/// Future of [`NoLinkLocal`].
pub type ResolveFuture =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, io::Error>> + Send>>;

// === impl NoLinkLocal ===

impl NoLinkLocal {
    /// The system resolver, filtered.
    pub fn new() -> Self {
        Self(GaiResolver::new())
    }
}

impl Default for NoLinkLocal {
    fn default() -> Self {
        Self::new()
    }
}

impl Service<Name> for NoLinkLocal {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> ResolveFuture {
        let shown = name.as_str().to_owned();
        let lookup = self.0.call(name);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = lookup.await?.filter(|a| !is_link_local(a.ip())).collect();
            if addrs.is_empty() {
                return Err(io::Error::other(format!(
                    "{shown} resolves to no usable address (link-local addresses such as IMDS are refused)"
                )));
            }
            Ok(addrs.into_iter())
        })
    }
}

/// 169.254.0.0/16, fe80::/10, and IPv6 addresses that carry a link-local IPv4 address (mapped, compatible, NAT64,
/// 6to4): see [`crate::ip::is_link_local`].
pub fn is_link_local(ip: IpAddr) -> bool {
    crate::ip::is_link_local(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_addresses() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::",
        ] {
            assert!(is_link_local(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["127.0.0.1", "10.0.0.1", "::1", "20.50.2.1"] {
            assert!(!is_link_local(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_that_resolve_only_to_loopback_pass() {
        let addrs: Vec<_> = NoLinkLocal::new()
            .call("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
    }
}
