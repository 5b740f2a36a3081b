//! Entra ID error bodies: `AadError::parse`, then `classify`, `message`, `to_json` on what it accepts.

#![no_main]

use aml_auth_proxy::auth::{AadError, TokenErrorKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(e) = AadError::parse(data) else {
        return;
    };
    assert!(
        e.error.is_some() || !e.error_codes.is_empty(),
        "accepted without error or error_codes: {e:?}"
    );
    assert_eq!(e.first_code(), e.error_codes.first().copied());

    // Statuses: the usual ones plus two derived from the input.
    let h = data
        .iter()
        .fold(0u16, |a, &b| a.wrapping_mul(31).wrapping_add(u16::from(b)));
    let statuses = [200, 400, 401, 403, 429, 500, 503, 100 + h % 500, h];
    let at_400 = e.classify(400);
    for status in statuses {
        let kind = e.classify(status);
        assert_ne!(
            kind,
            TokenErrorKind::CredentialUnavailable,
            "never from a body"
        );
        // Codes, `error` and `suberror` decide before the status does.
        if matches!(
            at_400,
            TokenErrorKind::ConditionalAccessBlocked | TokenErrorKind::InteractionRequired
        ) {
            assert_eq!(kind, at_400, "status {status} changed a code-based class");
        }
        if status == 429 || status >= 500 {
            assert_ne!(kind, TokenErrorKind::CredentialRejected, "status {status}");
        }
    }

    // The message is one line (it goes to text logs and the CLI's one-line errors).
    let message = e.message();
    assert!(
        !message.contains(['\r', '\n']),
        "message {message:?} is not one line"
    );
    // Control characters are dropped from the message, so compare against the field without them.
    let from = |f: &Option<String>| {
        f.as_deref().is_some_and(|s| {
            let printable: String = s.chars().filter(|c| !c.is_control()).collect();
            printable.contains(message.trim())
        })
    };
    assert!(
        from(&e.error_description)
            || from(&e.error)
            || message == "Entra ID refused the token request",
        "message {message:?} comes from nowhere"
    );

    // `to_json` keeps every field: parsing it again gives the same error.
    let json = e.to_json();
    assert!(json.is_object());
    let bytes = match serde_json::to_vec(&json) {
        Ok(b) => b,
        Err(err) => panic!("to_json is not serialisable: {err}"),
    };
    assert_eq!(
        AadError::parse(&bytes).as_ref(),
        Some(&e),
        "to_json round trip"
    );
});
