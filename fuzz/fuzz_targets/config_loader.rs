//! The configuration loader on arbitrary YAML text: it must never panic, and a refusal must list at least one
//! problem, each with a message, and never echo the canary secret given through the environment.
#![no_main]

use std::path::Path;

use aml_auth_proxy::config::{ConfigOrigin, from_yaml_str};
use aml_auth_proxy::env::MapEnv;
use libfuzzer_sys::fuzz_target;

const CANARY: &str = "fuzz-canary-SECRET-1234567890";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let env = MapEnv::new()
        .with("SECRET", CANARY)
        .with("HOME", "/nonexistent-home")
        .with("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com");
    match from_yaml_str(
        &text,
        &env,
        ConfigOrigin::BuiltIn,
        Path::new("/nonexistent-base"),
    ) {
        Ok(config) => {
            assert!(
                !config.routes.is_empty(),
                "a valid configuration has routes"
            );
            assert!(
                !format!("{config:?}").contains(CANARY),
                "Debug shows the secret"
            );
        }
        Err(e) => {
            assert!(
                !e.problems.is_empty(),
                "a refusal names at least one problem"
            );
            for p in &e.problems {
                assert!(!p.message.is_empty());
            }
            let shown = e.to_string();
            if !text.contains(CANARY) {
                assert!(
                    !shown.contains(CANARY),
                    "a problem echoed a secret from the environment: {shown}"
                );
            }
        }
    }
});
