//! HTTP/2 limits and h2c upgrades: streams beyond the announced
//! `SETTINGS_MAX_CONCURRENT_STREAMS` are refused one by one (never the connection) or queued by a well-behaved
//! client; a header list over `SETTINGS_MAX_HEADER_LIST_SIZE` fails that stream alone; `Upgrade: h2c` over
//! HTTP/1.1 is not honoured.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{h1_plain_upstream, proxy_to, send_raw, upstream_paths};
use crate::support::h2_frames::{
    self, ACK, DATA, END_STREAM, GOAWAY, H2Conn, HEADERS, REFUSED_STREAM, RST_STREAM, SETTINGS,
    SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_HEADER_LIST_SIZE,
};
use crate::support::proxy::World;
use crate::support::{h2_burst, json_body, trace_init};

/// Opens a raw HTTP/2 connection and returns it with the server's first SETTINGS.
async fn connect_with_settings(addr: SocketAddr) -> (H2Conn, BTreeMap<u16, u32>) {
    let mut conn = H2Conn::connect(addr).await;
    loop {
        let frame = conn
            .next(Duration::from_secs(5))
            .await
            .expect("the server's SETTINGS");
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            return (conn, frame.settings().into_iter().collect());
        }
    }
}

/// How one stream ended.
#[derive(Debug, Default)]
struct Stream {
    data: Vec<u8>,
    ended: bool,
    reset: Option<u32>,
}

#[tokio::test]
async fn streams_beyond_the_announced_limit_are_refused_and_the_rest_complete() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy_to(&world, &world.upstream.base_url(), "streams", "").await;
    let (mut conn, settings) = connect_with_settings(proxy.addr()).await;
    let max = settings
        .get(&SETTINGS_MAX_CONCURRENT_STREAMS)
        .copied()
        .expect("SETTINGS_MAX_CONCURRENT_STREAMS is announced");
    assert!((1..=256).contains(&max), "max_concurrent_streams {max}");
    let list = settings
        .get(&SETTINGS_MAX_HEADER_LIST_SIZE)
        .copied()
        .expect("SETTINGS_MAX_HEADER_LIST_SIZE is announced");
    assert!(
        (1..=64 * 1024).contains(&list),
        "max_header_list_size {list}"
    );

    // `max + 4` requests in one write, each held 500 ms by the upstream: the last four arrive while `max`
    // streams are open.
    let extra = 4;
    let authority = proxy.addr().to_string();
    let ids: Vec<u32> = (0..max + extra).map(|i| 2 * i + 1).collect();
    let frames: Vec<u8> = ids
        .iter()
        .flat_map(|&id| h2_frames::get(id, &authority, "/slow-headers?ms=500", &[]))
        .collect();
    conn.send(&frames).await;

    let mut streams: BTreeMap<u32, Stream> = BTreeMap::new();
    let mut goaway = None;
    let done = |s: &BTreeMap<u32, Stream>| {
        s.values().filter(|s| s.ended || s.reset.is_some()).count() == ids.len()
    };
    while !done(&streams) {
        let Some(frame) = conn.next(Duration::from_secs(5)).await else {
            break;
        };
        let stream = streams.entry(frame.stream).or_default();
        match frame.kind {
            HEADERS | DATA => {
                if frame.kind == DATA {
                    stream.data.extend_from_slice(&frame.payload);
                }
                stream.ended |= frame.flags & END_STREAM != 0;
            }
            RST_STREAM => stream.reset = frame.error_code(),
            GOAWAY => goaway = frame.error_code(),
            _ => {}
        }
    }
    assert_eq!(goaway, None, "the connection was shut down");
    let refused: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|id| streams.get(id).is_some_and(|s| s.reset.is_some()))
        .collect();
    assert_eq!(
        refused,
        ids[ids.len() - 4..],
        "exactly the streams over the limit are refused"
    );
    for id in &refused {
        assert_eq!(streams[id].reset, Some(REFUSED_STREAM), "stream {id}");
    }
    for id in &ids[..ids.len() - 4] {
        let stream = streams
            .get(id)
            .unwrap_or_else(|| panic!("stream {id} got nothing"));
        assert!(stream.ended, "stream {id} did not finish");
        assert_eq!(
            json_body(&stream.data)["path"],
            "/slow-headers",
            "stream {id}"
        );
    }
    assert_eq!(world.upstream.count(), usize::try_from(max).unwrap());

    // The connection is still good for new streams.
    let next = 2 * (max + extra) + 1;
    conn.send(&h2_frames::get(next, &authority, "/after", &[]))
        .await;
    let mut after = Stream::default();
    while !after.ended && after.reset.is_none() {
        let frame = conn
            .next(Duration::from_secs(5))
            .await
            .expect("an answer on the same connection");
        if frame.stream == next {
            match frame.kind {
                DATA => after.data.extend_from_slice(&frame.payload),
                RST_STREAM => after.reset = frame.error_code(),
                _ => {}
            }
            after.ended |= matches!(frame.kind, HEADERS | DATA) && frame.flags & END_STREAM != 0;
        }
    }
    assert_eq!(json_body(&after.data)["path"], "/after");
    // An open connection would hold the graceful drain until its deadline.
    drop(conn);
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_respects_the_limit_has_its_extra_streams_queued_not_failed() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = proxy_to(&world, &world.upstream.base_url(), "queued", "").await;
    // 300 concurrent requests on one HTTP/2 connection: hyper's client holds back what is over the limit.
    let answers = h2_burst(&proxy.url("/slow-headers?ms=200"), 1, 300).await;
    assert_eq!(answers.len(), 300);
    for (status, _, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{}", String::from_utf8_lossy(body));
    }
    assert_eq!(world.upstream.count(), 300);
    proxy.stop().await;
}

#[tokio::test]
async fn header_list_over_the_limit_fails_that_stream_and_the_connection_survives() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "headerlist", "").await;
    let (_, settings) = connect_with_settings(proxy.addr()).await;
    let limit = usize::try_from(settings[&SETTINGS_MAX_HEADER_LIST_SIZE]).unwrap();

    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = |path: &str, big: Option<String>| {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{}{path}", proxy.addr()));
        if let Some(value) = big {
            req = req.header("x-big", value);
        }
        req.body(Full::new(Bytes::new())).unwrap()
    };
    // Over the limit, under h2's abuse limit (4 × the limit), which would end the whole connection.
    let big = "a".repeat(limit + 4096);
    match sender.send_request(request("/big", Some(big))).await {
        Ok(resp) => assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        // A stream reset is as good: the request was refused, not the connection.
        Err(e) => assert!(!e.is_closed(), "{e}"),
    }
    sender.ready().await.expect("the connection survived");
    let resp = sender.send_request(request("/small", None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json_body(&body)["path"], "/small");
    assert_eq!(upstream_paths(&upstream).await, ["/small"]);
    proxy.stop().await;
}

#[tokio::test]
async fn h2c_upgrade_over_http1_is_not_honoured() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "h2c", "").await;
    let wire = send_raw(
        proxy.addr(),
        b"GET /h2c HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    // Refused as HTTP/1.1 (no `101 Switching Protocols`): only WebSocket upgrades are supported.
    assert!(wire.bytes.starts_with(b"HTTP/1.1 "), "{}", wire.text());
    assert_eq!(wire.statuses(), [400], "{}", wire.text());
    assert!(wire.closed);
    let (_, headers, _) = wire.response();
    assert!(!headers.contains_key("upgrade"), "{headers:?}");
    assert_eq!(headers["x-aml-auth-proxy-error"], "BadRequest");
    assert!(upstream_paths(&upstream).await.is_empty());
    proxy.stop().await;
}
