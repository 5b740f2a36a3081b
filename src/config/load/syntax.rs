//! Character-level checks for identifiers that end up in URLs, command lines, metrics and logs.

/// Credential and route names: `[A-Za-z0-9_.-]+`.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    check_chars(name, b"_.-", "name", "`_`, `.` and `-`")
}

/// Tenant ids: `[A-Za-z0-9.-]+` (they become part of the token URL).
pub(super) fn check_tenant_id(tenant: &str) -> Result<(), String> {
    check_chars(tenant, b".-", "tenant id", "`.` and `-`")
}

/// Client, object and resource ids: non-empty, no whitespace or control characters.
pub(super) fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        Err("must not be empty".to_owned())
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("{id:?} must not contain whitespace"))
    } else {
        Ok(())
    }
}

/// Subscriptions (names or ids, passed to `az`): `[A-Za-z0-9_. -]+`.
pub(super) fn check_subscription(subscription: &str) -> Result<(), String> {
    check_chars(
        subscription,
        b"_. -",
        "subscription",
        "`_`, `.`, `-` and spaces",
    )
}

/// Token scopes: `[A-Za-z0-9_.:/-]+`.
pub(super) fn check_scope(scope: &str) -> Result<(), String> {
    check_chars(scope, b"_.:/-", "scope", "`_`, `.`, `:`, `/` and `-`")
}

/// `text` is non-empty and made of ASCII letters, digits and the bytes of `extra`; otherwise the message names
/// `what` it is and the characters `allowed` besides letters and digits.
fn check_chars(text: &str, extra: &[u8], what: &str, allowed: &str) -> Result<(), String> {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {text:?}: use letters, digits, {allowed}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_name("training-sp_1.x").is_ok());
        assert!(check_name("a b").is_err() && check_name("").is_err());
        assert!(check_tenant_id("A-1.z").is_ok() && check_tenant_id("invalid_tenant@id").is_err());
        assert!(
            check_id("11111111-2222").is_ok() && check_id("a b").is_err() && check_id("").is_err()
        );
        assert!(check_subscription("My Sub_1.x-y").is_ok() && check_subscription("a;b").is_err());
        assert!(check_scope("https://management.core.windows.net//.default").is_ok());
        assert!(check_scope("https://x/.default offline_access").is_err());
    }
}
