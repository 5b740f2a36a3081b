//! Header limits (64 KiB of request head, 100 fields): too many header fields, a header larger than the read buffer
//! (sent in pieces, the hyper #4081 bypass), an over-long request line. hyper answers these itself, before the
//! proxy's stack runs: a bare status with `content-length: 0` and `connection: close`, no JSON body (docs/errors.md
//! documents this for `RequestHeadersTooLarge`).

use std::time::Duration;

use super::{CLOSE_WAIT, exchange, h1_plain_upstream, proxy_to, send_raw, upstream_paths};
use crate::support::proxy::World;
use crate::support::trace_init;

/// A GET for `path` with `count` header fields in all (Host and Connection included when asked).
fn with_headers(path: &str, count: usize, close: bool) -> String {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    let fixed = 1 + usize::from(close);
    for i in 0..count - fixed {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

/// A GET for `path` with one `X-Big` header of `size` bytes, cut into 16 KiB writes.
fn big_header_writes(path: &str, size: usize) -> Vec<Vec<u8>> {
    let mut writes = vec![
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Big: ")
            .into_bytes(),
    ];
    let value = vec![b'a'; size];
    writes.extend(value.chunks(16 * 1024).map(<[u8]>::to_vec));
    writes.push(b"\r\n\r\n".to_vec());
    writes
}

#[tokio::test]
async fn more_than_100_header_fields_is_431_and_the_connection_closes() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "many", "").await;

    let wire = send_raw(proxy.addr(), with_headers("/hundred", 100, true).as_bytes()).await;
    assert_eq!(
        wire.statuses(),
        [200],
        "100 fields are fine: {}",
        wire.text()
    );

    // No `Connection: close`: the proxy must close by itself.
    let wire = send_raw(
        proxy.addr(),
        with_headers("/hundred-and-one", 101, false).as_bytes(),
    )
    .await;
    assert_eq!(wire.statuses(), [431], "{}", wire.text());
    assert!(wire.closed, "connection left open after 431");
    let (_, headers, body) = wire.response();
    // Today: hyper's own answer, not the proxy's JSON `RequestHeadersTooLarge`.
    assert!(body.is_empty(), "{}", wire.text());
    assert!(!headers.contains_key("x-aml-auth-proxy-error"));

    assert_eq!(upstream_paths(&upstream).await, ["/hundred"]);
    proxy.stop().await;
}

#[tokio::test]
async fn header_beyond_the_read_buffer_sent_in_pieces_is_431() {
    let _trace = trace_init();
    // Regression for hyper #4081 (max_buf_size bypassed by a header split across reads; fixed in 1.11.0).
    // hyper's buffer limit today is its default, 8192 + 4096 × 100 = 417 792 bytes.
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "bigheader", "").await;
    let writes = big_header_writes("/big", 450 * 1024);
    let refs: Vec<&[u8]> = writes.iter().map(Vec::as_slice).collect();
    let total: usize = refs.iter().map(|w| w.len()).sum();
    let wire = exchange(proxy.addr(), &refs, Duration::from_millis(2), CLOSE_WAIT).await;
    assert_eq!(wire.statuses(), [431], "{}", wire.text());
    assert!(wire.closed, "connection left open after 431");
    assert!(
        wire.sent < total,
        "the proxy read all {total} bytes before refusing"
    );
    let paths = upstream_paths(&upstream).await;
    assert!(paths.is_empty(), "the upstream saw {paths:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn header_over_64_kib_sent_in_pieces_is_431() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "header64", "").await;
    let writes = big_header_writes("/big", 65 * 1024);
    let refs: Vec<&[u8]> = writes.iter().map(Vec::as_slice).collect();
    let wire = exchange(proxy.addr(), &refs, Duration::from_millis(2), CLOSE_WAIT).await;
    assert_eq!(
        wire.statuses(),
        [431],
        "{}",
        wire.text().chars().take(200).collect::<String>()
    );
    assert!(wire.closed, "connection left open after 431");
    let paths = upstream_paths(&upstream).await;
    assert!(paths.is_empty(), "the upstream saw {paths:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn over_long_request_line_is_414_or_431_and_the_connection_closes() {
    let _trace = trace_init();
    // hyper refuses a request target over 65 534 bytes with 414 before the header limit applies.
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "longline", "").await;
    let request = format!(
        "GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(70_000)
    );
    let wire = send_raw(proxy.addr(), request.as_bytes()).await;
    let statuses = wire.statuses();
    assert!(
        statuses == [414] || statuses == [431],
        "statuses {statuses:?}: {}",
        wire.text()
    );
    assert!(wire.closed, "connection left open");
    let paths = upstream_paths(&upstream).await;
    assert!(paths.is_empty(), "the upstream saw {paths:?}");
    proxy.stop().await;
}
