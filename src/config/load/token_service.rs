//! `token_service:`: the listener, its secret file, the IMDS opt-in, the identity mapping and the allowed
//! resources. Whoever can read the secret can obtain raw tokens, so the listener follows the proxy's
//! who-may-connect rules, and the secret file those of every secret file.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde_yaml::Value;

use super::syntax::{check_id, check_scope, is_resource};
use super::walk::{Field, Walker, child};
use crate::config::{
    DEFAULT_IDENTITY, IdentityMapping, Listen, TokenServiceConfig, UNIX_PREFIX, resource_name,
};

/// The token service's listener when `listen` is not given.
const DEFAULT_TOKEN_SERVICE_LISTEN: &str = "127.0.0.1:8081";

/// A secret shorter than this is refused: it is all that stands between a local process and raw tokens.
const MIN_SECRET_BYTES: usize = 16;

/// The keys as walked, before the cross-field checks.
#[derive(Default)]
struct Fields {
    listen: Field<Listen>,
    secret_file: Field<(std::path::PathBuf, Option<crate::secret::Secret>)>,
    imds: Field<bool>,
    identities: Field<Vec<IdentityMapping>>,
    allowed_resources: Field<Vec<String>>,
}

/// What the rest of the document says about who may connect, for the listener check.
pub(super) struct Exposure<'a> {
    /// The proxy listener.
    pub(super) listen: Option<&'a Listen>,
    /// The admin listener.
    pub(super) admin_listen: Option<std::net::SocketAddr>,
    /// `expose`.
    pub(super) expose: bool,
    /// Whether `caller_auth` is configured (even if invalid).
    pub(super) caller_auth: bool,
}

/// Walks `token_service:`. `names` are the declared credentials. Returns the block, and its listener whenever
/// that is valid (for the who-may-connect checks, which also apply when another key is invalid).
pub(super) fn section(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
    names: &BTreeSet<String>,
) -> (Option<TokenServiceConfig>, Option<Listen>) {
    let mut f = Fields::default();
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "listen" => f.listen.set(w.listen(p, v)),
            "secret_file" => f.secret_file.set(secret_file(w, p, v)),
            "imds" => f.imds.set(w.boolean(p, v)),
            "identities" => f.identities.set(identities(w, p, v, names)),
            "allowed_resources" => f.allowed_resources.set(allowed_resources(w, p, v)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return (None, None);
    }
    let listen = match std::mem::take(&mut f.listen) {
        Field::Absent => DEFAULT_TOKEN_SERVICE_LISTEN.parse().ok().map(Listen::Tcp),
        other => other.valid(),
    };
    (block(w, path, f, listen.clone()), listen)
}

/// The block from its walked keys; `None` if any is invalid or missing.
fn block(
    w: &mut Walker<'_>,
    path: &str,
    f: Fields,
    listen: Option<Listen>,
) -> Option<TokenServiceConfig> {
    let secret_file = f.secret_file.required(w, &child(path, "secret_file"));
    let identities = f.identities.required(w, &child(path, "identities"));
    let allowed_resources = f
        .allowed_resources
        .required(w, &child(path, "allowed_resources"));
    let imds = f.imds.or(false);
    let (secret_file, secret) = secret_file?;
    Some(TokenServiceConfig {
        listen: listen?,
        secret_file,
        secret,
        imds: imds?,
        identities: identities?,
        allowed_resources: allowed_resources?,
    })
}

/// The listener rules for `token_service.listen`: loopback or a Unix socket unless `expose: true` with
/// `caller_auth`, and never the address of another listener.
pub(super) fn listener_problems(w: &mut Walker<'_>, listen: &Listen, exposure: &Exposure<'_>) {
    let path = "token_service.listen";
    let allowed = listen.is_local() || (exposure.expose && exposure.caller_auth);
    if !allowed {
        w.problem(
            path,
            format!(
                "{listen} is not a loopback address: any machine that can reach it could obtain this proxy's tokens. \
                 Listen on 127.0.0.1, [::1] or a {UNIX_PREFIX}/path.sock socket, or opt in with `expose: true` \
                 together with `caller_auth`"
            ),
        );
    }
    let same_as = |other: &Listen| match (listen, other) {
        (Listen::Tcp(a), Listen::Tcp(b)) => a == b && a.port() != 0,
        (Listen::Unix(a), Listen::Unix(b)) => a == b,
        _ => false,
    };
    if exposure.listen.is_some_and(same_as) {
        w.problem(path, format!("must differ from listen (both are {listen})"));
    }
    if exposure
        .admin_listen
        .is_some_and(|admin| same_as(&Listen::Tcp(admin)))
    {
        w.problem(
            path,
            format!("must differ from admin_listen (both are {listen})"),
        );
    }
}

/// `secret_file`: read when it exists (a private file holding at least 16 printable characters); otherwise its
/// directory must exist, and the file is created at start-up.
fn secret_file(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
) -> Option<(std::path::PathBuf, Option<crate::secret::Secret>)> {
    let file = w.path(path, value)?;
    match file.try_exists() {
        Ok(true) => {
            if let Err(why) = check_identity_secret_owner(&file) {
                w.problem(path, why);
                return None;
            }
            let secret = w.secret_file(path, value)?;
            if let Err(why) = check_identity_secret(secret.expose()) {
                w.problem(path, why);
                return None;
            }
            Some((file, Some(secret)))
        }
        Ok(false) => {
            let dir = file.parent().unwrap_or(Path::new("/"));
            if dir.is_dir() {
                Some((file, None))
            } else {
                w.problem(
                    path,
                    format!(
                        "{} does not exist and cannot be created: its directory {} does not exist",
                        file.display(),
                        dir.display()
                    ),
                );
                None
            }
        }
        Err(e) => {
            w.problem(path, format!("cannot read {}: {e}", file.display()));
            None
        }
    }
}

/// The token service's secret as read from its file: printable ASCII without spaces (SDKs send it as a header
/// value), at least 16 characters long. The message never shows the secret.
pub fn check_identity_secret(secret: &str) -> Result<(), String> {
    let bytes = secret.as_bytes();
    if !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(
            "the secret must be printable ASCII without spaces: SDKs send it as an HTTP header value".to_owned(),
        );
    }
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the secret is shorter than {MIN_SECRET_BYTES} characters; delete the file to have the proxy create a random one"
        ));
    }
    Ok(())
}

/// The token service's secret file must belong to the user the proxy runs as, or to root (a Kubernetes Secret
/// volume): a file another user planted where the proxy would create one (a shared directory) holds a secret that
/// user knows.
pub fn check_identity_secret_owner(file: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .uid();
    let me = rustix::process::geteuid().as_raw();
    if owner == 0 || owner == me {
        Ok(())
    } else {
        Err(format!(
            "{} belongs to user {owner}, not to the user the proxy runs as ({me}) or root: another user could know its secret",
            file.display()
        ))
    }
}

/// `identities`: a non-empty mapping from `default` or an id to a declared credential; ids are compared without
/// regard to case, so two that differ only in case are one id given twice.
fn identities(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
    names: &BTreeSet<String>,
) -> Option<Vec<IdentityMapping>> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut all_valid = true;
    let is_map = w.fields(path, value, |w, key, p, v| {
        if let Err(message) = check_id(key) {
            w.problem(p, format!("invalid identity: {message}"));
            all_valid = false;
            return true;
        }
        if let Some(first) = seen.insert(key.to_ascii_lowercase(), key.to_owned()) {
            w.problem(p, format!("the identity {first:?} is already mapped (ids are compared without regard to case)"));
            all_valid = false;
            return true;
        }
        let Some(credential) = w.string(p, v) else {
            all_valid = false;
            return true;
        };
        if !names.contains(&credential) {
            w.problem(p, format!("no credential named {credential:?}"));
            all_valid = false;
            return true;
        }
        out.push(IdentityMapping {
            id: key.to_owned(),
            credential,
        });
        true
    });
    if !is_map {
        return None;
    }
    if out.is_empty() && all_valid {
        w.problem(
            path,
            format!(
                "must map at least one identity to a credential, e.g. `{DEFAULT_IDENTITY}: <credential name>`"
            ),
        );
        return None;
    }
    all_valid.then_some(out)
}

/// `allowed_resources`: a non-empty list of resources (or `/.default` scopes), stored without `/.default` and
/// trailing `/`, without duplicates.
fn allowed_resources(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<Vec<String>> {
    let mut resources = w.list(path, value, true, |w, p, v| {
        let text = w.checked(p, v, check_scope)?;
        let name = resource_name(&text);
        if !is_resource(name) {
            w.problem(
                p,
                format!(
                    "{text:?} is not a resource: give its URI, like https://management.azure.com or api://<app id>, or its application id (a GUID)"
                ),
            );
            return None;
        }
        Some(name.to_owned())
    })?;
    let mut seen = BTreeSet::new();
    resources.retain(|r| seen.insert(r.to_ascii_lowercase()));
    Some(resources)
}

#[cfg(test)]
mod tests;
