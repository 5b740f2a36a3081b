//! `check-config` on a `token_service` block: every problem with its key path, exit 64; a good block is
//! summarised, and checking creates no secret file.

use crate::support::process::{ClosedPort, check_config};
use crate::support::proxy::TempDir;
use crate::support::trace_init;

const BASE: &str = "credentials:
  sp:
    client_secret: { tenant_id: t, client_id: 11111111-2222-3333-4444-555555555555, client_secret: ts-check-SECRET-value }
routes:
  - { name: arm, path_prefix: /, upstream: https://management.azure.com, scope: https://management.azure.com/.default, credential: sp }
";

#[tokio::test]
async fn check_config_lists_every_token_service_problem_and_exits_64() {
    let _t = trace_init();
    let (dir, imds) = (TempDir::new(), ClosedPort::new());
    let bad = format!(
        "{BASE}token_service:
  listen: 0.0.0.0:8081
  secret_file: {}/no-such-dir/secret
  identities:
    default: sp
    \"00000000-1111-2222-3333-444444444444\": missing-credential
  allowed_resources: []
",
        dir.path().display()
    );
    let file = dir.file("bad.yaml", &bad, 0o600);
    let out = check_config(dir.path(), &imds, &file).await;
    assert_eq!(out.code(), Some(64), "{out:#?}");
    for expected in [
        "token_service.listen: 0.0.0.0:8081 is not a loopback address",
        "token_service.secret_file: ",
        "token_service.identities.00000000-1111-2222-3333-444444444444: no credential named \"missing-credential\"",
        "token_service.allowed_resources: must not be empty",
    ] {
        assert!(out.stderr.contains(expected), "{expected:?} in {out:#?}");
    }
    assert!(!out.all().contains("ts-check-SECRET-value"));

    let good = format!(
        "{BASE}token_service:\n  secret_file: {}/identity-secret\n  imds: true\n  identities: {{ default: sp }}\n  allowed_resources: [https://ml.azure.com/.default]\n",
        dir.path().display()
    );
    let file = dir.file("good.yaml", &good, 0o600);
    let out = check_config(dir.path(), &imds, &file).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert!(
        out.stdout.contains("token service on 127.0.0.1:8081"),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains("created at start-up") && out.stdout.contains("imds"),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains("default -> sp") && out.stdout.contains("https://ml.azure.com"),
        "{out:#?}"
    );
    assert!(
        !dir.path().join("identity-secret").exists(),
        "check-config creates no file"
    );
}
