//! File-valued keys: secret files must be private and are never shown, only regular files are read (a FIFO or a
//! device is refused without blocking), symlinks and `~/` are followed, and CA bundles must hold a certificate.

use std::fs;
use std::path::Path;

use super::refused_mode;
use crate::auth::CredentialOptions;
use crate::config::load::load;
use crate::config::load::test_support::{
    CANARY, assert_no_canary, parse_env, parse_with, problems, with_credential, with_defaults,
};
use crate::env::MapEnv;
use crate::test_support::{TempDir, within};

#[test]
fn private_modes() {
    for mode in [0o600, 0o400, 0o700, 0o200] {
        assert_eq!(refused_mode(mode, 1000), None, "{mode:o}");
        assert_eq!(refused_mode(mode, 0), None, "{mode:o}");
    }
    // Group read: accepted only when root owns the file (a Kubernetes Secret with fsGroup).
    for mode in [0o440, 0o640] {
        assert_eq!(refused_mode(mode, 0), None, "{mode:o}");
        assert_eq!(refused_mode(mode, 65532), Some(mode), "{mode:o}");
    }
    // Anything more is refused whoever owns it: group write or execute, any access for others.
    for mode in [
        0o660, 0o620, 0o610, 0o644, 0o604, 0o602, 0o601, 0o666, 0o777, 0o460,
    ] {
        assert_eq!(refused_mode(mode, 0), Some(mode), "{mode:o}");
        assert_eq!(refused_mode(mode, 1000), Some(mode), "{mode:o}");
    }
}

#[test]
fn tls_extra_ca_file() {
    let dir = TempDir::new();
    let cert = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
    dir.file(
        "ca.pem",
        format!("{}{}", cert.cert.pem(), other.cert.pem()),
        0o644,
    );
    dir.file("empty.pem", "no certificates here\n", 0o644);
    let env = MapEnv::new();
    let config = parse_with(
        &env,
        dir.path(),
        &with_defaults("tls: { extra_ca_file: ca.pem }"),
    )
    .unwrap();
    assert_eq!(config.extra_roots.len(), 2);
    let err = parse_with(
        &env,
        dir.path(),
        &with_defaults("tls: { extra_ca_file: empty.pem }"),
    )
    .unwrap_err();
    let expected = format!(
        "tls.extra_ca_file: {} contains no PEM certificate",
        dir.path().join("empty.pem").display()
    );
    assert_eq!(err.problems[0].to_string(), expected);
    let err = parse_with(
        &env,
        dir.path(),
        &with_defaults("tls: { extra_ca_file: missing.pem }"),
    )
    .unwrap_err();
    assert!(err.problems[0].to_string().contains("cannot open"), "{err}");
}

#[test]
fn group_read_is_accepted_only_on_root_owned_secret_files() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new();
    let file = dir.file("key", format!("{CANARY}\n"), 0o440);
    let env = MapEnv::new();
    let cred = with_credential(
        "    client_secret: { tenant_id: t, client_id: c, client_secret_file: key }",
    );
    if fs::metadata(&file).unwrap().uid() == 0 {
        // What kubelet makes of a Secret with `defaultMode: 0400` in a pod with `fsGroup`: root:<fsGroup>, 0440.
        assert!(parse_with(&env, dir.path(), &cred).is_ok());
        std::os::unix::fs::chown(&file, Some(65532), None).unwrap();
    }
    // Owned by anyone else, group read is refused.
    let err = parse_with(&env, dir.path(), &cred).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("is readable by group or others (mode 0440); chmod 600 it (group read is accepted only on a root-owned file"),
        "{shown}"
    );
    assert_no_canary(&err);
}

#[test]
fn secret_files_must_be_private_and_are_never_shown() {
    let dir = TempDir::new();
    let shared = dir.file("shared", format!("{CANARY}\n"), 0o644);
    dir.file("group", "x", 0o620);
    dir.file("crlf", "abc\r\n\n", 0o600);
    dir.file("empty", "\n", 0o600);
    let env = MapEnv::new();
    let cred = |file: &str| {
        with_credential(&format!(
            "    client_secret: {{ tenant_id: t, client_id: c, client_secret_file: {file} }}"
        ))
    };

    let err = parse_with(&env, dir.path(), &cred("shared")).unwrap_err();
    let expected = format!(
        "credentials.sp.client_secret.client_secret_file: {} is readable by group or others (mode 0644); chmod 600 it",
        shared.display()
    );
    assert_eq!(
        err.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [expected]
    );
    assert_no_canary(&err);

    let err = parse_with(&env, dir.path(), &cred("group")).unwrap_err();
    assert!(
        err.to_string()
            .contains("is accessible by group or others (mode 0620)"),
        "{err}"
    );

    let config = parse_with(&env, dir.path(), &cred("crlf")).unwrap();
    match &config.credentials["sp"] {
        CredentialOptions::ClientSecret(s) => assert_eq!(
            s.client_secret.expose(),
            "abc\r\n",
            "only one newline is stripped"
        ),
        other => panic!("{other:?}"),
    }
    let err = parse_with(&env, dir.path(), &cred("empty")).unwrap_err();
    assert!(err.to_string().ends_with("/empty is empty"), "{err}");
    let err = parse_with(&env, dir.path(), &cred("nope")).unwrap_err();
    assert!(
        err.to_string().contains("cannot open") && err.to_string().contains("/nope"),
        "{err}"
    );
    let err = parse_with(&env, dir.path(), &cred(".")).unwrap_err();
    assert!(
        err.to_string()
            .contains("is a directory, not a regular file"),
        "{err}"
    );

    let sdk = with_credential("    sdk_auth_file: { path: shared }");
    let err = parse_with(&env, dir.path(), &sdk).unwrap_err();
    assert!(
        err.to_string().contains("sdk_auth_file.path: ") && err.to_string().contains("(mode 0644)"),
        "{err}"
    );
    assert_no_canary(&err);
    assert_eq!(
        problems(&with_credential("    sdk_auth_file: {}")),
        ["credentials.sp.sdk_auth_file.path: required key is missing"]
    );
}

#[test]
fn fifos_and_devices_are_refused_without_blocking_naming_the_key() {
    let dir = TempDir::new();
    let fifo = dir.path().join("fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let shown = fifo.display().to_string();
    let cases = [
        (
            with_credential(
                "    client_secret: { tenant_id: t, client_id: c, client_secret_file: fifo }",
            ),
            "credentials.sp.client_secret.client_secret_file",
        ),
        (
            with_credential(
                "    client_certificate: { tenant_id: t, client_id: c, certificate_file: fifo }",
            ),
            "credentials.sp.client_certificate.certificate_file",
        ),
        (
            with_credential("    sdk_auth_file: { path: fifo }"),
            "credentials.sp.sdk_auth_file.path",
        ),
        (
            with_defaults("tls: { extra_ca_file: fifo }"),
            "tls.extra_ca_file",
        ),
    ];
    for (text, key) in cases {
        let base = dir.path().to_path_buf();
        let err = within(move || {
            parse_with(&MapEnv::new(), &base, &text).expect_err("a FIFO was accepted")
        });
        let problems: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [format!(
                "{key}: {shown} is a FIFO (named pipe), not a regular file"
            )]
        );
    }
    // /dev/zero would never end; /dev/null would read as empty: both are refused as devices.
    for device in ["/dev/zero", "/dev/null"] {
        let text = with_credential(&format!(
            "    client_secret: {{ tenant_id: t, client_id: c, client_secret_file: {device} }}"
        ));
        let err = within(move || parse_env(&MapEnv::new(), &text).unwrap_err());
        assert!(
            err.to_string().contains(&format!(
                "{device} is a character device, not a regular file"
            )),
            "{err}"
        );
    }
    // The configuration file itself.
    let err = within(move || load(&fifo, &MapEnv::new()).unwrap_err());
    assert_eq!(err.file.as_deref(), Some(Path::new(&shown)));
    assert!(
        err.to_string().contains(&format!(
            "{shown} is a FIFO (named pipe), not a regular file"
        )),
        "{err}"
    );
}

#[test]
fn secret_files_follow_symlinks() {
    let dir = TempDir::new();
    dir.file("real", "value\n", 0o600);
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
    let text = with_credential(
        "    client_secret: { tenant_id: t, client_id: c, client_secret_file: link }",
    );
    let config = parse_with(&MapEnv::new(), dir.path(), &text).unwrap();
    match &config.credentials["sp"] {
        CredentialOptions::ClientSecret(s) => assert_eq!(s.client_secret.expose(), "value"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn home_relative_secret_file() {
    let dir = TempDir::new();
    dir.file("secret", "from-home", 0o600);
    let env = MapEnv::new().with("HOME", dir.path().display().to_string());
    let text = with_credential(
        "    client_secret: { tenant_id: t, client_id: c, client_secret_file: ~/secret }",
    );
    match &parse_env(&env, &text).unwrap().credentials["sp"] {
        CredentialOptions::ClientSecret(s) => assert_eq!(s.client_secret.expose(), "from-home"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        problems(&text),
        [
            "credentials.sp.client_secret.client_secret_file: cannot expand ~/secret: HOME is not set"
        ]
    );
}
