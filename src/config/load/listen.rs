//! Who may connect: `listen` (TCP or `unix:`), `expose`, `caller_auth`, `unix_allowed_uids`, and the rules that
//! tie them together. Any process that can reach the listener can use the proxy's Azure
//! identity, so a listener other hosts can reach needs the operator's explicit `expose: true` *and* a caller key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::HeaderName;
use serde_yaml::Value;

use super::walk::{Field, Walker, child};
use crate::config::{CallerAuth, DEFAULT_CALLER_AUTH_HEADER, Listen, Problem, UNIX_PREFIX};
use crate::secret::Secret;

/// `sun_path` holds 108 bytes on Linux, including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// A caller key shorter than this is refused: it is the only thing between the network and the identity.
const MIN_CALLER_KEY_BYTES: usize = 16;

/// Header names that already mean something to the proxy, to HTTP framing or to upstreams.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "origin",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-aml-auth-proxy-error",
];

// === impl Walker ===

impl Walker<'_> {
    /// `listen`: `IP:port` or `unix:/absolute/path.sock`.
    pub(super) fn listen(&mut self, path: &str, value: &Value) -> Option<Listen> {
        let text = self.string(path, value)?;
        parse_listen(&text)
            .map_err(|message| self.problem(path, message))
            .ok()
    }

    /// `caller_auth: { header, secret_file }`; `secret_file` is required.
    pub(super) fn caller_auth(&mut self, path: &str, value: &Value) -> Option<CallerAuth> {
        let mut header = Field::Absent;
        let mut secret = Field::Absent;
        let is_map = self.fields(path, value, |w, key, p, v| {
            match key {
                "header" => header.set(
                    w.checked(p, v, check_caller_header)
                        .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
                ),
                "secret_file" => secret.set(w.caller_key(p, v)),
                _ => return false,
            }
            true
        });
        if !is_map {
            return None;
        }
        let secret = secret.required(self, &child(path, "secret_file"));
        let header = header.or(HeaderName::from_static(DEFAULT_CALLER_AUTH_HEADER));
        Some(CallerAuth {
            header: header?,
            secret: secret?,
        })
    }

    /// `unix_allowed_uids`: a non-empty list of uids, without duplicates.
    pub(super) fn allowed_uids(&mut self, path: &str, value: &Value) -> Option<Vec<u32>> {
        let mut uids = self.list(path, value, true, |w, p, v| {
            let n = w.count(p, v)?;
            u32::try_from(n)
                .map_err(|_| w.problem(p, format!("{n} is not a valid uid")))
                .ok()
        })?;
        let mut seen = HashSet::new();
        uids.retain(|uid| seen.insert(*uid));
        Some(uids)
    }

    /// The caller key: a private secret file holding at least 16 printable ASCII characters (it travels as a
    /// header value). Messages never show the key.
    fn caller_key(&mut self, path: &str, value: &Value) -> Option<Secret> {
        let secret = self.secret_file(path, value)?;
        let bytes = secret.expose().as_bytes();
        if !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
            self.problem(
                path,
                "the key must be printable ASCII without spaces: it is sent as an HTTP header value",
            );
            return None;
        }
        if bytes.len() < MIN_CALLER_KEY_BYTES {
            self.problem(
                path,
                format!(
                    "the key is shorter than {MIN_CALLER_KEY_BYTES} characters; use a random one, e.g. `openssl rand -hex 32`"
                ),
            );
            return None;
        }
        Some(secret)
    }
}

/// Parses a `listen` value: `IP:port`, or `unix:` and an absolute path short enough for `sun_path`.
pub(crate) fn parse_listen(text: &str) -> Result<Listen, String> {
    let Some(rest) = text.strip_prefix(UNIX_PREFIX) else {
        return text.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            format!(
                "invalid address {text:?} (expected IP:port, like 127.0.0.1:8080, or {UNIX_PREFIX}/absolute/path.sock)"
            )
        });
    };
    let path = Path::new(rest);
    if !path.is_absolute() {
        return Err(format!(
            "{text:?}: a Unix socket path must be absolute, like {UNIX_PREFIX}/run/aml-auth-proxy/proxy.sock"
        ));
    }
    if rest.ends_with('/') || rest.split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            "{text:?}: a Unix socket path must name a file, without `.` or `..` segments"
        ));
    }
    if rest.len() > MAX_SOCKET_PATH_BYTES {
        return Err(format!(
            "{text:?}: a Unix socket path may have at most {MAX_SOCKET_PATH_BYTES} bytes"
        ));
    }
    Ok(Listen::Unix(PathBuf::from(rest)))
}

/// A `caller_auth.header` name: a valid header name that means nothing else to HTTP or to the proxy.
fn check_caller_header(name: &str) -> Result<(), String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid HTTP header name"))?;
    if RESERVED_HEADERS.contains(&header.as_str()) || header.as_str().starts_with("sec-") {
        return Err(format!(
            "{name:?} already has a meaning in HTTP or to the proxy; use a header of its own, like {DEFAULT_CALLER_AUTH_HEADER}"
        ));
    }
    Ok(())
}

/// The who-may-connect rules over the final listener settings (after any command-line override):
/// - a TCP `listen` or `admin_listen` other hosts can reach needs `expose: true`;
/// - `expose: true` needs `caller_auth` (`caller_auth` is whether it is configured, even if invalid);
/// - the two TCP listeners must differ.
pub(crate) fn listener_problems(
    listen: &Listen,
    admin_listen: SocketAddr,
    expose: bool,
    caller_auth: bool,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |path: &str, message: String| {
        problems.push(Problem {
            path: path.to_owned(),
            message,
        });
    };
    if !expose && !listen.is_local() {
        problem(
            "listen",
            format!(
                "{listen} is not a loopback address: any machine that can reach it could use this proxy's Azure identity. \
                 Listen on 127.0.0.1, [::1] or a {UNIX_PREFIX}/path.sock socket, or opt in with `expose: true` together with \
                 `caller_auth` (a shared key every caller must send)"
            ),
        );
    }
    if !expose && !crate::config::is_loopback(admin_listen.ip()) {
        problem(
            "admin_listen",
            format!(
                "{admin_listen} is not a loopback address: the admin port is read-only but reveals route and credential \
                 names and token expiry. Listen on 127.0.0.1 or [::1], or opt in with `expose: true`"
            ),
        );
    }
    if expose && !caller_auth {
        problem(
            "expose",
            "`expose: true` needs `caller_auth` (a shared key every caller must send, read from a private file): \
             without it anyone who can reach the listener can use this proxy's Azure identity"
                .to_owned(),
        );
    }
    if let Some(l) = listen.tcp()
        && l == admin_listen
        && l.port() != 0
    {
        problem(
            "admin_listen",
            format!("must differ from listen (both are {l})"),
        );
    }
    problems
}

#[cfg(test)]
mod tests;
