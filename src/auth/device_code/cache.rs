//! The refresh-token cache file of a `device_code` credential.
//!
//! One small JSON document (format version 1; unknown fields are ignored on read):
//!
//! ```json
//! {"version":1,"authority":"https://login.microsoftonline.com","tenant":"organizations",
//!  "client_id":"04b07795-8ddb-461a-bbee-02f9e1bf7b46","refresh_token":"…","obtained_at":1724000000}
//! ```
//!
//! `obtained_at` is when Entra ID issued this refresh token (Unix seconds). The file is never read when group or
//! others can access it, and it is replaced atomically: a temporary file is created beside it with mode 0600
//! (`O_EXCL`, so an existing file or symlink is never reused), written, synced and renamed over the target, and
//! the directory is synced. At no moment does a copy of the token exist with wider permissions.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::auth::Secret;
use crate::file_read::{self, Access, FileError};

/// The only format version this build reads and writes.
const FORMAT_VERSION: u64 = 1;

/// Cache files larger than this are refused (a refresh token is a few KiB at most).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// What the cache file holds.
#[derive(Debug)]
pub(crate) struct StoredLogin {
    /// The authority host the token was issued by (`scheme://host[:port]`).
    pub(crate) authority: String,
    /// The tenant signed in to (as configured, e.g. `organizations`).
    pub(crate) tenant: String,
    pub(crate) client_id: String,
    pub(crate) refresh_token: Secret,
    pub(crate) obtained_at: u64,
}

/// The document as written, in this field order.
#[derive(Serialize)]
struct Document<'a> {
    version: u64,
    authority: &'a str,
    tenant: &'a str,
    client_id: &'a str,
    refresh_token: &'a str,
    obtained_at: u64,
}

/// Why the cache file could not be read or written. Messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    /// The file does not exist (nobody signed in yet).
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    /// Group or others can access the file.
    #[error("{} is {access} by group or others (mode {mode:04o}); chmod 600 it", .path.display(), access = access_word(*.mode))]
    Shared { path: PathBuf, mode: u32 },
    /// The file exists but is not a cache file this version understands (`why` never quotes a value from it).
    #[error("{} is not a usable aml-auth-proxy token cache: {why}", .path.display())]
    Invalid { path: PathBuf, why: String },
    /// Cannot be opened, not a regular file, or the file system did not answer in time.
    #[error("{0}")]
    File(FileError),
    /// An I/O failure while doing `what` (`cannot write`, `cannot replace`, …) to a file or directory.
    #[error("{what} {}: {error}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

// === impl StoredLogin ===

impl StoredLogin {
    /// The document, serialised into a buffer that is zeroed on drop. The buffer is sized for the worst case
    /// up front (every character escaped), so it never reallocates and leaves no stray copy of the token behind.
    fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let token = self.refresh_token.expose();
        let texts = [
            self.authority.as_str(),
            &self.tenant,
            &self.client_id,
            token,
        ];
        let worst = texts.iter().map(|t| t.len() * 6 + 2).sum::<usize>() + 128;
        let mut out = Zeroizing::new(Vec::with_capacity(worst));
        let document = Document {
            version: FORMAT_VERSION,
            authority: &self.authority,
            tenant: &self.tenant,
            client_id: &self.client_id,
            refresh_token: token,
            obtained_at: self.obtained_at,
        };
        // Writing to a vector cannot fail, and the document has no map keys that could.
        let _ = serde_json::to_writer(&mut *out, &document);
        out.push(b'\n');
        out
    }

    /// Parses a cache document; `why` texts never quote the file's values.
    fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let mut value: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
        let obj = value.as_object_mut().ok_or("not a JSON object")?;
        match obj.get("version").and_then(Value::as_u64) {
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(format!(
                    "format version {other} is not supported (this build reads version {FORMAT_VERSION})"
                ));
            }
            None => return Err("no format version".to_owned()),
        }
        // Move the token out of the document so that it lives only in a zeroizing `Secret`.
        let refresh_token = match obj.remove("refresh_token") {
            Some(Value::String(token)) => Secret::new(token),
            Some(_) => return Err("refresh_token is not a string".to_owned()),
            None => return Err("no refresh_token".to_owned()),
        };
        if refresh_token.is_empty() {
            return Err("refresh_token is empty".to_owned());
        }
        let text = |key: &str| {
            obj.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("no {key}"))
        };
        Ok(Self {
            authority: text("authority")?,
            tenant: text("tenant")?,
            client_id: text("client_id")?,
            refresh_token,
            obtained_at: obj
                .get("obtained_at")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
        })
    }
}

/// Reads the cache file: it must be a regular file (a FIFO or device is refused without being opened) that group
/// and others cannot access. Blocking: callers run it off the async workers, bounded in time.
pub(crate) fn load(path: &Path) -> Result<StoredLogin, CacheError> {
    let invalid = |why| CacheError::Invalid {
        path: path.to_owned(),
        why,
    };
    // Refused when group or others have any access.
    let private = Access::Private(|mode, _owner_uid| mode & 0o077 != 0);
    let bytes = file_read::read_now(path, MAX_FILE_BYTES, private).map_err(|e| match e {
        e if e.is_not_found() => CacheError::Missing(path.to_owned()),
        FileError::Shared { mode, .. } => CacheError::Shared {
            path: path.to_owned(),
            mode,
        },
        e @ FileError::TooLarge { .. } => invalid(e.reason()),
        // Other failures (`cannot open …`, not a regular file, …) name the file themselves.
        other => CacheError::File(other),
    })?;
    StoredLogin::from_json(&bytes).map_err(invalid)
}

/// Replaces the cache file atomically (see the module docs). A missing directory is created with mode 0700.
pub(crate) fn store(path: &Path, login: &StoredLogin) -> Result<(), CacheError> {
    let io = |what, path: &Path, error: std::io::Error| CacheError::Io {
        what,
        path: path.to_owned(),
        error,
    };
    let name = path.file_name().ok_or_else(|| CacheError::Invalid {
        path: path.to_owned(),
        why: "the path names no file".to_owned(),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io("cannot create directory", &dir, e))?;
    }
    let temp = dir.join(format!(
        ".{}.{}.{:016x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        fastrand::u64(..)
    ));
    let document = login.to_json();
    let written = write_private(&temp, &document)
        .map_err(|e| io("cannot write", &temp, e))
        .and_then(|()| std::fs::rename(&temp, path).map_err(|e| io("cannot replace", path, e)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    // Make the rename itself durable. Not every file system supports syncing a directory; the file's content is
    // already on disk, so a failure here is not worth failing the sign-in for.
    if let Err(error) = File::open(&dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), %error, "cannot sync the token cache directory");
    }
    Ok(())
}

/// Creates `file` (which must not exist) with mode 0600, writes `bytes` and syncs it to disk.
fn write_private(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut handle = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?;
    // The umask can only remove bits from 0600; make sure the owner can still read what is written.
    handle.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    handle.write_all(bytes)?;
    handle.sync_all()
}

fn access_word(mode: u32) -> &'static str {
    if mode & 0o044 != 0 {
        "readable"
    } else {
        "accessible"
    }
}
