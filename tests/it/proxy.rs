//! The request path end to end: token injection, header rules, routing, streaming.

use http::{Method, StatusCode};
use serde_json::Value;

use crate::support::proxy::World;
use crate::support::{get, request, trace_init};

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn injects_the_token_rewrites_host_and_keeps_path_and_query() {
    let _trace = trace_init();
    let world = World::new().await;
    let proxy = world.simple_proxy("ok").await;
    let (status, _, body) =
        get(&proxy.url("/subscriptions/abc/resourceGroups?api-version=2024-04-01&$top=5")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let echo = json(&body);
    assert_eq!(echo["path"], "/subscriptions/abc/resourceGroups");
    assert_eq!(echo["query"], "api-version=2024-04-01&$top=5");
    let seen = world.upstream.last_request().unwrap();
    assert!(seen.token.as_deref().unwrap().starts_with("at.ok."));
    assert_eq!(seen.rejection, None);
    let host = seen
        .headers
        .get("host")
        .map(|h| h.to_str().unwrap().to_owned());
    let authority = world.upstream.addr().to_string();
    // HTTP/2 upstreams carry the authority in :authority; HTTP/1.1 in Host. Either way it is the upstream's.
    assert!(
        host.as_ref().is_none_or(|h| *h == authority),
        "host header {host:?}"
    );
    assert_eq!(world.aad.count("ok"), 1);
    let _ = request(Method::GET, &proxy.url("/x"), &[], "").await;
    proxy.stop().await;
}
