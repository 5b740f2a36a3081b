//! Streams and the callers behind them: a caller that leaves mid-download or mid-upload releases everything at
//! once (F11), and large uploads and downloads stream through in bounded memory, every byte intact (F12). The
//! upstreams are raw ([`crate::support::raw`]) so that every cancellation is seen.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::metrics::{series_at, series_reaches};
use crate::support::process::{RunningProxy, proc_status_bytes};
use crate::support::proxy::{TestProxy, World, route_to};
use crate::support::raw;
use crate::support::{eventually, get, pseudo_random_bytes, trace_init};

/// The proxy's gauge of requests in flight.
const IN_FLIGHT: &str = "aml_auth_proxy_in_flight_requests";

// =====================================================================================================================
// F11 — the client disconnects mid-download or mid-upload
// =====================================================================================================================

/// When the upstream saw the proxy cancel each kind of request.
#[derive(Default)]
struct Cancellations {
    download: Mutex<Option<Instant>>,
    upload: Mutex<Option<Instant>>,
    upload_bytes: AtomicU64,
}

/// The F11 upstream: `/download` streams chunks until the proxy goes away; `/upload` reads the body and never
/// answers; anything else is `200 ok`. Each records when it saw the cancellation (EOF, reset or a failed write).
async fn cancellation_upstream(seen: Arc<Cancellations>) -> raw::RawServer {
    raw::RawServer::start(move |mut s| {
        let seen = seen.clone();
        async move {
            while let Some((head, early)) = raw::read_head(&mut s).await {
                match raw::target(&head) {
                    "/download" => {
                        let (mut rd, mut wr) = s.into_split();
                        let chunk = [b"10000\r\n".as_slice(), &[b'd'; 0x10000], b"\r\n"].concat();
                        let write = async move {
                            let _ = wr
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
                                .await;
                            while wr.write_all(&chunk).await.is_ok() {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        };
                        let read = async move {
                            let mut b = [0u8; 1024];
                            while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
                        };
                        tokio::select! { () = write => {}, () = read => {} }
                        *seen.download.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                    "/upload" => {
                        seen.upload_bytes
                            .fetch_add(early.len() as u64, Ordering::SeqCst);
                        let mut b = vec![0u8; 65536];
                        while let Ok(n) = s.read(&mut b).await {
                            if n == 0 {
                                break;
                            }
                            seen.upload_bytes.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        *seen.upload.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                    _ => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            }
        }
    })
    .await
}

/// Polls until `slot` is set (at most 5 s) and returns the instant it holds.
async fn wait_for(slot: &Mutex<Option<Instant>>) -> Instant {
    let start = Instant::now();
    loop {
        if let Some(t) = *slot.lock().unwrap() {
            return t;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// F11's criteria once a caller left at `closed`: the upstream saw its exchange (`what`) end within 1 s of that
/// (`cancelled`), and the in-flight gauge and the proxy's open file descriptors are back to their baseline within 2 s.
async fn assert_released(
    proxy: &RunningProxy,
    what: &str,
    closed: Instant,
    cancelled: Instant,
    baseline: usize,
) {
    let after = cancelled.saturating_duration_since(closed);
    eprintln!("F11: {what} cancelled upstream {after:?} after the caller left");
    assert!(
        after <= Duration::from_secs(1),
        "the upstream {what} was cancelled {after:?} after the caller left"
    );
    series_reaches(
        &proxy.admin_url("/metrics"),
        IN_FLIGHT,
        0.0,
        Duration::from_secs(2).saturating_sub(closed.elapsed()),
    )
    .await;
    assert!(
        eventually(
            Duration::from_secs(2).saturating_sub(closed.elapsed()),
            || proxy.child.open_fds() <= baseline
        )
        .await
        .is_some(),
        "fds {} > baseline {baseline}",
        proxy.child.open_fds()
    );
}

/// F11, the real binary: a caller that goes away mid-download or mid-upload makes the proxy cancel the upstream
/// request within 1 s (the upstream sees its connection end); the in-flight gauge is back to 0 and the process's
/// file descriptors back to their baseline within 2 s; the route keeps working (no half-used pooled connection).
#[tokio::test(flavor = "multi_thread")]
async fn f11_client_disconnect_cancels_the_upstream_request_within_1s() {
    let _trace = trace_init();
    let world = World::new().await;
    let seen = Arc::new(Cancellations::default());
    let upstream = cancellation_upstream(seen.clone()).await;
    let yaml = world.config(
        &World::sp("sp", "cancel"),
        &route_to("raw", "/", &upstream.url()),
    );
    let proxy = RunningProxy::start_in(&world.dir, &yaml).await;
    let ok = "GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    assert_eq!(
        raw::exchange(proxy.listen, ok, Duration::from_secs(5))
            .await
            .status(),
        200
    );
    series_reaches(
        &proxy.admin_url("/metrics"),
        IN_FLIGHT,
        0.0,
        Duration::from_secs(2),
    )
    .await;
    let baseline = proxy.child.open_fds();

    // Download: read 1 MiB, then close.
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    caller
        .write_all(b"GET /download HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    while got < 1 << 20 {
        let n = caller.read(&mut buf).await.unwrap();
        assert!(n > 0, "the download ended early");
        got += n;
    }
    assert_eq!(
        series_at(&proxy.admin_url("/metrics"), IN_FLIGHT).await,
        Some(1.0)
    );
    let closed = Instant::now();
    drop(caller);
    let cancelled = wait_for(&seen.download).await;
    assert_released(&proxy, "download", closed, cancelled, baseline).await;

    // Upload: announce 1 GiB, send 4 MiB, then reset the connection.
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    caller
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 1073741824\r\n\r\n",
        )
        .await
        .unwrap();
    let piece = vec![b'u'; 65536];
    while seen.upload_bytes.load(Ordering::SeqCst) < 4 << 20 {
        caller.write_all(&piece).await.unwrap();
    }
    assert_eq!(
        series_at(&proxy.admin_url("/metrics"), IN_FLIGHT).await,
        Some(1.0)
    );
    let closed = Instant::now();
    raw::reset(caller);
    let cancelled = wait_for(&seen.upload).await;
    assert_released(&proxy, "upload", closed, cancelled, baseline).await;

    // The route still works.
    assert_eq!(
        raw::exchange(proxy.listen, ok, Duration::from_secs(5))
            .await
            .status(),
        200
    );
    let out = proxy.stop().await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

/// F11: a caller that goes away while the proxy is still waiting for the upstream's response head (a slow upstream)
/// must not stay counted as in flight: the gauge is back to 0 within 2 s, and the `max_in_flight` admission count
/// behind it too — with `max_in_flight: 5`, five abandoned requests must not make the proxy shed every later request.
#[tokio::test]
async fn f11_client_disconnect_before_the_response_head_releases_its_in_flight_slot() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = TestProxy::start(&format!(
        "limits:\n  max_in_flight: 5\n{}",
        world.config(
            &World::sp("sp", "gonebefore"),
            &world.route("arm", "/", "sp", "")
        )
    ))
    .await;
    proxy.wait_ready().await;
    for _ in 0..5 {
        let mut caller = TcpStream::connect(proxy.addr()).await.unwrap();
        caller
            .write_all(b"GET /slow-headers?ms=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let before = world.upstream.count();
        assert!(
            eventually(Duration::from_secs(2), || world.upstream.count() > before)
                .await
                .is_some()
        );
        assert!(
            series_at(&proxy.admin_url("/metrics"), IN_FLIGHT)
                .await
                .unwrap()
                >= 1.0
        );
        drop(caller);
    }
    // Back to 0 within 2 s of the callers leaving.
    series_reaches(
        &proxy.admin_url("/metrics"),
        IN_FLIGHT,
        0.0,
        Duration::from_secs(2),
    )
    .await;
    let (status, _, body) = get(&proxy.url("/after")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    proxy.stop().await;
}

// =====================================================================================================================
// F12 — large uploads and downloads stream with bounded memory
// =====================================================================================================================

mod bulk {
    //! Deterministic bulk data and a cheap running hash for it.
    //!
    //! Block `i` (1 MiB) is a fixed pseudo-random block with its first 8 bytes XOR-ed with `i`, so no two blocks
    //! are alike and reordering, loss or duplication changes the hash. The hash is FNV-1a (64-bit) over the
    //! little-endian 8-byte words of the stream: the same construction as the support code's byte-wise FNV-1a,
    //! eight times cheaper in an unoptimised test build.

    use super::*;

    pub(super) const BLOCK: usize = 1 << 20;

    /// Word-wise FNV-1a over a byte stream cut anywhere.
    #[derive(Clone)]
    pub(super) struct WordFnv {
        hash: u64,
        pending: Vec<u8>,
        pub(super) len: u64,
    }

    impl WordFnv {
        pub(super) fn new() -> Self {
            Self {
                hash: 0xcbf2_9ce4_8422_2325,
                pending: Vec::with_capacity(8),
                len: 0,
            }
        }

        fn word(&mut self, w: &[u8]) {
            let v = u64::from_le_bytes(w.try_into().unwrap());
            self.hash = (self.hash ^ v).wrapping_mul(0x0000_0100_0000_01b3);
        }

        pub(super) fn update(&mut self, mut bytes: &[u8]) {
            self.len += bytes.len() as u64;
            if !self.pending.is_empty() {
                let take = (8 - self.pending.len()).min(bytes.len());
                self.pending.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.pending.len() == 8 {
                    let p = std::mem::take(&mut self.pending);
                    self.word(&p);
                }
            }
            let mut words = bytes.chunks_exact(8);
            for w in &mut words {
                self.word(w);
            }
            self.pending.extend_from_slice(words.remainder());
        }

        pub(super) fn finish(&self) -> u64 {
            let mut h = self.clone();
            if !h.pending.is_empty() {
                let mut last = h.pending.clone();
                last.resize(8, 0);
                h.word(&last);
            }
            h.hash
        }
    }

    /// Produces the stream block by block.
    pub(super) struct Blocks {
        base: Arc<Vec<u8>>,
        buf: Vec<u8>,
        next: u64,
    }

    impl Blocks {
        pub(super) fn new(base: Arc<Vec<u8>>) -> Self {
            Self {
                buf: vec![0; BLOCK],
                base,
                next: 0,
            }
        }

        pub(super) fn next_block(&mut self) -> &[u8] {
            self.buf.copy_from_slice(&self.base);
            let mark = u64::from_le_bytes(self.base[..8].try_into().unwrap()) ^ self.next;
            self.buf[..8].copy_from_slice(&mark.to_le_bytes());
            self.next += 1;
            &self.buf
        }
    }

    /// The hash of the first `len` bytes of the stream (len a multiple of [`BLOCK`]).
    pub(super) fn expected(base: &Arc<Vec<u8>>, len: u64) -> u64 {
        let mut blocks = Blocks::new(base.clone());
        let mut h = WordFnv::new();
        for _ in 0..len / BLOCK as u64 {
            h.update(blocks.next_block());
        }
        h.finish()
    }
}

/// The F12 upstream: `GET /download?n=N` streams N bytes of the bulk stream (Content-Length); `POST /upload`
/// reads the body and answers `<length> <hash>`.
async fn bulk_upstream(base: Arc<Vec<u8>>) -> raw::RawServer {
    raw::RawServer::start(move |mut s| {
        let base = base.clone();
        async move {
            let Some((head, early)) = raw::read_head(&mut s).await else {
                return;
            };
            let target = raw::target(&head).to_owned();
            if let Some(n) = target.strip_prefix("/download?n=") {
                let n: u64 = n.parse().unwrap();
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    )
                    .await;
                let mut blocks = bulk::Blocks::new(base);
                for _ in 0..n / bulk::BLOCK as u64 {
                    if s.write_all(blocks.next_block()).await.is_err() {
                        return;
                    }
                }
            } else if target == "/upload" {
                let len: u64 = raw::header(&head, "content-length").unwrap().parse().unwrap();
                let mut h = bulk::WordFnv::new();
                h.update(&early);
                let mut buf = vec![0u8; 256 * 1024];
                while h.len < len {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => h.update(&buf[..n]),
                    }
                }
                let body = format!("{} {:016x}", h.len, h.finish());
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            } else {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                    .await;
            }
        }
    })
    .await
}

/// Downloads `len` bytes through the proxy at `addr`; returns (bytes, hash).
async fn bulk_download(addr: SocketAddr, len: u64) -> (u64, u64) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /download?n={len} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let (head, early) = raw::read_head(&mut s).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut h = bulk::WordFnv::new();
    h.update(&early);
    let mut buf = vec![0u8; 256 * 1024];
    while h.len < len {
        match s.read(&mut buf).await.unwrap() {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    (h.len, h.finish())
}

/// Uploads `len` bytes through the proxy at `addr`; returns what the upstream says it received.
async fn bulk_upload(addr: SocketAddr, base: Arc<Vec<u8>>, len: u64) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut blocks = bulk::Blocks::new(base);
    for _ in 0..len / bulk::BLOCK as u64 {
        s.write_all(blocks.next_block()).await.unwrap();
    }
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// F12, the real binary: two uploads and two downloads of 256 MiB each, at once, stream through the proxy with its
/// peak RSS less than 64 MiB above its idle baseline, every byte intact (length and hash compared end to end).
#[tokio::test(flavor = "multi_thread")]
async fn f12_large_streams_keep_peak_rss_within_64_mib_and_arrive_intact() {
    let _trace = trace_init();
    const LEN: u64 = 256 << 20;
    let world = World::new().await;
    let base = Arc::new(pseudo_random_bytes(bulk::BLOCK));
    let upstream = bulk_upstream(base.clone()).await;
    let yaml = world.config(
        &World::sp("sp", "bulk"),
        &route_to("raw", "/", &upstream.url()),
    );
    let proxy = RunningProxy::start_in(&world.dir, &yaml).await;
    let pid = proxy.child.pid();
    // Warm up (token, pools, buffers), then take the idle baseline and reset the peak.
    for _ in 0..3 {
        let (n, _) = bulk_download(proxy.listen, 4 * bulk::BLOCK as u64).await;
        assert_eq!(n, 4 * bulk::BLOCK as u64);
    }
    let baseline = proc_status_bytes(pid, "VmRSS");
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let expected = tokio::task::spawn_blocking({
        let base = base.clone();
        move || bulk::expected(&base, LEN)
    });

    let started = Instant::now();
    let downloads: Vec<_> = (0..2)
        .map(|_| tokio::spawn(bulk_download(proxy.listen, LEN)))
        .collect();
    let uploads: Vec<_> = (0..2)
        .map(|_| tokio::spawn(bulk_upload(proxy.listen, base.clone(), LEN)))
        .collect();
    let expected = expected.await.unwrap();
    for d in downloads {
        assert_eq!(d.await.unwrap(), (LEN, expected), "download damaged");
    }
    for u in uploads {
        assert_eq!(
            u.await.unwrap(),
            format!("{LEN} {expected:016x}"),
            "upload damaged"
        );
    }
    let took = started.elapsed();
    let peak = proc_status_bytes(pid, "VmHWM");
    let delta = peak.saturating_sub(baseline);
    assert!(
        delta <= 64 << 20,
        "peak RSS {} MiB, {} MiB above the idle baseline of {} MiB",
        peak >> 20,
        delta >> 20,
        baseline >> 20
    );
    eprintln!(
        "F12: 1 GiB through the proxy in {took:?}; RSS baseline {} MiB, peak {} MiB (+{} MiB)",
        baseline >> 20,
        peak >> 20,
        delta >> 20
    );
    let out = proxy.stop().await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}
