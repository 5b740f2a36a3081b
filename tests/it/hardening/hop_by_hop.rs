//! Hop-by-hop headers across protocol changes (RFC 9110 §7.6.1), the cases
//! `proxy/headers.rs` does not cover (it has HTTP/1.1 → HTTP/1.1 both ways, and one `Connection: authorization`
//! request over HTTP/1.1 → HTTP/2): every hop-by-hop request header from an HTTP/1.1 caller to an HTTP/2
//! upstream, an HTTP/2 caller to an HTTP/1.1 upstream (where hop-by-hop headers travel on the wire), and the
//! responses of both.

use std::time::Duration;

use http::{Method, StatusCode, Version};

use super::{h1_plain_upstream, proxy_to, send_raw, upstream_paths};
use crate::support::h2_frames::{
    self, DATA, END_STREAM, H2Conn, HEADERS, PROTOCOL_ERROR, RST_STREAM,
};
use crate::support::proxy::World;
use crate::support::{h2_client, json_body, request_via, trace_init};

/// Hop-by-hop request headers no upstream may see.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[tokio::test]
async fn http1_caller_to_http2_upstream_loses_every_hop_by_hop_header_both_ways() {
    let _trace = trace_init();
    let world = World::new().await;
    // The default upstream negotiates HTTP/2 by ALPN.
    let proxy = proxy_to(&world, &world.upstream.base_url(), "h1h2", "").await;
    let wire = send_raw(
        proxy.addr(),
        b"POST /hops HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Connection: x-private-hop, authorization, close\r\n\
          X-Private-Hop: for-the-next-hop-only\r\n\
          Authorization: Bearer attacker\r\n\
          Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
          Proxy-Authorization: Basic dXNlcjpwYXNz\r\nTE: trailers\r\nTrailer: x-checksum\r\n\
          Transfer-Encoding: chunked\r\nX-Custom: kept\r\n\r\n\
          2\r\nhi\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(wire.statuses(), [200], "{}", wire.text());
    let seen = world.upstream.last_request().unwrap();
    assert_eq!(seen.version, Version::HTTP_2);
    for name in HOP_BY_HOP.iter().chain(&["x-private-hop"]) {
        assert!(
            !seen.headers.contains_key(*name),
            "{name}: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers.get("x-custom").unwrap(), "kept");
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert!(seen.token.as_deref().unwrap().starts_with("at.h1h2."));
    assert_eq!(seen.rejection, None);
    assert_eq!(seen.body_len, 2);

    // The response of an HTTP/2 upstream (which cannot carry connection-specific fields) to an HTTP/1.1
    // caller: only end-to-end headers.
    let wire = send_raw(
        proxy.addr(),
        b"GET /hop-by-hop HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (status, headers, _) = wire.response();
    assert_eq!(status, StatusCode::OK, "{}", wire.text());
    assert_eq!(headers.get("x-kept").unwrap(), "yes");
    for name in [
        "keep-alive",
        "proxy-authenticate",
        "x-upstream-private",
        "upgrade",
    ] {
        assert!(!headers.contains_key(name), "{name}: {headers:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn http2_caller_to_http1_upstream_loses_every_hop_by_hop_header_both_ways() {
    let _trace = trace_init();
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "h2h1", "").await;
    let client = h2_client();
    // What an HTTP/2 client can send: `te: trailers` and `proxy-authorization` are legal HTTP/2 fields, and
    // must not travel on to an HTTP/1.1 upstream.
    let (status, _, body) = request_via(
        &client,
        Method::GET,
        &proxy.url("/hops"),
        &[
            ("te", "trailers"),
            ("proxy-authorization", "Basic dXNlcjpwYXNz"),
            ("authorization", "Bearer attacker"),
            ("x-custom", "kept"),
        ],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.version, Version::HTTP_11);
    for name in HOP_BY_HOP {
        assert!(
            !seen.headers.contains_key(*name),
            "{name}: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers.get("x-custom").unwrap(), "kept");
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert!(seen.token.as_deref().unwrap().starts_with("at.h2h1."));
    assert_eq!(seen.rejection, None);

    // The HTTP/1.1 upstream's hop-by-hop response headers never reach the HTTP/2 caller.
    let (status, headers, body) =
        request_via(&client, Method::GET, &proxy.url("/hop-by-hop"), &[], "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_body(&body)["hop_by_hop"], true);
    assert_eq!(headers.get("x-kept").unwrap(), "yes");
    for name in [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "x-upstream-private",
    ] {
        assert!(!headers.contains_key(name), "{name}: {headers:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn http2_caller_sending_connection_specific_fields_gets_the_stream_refused() {
    let _trace = trace_init();
    // RFC 9113 §8.2.2: such a request is malformed. Raw frames, since client libraries strip these fields.
    let world = World::new().await;
    let upstream = h1_plain_upstream(&world).await;
    let proxy = proxy_to(&world, &upstream.base_url(), "h2conn", "").await;
    let mut conn = H2Conn::connect(proxy.addr()).await;
    let authority = proxy.addr().to_string();
    let fields: &[(&str, &str)] = &[
        ("connection", "x-private"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("te", "gzip"),
    ];
    let mut frames = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let id = 2 * u32::try_from(i).unwrap() + 1;
        frames.extend(h2_frames::get(
            id,
            &authority,
            &format!("/bad-{i}"),
            &[*field],
        ));
    }
    let good = 2 * u32::try_from(fields.len()).unwrap() + 1;
    frames.extend(h2_frames::get(
        good,
        &authority,
        "/good",
        &[("x-custom", "kept")],
    ));
    conn.send(&frames).await;

    let mut resets = Vec::new();
    let mut good_data = Vec::new();
    let mut good_done = false;
    while !(good_done && resets.len() == fields.len()) {
        let frame = conn
            .next(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("connection ended; resets so far {resets:?}"));
        match frame.kind {
            RST_STREAM => resets.push((frame.stream, frame.error_code())),
            DATA if frame.stream == good => good_data.extend_from_slice(&frame.payload),
            _ => {}
        }
        if frame.stream == good && matches!(frame.kind, HEADERS | DATA) {
            good_done |= frame.flags & END_STREAM != 0;
        }
    }
    resets.sort_unstable();
    let want: Vec<_> = (0..fields.len())
        .map(|i| (2 * u32::try_from(i).unwrap() + 1, Some(PROTOCOL_ERROR)))
        .collect();
    assert_eq!(
        resets, want,
        "each malformed stream is reset, and only those"
    );
    assert_eq!(json_body(&good_data)["path"], "/good");
    assert_eq!(upstream_paths(&upstream).await, ["/good"]);
    // An open connection would hold the graceful drain until its deadline.
    drop(conn);
    proxy.stop().await;
}
