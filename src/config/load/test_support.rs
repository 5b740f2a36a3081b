//! What the loader's tests share: YAML documents that are valid apart from what a test adds, the pipeline run on
//! them, and the canary a secret carries.

use std::path::Path;

use super::from_yaml_str;
use crate::config::{Config, ConfigError, ConfigOrigin};
use crate::env::MapEnv;

/// A secret value that must never appear in a problem.
pub(super) const CANARY: &str = "canary-SECRET-7f3a9c";

/// A `credentials:` block with the `default` credential.
pub(super) const CREDS: &str = "credentials:\n  default:\n    chain: [azure_cli]\n";

/// A `routes:` block with one route to Azure Resource Manager, using the `default` credential.
pub(super) const ARM_ROUTE: &str = "routes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
";

/// Parses `text` as the file `dir/config.yaml` would be read, with `env`.
pub(super) fn parse_with(env: &MapEnv, dir: &Path, text: &str) -> Result<Config, ConfigError> {
    from_yaml_str(text, env, ConfigOrigin::File(dir.join("config.yaml")), dir)
}

/// Parses `text` with `env`, relative paths resolved against a directory that does not exist.
pub(super) fn parse_env(env: &MapEnv, text: &str) -> Result<Config, ConfigError> {
    parse_with(env, Path::new("/nonexistent-config-dir"), text)
}

/// Parses `text` with an empty environment.
pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_env(&MapEnv::new(), text)
}

/// The configuration of a valid `text`.
pub(super) fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Rendered problems (`path: message`).
pub(super) fn problems_env(env: &MapEnv, text: &str) -> Vec<String> {
    match parse_env(env, text) {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

/// Rendered problems with an empty environment.
pub(super) fn problems(text: &str) -> Vec<String> {
    problems_env(&MapEnv::new(), text)
}

/// A config that is valid apart from `extra` (top-level keys other than credentials/routes).
pub(super) fn with_defaults(extra: &str) -> String {
    format!("{extra}\n{CREDS}{ARM_ROUTE}")
}

/// A config with one route using credential `sp` defined by `credential` (indented under `sp:`).
pub(super) fn with_credential(credential: &str) -> String {
    format!(
        "credentials:\n  sp:\n{credential}\nroutes:
  - name: arm
    path_prefix: /
    upstream: https://management.azure.com
    scope: https://management.azure.com/.default
    credential: sp\n"
    )
}

/// A config with one route whose extra keys are `route` (indented like route keys).
pub(super) fn with_route(route: &str) -> String {
    format!("{CREDS}routes:\n  - name: r\n{route}\n")
}

/// Neither the Display nor the Debug of `err` shows the canary or a fragment of it.
pub(super) fn assert_no_canary(err: &ConfigError) {
    let display = err.to_string();
    let debug = format!("{err:?}");
    assert!(!display.contains(CANARY), "secret in Display: {display}");
    assert!(!debug.contains(CANARY), "secret in Debug: {debug}");
    assert!(
        !display.contains("canary"),
        "secret fragment in Display: {display}"
    );
}
