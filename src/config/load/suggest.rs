//! "Did you mean …?" for unknown keys: the keys each mapping of the document takes, and the nearest one to a
//! misspelt key.
//!
//! A key is suggested when it is the same once case, `_` and `-` are ignored (`clientId`, `path-prefix`), or when
//! it is within a third of its length in edits (insertions, deletions, substitutions, swaps of two neighbours) of
//! the misspelt one (`upstrem`, `scpoe`). A key added to the loader belongs in [`KEYS`] or [`CREDENTIAL_KEYS`]
//! too (a test checks that every key listed here is one the loader takes).

/// The keys of each mapping outside `credentials`, by its key path with list indexes written `[]`.
pub(super) const KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "listen",
            "admin_listen",
            "expose",
            "caller_auth",
            "unix_allowed_uids",
            "cloud",
            "authority_host",
            "resource_manager",
            "allowed_hosts",
            "cae",
            "tls",
            "limits",
            "credentials",
            "routes",
            "token_service",
            "telemetry",
        ],
    ),
    ("caller_auth", &["header", "secret_file"]),
    ("tls", &["extra_ca_file"]),
    (
        "limits",
        &[
            "max_in_flight",
            "request_header_timeout",
            "upstream_connect_timeout",
            "upstream_response_timeout",
            "replay_buffer_bytes",
            "drain_timeout",
            "write_stall_timeout",
            "stream_idle_timeout",
            "request_body_min_rate",
            "request_body_rate_window",
        ],
    ),
    (
        "routes[]",
        &[
            "name",
            "path_prefix",
            "host",
            "strip_prefix",
            "upstream",
            "scope",
            "credential",
            "allow",
            "pass_through_authorization",
            "forward_headers",
            "online_endpoint",
            "workspace",
        ],
    ),
    ("routes[].allow", &["methods", "paths", "origins"]),
    (
        "routes[].online_endpoint",
        &[
            "subscription_id",
            "resource_group",
            "workspace",
            "name",
            "auth",
        ],
    ),
    (
        "routes[].workspace",
        &["config_file", "subscription_id", "resource_group", "name"],
    ),
    (
        "token_service",
        &[
            "listen",
            "secret_file",
            "imds",
            "identities",
            "allowed_resources",
        ],
    ),
    ("telemetry", &["otlp"]),
    (
        "telemetry.otlp",
        &[
            "endpoint",
            "service_name",
            "batch_size",
            "queue_size",
            "export_interval",
            "timeout",
        ],
    ),
];

/// The keys of each credential kind (`credentials.<name>.<kind>`).
pub(super) const CREDENTIAL_KEYS: &[(&str, &[&str])] = &[
    (
        "client_secret",
        &[
            "tenant_id",
            "client_id",
            "client_secret",
            "client_secret_file",
        ],
    ),
    (
        "client_certificate",
        &[
            "tenant_id",
            "client_id",
            "certificate_file",
            "password",
            "password_file",
            "send_certificate_chain",
        ],
    ),
    (
        "workload_identity",
        &["tenant_id", "client_id", "token_file"],
    ),
    (
        "managed_identity",
        &["client_id", "object_id", "resource_id", "endpoint"],
    ),
    ("azure_cli", &["tenant_id", "subscription", "timeout"]),
    ("azure_developer_cli", &["tenant_id", "timeout"]),
    ("azure_powershell", &["tenant_id", "timeout"]),
    ("device_code", &["tenant_id", "client_id", "cache_file"]),
    (
        "interactive_browser",
        &[
            "tenant_id",
            "client_id",
            "cache_file",
            "login_hint",
            "domain_hint",
            "redirect_port",
            "timeout",
        ],
    ),
    ("sdk_auth_file", &["path"]),
];

/// The credential kinds (`credentials.<name>` takes exactly one of them), in the order messages list them.
pub(super) const CREDENTIAL_KINDS: &[&str] = &[
    "client_secret",
    "client_certificate",
    "workload_identity",
    "managed_identity",
    "azure_cli",
    "azure_developer_cli",
    "azure_powershell",
    "device_code",
    "interactive_browser",
    "sdk_auth_file",
    "chain",
];

/// The known key nearest to `key` in the mapping at `path`, if one is near enough to be what was meant.
pub(super) fn nearest(path: &str, key: &str) -> Option<&'static str> {
    let keys = keys_at(path)?;
    let wanted = normalized(key);
    let limit = (wanted.len() / 3).max(1);
    keys.iter()
        .filter(|k| **k != key)
        .map(|k| (distance(&wanted, &normalized(k)), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The keys the mapping at `path` takes, when known.
fn keys_at(path: &str) -> Option<&'static [&'static str]> {
    let pattern = without_indexes(path);
    if let Some(rest) = pattern.strip_prefix("credentials.") {
        // Credential names may contain dots: the kind is recognised by the path's end.
        for (kind, keys) in CREDENTIAL_KEYS {
            if rest
                .strip_suffix(kind)
                .is_some_and(|name| name.ends_with('.') && name.len() > 1)
            {
                return Some(keys);
            }
        }
        return Some(CREDENTIAL_KINDS);
    }
    KEYS.iter()
        .find(|(p, _)| *p == pattern)
        .map(|(_, keys)| *keys)
}

/// `routes[2].allow` → `routes[].allow`.
fn without_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

/// Lower case, without `_` and `-`.
fn normalized(key: &str) -> Vec<char> {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Edits (insert, delete, substitute, swap neighbours) from `a` to `b` (optimal string alignment).
fn distance(a: &[char], b: &[char]) -> usize {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::{CREDENTIAL_KEYS, CREDENTIAL_KINDS, KEYS, nearest};
    use crate::config::load::test_support::parse;

    /// Every key listed here is one the loader takes where it is listed: a document with the key (whatever its
    /// value) never says it is unknown.
    #[test]
    fn every_listed_key_is_a_key_of_the_loader() {
        // `{ a: { b: { key: x } } }` for the segments `a.b`.
        let nest = |segments: &[&str], key: &str| {
            let mut yaml = format!("{{ {key}: x }}");
            for segment in segments.iter().rev() {
                yaml = format!("{{ {segment}: {yaml} }}");
            }
            yaml
        };
        let place = |pattern: &str, key: &str| -> (String, String) {
            let path = if pattern.is_empty() {
                key.to_owned()
            } else {
                format!("{}.{key}", pattern.replace("[]", "[0]"))
            };
            let yaml = match pattern.strip_prefix("routes[]") {
                Some(rest) => {
                    let segments: Vec<&str> = rest.split('.').filter(|s| !s.is_empty()).collect();
                    format!("routes:\n  - {}\n", nest(&segments, key))
                }
                None if pattern.is_empty() => format!("{key}: x\n"),
                None => {
                    let segments: Vec<&str> = pattern.split('.').collect();
                    let inner = nest(&segments[1..], key);
                    format!("{}: {inner}\n", segments[0])
                }
            };
            (yaml, path)
        };
        let mut cases: Vec<(String, String)> = Vec::new();
        for (pattern, keys) in KEYS {
            cases.extend(keys.iter().map(|k| place(pattern, k)));
        }
        for kind in CREDENTIAL_KINDS {
            cases.push((
                format!("credentials:\n  c:\n    {kind}: x\n"),
                format!("credentials.c.{kind}"),
            ));
        }
        for (kind, keys) in CREDENTIAL_KEYS {
            for key in *keys {
                cases.push((
                    format!("credentials:\n  c:\n    {kind}: {{ {key}: x }}\n"),
                    format!("credentials.c.{kind}.{key}"),
                ));
            }
        }
        for (yaml, path) in cases {
            let shown = match parse(&yaml) {
                Ok(_) => continue,
                Err(e) => e.to_string(),
            };
            assert!(
                !shown.contains(&format!("{path}: unknown key")),
                "{path} is listed as a key but the loader does not take it:\n{shown}"
            );
        }
    }

    #[test]
    fn misspelt_keys_get_the_nearest_key_of_their_mapping() {
        assert_eq!(nearest("routes[0]", "upstrem"), Some("upstream"));
        assert_eq!(nearest("routes[3]", "scpoe"), Some("scope"));
        assert_eq!(nearest("routes[0]", "pathPrefix"), Some("path_prefix"));
        assert_eq!(nearest("routes[0]", "path-prefix"), Some("path_prefix"));
        assert_eq!(nearest("", "allowed_host"), Some("allowed_hosts"));
        assert_eq!(nearest("limits", "max_inflight"), Some("max_in_flight"));
        assert_eq!(nearest("routes[1].allow", "method"), Some("methods"));
        assert_eq!(
            nearest("credentials.sp.managed_identity", "clientid"),
            Some("client_id")
        );
        assert_eq!(
            nearest("credentials.my.sp.client_secret", "client_secert"),
            Some("client_secret")
        );
        assert_eq!(
            nearest("credentials.sp", "client_secrets"),
            Some("client_secret")
        );
    }

    #[test]
    fn nothing_is_suggested_for_keys_far_from_every_known_one() {
        assert_eq!(nearest("", "listen_typo"), None);
        assert_eq!(nearest("routes[0]", "typo"), None);
        assert_eq!(nearest("routes[0].allow", "verbs"), None);
        assert_eq!(nearest("tls", "ca_file"), None);
        assert_eq!(nearest("somewhere.unknown", "upstrem"), None);
    }
}
