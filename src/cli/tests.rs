//! The generated artefacts (completions, man page) and the documentation agree with the clap definition.

use std::collections::BTreeSet;

use super::args::LONG_VERSION;
use super::{command, man_page};

/// Every environment variable a flag reads, over all subcommands, plus `RUST_LOG` (read by the logging setup).
fn env_overrides() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, names: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, names);
        }
    }
    let mut names = BTreeSet::from(["RUST_LOG".to_owned()]);
    walk(&command(), &mut names);
    names
}

#[test]
fn the_clap_definition_is_consistent() {
    command().debug_assert();
}

#[test]
fn the_env_overrides_are_the_documented_ones() {
    let expected = [
        "AML_AUTH_PROXY_ADMIN_LISTEN",
        "AML_AUTH_PROXY_CONFIG",
        "AML_AUTH_PROXY_HTTP1_SERVER",
        "AML_AUTH_PROXY_LISTEN",
        "AML_AUTH_PROXY_LOG_FORMAT",
        "AML_AUTH_PROXY_LOG_LEVEL",
        "AML_AUTH_PROXY_WORKER_THREADS",
        "RUST_LOG",
    ];
    let found = env_overrides();
    assert_eq!(
        found.iter().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "a flag gained or lost an environment variable: document it in docs/configuration.md and the man page"
    );
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let page = String::from_utf8(man_page().unwrap()).unwrap();
    for name in &found {
        assert!(
            reference.contains(&format!("`{name}`")),
            "docs/configuration.md does not document {name}"
        );
        assert!(
            page.contains(&format!("\\fB{name}\\fR")),
            "the man page does not document {name}"
        );
    }
}

#[test]
fn the_man_page_is_roff_with_every_command() {
    let page = String::from_utf8(man_page().unwrap()).unwrap();
    assert!(page.contains("\n.TH aml-auth-proxy 1 "), "{page}");
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "SUBCOMMANDS",
        "ENVIRONMENT",
        "SIGNALS",
        "VERSION",
    ] {
        assert!(
            page.contains(&format!(".SH {section}\n")),
            "no {section} section:\n{page}"
        );
    }
    assert!(page.contains(".SH \"EXIT STATUS\"\n"), "{page}");
    for sub in command().get_subcommands() {
        let name = sub.get_name().replace('-', "\\-");
        assert!(page.contains(&name), "the man page does not list {name}");
    }
}

#[test]
fn the_long_version_names_the_build() {
    let mut lines = LONG_VERSION.lines();
    assert_eq!(lines.next(), Some(env!("CARGO_PKG_VERSION")));
    let rest: Vec<&str> = lines.collect();
    assert!(
        rest.iter()
            .any(|l| l.starts_with("target: ") && l.len() > "target: ".len()),
        "{rest:?}"
    );
    for line in &rest {
        let (name, value) = line.split_once(": ").unwrap();
        assert!(
            ["commit", "target", "profile", "rustc"].contains(&name),
            "{line}"
        );
        assert!(!value.trim().is_empty(), "{line}");
    }
}
