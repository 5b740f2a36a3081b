//! `credentials:`: exactly one kind per credential, each kind's rules, and chains (references, duplicates, cycles).

use std::path::Path;
use std::time::Duration;

use crate::auth::{CredentialOptions, UserAssignedId};
use crate::config::load::test_support::{ok, parse_env, parse_with, problems, with_credential};
use crate::config::{ConfigOrigin, from_yaml_str};
use crate::env::MapEnv;
use crate::test_support::TempDir;

#[test]
fn credential_kinds_exactly_one() {
    assert_eq!(
        problems(&with_credential("    {}")),
        [
            "credentials.sp: needs exactly one of: client_secret, client_certificate, workload_identity, managed_identity, azure_cli, device_code, sdk_auth_file, chain"
        ]
    );
    assert_eq!(
        problems(&with_credential(
            "    azure_cli: {}\n    managed_identity: {}"
        )),
        ["credentials.sp: has more than one kind (azure_cli, managed_identity); give exactly one"]
    );
    assert_eq!(
        problems(&with_credential("    azure_cli: 1")),
        ["credentials.sp.azure_cli: expected a mapping, got a number"]
    );
    let p = problems(
        "credentials:\n  bad name:\n    azure_cli: {}\n  ok:\n    azure_cli:\nroutes:\n  - { name: r, path_prefix: /, upstream: https://h, scope: https://h/.default, credential: ok }",
    );
    assert_eq!(
        p,
        ["credentials.bad name: invalid name \"bad name\": use letters, digits, `_`, `.` and `-`"]
    );
}

#[test]
fn empty_and_null_bodies_are_empty_mappings() {
    for body in [
        "workload_identity:",
        "workload_identity: {}",
        "managed_identity:",
        "managed_identity: {}",
        "azure_cli:",
    ] {
        let config = parse_env(
            &MapEnv::new().with("HOME", "/h"),
            &with_credential(&format!("    {body}")),
        )
        .unwrap_or_else(|e| panic!("{body}: {e}"));
        match &config.credentials["sp"] {
            CredentialOptions::WorkloadIdentity(w) => assert_eq!(w, &Default::default()),
            CredentialOptions::ManagedIdentity(m) => assert_eq!(m, &Default::default()),
            CredentialOptions::AzureCli(c) => assert_eq!(c.timeout, Duration::from_secs(10)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn client_secret_and_certificate_rules() {
    assert_eq!(
        problems(&with_credential("    client_secret: { client_id: c }")),
        [
            "credentials.sp.client_secret.tenant_id: required key is missing",
            "credentials.sp.client_secret: needs `client_secret` or `client_secret_file`",
        ]
    );
    assert_eq!(
        problems(&with_credential(
            "    client_secret: { tenant_id: \"invalid_tenant@id\", client_id: \"a b\", client_secret: x }"
        )),
        [
            "credentials.sp.client_secret.tenant_id: invalid tenant id \"invalid_tenant@id\": use letters, digits, `.` and `-`",
            "credentials.sp.client_secret.client_id: \"a b\" must not contain whitespace",
        ]
    );
    assert_eq!(
        problems(&with_credential(
            "    client_secret: { tenant_id: t, client_id: c, client_secret: \"\" }"
        )),
        ["credentials.sp.client_secret.client_secret: must not be empty"]
    );
    let dir = TempDir::new();
    dir.file("cert.pem", "x", 0o600);
    dir.file("pw", "x", 0o600);
    let text = with_credential(
        "    client_certificate: { tenant_id: t, client_id: c, certificate_file: cert.pem, password: a, password_file: pw }",
    );
    let err = parse_with(&MapEnv::new(), dir.path(), &text).unwrap_err();
    assert_eq!(
        err.problems[0].to_string(),
        "credentials.sp.client_certificate: give either `password` or `password_file`, not both"
    );
    let text = with_credential(
        "    client_certificate: { tenant_id: t, client_id: c, certificate_file: cert.pem }",
    );
    match &parse_with(&MapEnv::new(), dir.path(), &text)
        .unwrap()
        .credentials["sp"]
    {
        CredentialOptions::ClientCertificate(c) => {
            assert!(c.password.is_none() && !c.send_certificate_chain)
        }
        other => panic!("{other:?}"),
    }
    // The certificate file holds the private key: it is protected like a secret file.
    dir.file("open.pem", "x", 0o644);
    let text = with_credential(
        "    client_certificate: { tenant_id: t, client_id: c, certificate_file: open.pem }",
    );
    let err = parse_with(&MapEnv::new(), dir.path(), &text).unwrap_err();
    assert!(
        err.problems[0]
            .to_string()
            .contains("open.pem is readable by group or others (mode 0644)"),
        "{err}"
    );
}

#[test]
fn managed_identity_cli_device_code_rules() {
    assert_eq!(
        problems(&with_credential(
            "    managed_identity: { client_id: a, resource_id: b }"
        )),
        [
            "credentials.sp.managed_identity: give at most one of `client_id`, `object_id` or `resource_id`"
        ]
    );
    match &ok(&with_credential(
        "    managed_identity: { resource_id: /subscriptions/x/rg }",
    ))
    .credentials["sp"]
    {
        CredentialOptions::ManagedIdentity(m) => {
            assert_eq!(
                m.user_assigned,
                Some(UserAssignedId::ResourceId("/subscriptions/x/rg".to_owned()))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        problems(&with_credential(
            "    azure_cli: { subscription: \"a;rm -rf\", timeout: 0s }"
        )),
        [
            "credentials.sp.azure_cli.subscription: invalid subscription \"a;rm -rf\": use letters, digits, `_`, `.`, `-` and spaces",
            "credentials.sp.azure_cli.timeout: must be greater than zero",
        ]
    );
    assert_eq!(
        problems(&with_credential("    device_code: {}")),
        [
            "credentials.sp.device_code.cache_file: cannot expand ~/.aml-auth-proxy/tokens.json: HOME is not set"
        ]
    );
    let dir = TempDir::new();
    let text = with_credential("    device_code: { cache_file: cache/tokens.json }");
    match &parse_with(&MapEnv::new(), dir.path(), &text)
        .unwrap()
        .credentials["sp"]
    {
        CredentialOptions::DeviceCode(d) => {
            assert_eq!(d.cache_file, dir.path().join("cache/tokens.json"))
        }
        other => panic!("{other:?}"),
    }
    let text = with_credential("    workload_identity: { token_file: ~/token }");
    match &parse_env(&MapEnv::new().with("HOME", "/home/me"), &text)
        .unwrap()
        .credentials["sp"]
    {
        CredentialOptions::WorkloadIdentity(w) => {
            assert_eq!(w.token_file.as_deref(), Some(Path::new("/home/me/token")))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn chains_references_duplicates_and_cycles() {
    let text = "credentials:
  a:
    chain: [b, azure_cli]
  b:
    chain: [environment, c]
  c:
    chain: [a]
  d:
    chain: [d, azure_cli, azure_cli, nosuch]
  e:
    chain: []
  f:
    chain: [e]
routes:
  - { name: r, path_prefix: /, upstream: https://h, scope: https://h/.default, credential: a }
";
    assert_eq!(
        problems(text),
        [
            "credentials.d.chain[0]: \"d\" is this credential itself",
            "credentials.d.chain[2]: duplicate entry \"azure_cli\"",
            "credentials.d.chain[3]: no credential named \"nosuch\" (built-in sources: environment, workload_identity, managed_identity, azure_cli, device_code)",
            "credentials.e.chain: must not be empty",
            "credentials.a.chain: chain cycle: a -> b -> c -> a",
        ]
    );
    let nested = "credentials:
  inner:
    chain: [managed_identity]
  default:
    chain: [inner, azure_cli]
  sp:
    managed_identity: {}
  other:
    chain: [inner, sp]
routes:
  - { name: r, path_prefix: /, upstream: https://h, scope: https://h/.default }
";
    let config = ok(nested);
    assert!(matches!(&config.credentials["other"], CredentialOptions::Chain(c) if c.len() == 2));
}

#[test]
fn credential_names_may_not_shadow_built_in_chain_sources() {
    let text = "credentials:\n  azure_cli:\n    azure_cli: {}\nroutes:\n  - name: a\n    path_prefix: /\n    upstream: https://management.azure.com\n    scope: https://management.azure.com/.default\n    credential: azure_cli\n";
    let e = from_yaml_str(text, &MapEnv::new(), ConfigOrigin::BuiltIn, Path::new("/")).unwrap_err();
    assert!(
        e.to_string().contains(
            "credentials.azure_cli: \"azure_cli\" is the name of a built-in chain source"
        ),
        "{e}"
    );
}
