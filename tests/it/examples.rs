//! Every example configuration in `config/` is valid, so users can copy them as they are.

use std::path::Path;

use aml_auth_proxy::config;
use aml_auth_proxy::env::MapEnv;

use crate::support::proxy::TempDir;
use crate::support::trace_init;

#[test]
fn every_example_configuration_is_valid() {
    let _trace = trace_init();
    let dir = TempDir::new();
    let secret = dir.file("client-secret", "example-secret\n", 0o600);
    let certificate = dir.file(
        "sp.pem",
        "checked when the credential is built, not by the loader",
        0o600,
    );
    let env = MapEnv::new()
        .with("AML_TENANT_ID", "00000000-0000-0000-0000-000000000001")
        .with("AML_PRINCIPAL_ID", "00000000-0000-0000-0000-000000000002")
        .with("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001")
        .with("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000002")
        .with("SP_SECRET_FILE", secret.display().to_string())
        .with("SP_CERT_FILE", certificate.display().to_string())
        .with("HOME", dir.path().display().to_string());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if let Err(e) = config::load(&path, &env) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 7,
        "only {checked} examples found in {}",
        examples.display()
    );
}
