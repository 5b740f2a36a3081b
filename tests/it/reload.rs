//! Configuration reload (fault F15): a bad file keeps the running configuration with one clear error line
//! and a metric; a good one takes effect within a second without dropping requests in flight; credentials that
//! are gone stop refreshing.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::support::process::{ClosedPort, RunningProxy};
use crate::support::proxy::{TempDir, TestProxy, World};
use crate::support::{get, request, trace_init};

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_swaps_routes_and_requests_in_flight_finish() {
    let _trace = trace_init();
    let world = World::new().await;
    let old = world.config(
        &World::sp("sp", "reloadold"),
        &world.route("old", "/old", "sp", ""),
    );
    let proxy = TestProxy::start(&old).await;
    proxy.wait_ready().await;
    // A slow stream started on the old configuration.
    let url = proxy.url("/old/stream?chunks=10&interval_ms=100");
    let in_flight = tokio::spawn(async move { request(Method::GET, &url, &[], "").await });
    tokio::time::sleep(Duration::from_millis(150)).await;

    let new = world.config(
        &World::sp("sp", "reloadnew"),
        &world.route("new", "/new", "sp", ""),
    );
    proxy.reload(&new).await.unwrap();
    assert_eq!(
        get(&proxy.url("/new/x")).await.0,
        StatusCode::OK,
        "the new route serves at once"
    );
    assert_eq!(
        get(&proxy.url("/old/x")).await.0,
        StatusCode::NOT_FOUND,
        "the old route is gone"
    );
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body).matches("data:").count(),
        10,
        "the stream finished whole"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_configuration_is_refused_and_the_running_one_keeps_serving() {
    let _trace = trace_init();
    let world = World::new().await;
    let good = world.config(&World::sp("sp", "keep"), &world.route("arm", "/", "sp", ""));
    let proxy = TestProxy::start(&good).await;
    proxy.wait_ready().await;
    let bad = "routes:\n  - name: x\n    path_prefix: /\n    upstream: http://example.com\n";
    let e = proxy.reload(bad).await.unwrap_err();
    assert!(e.contains("routes[0].upstream"), "{e}");
    assert_eq!(get(&proxy.url("/x")).await.0, StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_that_are_gone_stop_refreshing() {
    let _trace = trace_init();
    let world = World::new().await;
    // 2 s tokens: the old credential's refresher fetches about every second.
    let old = world.config(&World::sp("sp", "ttl2"), &world.route("arm", "/", "sp", ""));
    let proxy = TestProxy::start(&old).await;
    proxy.wait_ready().await;
    let new = world.config(
        &World::sp("other", "stable"),
        &world.route("arm", "/", "other", ""),
    );
    proxy.reload(&new).await.unwrap();
    assert_eq!(get(&proxy.url("/x")).await.0, StatusCode::OK);
    let after_reload = world.aad.count("ttl2");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        world.aad.count("ttl2"),
        after_reload,
        "the removed credential kept refreshing"
    );
    proxy.stop().await;
}

/// The binary: SIGHUP with a bad file under load (0 failed requests, one error line, the failure metric), then
/// with a good file (effective within a second).
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_file_and_refuses_a_bad_one_under_load() {
    let _trace = trace_init();
    let world = World::new().await;
    let dir = TempDir::new();
    let imds = ClosedPort::new();
    let body = world.config(
        &World::sp("sp", "hup"),
        &world.route("one", "/one", "sp", ""),
    );
    let proxy = RunningProxy::start(&dir, &imds, &body, &[], &[]).await;
    let file = proxy.config.clone().unwrap();
    let header = std::fs::read_to_string(&file).unwrap();
    let header: String = header.lines().take(2).map(|l| format!("{l}\n")).collect();

    // Load: a loop of requests that must all succeed across the bad reload.
    let url = proxy.url("/one/x");
    let load = tokio::spawn(async move {
        let mut codes = Vec::new();
        for _ in 0..100 {
            codes.push(get(&url).await.0);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        codes
    });
    std::fs::write(&file, format!("{header}routes: [ this is not valid\n")).unwrap();
    hup(&proxy);
    let codes = load.await.unwrap();
    assert!(codes.iter().all(|c| *c == StatusCode::OK), "{codes:?}");
    let metrics = String::from_utf8(get(&proxy.admin_url("/metrics")).await.2.to_vec()).unwrap();
    assert!(
        metrics.contains("aml_auth_proxy_config_reload_failures_total 1"),
        "{metrics}"
    );
    let errors = proxy
        .child
        .stderr_so_far()
        .lines()
        .filter(|l| l.contains("configuration reload refused"))
        .count();
    assert_eq!(
        errors,
        1,
        "one clear error line: {}",
        proxy.child.stderr_so_far()
    );

    let two = world.config(
        &World::sp("sp", "hup"),
        &world.route("two", "/two", "sp", ""),
    );
    std::fs::write(&file, format!("{header}{two}")).unwrap();
    hup(&proxy);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while get(&proxy.url("/two/x")).await.0 != StatusCode::OK {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the good file did not take effect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&proxy.url("/one/x")).await.0, StatusCode::NOT_FOUND);
    let out = proxy.stop().await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

/// The binary: a reload whose file puts an environment secret under the wrong key is refused with one error
/// line that names the variable and never shows its value.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reload_error_never_shows_a_value_from_the_environment() {
    let _trace = trace_init();
    let world = World::new().await;
    let dir = TempDir::new();
    let imds = ClosedPort::new();
    let body = world.config(
        &World::sp("sp", "hup"),
        &world.route("one", "/one", "sp", ""),
    );
    let env = [("AML_SECRET", "canary-env-SECRET-41c2")];
    let proxy = RunningProxy::start(&dir, &imds, &body, &[], &env).await;
    let file = proxy.config.clone().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(&world.upstream.base_url(), "${AML_SECRET}"),
    )
    .unwrap();
    hup(&proxy);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(line) = proxy
            .child
            .stderr_so_far()
            .lines()
            .find(|l| l.contains("configuration reload refused"))
        {
            break line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload error: {}",
            proxy.child.stderr_so_far()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        line.contains("routes[0].upstream") && line.contains("${AML_SECRET}"),
        "{line}"
    );
    let out = proxy.stop().await;
    assert!(!out.all().contains("canary-env"), "{out:#?}");
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

fn hup(proxy: &RunningProxy) {
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(proxy.child.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
