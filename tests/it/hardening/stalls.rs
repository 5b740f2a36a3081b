//! Callers that stop reading, bodies that stop flowing, and callers that send their body too slowly: memory per
//! stalled connection stays small (the real binary, its peak RSS read from `/proc`); a caller that accepts no
//! response bytes is disconnected at `write_stall_timeout`; a body that moves no byte for `stream_idle_timeout` is
//! ended (408 `RequestBodyTimeout` for a request body), while streams that keep moving are not; slow uploads
//! cannot hold every `max_in_flight` slot.
//!
//! The upstream here is a raw TCP server so that the byte flow is under the test's control.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::support::metrics::{series_at, series_reaches};
use crate::support::process::{RunningProxy, proc_status_bytes};
use crate::support::proxy::{TestProxy, World, route_to};
use crate::support::raw::{self, RawServer};
use crate::support::{get, json_body, trace_init};

/// The size of the large response.
const BIG: u64 = 8 << 20;

/// A plain HTTP/1.1 upstream on 127.0.0.1:0; keep-alive. Counts the `/big` body bytes it managed to write.
/// - `GET /big`: [`BIG`] bytes (`Content-Length`), written from one shared buffer;
/// - `GET /stall`: `Content-Length: 1000`, 100 bytes, then silence (the connection stays open);
/// - `POST /sink`: reads the whole body (`Content-Length`), then answers `200` with its length;
/// - anything else: `200 ok`.
struct BulkUpstream {
    server: RawServer,
    written: Arc<AtomicU64>,
}

impl BulkUpstream {
    async fn start() -> Self {
        let written = Arc::new(AtomicU64::new(0));
        let block: Arc<[u8]> = vec![b'b'; 64 * 1024].into();
        let server = RawServer::start({
            let written = written.clone();
            move |s| serve_bulk(s, block.clone(), written.clone())
        })
        .await;
        Self { server, written }
    }

    /// A route block: everything under `/` to this upstream, credential `sp`.
    fn route(&self) -> String {
        route_to("bulk", "/", &self.server.url())
    }
}

async fn serve_bulk(mut s: TcpStream, block: Arc<[u8]>, written: Arc<AtomicU64>) {
    while let Some((head, early)) = raw::read_head(&mut s).await {
        if head.starts_with("GET /big ") {
            let start = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BIG}\r\n\r\n"
            );
            if s.write_all(start.as_bytes()).await.is_err() {
                return;
            }
            let mut left = BIG;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                if s.write_all(&block[..n]).await.is_err() {
                    return;
                }
                written.fetch_add(n as u64, Ordering::Relaxed);
                left -= n as u64;
            }
        } else if head.starts_with("GET /stall ") {
            let start = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n";
            if s.write_all(start.as_bytes()).await.is_err()
                || s.write_all(&[b's'; 100]).await.is_err()
            {
                return;
            }
            // Silence until the proxy gives up on this connection.
            let mut rest = [0u8; 1024];
            while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
            return;
        } else if head.starts_with("POST /sink ") {
            let len: usize = raw::header(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            // The body bytes that came with the head, then the rest.
            let mut body = early;
            let have = body.len().min(len);
            body.resize(len, 0);
            if s.read_exact(&mut body[have..]).await.is_err() {
                return;
            }
            let answer = format!("{len}");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
            if s.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        } else if s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A caller with a 4 KiB receive buffer that sends `GET /big` and then never reads.
async fn stalled_caller(proxy: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(proxy).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    s
}

/// Downloads `/big` whole through the proxy; returns the body length.
async fn download(proxy: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = 0u64;
    let mut head_done = false;
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            return all;
        }
        if head_done {
            all += n as u64;
        } else {
            pending.extend_from_slice(&buf[..n]);
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                head_done = true;
                all += (pending.len() - end - 4) as u64;
            }
        }
    }
}

/// The number of stalled callers.
const STALLED: usize = 200;

/// What one stalled download may cost the proxy (SECURITY.md, docs/configuration.md): two upstream reads of at
/// most 64 KiB, in read buffers of at most 128 KiB each, plus about 50 KiB of connection state (both connections'
/// hyper buffers and tasks). Measured: about 230 KiB in a debug build.
const PER_CONNECTION_LIMIT: u64 = 300 << 10;

/// The bound on the proxy's peak RSS with [`STALLED`] stalled downloads: well inside the 128 MiB container limit
/// the manifests ship (a debug build idles at about 20 MiB).
const PEAK_LIMIT: u64 = 80 << 20;

/// 200 callers that ask for 8 MiB and never read (4 KiB receive buffers) keep the real binary's peak RSS well
/// inside the container limit: per connection, the proxy buffers a small bounded amount beyond the kernel's
/// socket buffers. (Before the bound, each cost about 1 MiB: 224 MiB for the 200.)
#[tokio::test(flavor = "multi_thread")]
async fn stalled_downloads_keep_peak_rss_well_inside_the_container_limit() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = BulkUpstream::start().await;
    let yaml = world.config(&World::sp("sp", "stalled"), &upstream.route());
    let proxy = RunningProxy::start_in(&world.dir, &yaml).await;
    let pid = proxy.child.pid();
    // Warm up (token, pools), then the idle baseline.
    assert_eq!(download(proxy.listen).await, BIG);
    let baseline = proc_status_bytes(pid, "VmRSS");

    let mut callers = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        callers.push(stalled_caller(proxy.listen).await);
    }
    // Settled: the upstream has written all it can (its writes stop moving) for a second.
    let started = Instant::now();
    let mut last = (upstream.written.load(Ordering::Relaxed), Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the upstream never stopped writing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = upstream.written.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let peak = proc_status_bytes(pid, "VmHWM");
    let rss = proc_status_bytes(pid, "VmRSS");
    let per_connection = peak.saturating_sub(baseline) / STALLED as u64;
    eprintln!(
        "stalled downloads: baseline {} KiB, peak {} KiB, now {} KiB, {} KiB per stalled connection; upstream wrote {} MiB",
        baseline >> 10,
        peak >> 10,
        rss >> 10,
        per_connection >> 10,
        last.0 >> 20
    );
    assert!(
        peak <= PEAK_LIMIT && per_connection <= PER_CONNECTION_LIMIT,
        "peak RSS {} MiB with {STALLED} stalled callers ({} KiB per connection above the {} MiB baseline)",
        peak >> 20,
        per_connection >> 10,
        baseline >> 20
    );
    // The proxy still serves.
    let (status, _, _) = get(&proxy.url("/small")).await;
    assert_eq!(status, 200);
    drop(callers);
    let out = proxy.stop().await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

const WRITE_STALLS: &str =
    r#"aml_auth_proxy_stream_timeouts_total{direction="response",kind="write_stall"}"#;
const RESPONSE_IDLE: &str =
    r#"aml_auth_proxy_stream_timeouts_total{direction="response",kind="idle"}"#;
const REQUEST_IDLE: &str =
    r#"aml_auth_proxy_stream_timeouts_total{direction="request",kind="idle"}"#;
const MIN_RATE: &str =
    r#"aml_auth_proxy_stream_timeouts_total{direction="request",kind="min_rate"}"#;
const IN_FLIGHT: &str = "aml_auth_proxy_in_flight_requests";

/// A proxy in process with `limits` (a `limits:` block or ""), one route to `upstream`.
async fn proxy(world: &World, limits: &str, tenant: &str, routes: &str) -> TestProxy {
    let proxy = TestProxy::start(&format!(
        "{limits}{}",
        world.config(&World::sp("sp", tenant), routes)
    ))
    .await;
    proxy.wait_ready().await;
    proxy
}

/// Reads until the connection ends (EOF or reset) or `limit` passes; returns the bytes and whether it ended.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (all, true),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => return (all, false),
        }
    }
}

/// A caller that stops reading is disconnected once its socket has accepted nothing for `write_stall_timeout`:
/// counted once, its request finished (the in-flight gauge back to 0); what it reads afterwards is what the
/// kernel had buffered, then the end of the connection — never the whole response.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_stops_reading_is_disconnected_at_the_write_stall_timeout() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = BulkUpstream::start().await;
    let proxy = proxy(
        &world,
        "limits:\n  write_stall_timeout: 1s\n",
        "writestall",
        &upstream.route(),
    )
    .await;
    let mut caller = stalled_caller(proxy.addr()).await;
    series_reaches(
        &proxy.admin_url("/metrics"),
        IN_FLIGHT,
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let took = series_reaches(
        &proxy.admin_url("/metrics"),
        WRITE_STALLS,
        1.0,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        took >= Duration::from_millis(900),
        "disconnected after {took:?}"
    );
    series_reaches(
        &proxy.admin_url("/metrics"),
        IN_FLIGHT,
        0.0,
        Duration::from_secs(5),
    )
    .await;
    let (bytes, closed) = read_to_close(&mut caller, Duration::from_secs(10)).await;
    assert!(closed, "the stalled connection is still open");
    assert!(
        (bytes.len() as u64) < BIG,
        "the whole response arrived after all"
    );
    // A caller that reads gets everything.
    assert_eq!(download(proxy.addr()).await, BIG);
    assert_eq!(
        series_at(&proxy.admin_url("/metrics"), WRITE_STALLS)
            .await
            .unwrap_or(0.0),
        1.0
    );
    proxy.stop().await;
}

/// An upstream body that stops mid-way is ended at `stream_idle_timeout`: the caller sees the head, the bytes that
/// came, then the connection closed short of `Content-Length`; counted once. A stream that keeps sending — events
/// every 400 ms for longer than the limit — is never cut.
#[tokio::test]
async fn a_silent_upstream_body_is_ended_at_the_idle_timeout_and_a_flowing_one_is_not() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = BulkUpstream::start().await;
    let limits = "limits:\n  stream_idle_timeout: 1s\n";
    let routes = format!(
        "{}{}",
        world.route("events", "/events", "sp", ""),
        upstream.route()
    );
    let proxy = proxy(&world, limits, "respidle", &routes).await;

    let started = Instant::now();
    let mut caller = TcpStream::connect(proxy.addr()).await.unwrap();
    caller
        .write_all(b"GET /stall HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (bytes, closed) = read_to_close(&mut caller, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(closed, "still open");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&took),
        "closed after {took:?}"
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &bytes[bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(
        body,
        &[b's'; 100][..],
        "the body stops where the upstream stopped"
    );
    assert_eq!(
        series_at(&proxy.admin_url("/metrics"), RESPONSE_IDLE)
            .await
            .unwrap_or(0.0),
        1.0
    );

    let (status, _, body) = get(&proxy.url("/events/stream?chunks=6&interval_ms=400")).await;
    assert_eq!(status, 200);
    let expected: String = (0..6).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&body), expected);
    assert_eq!(
        series_at(&proxy.admin_url("/metrics"), RESPONSE_IDLE)
            .await
            .unwrap_or(0.0),
        1.0,
        "the flowing stream was cut"
    );
    proxy.stop().await;
}

/// A request body that stops arriving is ended at `stream_idle_timeout`: the caller gets `408
/// RequestBodyTimeout` (the proxy's JSON error), counted once; the upstream never gets a complete request.
#[tokio::test]
async fn a_request_body_that_stops_is_answered_408_at_the_idle_timeout() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = BulkUpstream::start().await;
    let proxy = proxy(
        &world,
        "limits:\n  stream_idle_timeout: 1s\n",
        "reqidle",
        &upstream.route(),
    )
    .await;
    let started = Instant::now();
    let mut caller = TcpStream::connect(proxy.addr()).await.unwrap();
    caller
        .write_all(
            b"POST /sink HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let (bytes, _) = read_to_close(&mut caller, Duration::from_secs(10)).await;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&took),
        "answered after {took:?}"
    );
    let body = &bytes[bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(json_body(body)["error"]["code"], "RequestBodyTimeout");
    assert_eq!(
        series_at(&proxy.admin_url("/metrics"), REQUEST_IDLE)
            .await
            .unwrap_or(0.0),
        1.0
    );
    series_reaches(
        &proxy.admin_url("/metrics"),
        IN_FLIGHT,
        0.0,
        Duration::from_secs(5),
    )
    .await;
    proxy.stop().await;
}

/// One caller sending a 100 000-byte body one byte a second; returns what it was answered (empty if nothing
/// within `limit`).
async fn trickle_upload(proxy: SocketAddr, limit: Duration) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"POST /sink HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            read = tokio::time::timeout_at(deadline, s.read(&mut buf)) => match read {
                Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
                _ => break,
            },
            _ = tick.tick() => {
                // Once the proxy has answered and closed, the write fails: nothing more to send.
                let _ = s.write_all(b"u").await;
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Slow uploads cannot hold every `max_in_flight` slot. With `max_in_flight: 4` taken by four callers that send
/// their bodies at one byte a second, a normal GET is shed only until those uploads have been slow for one rate
/// window (10 s by default): then a request that finds every slot taken takes the slot of the slowest upload,
/// which is answered 408 `RequestBodyTimeout`, and GETs are served. (Before, the GETs got 503 for as long as the
/// uploads lasted: 100 000 s here.)
#[tokio::test(flavor = "multi_thread")]
async fn slow_uploads_cannot_hold_every_slot() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = BulkUpstream::start().await;
    let proxy = proxy(
        &world,
        "limits:\n  max_in_flight: 4\n",
        "slowbody",
        &upstream.route(),
    )
    .await;
    let started = Instant::now();
    let uploads: Vec<_> = (0..4)
        .map(|_| tokio::spawn(trickle_upload(proxy.addr(), Duration::from_secs(40))))
        .collect();
    series_reaches(
        &proxy.admin_url("/metrics"),
        IN_FLIGHT,
        4.0,
        Duration::from_secs(5),
    )
    .await;
    let mut shed = 0;
    let served_after = loop {
        let (status, _, _) = get(&proxy.url("/small")).await;
        if status == 200 {
            break started.elapsed();
        }
        assert_eq!(status, 503);
        shed += 1;
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "GETs still shed {:?} after four slow uploads took every slot",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(shed > 0, "the slots were not all taken");
    assert!(
        served_after >= Duration::from_secs(9),
        "an upload was evicted during its grace window ({served_after:?})"
    );
    // From now on requests are served: while every slot is taken, each takes a slow upload's.
    for _ in 0..8 {
        assert_eq!(get(&proxy.url("/small")).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut evicted = 0;
    for upload in uploads {
        if !upload.is_finished() {
            upload.abort();
            continue;
        }
        let answer = upload.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("RequestBodyTimeout"), "{answer}");
        evicted += 1;
    }
    assert!(evicted >= 1);
    assert_eq!(
        series_at(&proxy.admin_url("/metrics"), MIN_RATE)
            .await
            .unwrap_or(0.0),
        f64::from(evicted)
    );
    proxy.stop().await;
}
