//! Azure Arc-enabled servers (PROTOCOLS §4.6): the Connected Machine agent's HIMDS endpoint and its challenge.
//!
//! 1. `GET {IDENTITY_ENDPOINT}?api-version=2020-06-01&resource=…` with `Metadata: true`;
//! 2. the agent answers 401 with `WWW-Authenticate: Basic realm=<path of a .key file>`;
//! 3. the path is checked: resolved (symlinks too) it must lie directly in the agent's key directory, end in
//!    `.key` and hold at most 4096 bytes. These checks are what stop a process squatting on the agent's port
//!    from making the proxy read and send any file it likes;
//! 4. the same GET again with `Authorization: Basic <file contents>` (sent verbatim, not re-encoded).
//!
//! User-assigned identities are not supported on Arc (the Rust and Go SDKs refuse them too).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, Uri};

use super::{Call, Problem, SOURCE, Transport, UserAssignedId, id_kind};
use crate::auth::{AccessToken, CredentialError, Secret};
use crate::file_read::{self, Access, FileError};

const API_VERSION: &str = "2020-06-01";

/// The largest key file the agent writes (and we read).
pub(super) const MAX_KEY_BYTES: u64 = 4096;

/// The Azure Arc source.
#[derive(Debug)]
pub(super) struct Arc {
    pub(super) url: Uri,
    /// The only directory a challenge may point into.
    key_dir: PathBuf,
}

// === impl Arc ===

impl Arc {
    /// Fails (unavailable) for any user-assigned identity.
    pub(super) fn new(
        url: Uri,
        key_dir: PathBuf,
        user_assigned: Option<&UserAssignedId>,
    ) -> Result<Self, Problem> {
        if let Some(id) = user_assigned {
            return Err(Problem::Unavailable(format!(
                "Azure Arc managed identity supports the system-assigned identity only; a user-assigned identity ({}) is not supported",
                id_kind(id)
            )));
        }
        Ok(Self { url, key_dir })
    }

    /// The token request; with `key`, the answer to the challenge.
    pub(super) fn call(
        &self,
        resource: &str,
        key: Option<&Secret>,
    ) -> Result<Call, CredentialError> {
        let mut call = Call::get(
            &self.url,
            &[("api-version", API_VERSION), ("resource", resource)],
        )
        .and_then(|c| c.header(HeaderName::from_static("metadata"), "true", false));
        if let Some(key) = key {
            call = call
                .and_then(|c| c.header(AUTHORIZATION, &format!("Basic {}", key.expose()), true));
        }
        call.map_err(CredentialError::Failed)
    }

    /// Challenge, key-file checks, then the authorized request.
    pub(super) async fn get_token(
        &self,
        transport: Transport<'_>,
        resource: &str,
    ) -> Result<AccessToken, CredentialError> {
        let first = self.call(resource, None)?;
        let challenge = transport
            .send(&first)
            .await
            .map_err(CredentialError::Failed)?;
        if challenge.status.as_u16() != 401 {
            if challenge.status.is_success() {
                return Err(rejected(format!(
                    "the Azure Arc agent at {} answered HTTP {} instead of the expected 401 challenge",
                    first.host(),
                    challenge.status.as_u16()
                )));
            }
            return Err(CredentialError::Failed(
                transport.failure(&first, &challenge),
            ));
        }
        let realm = realm(&challenge.headers).ok_or_else(|| {
            rejected(format!(
                "the Azure Arc agent at {} answered 401 without a `WWW-Authenticate: Basic realm=<key file>` challenge",
                first.host()
            ))
        })?;
        let key = read_key(&self.key_dir, &realm)
            .await
            .map_err(|why| rejected(format!("refused the Azure Arc challenge: {why}")))?;
        let second = self.call(resource, Some(&key))?;
        let response = transport
            .send(&second)
            .await
            .map_err(CredentialError::Failed)?;
        if response.status.is_success() {
            return transport.token(&second, &response);
        }
        Err(CredentialError::Failed(
            transport.failure(&second, &response),
        ))
    }
}

fn rejected(message: String) -> CredentialError {
    CredentialError::rejected(SOURCE, message)
}

/// The key-file path of a `Basic realm=<path>` challenge: everything after the first `=` (as the Rust SDK and
/// azure-identity read it), without surrounding quotes.
fn realm(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    let (_, path) = value.split_once('=')?;
    let path = path.trim().trim_matches('"').trim();
    (!path.is_empty()).then(|| path.to_owned())
}

/// Validates and reads the key file a challenge named (see the module docs), off the async workers and waiting at
/// most [`file_read::READ_TIMEOUT`]. Reasons name the path, never the contents.
pub(super) async fn read_key(key_dir: &Path, realm: &str) -> Result<Secret, String> {
    let (dir, path) = (key_dir.to_path_buf(), PathBuf::from(realm));
    file_read::off_thread_async(Path::new(realm), file_read::READ_TIMEOUT, move || {
        read_key_now(&dir, &path)
    })
    .await
    .map_err(|e| format!("the key file {realm}: {}", e.reason()))?
}

/// [`read_key`] on the current thread.
fn read_key_now(key_dir: &Path, path: &Path) -> Result<Secret, String> {
    let shown = path.display();
    if path.extension() != Some(OsStr::new("key")) {
        return Err(format!(
            "the key file {shown} does not have the .key extension"
        ));
    }
    let resolved = std::fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve the key file {shown}: {e}"))?;
    let dir = std::fs::canonicalize(key_dir).unwrap_or_else(|_| key_dir.to_path_buf());
    if resolved.parent() != Some(dir.as_path()) {
        return Err(format!(
            "the key file {shown} is not in the agent's key directory {}",
            key_dir.display()
        ));
    }
    if resolved.extension() != Some(OsStr::new("key")) {
        return Err(format!(
            "the key file {shown} does not resolve to a .key file"
        ));
    }
    // A regular file only (a FIFO is refused without being opened), one byte past the limit at most.
    let contents =
        file_read::read_now(&resolved, MAX_KEY_BYTES, Access::Any).map_err(|e| match e {
            FileError::NotRegular { .. } | FileError::TooLarge { .. } => {
                format!("the key file {shown} is {}", e.reason())
            }
            other => format!("cannot read the key file {shown}: {}", other.reason()),
        })?;
    let text = std::str::from_utf8(&contents)
        .map_err(|_| format!("the key file {shown} is not text"))?
        .trim();
    if text.is_empty() {
        return Err(format!("the key file {shown} is empty"));
    }
    Ok(Secret::new(text))
}
