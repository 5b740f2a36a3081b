//! Slow and idle clients (hyper's header read timeout is silently off without a timer):
//! with `limits.request_header_timeout: 1s`, a client trickling its head one byte every 300 ms, and a
//! keep-alive connection left idle after a response, are both disconnected after about a second. Real time:
//! the timer is tokio's, but the sockets are real.

use std::time::Duration;

use tokio::time::Instant;

use super::{exchange, h1_plain_upstream, proxy_to, upstream_paths};
use crate::support::h2_frames::{self, H2Conn};
use crate::support::proxy::World;
use crate::support::trace_init;

/// The proxy's header timeout in these tests.
const LIMITS: &str = "limits:\n  request_header_timeout: 1s\n";
/// Closed no earlier than this: the timeout, not something else, ended the connection.
const AT_LEAST: Duration = Duration::from_millis(900);
/// Closed no later than this: the timeout plus generous slack for a loaded machine.
const AT_MOST: Duration = Duration::from_secs(3);

#[tokio::test]
async fn slowloris_client_is_disconnected_at_the_header_timeout() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "slowloris", LIMITS).await;
    let request =
        b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: abcdefghijklmnopqrstuvwxyz\r\n\r\n";
    // One byte every 300 ms: the whole head would take ~23 s.
    let bytes: Vec<&[u8]> = request.chunks(1).collect();
    let wire = exchange(proxy.addr(), &bytes, Duration::from_millis(300), AT_MOST).await;
    assert!(wire.closed, "still open after {:?}", wire.elapsed);
    assert!(
        (AT_LEAST..AT_MOST).contains(&wire.elapsed),
        "closed after {:?}",
        wire.elapsed
    );
    assert!(
        wire.sent < request.len(),
        "the client got to send all {} bytes",
        request.len()
    );
    // hyper closes without an answer (no 408).
    assert!(wire.statuses().is_empty(), "{}", wire.text());
    let paths = upstream_paths(&upstream).await;
    assert!(paths.is_empty(), "the upstream saw {paths:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "idle", LIMITS).await;
    // A complete keep-alive exchange, then nothing.
    let wire = exchange(
        proxy.addr(),
        &[b"GET /once HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"],
        Duration::ZERO,
        AT_MOST,
    )
    .await;
    assert_eq!(wire.statuses(), [200], "{}", wire.text());
    assert!(wire.closed, "still open after {:?}", wire.elapsed);
    assert!(
        (AT_LEAST..AT_MOST).contains(&wire.elapsed),
        "closed after {:?}",
        wire.elapsed
    );
    assert_eq!(upstream_paths(&upstream).await, ["/once"]);
    proxy.stop().await;
}

#[tokio::test]
async fn silent_connection_is_closed_at_the_header_timeout() {
    let _trace = trace_init();
    // Today both connections are still open after 3 s: the header read timeout only starts once the
    // HTTP/1 connection exists, and `auto` cannot tell HTTP/1 from HTTP/2 before it has bytes (or, for `P`,
    // the 24 bytes of the HTTP/2 preface). A client that connects and sends nothing holds a socket forever.
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "silent", LIMITS).await;
    let (nothing, preface_start) = tokio::join!(
        exchange(proxy.addr(), &[], Duration::ZERO, AT_MOST),
        exchange(
            proxy.addr(),
            &[b"PRI * HTTP/2.0\r\n"],
            Duration::ZERO,
            AT_MOST
        ),
    );
    for (what, wire) in [
        ("nothing", nothing),
        ("half an HTTP/2 preface", preface_start),
    ] {
        assert!(wire.closed, "{what}: still open after {:?}", wire.elapsed);
        assert!(
            wire.elapsed < AT_MOST,
            "{what}: closed after {:?}",
            wire.elapsed
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn http2_connection_that_never_sends_a_request_is_closed_at_the_header_timeout() {
    let _trace = trace_init();
    // Before, an HTTP/2 connection that sent the preface and SETTINGS (and answered pings) but no request stayed
    // open for as long as it liked; HTTP/1 gets request_header_timeout. Now both get the same deadline.
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "idleh2", LIMITS).await;
    let started = Instant::now();
    let mut conn = H2Conn::connect(proxy.addr()).await;
    // Answer the server's SETTINGS and pings, as a live client does, until the connection ends.
    while conn.next(AT_MOST).await.is_some() {
        assert!(started.elapsed() < AT_MOST, "still open after {AT_MOST:?}");
    }
    let closed = started.elapsed();
    assert!(
        (AT_LEAST..AT_MOST).contains(&closed),
        "closed after {closed:?}"
    );
    assert!(upstream_paths(&upstream).await.is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn http2_connection_stays_open_after_its_first_request() {
    let _trace = trace_init();
    // The deadline is for the first request only: afterwards an idle HTTP/2 connection is kept while it answers
    // keep-alive pings (load generators and SDKs reuse one), as before.
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "usedh2", LIMITS).await;
    let mut conn = H2Conn::connect(proxy.addr()).await;
    let authority = proxy.addr().to_string();
    conn.send(&h2_frames::get(1, &authority, "/first", &[]))
        .await;
    loop {
        let frame = conn.next(AT_MOST).await.expect("the response");
        if frame.stream == 1 && frame.flags & h2_frames::END_STREAM != 0 {
            break;
        }
    }
    assert!(
        !conn.closed_within(AT_MOST).await,
        "an HTTP/2 connection that had a request was closed while idle"
    );
    assert_eq!(upstream_paths(&upstream).await, ["/first"]);
    drop(conn);
    proxy.stop().await;
}
