//! URL-valued keys: the rules every upstream, authority host and managed-identity endpoint passes.

use std::path::Path;

use crate::auth::CredentialOptions;
use crate::config::load::test_support::{
    ARM_ROUTE, ok, problems, with_credential, with_defaults, with_route,
};
use crate::config::{ConfigOrigin, from_yaml_str};
use crate::env::MapEnv;

#[test]
fn url_rules() {
    let ok_route = |upstream: &str| {
        ok(&with_route(&format!(
            "    path_prefix: /\n    upstream: {upstream}\n    scope: https://h/.default"
        )))
    };
    assert_eq!(
        ok_route("http://127.0.0.2:8080").routes[0]
            .upstream
            .origin
            .port(),
        8080
    );
    assert_eq!(
        ok_route("http://[::1]/base/").routes[0].upstream.base_path,
        "/base"
    );
    assert_eq!(
        ok_route("http://LOCALHOST").routes[0]
            .upstream
            .origin
            .host(),
        "localhost"
    );
    let bad_route = |upstream: &str| {
        problems(&with_route(&format!(
            "    path_prefix: /\n    upstream: \"{upstream}\"\n    scope: https://h/.default"
        )))
    };
    assert_eq!(
        bad_route("https://user:canary@example.com"),
        ["routes[0].upstream: must not contain user information"]
    );
    assert_eq!(
        bad_route("https://example.com/?sig=canary"),
        ["routes[0].upstream: must not contain a query or fragment"]
    );
    assert_eq!(
        bad_route("http://10.0.0.1"),
        [
            "routes[0].upstream: plain http is only allowed for loopback hosts (got \"http://10.0.0.1\")"
        ]
    );
    assert_eq!(
        bad_route("example.com"),
        ["routes[0].upstream: must be an absolute URL like https://host (got \"example.com\")"]
    );
    assert_eq!(
        problems(&with_defaults(
            "authority_host: https://login.example/tenant"
        )),
        ["authority_host: must not have a path (got \"https://login.example/tenant\")"]
    );
    let mi = "    managed_identity: { endpoint: \"http://127.0.0.1:5000/msi/token\" }";
    match &ok(&with_credential(mi)).credentials["sp"] {
        CredentialOptions::ManagedIdentity(m) => {
            assert_eq!(
                m.endpoint.as_ref().map(ToString::to_string).as_deref(),
                Some("http://127.0.0.1:5000/msi/token")
            );
        }
        other => panic!("{other:?}"),
    }
    let p = problems(&with_credential(
        "    managed_identity: { endpoint: \"http://169.254.169.254/metadata?api-version=1\" }",
    ));
    assert_eq!(
        p,
        ["credentials.sp.managed_identity.endpoint: must not contain a query or fragment"]
    );
    // IMDS's own link-local address may be named in plain http; other hosts may not.
    let config = ok(&with_credential(
        "    managed_identity: { endpoint: \"http://169.254.169.254/metadata/identity/oauth2/token\" }",
    ));
    assert!(matches!(
        config.credentials["sp"],
        CredentialOptions::ManagedIdentity(_)
    ));
    let p = problems(&with_credential(
        "    managed_identity: { endpoint: \"http://10.1.2.3/metadata\" }",
    ));
    assert!(
        p[0].contains("plain http is only allowed for loopback hosts"),
        "{p:?}"
    );
}

#[test]
fn upstreams_may_not_be_link_local() {
    for upstream in [
        "https://169.254.169.254",
        "https://[fe80::1]:8443/x",
        "https://[::ffff:169.254.169.254]",
        "https://[::ffff:a9fe:a9fe]",
        "https://[64:ff9b::a9fe:a9fe]",
    ] {
        let text = format!(
            "credentials:\n  sp:\n    azure_cli: {{}}\nroutes:\n  - name: a\n    path_prefix: /\n    upstream: {upstream}\n    scope: https://management.azure.com/.default\n    credential: sp\n"
        );
        let e = from_yaml_str(&text, &MapEnv::new(), ConfigOrigin::BuiltIn, Path::new("/"))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("routes[0].upstream: must not be a link-local address"),
            "{e}"
        );
    }
}

#[test]
fn numeric_spellings_of_imds_are_refused_for_every_url_key() {
    for host in [
        "0xa9fea9fe",
        "2852039166",
        "169.254.43518",
        "0251.0376.0251.0376",
    ] {
        let text = format!(
            "authority_host: https://{host}
credentials:
  mi:
    managed_identity: {{ endpoint: \"http://{host}/metadata/identity/oauth2/token\" }}
routes:
  - name: a
    path_prefix: /
    upstream: https://{host}
    scope: https://management.azure.com/.default
    credential: mi
"
        );
        let p = problems(&text);
        assert_eq!(p.len(), 3, "{p:?}");
        for (problem, key) in p.iter().zip([
            "authority_host",
            "credentials.mi.managed_identity.endpoint",
            "routes[0].upstream",
        ]) {
            assert!(
                problem.starts_with(&format!(
                    "{key}: \"{host}\" is not an IP address as written"
                )),
                "{problem}"
            );
        }
    }
    // IMDS itself, written as IMDS is written, stays a valid managed-identity endpoint.
    let config = ok(&format!(
        "{}credentials:\n  mi:\n    managed_identity: {{ endpoint: \"http://169.254.169.254/metadata/identity/oauth2/token\" }}\n",
        ARM_ROUTE.replace("    scope:", "    credential: mi\n    scope:")
    ));
    assert_eq!(config.credentials.len(), 1);
}
