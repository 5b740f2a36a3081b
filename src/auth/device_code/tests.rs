use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use super::cache::{self, CacheError, StoredLogin};
use super::*;
use crate::auth::TokenCredential;
use crate::auth::test_support::{
    assert_ends, assert_has, entra, fixture_json_objects, owned, pairs, response,
};
use crate::auth::token_endpoint::error_from_response;
use crate::auth::token_response::parse_token_response;
use crate::test_support::TempDir;

const ARM: &str = "https://management.azure.com/.default";
const ARM_USER_FLOW: &str = "https://management.azure.com/.default openid profile offline_access";
const ML_USER_FLOW: &str = "https://ml.azure.com/.default openid profile offline_access";

/// A credential named `name`, read from the configuration file `config_file`.
fn credential(name: Option<&str>, config_file: Option<&str>) -> DeviceCodeCredential {
    let options = DeviceCodeCredentialOptions {
        tenant_id: None,
        client_id: None,
        cache_file: PathBuf::from("/nonexistent/tokens.json"),
        config_file: config_file.map(PathBuf::from),
    };
    let credential = DeviceCodeCredential::new(options, entra());
    match name {
        Some(n) => credential.with_name(n),
        None => credential,
    }
}

fn aad_error(status: u16, body: &str) -> TokenError {
    error_from_response(SOURCE, "login.example", &response(status, body.as_bytes()))
}

fn stored(token: &str) -> StoredLogin {
    StoredLogin {
        authority: "https://login.microsoftonline.com".into(),
        tenant: "organizations".into(),
        client_id: DEFAULT_CLIENT_ID.into(),
        refresh_token: Secret::new(token),
        obtained_at: 1_724_000_000,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// === form encodings ===

#[test]
fn forms_in_order_with_decorated_scopes_and_the_claims_last_when_there_are_some() {
    let cp1 = r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#;
    let (code, rt) = (Secret::new("dc+/=&x"), Secret::new("0.AX&y=z"));
    // Scopes are decorated with the user-flow scopes once.
    let ml = "https://ml.azure.com/.default offline_access openid";
    type Form<'a> = &'a dyn Fn(Option<&str>) -> Secret;
    let forms: [(Form<'_>, &[(&str, &str)]); 3] = [
        (
            &|claims| device_code_form(DEFAULT_CLIENT_ID, ARM, claims),
            &[("client_id", DEFAULT_CLIENT_ID), ("scope", ARM_USER_FLOW)],
        ),
        (
            &|claims| device_poll_form("cid", &code, claims),
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", "cid"),
                ("device_code", "dc+/=&x"),
                ("client_info", "1"),
            ],
        ),
        (
            &|claims| refresh_form("cid", &rt, ml, claims),
            &[
                ("client_id", "cid"),
                ("grant_type", "refresh_token"),
                ("refresh_token", "0.AX&y=z"),
                ("scope", ML_USER_FLOW),
                ("client_info", "1"),
            ],
        ),
    ];
    for (form, want) in forms {
        assert_eq!(pairs(form(None).expose()), owned(want));
        let with = [want, &[("claims", cp1)]].concat();
        assert_eq!(pairs(form(Some(cp1)).expose()), owned(&with));
    }
}

// === device-code responses ===

#[test]
fn recorded_device_flow_parses_with_the_expiry_it_implies() {
    let objects = fixture_json_objects("aad_device_code_flow_recorded.txt");
    assert_eq!(objects.len(), 3, "start, pending poll, success");
    let (device_code, interval, prompt) = parse_device_code(objects[0].as_bytes()).unwrap();
    assert_eq!(interval, Duration::from_secs(5));
    assert_eq!(prompt.expires_in, Duration::from_secs(900));
    assert_eq!(
        device_code.expose(),
        "f942eaaebc9683c361e2038648fe4cf1ddb80d515ff47e10d48af420330eab5c"
    );
    assert_eq!(prompt.verification_uri, "https://microsoft.com/devicelogin");
    assert!(prompt.user_code.starts_with("c934976f"));
    assert_eq!(
        prompt.text(),
        "524aa9e7bd498505c8f902c5fe65bd4679d45709259cb590e75f46c980c05aa9"
    );

    let pending = aad_error(400, &objects[1]);
    assert_eq!(PollError::of(&pending), PollError::Pending);

    let (token, refresh_token) = parse_token_response(objects[2].as_bytes(), SOURCE).unwrap();
    assert_eq!(token.expires_in, Duration::from_secs(86_399));
    assert_eq!(
        refresh_token.as_ref().map(Secret::expose),
        Some("4c9049a37c3f1bdc3c662fb0749e887cf6c0a100f9899ef0d77029867bc9e98e")
    );
}

#[test]
fn device_code_numbers_may_be_strings_and_have_defaults() {
    for (body, interval, expires_in) in [
        (
            r#"{"device_code":"d","user_code":"U","verification_url":"https://aka.ms/devicelogin","expires_in":"600","interval":"7"}"#,
            7,
            600,
        ),
        (
            r#"{"device_code":"d","user_code":"U","verification_uri":"https://aka.ms/devicelogin"}"#,
            5,
            1800,
        ),
        // Interval 0 would poll in a loop; the lifetime is at most a day.
        (
            r#"{"device_code":"d","user_code":"U","verification_uri":"https://aka.ms/devicelogin","interval":0,"expires_in":1e300}"#,
            1,
            86_400,
        ),
    ] {
        let (_, got, prompt) = parse_device_code(body.as_bytes()).unwrap();
        assert_eq!(got, Duration::from_secs(interval), "{body}");
        assert_eq!(prompt.expires_in, Duration::from_secs(expires_in));
        assert_eq!(
            prompt.text(),
            "To sign in, use a web browser to open the page https://aka.ms/devicelogin and enter the code U to authenticate."
        );
    }
}

#[test]
fn unusable_device_code_responses_are_errors() {
    for body in [
        &b"<html>"[..],
        b"[]",
        br#"{"user_code":"U","verification_uri":"v"}"#,
        br#"{"device_code":"d","verification_uri":"v"}"#,
        br#"{"device_code":"d","user_code":"U"}"#,
        br#"{"device_code":"","user_code":"U","verification_uri":"v"}"#,
    ] {
        assert!(
            parse_device_code(body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn prompt_text_has_no_terminal_escapes() {
    let (_, _, prompt) = parse_device_code(
        "{\"device_code\":\"d\",\"user_code\":\"AB\\u001b[2JCD\",\"verification_uri\":\"v\",\"message\":\"Go\\u001b]0;pwned\\u0007 now\\r\\n\"}"
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(prompt.user_code, "AB [2JCD");
    let text = prompt.text();
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert_eq!(text, "Go ]0;pwned  now");
}

// === poll and refresh error classification ===

#[test]
fn poll_errors_are_classified_by_error_and_code() {
    let e = |error: &str, code: i64| {
        aad_error(
            400,
            &format!(
                r#"{{"error":"{error}","error_description":"AADSTS{code}: x","error_codes":[{code}]}}"#
            ),
        )
    };
    for (error, want) in [
        (e("slow_down", 0), PollError::SlowDown),
        (e("invalid_grant", 70019), PollError::Expired),
        (e("authorization_declined", 70017), PollError::Declined),
        (e("invalid_client", 7_000_215), PollError::Fatal),
        (
            aad_error(503, r#"{"error":"temporarily_unavailable"}"#),
            PollError::Transient,
        ),
        (
            TokenError::service_unavailable(SOURCE, "unreachable"),
            PollError::Transient,
        ),
    ] {
        assert_eq!(PollError::of(&error), want, "{error}");
    }
}

#[test]
fn only_a_spent_refresh_token_asks_for_a_new_sign_in() {
    for (status, error, code, want) in [
        (400, "invalid_grant", Some(9_002_313), true),
        (400, "interaction_required", Some(50076), true),
        // Conditional Access, client problems and outages are not cured by signing in again.
        (400, "invalid_grant", Some(53003), false),
        (401, "invalid_client", Some(700_016), false),
        (503, "temporarily_unavailable", None, false),
    ] {
        let body = match code {
            Some(code) => format!(r#"{{"error":"{error}","error_codes":[{code}]}}"#),
            None => format!(r#"{{"error":"{error}"}}"#),
        };
        let e = aad_error(status, &body);
        assert_eq!(needs_sign_in(&e), want, "{status} {body}");
    }
}

#[test]
fn sign_in_again_names_the_login_command_with_claims_when_there_are_some() {
    let cred = credential(Some("me"), None);
    // Claims from Entra ID's answer win over the request's.
    let aad_claims = r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#;
    let body = serde_json::json!({"error": "interaction_required", "error_codes": [50079], "claims": aad_claims});
    let mut request = TokenRequest::new(ARM);
    request.claims = Some(r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#.into());
    let flag = |claims: &str| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(claims);
        format!("--credential me --claims-challenge {b64}` (")
    };
    let e = cred.sign_in_again(aad_error(400, &body.to_string()), &request);
    assert_has(&e.message, &flag(aad_claims));

    // Without claims from Entra ID, the request's claims are what the sign-in must satisfy.
    let e = cred.sign_in_again(
        aad_error(400, r#"{"error":"invalid_grant","error_codes":[50173]}"#),
        &request,
    );
    assert_has(&e.message, &flag(request.claims.as_deref().unwrap()));
}

#[test]
fn the_login_command_names_the_credential_and_its_configuration_file_quoted_for_a_shell() {
    for (name, file, want) in [
        (None, None, "aml-auth-proxy login"),
        (Some("me"), None, "aml-auth-proxy login --credential me"),
        (
            Some("me"),
            Some("/etc/aml-auth-proxy/proxy.yaml"),
            "aml-auth-proxy login --config /etc/aml-auth-proxy/proxy.yaml --credential me",
        ),
        (
            Some("me"),
            Some("/home/ada/my proxy/it's.yaml"),
            r#"aml-auth-proxy login --config '/home/ada/my proxy/it'\''s.yaml' --credential me"#,
        ),
    ] {
        assert_eq!(credential(name, file).login_command(None), want);
    }
    let cred = credential(None, None);
    assert_eq!(cred.tenant, DEFAULT_TENANT);
    assert_eq!(cred.client_id, DEFAULT_CLIENT_ID);
    assert_eq!(cred.kind(), "device_code");
}

// === the cache file ===

#[test]
fn cache_file_round_trips_any_token_text_created_0600_in_a_0700_directory() {
    let dir = TempDir::new();
    let path = dir.join("new/sub/tokens.json");
    let token = "0.A\"quote\\back\u{1}ctl\ttab é∂ end";
    cache::store(&path, &stored(token)).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.join("new/sub")), 0o700);
    assert_eq!(mode(&dir.join("new")), 0o700);
    let loaded = cache::load(&path).unwrap();
    assert_eq!(loaded.refresh_token.expose(), token);
    assert_eq!(loaded.tenant, "organizations");
    assert_eq!(loaded.client_id, DEFAULT_CLIENT_ID);
    assert_eq!(loaded.authority, "https://login.microsoftonline.com");
    assert_eq!(loaded.obtained_at, 1_724_000_000);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["refresh_token"], token);
    assert!(
        !format!("{loaded:?}").contains("quote"),
        "Debug is redacted"
    );
}

#[test]
fn cache_file_is_replaced_atomically_and_a_failed_store_leaves_no_temporary_file() {
    let dir = TempDir::new();
    let path = dir.join("tokens.json");
    // A pre-existing, world-readable file is replaced by a new 0600 file, not rewritten in place.
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut reader = std::fs::File::open(&path).unwrap();
    cache::store(&path, &stored("rt-new")).unwrap();
    assert_eq!(mode(&path), 0o600);
    let mut old = String::new();
    std::io::Read::read_to_string(&mut reader, &mut old).unwrap();
    assert_eq!(
        old, "old",
        "a reader of the old file never sees a partial write"
    );
    cache::store(&path, &stored("rt-newer")).unwrap();
    assert_eq!(mode(&path), 0o600);
    // Renaming a file over a non-empty directory fails.
    let blocked = dir.join("blocked");
    std::fs::create_dir_all(blocked.join("inner")).unwrap();
    let failed = cache::store(&blocked, &stored("rt-x"));
    assert!(matches!(failed, Err(CacheError::Io { .. })), "{failed:?}");
    assert_eq!(
        dir.names(),
        vec!["blocked", "tokens.json"],
        "no temporary file is left"
    );
    let loaded = cache::load(&path).unwrap();
    assert_eq!(loaded.refresh_token.expose(), "rt-newer");
}

#[test]
fn a_cache_file_that_is_a_fifo_is_refused_without_blocking() {
    let dir = TempDir::new();
    let fifo = dir.join("tokens.json");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let path = fifo.clone();
    let e = file_read::off_thread(&fifo, Duration::from_secs(10), move || {
        cache::load(&path).map(|_| ())
    })
    .expect("reading the cache file blocked on a FIFO")
    .unwrap_err();
    assert!(matches!(e, CacheError::File(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{} is a FIFO (named pipe), not a regular file",
            fifo.display()
        )
    );
}

#[test]
fn bad_or_shared_cache_files_are_explained_without_their_content() {
    let dir = TempDir::new();
    let path = dir.join("tokens.json");
    assert!(matches!(cache::load(&path), Err(CacheError::Missing(_))));
    let write = |text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // Unknown fields are ignored (a later version may add some).
    let usable = r#"{"version":1,"authority":"a","tenant":"t","client_id":"c","refresh_token":"rt-secret-value","obtained_at":5,"extra":true}"#;
    write(usable, 0o600);
    assert_eq!(cache::load(&path).unwrap().obtained_at, 5);
    for (bits, word) in [
        (0o640, "readable"),
        (0o604, "readable"),
        (0o610, "accessible"),
    ] {
        write(usable, bits);
        let e = cache::load(&path).unwrap_err();
        assert!(matches!(e, CacheError::Shared { mode, .. } if mode == bits));
        let text = e.to_string();
        let why = format!("is {word} by group or others (mode {bits:04o}); chmod 600 it");
        assert_has(&text, &why);
        assert!(!text.contains("rt-secret-value"));
    }
    for (text, why) in [
        ("rt-secret-value", "not JSON (line 1, column 1)"),
        ("[\"rt-secret-value\"]", "not a JSON object"),
        (
            r#"{"version":2,"refresh_token":"rt-secret-value"}"#,
            "format version 2 is not supported (this build reads version 1)",
        ),
        (
            r#"{"refresh_token":"rt-secret-value"}"#,
            "no format version",
        ),
        (r#"{"version":1,"tenant":"t"}"#, "no refresh_token"),
        (
            r#"{"version":1,"refresh_token":""}"#,
            "refresh_token is empty",
        ),
        (
            r#"{"version":1,"refresh_token":"rt-secret-value","tenant":"t","client_id":"c"}"#,
            "no authority",
        ),
    ] {
        write(text, 0o600);
        let e = cache::load(&path).unwrap_err();
        let shown = e.to_string();
        assert_ends(
            &shown,
            &format!("is not a usable aml-auth-proxy token cache: {why}"),
        );
        assert!(!shown.contains("rt-secret-value"));
    }
}
