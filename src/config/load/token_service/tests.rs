//! `token_service:`: defaults, the secret file (read or to be created), identities, resources and the listener
//! rules, each problem with its key path.

use crate::config::load::test_support::{CANARY, CREDS, assert_no_canary, parse_with};
use crate::config::{Config, Listen};
use crate::env::MapEnv;
use crate::test_support::TempDir;

const ARM: &str = "routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
    credential: default
";

fn document(extra_top: &str, block: &str) -> String {
    format!("{extra_top}{CREDS}{ARM}token_service:\n{block}")
}

fn parse_in(dir: &TempDir, text: &str) -> Result<Config, Vec<String>> {
    parse_with(&MapEnv::new(), dir.path(), text)
        .map_err(|e| e.problems.iter().map(ToString::to_string).collect())
}

#[test]
fn a_minimal_block_takes_the_defaults_and_leaves_the_secret_to_be_created() {
    let dir = TempDir::new();
    let config = parse_in(
        &dir,
        &document(
            "",
            "  secret_file: identity-secret\n  identities: { default: default }\n  allowed_resources: [https://management.azure.com/]\n",
        ),
    )
    .unwrap();
    let ts = config.token_service.unwrap();
    assert_eq!(ts.listen, Listen::Tcp("127.0.0.1:8081".parse().unwrap()));
    assert_eq!(ts.secret_file, dir.join("identity-secret"));
    assert!(ts.secret.is_none(), "absent file: created at start-up");
    assert!(!ts.imds);
    assert_eq!(ts.identities.len(), 1);
    assert_eq!(ts.allowed_resources, ["https://management.azure.com"]);
    assert!(ts.allows("https://management.azure.com/.default"));
    assert!(ts.allows("https://management.azure.com/"));
    assert!(ts.allows("HTTPS://management.azure.com"));
    assert!(!ts.allows("https://vault.azure.net"));
    assert!(!ts.allows("https://management.azure.com.evil"));
    assert!(
        !std::fs::exists(dir.join("identity-secret")).unwrap(),
        "loading creates no file"
    );
}

#[test]
fn an_existing_secret_file_is_read_and_must_be_private_and_long_enough() {
    let dir = TempDir::new();
    dir.file("good", format!("{CANARY}-0123456789\n"), 0o600);
    let block = |file: &str| {
        document(
            "",
            &format!(
                "  secret_file: {file}\n  identities: {{ default: default }}\n  allowed_resources: [https://ml.azure.com]\n"
            ),
        )
    };
    let config = parse_in(&dir, &block("good")).unwrap();
    let secret = config.token_service.unwrap().secret.unwrap();
    assert_eq!(secret.expose(), format!("{CANARY}-0123456789"));

    dir.file("shared", format!("{CANARY}-0123456789"), 0o644);
    dir.file("short", "canary-SECRET", 0o600);
    dir.file("spaced", format!("{CANARY} 0123456789"), 0o600);
    for (file, expected) in [
        ("shared", "token_service.secret_file: "),
        ("short", "shorter than 16 characters"),
        ("spaced", "printable ASCII without spaces"),
        ("missing-dir/secret", "its directory"),
    ] {
        let err = parse_with(&MapEnv::new(), dir.path(), &block(file)).unwrap_err();
        assert_no_canary(&err);
        let problems: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert!(
            problems.len() == 1
                && problems[0].starts_with("token_service.secret_file: ")
                && problems[0].contains(expected),
            "{file}: {problems:?}"
        );
    }
}

#[test]
fn every_problem_of_the_block_is_listed_with_its_key_path() {
    let dir = TempDir::new();
    let problems = parse_in(
        &dir,
        &document(
            "",
            "  listen: 0.0.0.0:8081\n  imds: maybe\n  identities:\n    default: nobody\n    \"00000000-1111-2222-3333-444444444444\": default\n  allowed_resources: []\n  colour: blue\n",
        ),
    )
    .unwrap_err();
    let has = |path: &str, text: &str| {
        problems
            .iter()
            .any(|p| p.starts_with(path) && p.contains(text))
    };
    assert!(has("token_service.imds:", "true or false"), "{problems:?}");
    assert!(
        has(
            "token_service.identities.default:",
            "no credential named \"nobody\""
        ),
        "{problems:?}"
    );
    assert!(
        has("token_service.allowed_resources:", "must not be empty"),
        "{problems:?}"
    );
    assert!(has("token_service.colour:", "unknown key"), "{problems:?}");
    assert!(
        has("token_service.secret_file:", "required key is missing"),
        "{problems:?}"
    );
    assert!(
        has("token_service.listen:", "not a loopback address"),
        "{problems:?}"
    );
}

#[test]
fn case_variants_of_one_id_are_refused() {
    let dir = TempDir::new();
    let problems = parse_in(
        &dir,
        &document(
            "",
            "  secret_file: s\n  identities:\n    \"AAAAAAAA-1111-2222-3333-444444444444\": default\n    \"aaaaaaaa-1111-2222-3333-444444444444\": default\n  allowed_resources: [https://ml.azure.com]\n",
        ),
    )
    .unwrap_err();
    assert!(
        problems.iter().any(|p| p
            .starts_with("token_service.identities.aaaaaaaa-1111-2222-3333-444444444444:")
            && p.contains("already mapped")),
        "{problems:?}"
    );
}

#[test]
fn empty_identities_and_non_resources_are_refused() {
    let dir = TempDir::new();
    let problems = parse_in(
        &dir,
        &document(
            "",
            "  secret_file: s\n  identities: {}\n  allowed_resources: [management.azure.com, \"https://ml.azure.com/ x\"]\n",
        ),
    )
    .unwrap_err();
    let has = |path: &str, text: &str| {
        problems
            .iter()
            .any(|p| p.starts_with(path) && p.contains(text))
    };
    assert!(
        has("token_service.identities:", "at least one identity"),
        "{problems:?}"
    );
    assert!(
        has("token_service.allowed_resources[0]:", "not a resource"),
        "{problems:?}"
    );
    assert!(
        has("token_service.allowed_resources[1]:", "invalid scope"),
        "{problems:?}"
    );
    // A resource named by its application id (Azure DevOps's, say) is a resource, as managed identity takes it.
    let config = parse_in(
        &dir,
        &document(
            "",
            "  secret_file: s
  identities: { default: default }
  allowed_resources: [499b84ac-1321-427f-aa17-267ca6975798, https://ml.azure.com]
",
        ),
    )
    .unwrap();
    let resources = &config.token_service.as_ref().unwrap().allowed_resources;
    assert_eq!(resources[0], "499b84ac-1321-427f-aa17-267ca6975798");
}

#[test]
fn an_exposed_listener_needs_expose_and_caller_auth_and_its_own_address() {
    let dir = TempDir::new();
    let key = dir.file("key", "0123456789abcdef0123", 0o600);
    let block = |listen: &str| {
        format!(
            "  listen: {listen}\n  secret_file: s\n  identities: {{ default: default }}\n  allowed_resources: [https://ml.azure.com]\n"
        )
    };
    // Exposed with both opt-ins: accepted.
    let exposed = format!(
        "listen: 127.0.0.1:8080\nexpose: true\ncaller_auth: {{ secret_file: {} }}\n",
        key.display()
    );
    assert!(parse_in(&dir, &document(&exposed, &block("0.0.0.0:8081"))).is_ok());
    // Exposed without the opt-ins: refused.
    let problems = parse_in(&dir, &document("", &block("0.0.0.0:8081"))).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("token_service.listen:") && p.contains("expose: true")),
        "{problems:?}"
    );
    // A Unix socket is local.
    let config = parse_in(&dir, &document("", &block("unix:/tmp/aml-ts.sock"))).unwrap();
    assert_eq!(
        config.token_service.unwrap().listen,
        Listen::Unix("/tmp/aml-ts.sock".into())
    );
    // The same address as another listener.
    let problems = parse_in(
        &dir,
        &document("listen: 127.0.0.1:8090\n", &block("127.0.0.1:8090")),
    )
    .unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("token_service.listen:") && p.contains("differ from listen")),
        "{problems:?}"
    );
    let problems = parse_in(
        &dir,
        &document("admin_listen: 127.0.0.1:9500\n", &block("127.0.0.1:9500")),
    )
    .unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("token_service.listen:")
                && p.contains("differ from admin_listen")),
        "{problems:?}"
    );
}
