//! `probe`: GET a URL and exit 0 on a 2xx answer, for exec probes in images without curl.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::exit::{EXIT_FAILURE, EXIT_USAGE, fail};
use super::setup::{block_on, runtime};
use crate::auth::{HttpClientOptions, TokenHttpClient};

pub(super) fn probe(url: &str) -> ExitCode {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return fail(EXIT_USAGE, format!("probe: invalid URL {url:?}: {e}")),
    };
    let rt = match runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    block_on(rt, async move {
        let tls = match crate::tls::client_config(&[]) {
            Ok(t) => Arc::new(t),
            Err(e) => return fail(EXIT_FAILURE, e),
        };
        let client = TokenHttpClient::new(
            tls,
            &HttpClientOptions {
                connect_timeout: Duration::from_secs(2),
                attempt_timeout: Duration::from_secs(5),
            },
        );
        let request =
            match http::Request::get(uri).body(http_body_util::Full::new(bytes::Bytes::new())) {
                Ok(r) => r,
                Err(e) => return fail(EXIT_USAGE, format!("probe: {e}")),
            };
        match client.send(request).await {
            Ok(r) if r.status.is_success() => ExitCode::SUCCESS,
            Ok(r) => fail(EXIT_FAILURE, format!("probe: {url} answered {}", r.status)),
            Err(e) => fail(EXIT_FAILURE, format!("probe: {url}: {e}")),
        }
    })
}
