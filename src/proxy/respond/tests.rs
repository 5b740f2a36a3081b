use http_body_util::BodyExt;

use super::*;
use crate::auth::AadError;

async fn body_json(r: Response<ResponseBody>) -> Value {
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
    Box::new(e)
}

#[tokio::test]
async fn proxy_errors_have_contract_status_code_and_headers() {
    let cases: Vec<(ProxyError, u16, &str)> = vec![
        (ProxyError::NoRoute("no route".into()), 404, "NoRoute"),
        (
            ProxyError::HostNotAllowed("h".into()),
            421,
            "HostNotAllowed",
        ),
        (
            ProxyError::OriginNotAllowed("o".into()),
            403,
            "OriginNotAllowed",
        ),
        (
            ProxyError::MethodNotAllowed {
                method: http::Method::DELETE,
                allowed: vec![http::Method::GET, http::Method::POST],
            },
            405,
            "MethodNotAllowed",
        ),
        (ProxyError::PathNotAllowed, 403, "PathNotAllowed"),
        (ProxyError::BadRequest("b"), 400, "BadRequest"),
        (
            ProxyError::UpstreamUnavailable("u".into()),
            502,
            "UpstreamUnavailable",
        ),
        (
            ProxyError::UpstreamTimeout(Duration::from_secs(3)),
            504,
            "UpstreamTimeout",
        ),
        (ProxyError::Overloaded(10), 503, "Overloaded"),
        (ProxyError::RequestBodyTimeout, 408, "RequestBodyTimeout"),
        (
            ProxyError::CallerNotAuthenticated {
                header: http::HeaderName::from_static("x-team-key"),
                message: "m".into(),
            },
            401,
            "CallerNotAuthenticated",
        ),
    ];
    for (e, status, code) in cases {
        let r = rescue(&boxed(e));
        assert_eq!(r.status().as_u16(), status, "{code}");
        assert_eq!(r.headers()[ERROR_HEADER], code);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        if code == "MethodNotAllowed" {
            assert_eq!(r.headers()[http::header::ALLOW], "GET, POST");
        }
        if code == "Overloaded" {
            assert!(r.headers().contains_key(RETRY_AFTER));
        }
        if code == "CallerNotAuthenticated" {
            assert_eq!(
                r.headers()[WWW_AUTHENTICATE],
                "AmlAuthProxyKey header=\"x-team-key\""
            );
        }
        let j = body_json(r).await;
        assert_eq!(j["error"]["code"], code);
        assert!(j["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn tower_timeout_is_upstream_timeout() {
    let r = rescue(&boxed(tower::timeout::error::Elapsed::new()));
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.headers()[ERROR_HEADER], "UpstreamTimeout");
}

#[tokio::test]
async fn unknown_errors_are_a_generic_500() {
    let r = rescue(&boxed(std::io::Error::other("secret detail canary-x")));
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let j = body_json(r).await;
    assert!(
        !j.to_string().contains("canary-x"),
        "internal details are not echoed"
    );
}

#[tokio::test]
async fn routed_errors_carry_the_route() {
    let route = crate::proxy::route::testing::route(&crate::proxy::route::testing::config(
        "scoring",
        "/score",
        None,
        true,
        "https://h/score",
    ));
    let e = RoutedError {
        route: Arc::clone(&route),
        error: boxed(ProxyError::PathNotAllowed),
    };
    let r = rescue(&boxed(e));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let info = r.extensions().get::<RouteInfo>().unwrap();
    assert!(Arc::ptr_eq(&info.route, &route));
    assert!(!info.upstream);
}

fn ca_error() -> TokenError {
    let aad = AadError::parse(
        br#"{"error":"invalid_grant","error_description":"AADSTS53003: Access has been blocked by Conditional Access policies.\r\nTrace ID: t1","error_codes":[53003],"suberror":"message_only","trace_id":"t1","correlation_id":"c1","claims":"{\"access_token\":{\"capolids\":{\"essential\":true,\"values\":[\"p\"]}}}"}"#,
    )
    .unwrap();
    TokenError {
        kind: aad.classify(400),
        message: aad.message(),
        credential: "training-sp".into(),
        source: "client_secret".into(),
        aad: Some(Box::new(aad)),
        retry_after: None,
        attempts: vec![],
    }
}

#[tokio::test]
async fn conditional_access_block_body() {
    let r = rescue(&boxed(ca_error()));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()[ERROR_HEADER], "ConditionalAccessBlocked");
    assert!(!r.headers().contains_key(RETRY_AFTER));
    let j = body_json(r).await;
    let e = &j["error"];
    assert_eq!(e["code"], "ConditionalAccessBlocked");
    assert_eq!(
        e["message"],
        "AADSTS53003: Access has been blocked by Conditional Access policies."
    );
    assert_eq!(e["credential"], "training-sp");
    assert_eq!(e["source"], "client_secret");
    assert_eq!(e["aad"]["error_codes"], json!([53003]));
    assert_eq!(e["aad"]["correlation_id"], "c1");
    assert_eq!(e["aad"]["suberror"], "message_only");
    assert!(
        e["aad"]["claims"].as_str().unwrap().contains("capolids"),
        "claims passed on untouched"
    );
}

#[tokio::test]
async fn interaction_required_has_a_challenge_with_base64_claims() {
    let mut e = ca_error();
    e.kind = TokenErrorKind::InteractionRequired;
    e.message = "AADSTS50079: \"quoted\" text".into();
    let r = token_error(&e, None);
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let www = r.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
    assert!(www.starts_with("Bearer error=\"interaction_required\", error_description=\"AADSTS50079: 'quoted' text\""), "{www}");
    let b64 = www.split("claims=\"").nth(1).unwrap().trim_end_matches('"');
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(decoded, e.aad.unwrap().claims.unwrap().as_bytes());
}

#[tokio::test]
async fn service_unavailable_kinds_have_retry_after() {
    let mut e = ca_error();
    e.kind = TokenErrorKind::TokenServiceUnavailable;
    e.aad = None;
    let r = token_error(&e, Some(Duration::from_millis(2500)));
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[RETRY_AFTER], "3");
    let mut e = ca_error();
    e.kind = TokenErrorKind::CredentialUnavailable;
    e.attempts = vec![crate::auth::Attempt {
        source: "environment".into(),
        reason: "not set".into(),
    }];
    let r = token_error(&e, None);
    assert_eq!(r.headers()[RETRY_AFTER], "5");
    let j = body_json(r).await;
    assert_eq!(j["error"]["details"][0]["source"], "environment");
    let mut e = ca_error();
    e.kind = TokenErrorKind::CredentialRejected;
    let r = token_error(&e, None);
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
}
