use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use super::cache::{self, CacheError, StoredLogin};
use super::*;
use crate::auth::TokenCredential;
use crate::auth::claims::decode_claims_challenge;
use crate::auth::test_support::{
    assert_ends, assert_has, assert_starts, entra, fixture_json_lines, owned, pairs, response,
};
use crate::auth::token_response::parse_token_response;
use crate::test_support::TempDir;

const ARM: &str = "https://management.azure.com/.default";
/// [`ARM`] with the user-flow scopes.
const ARM_USER_FLOW: &str = "https://management.azure.com/.default openid profile offline_access";
/// Azure ML's scope with the user-flow scopes.
const ML_USER_FLOW: &str = "https://ml.azure.com/.default openid profile offline_access";

fn credential(name: Option<&str>) -> DeviceCodeCredential {
    credential_from(name, None)
}

/// A credential named `name`, read from the configuration file `config_file`.
fn credential_from(name: Option<&str>, config_file: Option<&str>) -> DeviceCodeCredential {
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
fn scopes_are_decorated_once() {
    assert_eq!(decorate_scope(ARM), ARM_USER_FLOW);
    assert_eq!(
        decorate_scope("https://ml.azure.com/.default offline_access openid"),
        ML_USER_FLOW
    );
}

#[test]
fn device_code_request_sends_client_and_decorated_scope() {
    assert_eq!(
        pairs(device_code_form(DEFAULT_CLIENT_ID, ARM, None).expose()),
        owned(&[("client_id", DEFAULT_CLIENT_ID), ("scope", ARM_USER_FLOW)])
    );
}

#[test]
fn device_code_poll_form_in_order_with_optional_claims() {
    let code = Secret::new("dc+/=&x");
    assert_eq!(
        pairs(device_poll_form("cid", &code, None).expose()),
        owned(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "cid"),
            ("device_code", "dc+/=&x"),
            ("client_info", "1"),
        ])
    );
    let claims = r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#;
    let with = pairs(device_poll_form("cid", &code, Some(claims)).expose());
    assert_eq!(with.last(), owned(&[("claims", claims)]).last());
}

#[test]
fn refresh_grant_form_in_order_with_optional_claims() {
    let rt = Secret::new("0.AX&y=z");
    assert_eq!(
        pairs(refresh_form("cid", &rt, "https://ml.azure.com/.default", None).expose()),
        owned(&[
            ("client_id", "cid"),
            ("grant_type", "refresh_token"),
            ("refresh_token", "0.AX&y=z"),
            ("scope", ML_USER_FLOW),
            ("client_info", "1"),
        ])
    );
    let with = pairs(refresh_form("cid", &rt, ARM, Some("{\"a\":1}")).expose());
    assert_eq!(with.len(), 6);
    assert_eq!(with[5..], owned(&[("claims", "{\"a\":1}")]));
}

// === device-code responses ===

#[test]
fn recorded_device_flow_parses_with_the_expiry_it_implies() {
    let objects = fixture_json_lines("aad_device_code_flow_recorded.txt");
    assert_eq!(objects.len(), 3, "start, pending poll, success");
    let code = parse_device_code(objects[0].as_bytes()).unwrap();
    assert_eq!(code.interval, Duration::from_secs(5));
    assert_eq!(code.prompt.expires_in, Duration::from_secs(900));
    assert_eq!(
        code.device_code.expose(),
        "f942eaaebc9683c361e2038648fe4cf1ddb80d515ff47e10d48af420330eab5c"
    );
    assert_eq!(
        code.prompt.verification_uri,
        "https://microsoft.com/devicelogin"
    );
    assert!(code.prompt.user_code.starts_with("c934976f"));
    assert_eq!(
        code.prompt.text(),
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
    let code = parse_device_code(
        br#"{"device_code":"d","user_code":"U","verification_url":"https://aka.ms/devicelogin","expires_in":"600","interval":"7"}"#,
    )
    .unwrap();
    assert_eq!(code.interval, Duration::from_secs(7));
    assert_eq!(code.prompt.expires_in, Duration::from_secs(600));
    assert_eq!(code.prompt.verification_uri, "https://aka.ms/devicelogin");
    assert_eq!(
        code.prompt.text(),
        "To sign in, use a web browser to open the page https://aka.ms/devicelogin and enter the code U to authenticate."
    );

    let code = parse_device_code(
        br#"{"device_code":"d","user_code":"U","verification_uri":"https://microsoft.com/devicelogin"}"#,
    )
    .unwrap();
    assert_eq!(code.interval, DEFAULT_INTERVAL);
    assert_eq!(code.prompt.expires_in, Duration::from_secs(1800));

    let code = parse_device_code(
        br#"{"device_code":"d","user_code":"U","verification_uri":"v","interval":0,"expires_in":1e300}"#,
    )
    .unwrap();
    assert_eq!(
        code.interval, MIN_INTERVAL,
        "interval 0 would poll in a loop"
    );
    assert_eq!(code.prompt.expires_in, Duration::from_secs(86_400));
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
    let code = parse_device_code(
        "{\"device_code\":\"d\",\"user_code\":\"AB\\u001b[2JCD\",\"verification_uri\":\"v\",\"message\":\"Go\\u001b]0;pwned\\u0007 now\\r\\n\"}"
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(code.prompt.user_code, "AB [2JCD");
    let text = code.prompt.text();
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
    for (error, code, want) in [
        ("authorization_pending", 70016, PollError::Pending),
        ("slow_down", 0, PollError::SlowDown),
        ("expired_token", 70019, PollError::Expired),
        ("invalid_grant", 70019, PollError::Expired),
        ("authorization_declined", 70017, PollError::Declined),
        ("bad_verification_code", 70018, PollError::Fatal),
        ("invalid_client", 7_000_215, PollError::Fatal),
    ] {
        assert_eq!(PollError::of(&e(error, code)), want, "{error} {code}");
    }
    assert_eq!(
        PollError::of(&aad_error(503, r#"{"error":"temporarily_unavailable"}"#)),
        PollError::Transient
    );
    assert_eq!(
        PollError::of(&TokenError::service_unavailable(SOURCE, "unreachable")),
        PollError::Transient
    );
}

#[test]
fn only_a_spent_refresh_token_asks_for_a_new_sign_in() {
    let revoked = fixture_json_lines("aad_error_invalid_grant_50173_revoked_refresh_token.json");
    assert!(needs_sign_in(&aad_error(400, &revoked[0])));
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
    let cred = credential(Some("me"));
    let revoked = fixture_json_lines("aad_error_invalid_grant_50173_revoked_refresh_token.json");
    let e = cred.sign_in_again(aad_error(400, &revoked[0]), &TokenRequest::new(ARM));
    assert_eq!(e.kind, TokenErrorKind::InteractionRequired);
    let renew = "the device-code sign-in must be renewed: run `aml-auth-proxy login --credential me` (AADSTS50173:";
    assert_starts(&e.message, renew);
    assert_eq!(e.aad.as_ref().unwrap().error_codes, vec![50173]);

    // Claims from Entra ID's answer win over the request's.
    let aad_claims = r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#;
    let body = serde_json::json!({"error": "interaction_required", "error_codes": [50079], "claims": aad_claims});
    let mut request = TokenRequest::new(ARM);
    request.claims = Some(r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#.into());
    let e = cred.sign_in_again(aad_error(400, &body.to_string()), &request);
    let b64 = e
        .message
        .split("--claims-challenge ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap();
    assert_eq!(decode_claims_challenge(b64).unwrap(), aad_claims);

    // Without claims from Entra ID, the request's claims are what the sign-in must satisfy.
    let e = cred.sign_in_again(
        aad_error(400, r#"{"error":"invalid_grant","error_codes":[50173]}"#),
        &request,
    );
    assert!(e.message.contains(&format!(
        "--claims-challenge {}",
        base64::engine::general_purpose::STANDARD.encode(request.claims.as_deref().unwrap())
    )));
}

#[test]
fn login_command_without_a_name() {
    let cred = credential(None);
    assert_eq!(cred.login_command(None), "aml-auth-proxy login");
    assert_eq!(cred.tenant, DEFAULT_TENANT);
    assert_eq!(cred.client_id, DEFAULT_CLIENT_ID);
    assert_eq!(cred.kind(), "device_code");
}

// === the cache file ===

#[test]
fn cache_file_round_trips_any_token_text() {
    let dir = TempDir::new();
    let path = dir.join("tokens.json");
    let token = "0.A\"quote\\back\u{1}ctl\ttab é∂ end";
    cache::store(&path, &stored(token)).unwrap();
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
fn cache_file_is_created_0600_in_a_0700_directory() {
    let dir = TempDir::new();
    let path = dir.join("new/sub/tokens.json");
    cache::store(&path, &stored("rt1")).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.join("new/sub")), 0o700);
    assert_eq!(mode(&dir.join("new")), 0o700);
}

#[test]
fn cache_file_is_replaced_atomically_and_stays_private() {
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
    assert_eq!(
        cache::load(&path).unwrap().refresh_token.expose(),
        "rt-newer"
    );
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        dir.names(),
        vec!["tokens.json"],
        "no temporary file is left"
    );
}

#[test]
fn a_failed_store_leaves_the_old_file_and_no_temporary_file() {
    let dir = TempDir::new();
    let path = dir.join("tokens.json");
    cache::store(&path, &stored("rt-old")).unwrap();
    // Renaming a file over a non-empty directory fails.
    let blocked = dir.join("blocked");
    std::fs::create_dir_all(blocked.join("inner")).unwrap();
    assert!(matches!(
        cache::store(&blocked, &stored("rt-x")),
        Err(CacheError::Io { .. })
    ));
    assert_eq!(dir.names(), vec!["blocked", "tokens.json"]);
    assert_eq!(cache::load(&path).unwrap().refresh_token.expose(), "rt-old");
}

#[test]
fn cache_file_readable_by_others_is_refused() {
    let dir = TempDir::new();
    let path = dir.join("tokens.json");
    cache::store(&path, &stored("rt-secret-value")).unwrap();
    for (bits, word) in [
        (0o640, "readable"),
        (0o604, "readable"),
        (0o610, "accessible"),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
        let e = cache::load(&path).unwrap_err();
        assert!(matches!(e, CacheError::Shared { mode, .. } if mode == bits));
        let text = e.to_string();
        let why = format!("is {word} by group or others (mode {bits:04o}); chmod 600 it");
        assert_has(&text, &why);
        assert!(!text.contains("rt-secret-value"));
    }
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
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(cache::load(&path).map(|_| ()));
    });
    let e = rx
        .recv_timeout(Duration::from_secs(10))
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
fn bad_cache_files_are_explained_without_their_content() {
    let dir = TempDir::new();
    let path = dir.join("tokens.json");
    assert!(matches!(cache::load(&path), Err(CacheError::Missing(_))));
    let write = |text: &str| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
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
        write(text);
        let e = cache::load(&path).unwrap_err();
        let shown = e.to_string();
        assert_ends(
            &shown,
            &format!("is not a usable aml-auth-proxy token cache: {why}"),
        );
        assert!(!shown.contains("rt-secret-value"));
    }
    // Unknown fields are ignored (a later version may add some).
    write(
        r#"{"version":1,"authority":"a","tenant":"t","client_id":"c","refresh_token":"r","obtained_at":5,"extra":true}"#,
    );
    assert_eq!(cache::load(&path).unwrap().obtained_at, 5);
}

#[test]
fn the_login_command_names_the_configuration_file_quoted_for_a_shell() {
    let with_file = |file| credential_from(Some("me"), Some(file));
    assert_eq!(
        with_file("/etc/aml-auth-proxy/proxy.yaml").login_command(None),
        "aml-auth-proxy login --config /etc/aml-auth-proxy/proxy.yaml --credential me"
    );
    assert_eq!(
        with_file("/home/ada/my proxy/it's.yaml").login_command(None),
        r#"aml-auth-proxy login --config '/home/ada/my proxy/it'\''s.yaml' --credential me"#
    );
    assert_eq!(
        credential(None).login_command(None),
        "aml-auth-proxy login",
        "no file, no name: the built-in configuration"
    );
}

#[test]
fn sign_in_requests_carry_cp1_when_asked() {
    let plain = TokenRequest::new(ARM);
    assert_eq!(plain.claims_parameter(), None);
    let cae = TokenRequest::new(ARM).with_client_capabilities(true);
    assert_eq!(
        cae.claims_parameter().as_deref(),
        Some(r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#)
    );
    let form =
        pairs(device_code_form(DEFAULT_CLIENT_ID, ARM, cae.claims_parameter().as_deref()).expose());
    assert_eq!(
        form.last().map(|(k, v)| (k.as_str(), v.as_str())),
        Some((
            "claims",
            r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#
        ))
    );
}
