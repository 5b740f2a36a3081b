//! Character-level checks for identifiers that end up in URLs, command lines, metrics and logs.

/// Credential and route names: `[A-Za-z0-9_.-]+`.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use letters, digits, `_`, `.` and `-`"
        ))
    }
}

/// Tenant ids: `[A-Za-z0-9.-]+` (they become part of the token URL).
pub(super) fn check_tenant_id(tenant: &str) -> Result<(), String> {
    if !tenant.is_empty()
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid tenant id {tenant:?}: use letters, digits, `.` and `-`"
        ))
    }
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
    if !subscription.is_empty()
        && subscription
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_. -".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid subscription {subscription:?}: use letters, digits, `_`, `.`, `-` and spaces"
        ))
    }
}

/// Token scopes: `[A-Za-z0-9_.:/-]+`.
pub(super) fn check_scope(scope: &str) -> Result<(), String> {
    if !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid scope {scope:?}: use letters, digits, `_`, `.`, `:`, `/` and `-`"
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
