//! Clock skew and jumps (F7): the refresh schedule runs on the monotonic clock, and a token's lifetime is taken
//! from `expires_in`, whatever `expires_on` says.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use tokio::time::Instant;

use crate::support::proxy::{TestProxy, World};
use crate::support::scripted::{
    Scripted, cache_key, gaps_secs, immediate, ok, production_cache, settle,
};
use crate::support::{Behavior, get, json_body, now_unix, trace_init};

/// F7, paused clock: the refresh schedule runs on the monotonic clock. An hour of tokio time passes while the wall
/// clock stands (almost) still — as if it had jumped back an hour — and 10-minute tokens are refreshed exactly as
/// their lifetimes say: every 270–300 s (5 min before expiry, minus ≤ 30 s jitter), no storm, never expired.
#[tokio::test(start_paused = true)]
async fn f07_refresh_schedule_follows_the_monotonic_clock_not_the_wall_clock() {
    let _trace = trace_init();
    let wall_start = SystemTime::now();
    let cred = Scripted::new([ok(600)]);
    let (cache, _metrics) = production_cache();
    let src = cache.source(cache_key("sp"), cred.clone(), true);
    settle().await;
    let start = Instant::now();
    let mut expired = 0;
    while start.elapsed() < Duration::from_secs(3600) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        match immediate(src.header_value()).await {
            Some(Ok(_)) => {}
            _ => expired += 1,
        }
    }
    assert_eq!(expired, 0);
    let gaps = gaps_secs(&cred.call_times());
    assert!(
        gaps.iter().all(|g| (270..=300).contains(g)),
        "refresh gaps {gaps:?}"
    );
    let calls = cred.calls();
    assert!(
        (1 + 3600 / 300..=1 + 3600 / 270).contains(&calls),
        "{calls} token requests in an hour of 10-minute tokens"
    );
    // The wall clock moved by (much) less than the simulated hour: it did not drive anything.
    let wall = SystemTime::now().duration_since(wall_start).unwrap();
    assert!(wall < Duration::from_secs(60), "{wall:?}");
}

/// F7, real sockets: a token response whose `expires_on` disagrees with `expires_in` (a skewed token service clock:
/// already in the past, or years ahead) is scheduled by `expires_in`: the token is used, not refetched in a storm,
/// and `/readyz` reports an expiry `expires_in` from now. The upstream checks every token (0 expired).
#[tokio::test]
async fn f07_expires_in_wins_over_a_disagreeing_expires_on() {
    let _trace = trace_init();
    let world = World::new().await;
    let now = now_unix();
    let registry = world.aad.registry();
    for (tenant, ttl, expires_on) in [
        ("skewpast", 3600, now - 7200),
        ("skewfuture", 120, now + 10 * 365 * 86_400),
    ] {
        let token = registry.mint(tenant, Duration::from_secs(ttl));
        let body = serde_json::json!({"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl,
            "expires_on": expires_on, "access_token": token});
        world
            .aad
            .set_behavior(tenant, Behavior::json(StatusCode::OK, body.to_string()));
    }
    let credentials = format!(
        "{}{}",
        World::sp("past", "skewpast"),
        World::sp("future", "skewfuture")
    );
    let routes = format!(
        "{}{}",
        world.route("past", "/past", "past", ""),
        world.route("future", "/future", "future", "")
    );
    let proxy = TestProxy::start(&world.config(&credentials, &routes)).await;
    proxy.wait_ready().await;
    for _ in 0..25 {
        for route in ["/past/x", "/future/x"] {
            let (status, _, body) = get(&proxy.url(route)).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(world.upstream.rejected_count(), 0);
    assert_eq!(world.aad.count("skewpast"), 1, "no refresh storm");
    assert_eq!(world.aad.count("skewfuture"), 1, "no refresh storm");
    let ready = json_body(&get(&proxy.admin_url("/readyz")).await.2);
    for (route, ttl) in [("past", 3600), ("future", 120)] {
        let entry = ready["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == route)
            .unwrap_or_else(|| panic!("{ready}"));
        let expires_on = entry["expires_on"].as_u64().unwrap();
        assert!(
            expires_on.abs_diff(now + ttl) <= 5,
            "{route}: expires_on {expires_on}, expected about {}",
            now + ttl
        );
    }
    proxy.stop().await;
}
