use super::*;

const KEY: &str = "caller-key-canary-0123456789";

fn caller_key() -> CallerKey {
    CallerKey::new(CallerAuth {
        header: HeaderName::from_static("x-aml-auth-proxy-key"),
        secret: Secret::new(KEY),
    })
}

#[test]
fn caller_key_is_checked_and_removed() {
    let key = caller_key();
    let mut ok = HeaderMap::new();
    ok.insert("x-aml-auth-proxy-key", KEY.parse().unwrap());
    ok.insert("x-other", "kept".parse().unwrap());
    assert!(key.check(&mut ok).is_ok());
    assert!(
        !ok.contains_key("x-aml-auth-proxy-key"),
        "the key is removed"
    );
    assert!(ok.contains_key("x-other"));

    let wrong_values = [
        None,
        Some(""),
        Some("caller-key-canary-012345678"),
        Some("caller-key-canary-01234567890"),
        Some("CALLER-KEY-CANARY-0123456789"),
    ];
    for sent in wrong_values {
        let mut headers = HeaderMap::new();
        if let Some(v) = sent {
            headers.insert("x-aml-auth-proxy-key", v.parse().unwrap());
        }
        let e = key.check(&mut headers).unwrap_err();
        assert_eq!(e.code(), "CallerNotAuthenticated", "{sent:?}");
        assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED);
        assert!(!e.to_string().contains("canary"), "{e}");
        assert!(!headers.contains_key("x-aml-auth-proxy-key"));
    }
    let mut twice = HeaderMap::new();
    twice.append("x-aml-auth-proxy-key", KEY.parse().unwrap());
    twice.append("x-aml-auth-proxy-key", KEY.parse().unwrap());
    assert!(key.check(&mut twice).is_err(), "a repeated key is refused");
    assert!(!format!("{key:?}").contains("canary"));
}

fn allowlist() -> HostAllowlist {
    HostAllowlist::new(vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()])
}

fn req(host: Option<&str>, uri: &str) -> Request<()> {
    let mut b = Request::builder().uri(uri);
    if let Some(h) = host {
        b = b.header(HOST, h);
    }
    b.body(()).unwrap()
}

#[test]
fn hosts() {
    let a = allowlist();
    for ok in [
        "localhost",
        "localhost:8080",
        "LOCALHOST:1",
        "127.0.0.1:9",
        "[::1]:8080",
        "[::1]",
        "localhost:65535",
        "[::1]:1",
    ] {
        assert!(a.check(&req(Some(ok), "/x")).is_ok(), "{ok}");
    }
    for bad in [
        "evil.com",
        "evil.com:8080",
        "127.0.0.1.nip.io",
        "localhost.",
        "0.0.0.0",
        "2130706433",
        "user@localhost",
        "",
        "localhost:",
        "localhost:0",
        "localhost:00",
        "localhost:080",
        "localhost:+80",
        "localhost:65536",
        "localhost:99999",
        "localhost:4294967377",
        "[::1]:0",
        "[::1]:99999",
        "[::1]80",
    ] {
        let e = a.check(&req(Some(bad), "/x")).unwrap_err();
        assert!(
            matches!(e, ProxyError::HostNotAllowed(_) | ProxyError::BadRequest(_)),
            "{bad}: {e:?}"
        );
    }
    assert!(matches!(
        a.check(&req(None, "/x")),
        Err(ProxyError::HostNotAllowed(_))
    ));
    // Absolute-form targets: the authority must be allowed too, and is never used for routing.
    assert!(
        a.check(&req(Some("localhost"), "http://attacker.example/steal"))
            .is_err()
    );
    assert!(
        a.check(&req(Some("attacker.example"), "http://localhost/x"))
            .is_err()
    );
    assert!(
        a.check(&req(None, "http://127.0.0.1:1234/x")).is_ok(),
        "HTTP/2 style :authority"
    );
    let mut two = req(Some("localhost"), "/x");
    two.headers_mut().append(HOST, "evil.com".parse().unwrap());
    assert!(matches!(a.check(&two), Err(ProxyError::BadRequest(_))));
}

#[test]
fn paths() {
    for ok in [
        "/",
        "/subscriptions/a/b",
        "/a%20b",
        "/a.b/c..d",
        "/x?y=../z",
    ] {
        assert!(
            check_path(&Method::GET, ok.split('?').next().unwrap()).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        "*",
        "x",
        "//evil.com/x",
        "/a\\b",
        "/a/../b",
        "/a/./b",
        "/..",
        "/a%2fb",
        "/a%2F..",
        "/%5c",
        "/%2e%2e/x",
        "/a%00",
    ] {
        assert!(check_path(&Method::GET, bad).is_err(), "{bad}");
    }
    assert!(check_path(&Method::CONNECT, "/").is_err());
}

#[test]
fn forward_proxy_requests_are_told_how_to_call_a_reverse_proxy() {
    let admission =
        Admission::new(None, allowlist()).served_at(&Listen::Tcp("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(admission.base_url(), Some("http://127.0.0.1:8080"));
    let message = |mut req: Request<()>| match admission.check(&mut req) {
        Err(ProxyError::HostNotAllowed(m)) => m,
        other => panic!("{other:?}"),
    };
    // HTTP/1.1 absolute form (curl -x, HTTP_PROXY).
    let absolute = message(req(Some("example.com"), "http://example.com/x"));
    assert!(
        absolute.starts_with(
            "this is a reverse proxy, not a forward proxy: it does not fetch URLs of example.com"
        ) && absolute.contains("as http://127.0.0.1:8080/<path>"),
        "{absolute}"
    );
    // CONNECT (HTTPS_PROXY).
    let mut connect = req(Some("example.com:443"), "example.com:443");
    *connect.method_mut() = Method::CONNECT;
    assert!(message(connect).contains("it does not open tunnels to example.com"));
    // A foreign Host on an origin-form request, and any HTTP/2 request, keep the DNS-rebinding explanation.
    assert!(message(req(Some("example.com"), "/x")).contains("DNS-rebinding"));
    let mut h2 = req(None, "http://example.com/x");
    *h2.version_mut() = http::Version::HTTP_2;
    assert!(message(h2).contains("DNS-rebinding"));

    let v6 =
        Admission::new(None, allowlist()).served_at(&Listen::Tcp("[::]:9000".parse().unwrap()));
    assert_eq!(v6.base_url(), Some("http://[::1]:9000"));
    let unix = Admission::new(None, allowlist()).served_at(&Listen::Unix("/run/p.sock".into()));
    assert_eq!(unix.base_url(), Some("http://localhost"));
}
