//! The token service on a Unix-domain socket: mode 0600, served like the TCP listener.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{ARM, SECRET};
use crate::support::proxy::{TestProxy, World};
use crate::support::{json_body, trace_init};
use aml_auth_proxy::config::Listen;

/// `GET path` with `Host: localhost` and `headers` over a fresh connection to the socket at `socket`.
async fn uds_get(socket: &Path, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Bytes) {
    let exchange = async {
        let stream = UnixStream::connect(socket).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::get(path).header("host", "localhost");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("request over the Unix socket timed out")
}

#[tokio::test]
async fn the_token_service_answers_on_a_private_unix_socket() {
    let _t = trace_init();
    let world = World::new().await;
    let socket = world.dir.path().join("ts.sock");
    let text = super::config(
        &world,
        &World::sp("sp", "ts-uds"),
        "    default: sp\n",
        false,
    )
    .replace(
        "  listen: 127.0.0.1:0\n  secret_file",
        &format!("  listen: unix:{}\n  secret_file", socket.display()),
    );
    let proxy = TestProxy::start(&text).await;
    assert_eq!(proxy.token_service, Some(Listen::Unix(socket.clone())));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let path = format!("/msi/token?api-version=2019-08-01&resource={ARM}");
    let (status, body) = uds_get(&socket, &path, &[("x-identity-header", SECRET)]).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let token = json_body(&body)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(world.aad.registry().is_valid(&token));
    let (status, _) = uds_get(&socket, &path, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    proxy.stop().await;
    assert!(!socket.exists(), "the socket file is removed at shutdown");
}
