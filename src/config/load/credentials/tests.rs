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
            "credentials.sp: needs exactly one of: client_secret, client_certificate, workload_identity, managed_identity, azure_cli, azure_developer_cli, azure_powershell, device_code, interactive_browser, sdk_auth_file, chain"
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
            "credentials.d.chain[3]: no credential named \"nosuch\" (built-in sources: environment, workload_identity, managed_identity, azure_cli, azure_developer_cli, azure_powershell, device_code, interactive_browser)",
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

#[test]
fn interactive_browser_and_developer_tools() {
    let dir = TempDir::new();
    let text =         "credentials:
  me:
    interactive_browser: { tenant_id: contoso.com, login_hint: ada@contoso.com, domain_hint: contoso.com, redirect_port: 8400, timeout: 2m, cache_file: t.json }
  defaults:
    interactive_browser: {}
  azd:
    azure_developer_cli: { tenant_id: contoso.com, timeout: 20s }
  pwsh:
    azure_powershell: {}
  dev:
    chain: [azure_developer_cli, azure_powershell, interactive_browser, me]
routes:
  - { name: r, path_prefix: /, upstream: https://h, scope: https://h/.default, credential: dev }
";
    let path = dir.path().join("proxy.yaml");
    let config = from_yaml_str(
        text,
        &MapEnv::new().with("HOME", "/home/ada"),
        ConfigOrigin::File(path.clone()),
        dir.path(),
    )
    .unwrap();
    match &config.credentials["me"] {
        CredentialOptions::InteractiveBrowser(o) => {
            assert_eq!(o.session.tenant_id.as_deref(), Some("contoso.com"));
            assert_eq!(o.login_hint.as_deref(), Some("ada@contoso.com"));
            assert_eq!(o.domain_hint.as_deref(), Some("contoso.com"));
            assert_eq!(o.redirect_port, 8400);
            assert_eq!(o.timeout, Duration::from_secs(120));
            assert_eq!(o.session.cache_file, dir.path().join("t.json"));
            // Hints name the file the configuration came from.
            assert_eq!(o.session.config_file.as_deref(), Some(path.as_path()));
        }
        other => panic!("{other:?}"),
    }
    match &config.credentials["defaults"] {
        CredentialOptions::InteractiveBrowser(o) => {
            assert_eq!(
                (
                    o.session.tenant_id.as_deref(),
                    o.session.client_id.as_deref()
                ),
                (None, None)
            );
            assert_eq!(o.redirect_port, 0);
            assert_eq!(o.timeout, Duration::from_secs(300));
            assert_eq!(
                o.session.cache_file,
                Path::new("/home/ada/.aml-auth-proxy/tokens.json")
            );
        }
        other => panic!("{other:?}"),
    }
    match &config.credentials["azd"] {
        CredentialOptions::AzureDeveloperCli(o) => {
            assert_eq!(o.tenant_id.as_deref(), Some("contoso.com"));
            assert_eq!(o.timeout, Duration::from_secs(20));
        }
        other => panic!("{other:?}"),
    }
    match &config.credentials["pwsh"] {
        CredentialOptions::AzurePowerShell(o) => {
            assert_eq!(o.tenant_id, None);
            assert_eq!(o.timeout, Duration::from_secs(10));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        problems(&with_credential(
            "    interactive_browser: { redirect_port: 70000, timeout: 0s, tenant_id: \"a b\", prompt: none }"
        )),
        [
            "credentials.sp.interactive_browser.redirect_port: expected a port from 0 to 65535 (got 70000)",
            "credentials.sp.interactive_browser.timeout: must be greater than zero",
            "credentials.sp.interactive_browser.tenant_id: invalid tenant id \"a b\": use letters, digits, `.` and `-`",
            "credentials.sp.interactive_browser.prompt: unknown key `prompt`",
            "credentials.sp.interactive_browser.cache_file: cannot expand ~/.aml-auth-proxy/tokens.json: HOME is not set",
        ]
    );
    assert_eq!(
        problems(&with_credential(
            "    azure_powershell: { subscription: x }"
        )),
        ["credentials.sp.azure_powershell.subscription: unknown key `subscription`"]
    );
}
