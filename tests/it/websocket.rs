//! WebSocket handshakes go through with the token, over HTTP/1.1, and the connection is spliced after `101`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::proxy::{TestProxy, World};
use crate::support::{TestCa, trace_init};

/// A TLS upstream (HTTP/1.1 only) that accepts a WebSocket handshake and echoes every byte afterwards.
/// Records the `Authorization` header of each handshake.
async fn echo_upstream(ca: &TestCa) -> (std::net::SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&[b"http/1.1"]));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    record.lock().unwrap().push(auth);
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let mut io = TokioIo::new(upgrade.await.unwrap());
                        let mut buf = [0u8; 1024];
                        loop {
                            let n = io.read(&mut buf).await.unwrap_or(0);
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    async {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header("connection", "upgrade")
                                .header("upgrade", "websocket")
                                .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn websocket_handshake_gets_the_token_and_bytes_flow_both_ways() {
    let _trace = trace_init();
    let world = World::new().await;
    let (addr, seen) = echo_upstream(&world.ca).await;
    let yaml = format!(
        "{}credentials:\n{}routes:\n  - name: ws\n    path_prefix: /\n    upstream: https://{addr}\n    scope: https://ml.azure.com/.default\n    credential: sp\n",
        world.header(),
        World::sp("sp", "ok")
    );
    let proxy = TestProxy::start(&yaml).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    conn.write_all(
        b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Authorization: Bearer caller-token\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).await.unwrap(),
            1,
            "connection closed during the handshake"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    conn.write_all(b"hello through the proxy").await.unwrap();
    let mut echoed = [0u8; 23];
    conn.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello through the proxy");
    let auth = seen.lock().unwrap().clone();
    assert_eq!(auth.len(), 1);
    let token = auth[0].as_deref().unwrap().strip_prefix("Bearer ").unwrap();
    assert!(
        world.aad.registry().is_valid(token),
        "the upstream got the minted token, not the caller's"
    );
}
