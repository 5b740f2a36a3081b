//! Marks the values of the request headers that carry secrets (`Authorization`, `Proxy-Authorization`, `Cookie`,
//! the caller-key header) sensitive before anything can log them. What tower-http's `SetSensitiveRequestHeaders`
//! does, in one pass over the request's few fields instead of a hashed look-up for each secret name.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, Request};
use tower::{Layer, Service};

/// Layer for [`MarkSensitive`].
#[derive(Debug, Clone)]
pub struct MarkSensitiveLayer {
    names: Arc<[HeaderName]>,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct MarkSensitive<S> {
    inner: S,
    names: Arc<[HeaderName]>,
}

// === impl MarkSensitiveLayer ===

impl MarkSensitiveLayer {
    /// Marks every value of the fields named in `names` sensitive.
    pub fn new(names: impl IntoIterator<Item = HeaderName>) -> Self {
        Self {
            names: names.into_iter().collect(),
        }
    }
}

impl<S> Layer<S> for MarkSensitiveLayer {
    type Service = MarkSensitive<S>;

    fn layer(&self, inner: S) -> MarkSensitive<S> {
        MarkSensitive {
            inner,
            names: Arc::clone(&self.names),
        }
    }
}

// === impl MarkSensitive ===

impl<S, B> Service<Request<B>> for MarkSensitive<S>
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
        for (name, value) in req.headers_mut().iter_mut() {
            if self.names.contains(name) {
                value.set_sensitive(true);
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use http::header::{ACCEPT, AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};

    use super::*;

    #[tokio::test]
    async fn every_value_of_a_secret_name_is_marked_and_nothing_else() {
        let key = HeaderName::from_static("x-aml-auth-proxy-key");
        let mut service =
            MarkSensitiveLayer::new([AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, key.clone()])
                .layer(tower::service_fn(|req: Request<()>| async move {
                    Ok::<_, std::convert::Infallible>(req)
                }));
        let req = Request::get("/")
            .header(ACCEPT, "*/*")
            .header(COOKIE, "a=1")
            .header(AUTHORIZATION, "Bearer x")
            .header(COOKIE, "b=2")
            .header(&key, "k")
            .header("x-other", "v")
            .body(())
            .unwrap();
        let seen = service.call(req).await.unwrap();
        let marked: Vec<(&str, bool)> = seen
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.is_sensitive()))
            .collect();
        assert_eq!(
            marked,
            [
                ("accept", false),
                ("cookie", true),
                ("cookie", true),
                ("authorization", true),
                ("x-aml-auth-proxy-key", true),
                ("x-other", false),
            ]
        );
    }
}
