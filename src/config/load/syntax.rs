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

/// A route's `scope`: a resource's default scope, `<resource>/.default`, the one form every credential kind can
/// ask for (client credentials and workload identity need it; managed identity and the Azure CLI are given the
/// resource before it). The resource is an `https://` (or `http://`) URI, an `api://` URI or an application id.
pub(super) fn check_route_scope(scope: &str) -> Result<(), String> {
    check_scope(scope)?;
    const EXAMPLE: &str = "like \"https://management.azure.com/.default\"";
    let Some(resource) = scope.strip_suffix("/.default") else {
        if is_resource(scope) && !has_path(scope) {
            return Err(format!(
                "{scope:?} is a resource, not a scope: write \"{}/.default\"",
                scope.trim_end_matches('/')
            ));
        }
        return Err(match scope.rsplit_once('/') {
            Some((resource, permission)) if is_resource(resource) && !permission.is_empty() => {
                format!(
                    "{scope:?} names one permission (`{permission}`); the proxy asks for a resource's default scope, \
                 which carries every permission granted to the identity: write \"{resource}/.default\""
                )
            }
            _ => format!(
                "{scope:?} must be a resource's default scope, ending in /.default, {EXAMPLE}"
            ),
        });
    };
    if !is_resource(resource) || resource.ends_with("/.default") {
        return Err(format!(
            "{scope:?}: before /.default comes the resource, an https:// or api:// URI or an application id \
             (GUID), {EXAMPLE}"
        ));
    }
    Ok(())
}

/// `https://host…`, `http://host…`, `api://…`, or a GUID.
pub(super) fn is_resource(text: &str) -> bool {
    if let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    {
        return rest.split('/').next().is_some_and(|host| {
            !host.is_empty() && host.bytes().any(|b| b.is_ascii_alphanumeric())
        });
    }
    if let Some(rest) = text.strip_prefix("api://") {
        return !rest.is_empty();
    }
    is_guid(text)
}

/// True when a URI has a path beyond its host (`https://host/x`); a bare trailing `/` is not a path.
fn has_path(uri: &str) -> bool {
    uri.split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .is_some_and(|(_, path)| !path.is_empty())
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hexadecimal digits.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
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

    #[test]
    fn route_scopes_are_default_scopes_of_a_usable_resource() {
        for good in [
            "https://management.azure.com/.default",
            "https://management.core.windows.net//.default",
            "https://ml.azure.com/.default",
            "api://my-api/.default",
            "11111111-2222-3333-4444-555555555555/.default",
            "http://127.0.0.1:8080/.default",
        ] {
            assert_eq!(check_route_scope(good), Ok(()), "{good}");
        }
        let refused = |scope: &str| check_route_scope(scope).unwrap_err();
        assert_eq!(
            refused("https://ml.azure.com"),
            "\"https://ml.azure.com\" is a resource, not a scope: write \"https://ml.azure.com/.default\""
        );
        assert_eq!(
            refused("https://management.azure.com/"),
            "\"https://management.azure.com/\" is a resource, not a scope: write \"https://management.azure.com/.default\""
        );
        assert!(
            refused("https://management.azure.com/user_impersonation")
                .contains("write \"https://management.azure.com/.default\""),
        );
        for bad in [
            "management.azure.com/.default",
            "/.default",
            "s",
            "x/.default",
            "https:///.default",
        ] {
            assert!(
                refused(bad).contains("/.default"),
                "{bad}: {}",
                refused(bad)
            );
        }
        assert!(
            refused("https://x/.default/.default").contains("before /.default comes the resource")
        );
    }
}
