//! The process lifecycle of the real binary: configuration reloads on SIGHUP, where a bad file is refused and the
//! running configuration keeps serving (F15), and the SIGTERM drain, which finishes what is in flight (F16).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::h2_frames::{self, DATA, END_STREAM, GOAWAY, H2Conn, HEADERS, RST_STREAM};
use crate::support::metrics::series_at;
use crate::support::process::{RunningProxy, refuses_connections};
use crate::support::proxy::{CLIENT_ID, World, route_to};
use crate::support::raw;
use crate::support::{eventually, get, http_client, json_body, request_via, trace_init};

/// Configuration reloads refused, and applied.
const RELOAD_FAILURES: &str = "aml_auth_proxy_config_reload_failures_total";
const RELOADS: &str = "aml_auth_proxy_config_reloads_total";

/// A reload counter of the running binary (0 until the first reload counts).
async fn reload_metric(proxy: &RunningProxy, series: &str) -> f64 {
    series_at(&proxy.admin_url("/metrics"), series)
        .await
        .unwrap_or(0.0)
}

// =====================================================================================================================
// F15 — configuration reload with a bad file, then a good one (the binary, SIGHUP)
// =====================================================================================================================

/// F15: under concurrent load, three bad files (invalid YAML, a plain-HTTP non-loopback upstream, a world-readable
/// secret file) are each refused with one error line and `aml_auth_proxy_config_reload_failures_total` +1 while
/// the running configuration serves with 0 failed requests; then a good file takes effect within 1 s, a request
/// in flight on the old configuration finishes whole, and the removed credential stops refreshing.
#[tokio::test(flavor = "multi_thread")]
async fn f15_sighup_bad_files_keep_serving_and_a_good_one_applies_within_1s() {
    let _trace = trace_init();
    let world = World::new().await;
    // The old credential's 2 s tokens are refreshed about every second.
    let old = world.config(
        &World::sp("old", "ttl2"),
        &world.route("one", "/one", "old", ""),
    );
    let proxy = RunningProxy::start_in(&world.dir, &old).await;
    let file = proxy.config.clone().unwrap();
    let listen: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    let secret = world.dir.file("secret", "s3cret-value", 0o644);
    let bad_files = [
        "routes: [ this is not valid\n".to_owned(),
        world.config(
            &World::sp("old", "ttl2"),
            &route_to("one", "/one", "http://example.com"),
        ),
        world.config(
            &format!(
                "  old:\n    client_secret: {{ tenant_id: ttl2, client_id: {}, client_secret_file: {} }}\n",
                CLIENT_ID,
                secret.display()
            ),
            &world.route("one", "/one", "old", ""),
        ),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), proxy.url("/one/x"));
        load.spawn(async move {
            let client = http_client();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push(request_via(&client, Method::GET, &url, &[], "").await.0);
            }
            statuses
        });
    }
    for (n, bad) in bad_files.iter().enumerate() {
        std::fs::write(&file, format!("{listen}{bad}")).unwrap();
        proxy.child.signal("HUP");
        let want = (n + 1) as f64;
        let start = Instant::now();
        while reload_metric(&proxy, RELOAD_FAILURES).await < want {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "bad file {n} not refused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    while let Some(r) = load.join_next().await {
        statuses.extend(r.unwrap());
    }
    assert!(statuses.len() > 20, "{} requests", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "failed requests during bad reloads: {:?}",
        statuses
            .iter()
            .filter(|s| **s != StatusCode::OK)
            .collect::<Vec<_>>()
    );
    let stderr = proxy.child.stderr_so_far();
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("configuration reload refused"))
        .collect();
    assert_eq!(refused.len(), 3, "one error line per bad file:\n{stderr}");
    assert!(refused[1].contains("routes[0].upstream"), "{}", refused[1]);
    assert!(refused[2].contains("secret"), "{}", refused[2]);
    assert!(!stderr.contains("s3cret-value"));
    assert_eq!(reload_metric(&proxy, RELOADS).await, 0.0);

    // A request in flight on the old configuration: a 2 s stream.
    let stream_url = proxy.url("/one/stream?chunks=20&interval_ms=100");
    let in_flight = tokio::spawn(async move { get(&stream_url).await });
    tokio::time::sleep(Duration::from_millis(150)).await;

    let new = world.config(
        &World::sp("new", "hupnew"),
        &world.route("two", "/two", "new", ""),
    );
    std::fs::write(&file, format!("{listen}{new}")).unwrap();
    let sent = Instant::now();
    proxy.child.signal("HUP");
    while get(&proxy.url("/two/x")).await.0 != StatusCode::OK {
        assert!(
            sent.elapsed() <= Duration::from_secs(1),
            "the good file took longer than 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let effective = sent.elapsed();
    assert!(effective <= Duration::from_secs(1), "{effective:?}");
    eprintln!("F15: the good file took effect {effective:?} after SIGHUP");
    assert_eq!(get(&proxy.url("/one/x")).await.0, StatusCode::NOT_FOUND);
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body).matches("data:").count(),
        20,
        "cut short"
    );
    assert_eq!(reload_metric(&proxy, RELOADS).await, 1.0);

    // The removed credential's refresher is gone once the last request on the old configuration has finished.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = world.aad.count("ttl2");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        world.aad.count("ttl2"),
        before,
        "the removed credential kept refreshing"
    );
    let out = proxy.stop().await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

// =====================================================================================================================
// F16 — SIGTERM drain (the binary)
// =====================================================================================================================

/// Reads an HTTP/1 response with a Content-Length body from `s`; returns (head, body).
async fn read_h1_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let (head, mut body) = raw::read_head(s).await.expect("a response");
    let len: usize = raw::header(&head, "content-length")
        .expect("content-length")
        .parse()
        .unwrap();
    let mut chunk = [0u8; 8192];
    while body.len() < len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

/// True if the peer closes `s` within `limit` (EOF or reset); data still arriving on the way is read and dropped.
async fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// F16: on SIGTERM the proxy stops accepting connections, reports not ready, closes idle keep-alive connections
/// at once, finishes the in-flight HTTP/1 request with its full body and `Connection: close`, sends the HTTP/2
/// connection a GOAWAY and completes its in-flight stream, then exits 0 well before `drain_timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn f16_sigterm_drains_http1_and_http2_in_flight_requests_and_exits_0() {
    let _trace = trace_init();
    let world = World::new().await;
    let yaml = format!(
        "limits:\n  drain_timeout: 10s\n{}",
        world.config(
            &World::sp("sp", "drain"),
            &world.route("arm", "/", "sp", "")
        )
    );
    let proxy = RunningProxy::start_in(&world.dir, &yaml).await;
    let addr = proxy.listen;

    // An idle keep-alive connection (one exchange done).
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /idle HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_h1_response(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // An HTTP/1 request whose answer takes 1.5 s.
    let mut h1 = TcpStream::connect(addr).await.unwrap();
    h1.write_all(b"GET /slow-headers?ms=1500 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    // An HTTP/2 stream of 10 events over ~1 s.
    let mut h2 = H2Conn::connect(addr).await;
    let authority = format!("127.0.0.1:{}", addr.port());
    h2.send(&h2_frames::get(
        1,
        &authority,
        "/stream?chunks=10&interval_ms=100",
        &[],
    ))
    .await;
    let mut h2_body = Vec::new();
    loop {
        let f = h2
            .next(Duration::from_secs(5))
            .await
            .expect("stream 1 answered");
        if f.stream == 1 && f.kind == HEADERS {
            break;
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || world
            .upstream
            .requests()
            .iter()
            .any(|r| r.path == "/slow-headers"))
        .await
        .is_some()
    );

    let RunningProxy {
        mut child, admin, ..
    } = proxy;
    child.sigterm();
    let signalled = Instant::now();
    // No new connections; not ready; the idle connection is closed promptly.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !refuses_connections(addr).await {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, body) = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        closes_within(&mut idle, Duration::from_secs(1)).await,
        "idle connection kept open"
    );

    // HTTP/2: GOAWAY, and stream 1 completes.
    let (mut goaway, mut ended) = (false, false);
    while let Some(f) = h2.next(Duration::from_secs(5)).await {
        match (f.kind, f.stream) {
            (GOAWAY, 0) => goaway = true,
            (DATA, 1) => {
                h2_body.extend_from_slice(&f.payload);
                ended |= f.flags & END_STREAM != 0;
            }
            (RST_STREAM, 1) => panic!("stream 1 was reset"),
            _ => {}
        }
        if goaway && ended {
            break;
        }
    }
    assert!(goaway, "no GOAWAY");
    assert!(ended, "stream 1 did not complete");
    let expected: String = (0..10).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&h2_body), expected);

    // HTTP/1: the full answer with Connection: close, then the connection closes.
    let (head, body) = read_h1_response(&mut h1).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        raw::header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "{head}"
    );
    assert_eq!(json_body(&body)["path"], "/slow-headers");
    assert!(closes_within(&mut h1, Duration::from_secs(2)).await);
    drop(h2);

    let status = child
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exited");
    assert_eq!(status.code(), Some(0));
    eprintln!("F16: exit 0 {:?} after SIGTERM", signalled.elapsed());
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "exit {:?} after SIGTERM",
        signalled.elapsed()
    );
}

/// F16: a second SIGTERM ends a long drain at once (exit 0), cutting the stream that would have run for 100 s.
#[tokio::test(flavor = "multi_thread")]
async fn f16_a_second_signal_stops_at_once() {
    let _trace = trace_init();
    let world = World::new().await;
    let yaml = format!(
        "limits:\n  drain_timeout: 30s\n{}",
        world.config(
            &World::sp("sp", "drain2"),
            &world.route("arm", "/", "sp", "")
        )
    );
    let proxy = RunningProxy::start_in(&world.dir, &yaml).await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(b"GET /stream?chunks=1000&interval_ms=100 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let _ = raw::read_head(&mut s).await.expect("the stream started");
    let RunningProxy {
        mut child, listen, ..
    } = proxy;
    child.sigterm();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !refuses_connections(listen).await {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        child.try_exit().is_none(),
        "exited on the first signal with a stream in flight"
    );
    child.sigterm();
    let second = Instant::now();
    let status = child
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("still draining after the second signal");
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    assert!(closes_within(&mut s, Duration::from_secs(2)).await);
}
