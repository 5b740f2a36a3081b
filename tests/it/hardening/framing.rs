//! What the proxy writes on the wire is its own serialisation, never the peer's spelling: `Content-Length` is
//! re-serialised as the number it stands for in both directions (a `0005` or a 200-zero length reaches no
//! parser that could read it differently), and an upstream's `Access-Control-*` headers never reach a caller
//! (the proxy does no CORS).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{proxy_to, send_raw};
use crate::support::proxy::World;
use crate::support::trace_init;

/// One request as a raw upstream read it off the wire.
#[derive(Clone, Debug)]
struct Captured {
    head: String,
    body: Vec<u8>,
}

/// A plain-HTTP upstream on 127.0.0.1 that records each request's bytes (head, and a body framed by
/// `Content-Length`), answers `response` and closes.
async fn capturing_upstream(response: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<Captured>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                let mut buf = [0u8; 4096];
                let end = loop {
                    if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end;
                    }
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => bytes.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
                let mut body = bytes[end + 4..].to_vec();
                while body.len() < length {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => body.extend_from_slice(&buf[..n]),
                    }
                }
                record.lock().unwrap().push(Captured { head, body });
                let _ = tcp.write_all(response).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// The values of every `name` header line in a raw head.
fn header_lines(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn content_length_is_re_serialised_on_the_wire_in_both_directions() {
    let _trace = trace_init();
    let world = World::new().await;
    let (addr, seen) = capturing_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0005\r\nConnection: close\r\n\r\nworld",
    )
    .await;
    let proxy = proxy_to(&world, &format!("http://{addr}"), "length", "").await;
    let port = proxy.addr().port();
    for sent in [
        "0005".to_owned(),
        format!("{}5", "0".repeat(200)),
        "5".to_owned(),
    ] {
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {sent}\r\nConnection: close\r\n\r\nhello"
        );
        let wire = send_raw(proxy.addr(), request.as_bytes()).await;
        // Caller → upstream, as the bytes arrived.
        let captured = seen
            .lock()
            .unwrap()
            .pop()
            .expect("the upstream got the request");
        assert_eq!(
            header_lines(&captured.head, "content-length"),
            ["5"],
            "Content-Length: {sent:.10}… arrived as {:?}",
            captured.head
        );
        assert_eq!(captured.body, b"hello");
        let (status, headers, body) = wire.response();
        assert_eq!(status, 200, "{}", wire.text());
        // Upstream → caller: the proxy's own spelling of the length.
        assert_eq!(
            headers.get_all("content-length").iter().count(),
            1,
            "{}",
            wire.text()
        );
        assert_eq!(headers["content-length"], "5", "{}", wire.text());
        assert_eq!(&body[..], b"world");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_access_control_headers_are_never_passed_on() {
    let _trace = trace_init();
    let world = World::new().await;
    let (addr, seen) = capturing_upstream(
        b"HTTP/1.1 200 OK\r\n\
          Access-Control-Allow-Origin: *\r\n\
          Access-Control-Allow-Credentials: true\r\n\
          Access-Control-Allow-Methods: GET, POST, DELETE\r\n\
          Access-Control-Allow-Headers: authorization\r\n\
          Access-Control-Expose-Headers: x-ms-request-id\r\n\
          Access-Control-Max-Age: 86400\r\n\
          Access-Control-Allow-Private-Network: true\r\n\
          X-Ms-Request-Id: kept\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await;
    let proxy = proxy_to(&world, &format!("http://{addr}"), "cors", "").await;
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        proxy.addr().port()
    );
    let wire = send_raw(proxy.addr(), request.as_bytes()).await;
    let (status, headers, body) = wire.response();
    assert_eq!(status, 200, "{}", wire.text());
    assert_eq!(&body[..], b"ok");
    let cors: Vec<&str> = headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| n.starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "CORS headers passed on: {cors:?}");
    assert_eq!(headers["x-ms-request-id"], "kept");
    assert_eq!(seen.lock().unwrap().len(), 1);
    proxy.stop().await;
}
