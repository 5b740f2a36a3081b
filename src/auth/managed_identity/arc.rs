//! Azure Arc-enabled servers: the Connected Machine agent's HIMDS endpoint and its challenge.
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

use http::HeaderMap;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};

use super::{Call, ManagedIdentityCredential, SOURCE, refusal};
use crate::auth::{AccessToken, CredentialError, Secret, TokenError};
use crate::file_read::{self, Access, FileError};

/// The largest key file the agent writes (and we read).
const MAX_KEY_BYTES: u64 = 4096;

/// Sends `first` (the endpoint's request), expects the 401 challenge, checks and reads the key file it names, and
/// sends the request again with the key.
pub(super) async fn get_token(
    credential: &ManagedIdentityCredential,
    first: &Call,
) -> Result<AccessToken, CredentialError> {
    let challenge = credential.send(first).await?;
    let status = challenge.status.as_u16();
    if challenge.status.is_success() {
        return Err(rejected(format!(
            "the Azure Arc agent at {} answered HTTP {status} instead of the expected 401 challenge",
            first.host()
        )));
    }
    if status != 401 {
        return Err(refusal(first, &challenge));
    }
    let realm = realm(&challenge.headers).ok_or_else(|| {
        rejected(format!(
            "the Azure Arc agent at {} answered 401 without a `WWW-Authenticate: Basic realm=<key file>` challenge",
            first.host()
        ))
    })?;
    let key = read_key(&credential.options.arc_key_dir, &realm)
        .await
        .map_err(|why| rejected(format!("refused the Azure Arc challenge: {why}")))?;
    credential.fetch(&answer(first, &key)?).await
}

/// The request again, with the key as `Authorization: Basic <key>` (sent verbatim, not re-encoded).
pub(super) fn answer(first: &Call, key: &Secret) -> Result<Call, TokenError> {
    first
        .clone()
        .with_secret(AUTHORIZATION, &format!("Basic {}", key.expose()))
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
async fn read_key(key_dir: &Path, realm: &str) -> Result<Secret, String> {
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
