//! The token service's secret file: read when it exists, else created with mode 0600 holding 32 random bytes
//! (base64url, no padding) from the operating system's generator. Creation never replaces a file: if one
//! appears meanwhile, that one is read, and it must be private.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;

use crate::config::{check_identity_secret, check_identity_secret_owner, secret_mode_refused};
use crate::file_read::{self, Access};
use crate::secret::Secret;

/// Random bytes in a created secret.
const SECRET_BYTES: usize = 32;

/// The mode of a created secret file.
const SECRET_FILE_MODE: u32 = 0o600;

/// Secret files larger than this are refused.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Why the secret file could not be read or created. Messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// Creating or writing it failed.
    #[error("token_service.secret_file: cannot create {}: {error}", .path.display())]
    Create {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: io::Error,
    },
    /// Reading it failed, or it is not private.
    #[error("token_service.secret_file: {0}")]
    Read(#[from] file_read::FileError),
    /// It holds nothing usable.
    #[error("token_service.secret_file: {} is empty", .0.display())]
    Empty(std::path::PathBuf),
    /// It belongs to another user, or its content cannot be a secret (the reason never shows the content).
    #[error("token_service.secret_file: {}: {}", .0.display(), .1)]
    Unusable(std::path::PathBuf, String),
}

/// The secret in `path`, creating the file (mode 0600, 32 random bytes, base64url) when there is none.
///
/// The new secret is written to a private temporary file beside `path` and then hard-linked into place, so a
/// reader (another proxy starting at the same moment) never sees a half-written file, and a file or link that
/// appears at `path` meanwhile is never replaced: that one is read instead, by the same rules as any existing file.
pub fn load_or_create(path: &Path) -> Result<Secret, SecretFileError> {
    if path.symlink_metadata().is_ok() {
        return read(path);
    }
    let create = |error| SecretFileError::Create {
        path: path.to_owned(),
        error,
    };
    let mut bytes = [0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| create(io::Error::other("the random generator failed")))?;
    let secret = Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_FILE_MODE)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(secret.expose().as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            tracing::info!(
                secret_file = %path.display(),
                mode = %format!("{SECRET_FILE_MODE:04o}"),
                "token service: created the secret file; callers send its content as IDENTITY_HEADER / MSI_SECRET"
            );
            Ok(secret)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(create(e)),
    }
}

/// Reads an existing secret file by the rules the configuration check applies: owned by this user or root,
/// private, UTF-8, without one trailing newline, a usable secret.
fn read(path: &Path) -> Result<Secret, SecretFileError> {
    let unusable = |why| SecretFileError::Unusable(path.to_owned(), why);
    check_identity_secret_owner(path).map_err(unusable)?;
    let bytes = file_read::read(
        path,
        MAX_SECRET_FILE_BYTES,
        Access::Private(secret_mode_refused),
    )?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| unusable("it is not valid UTF-8".to_owned()))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(SecretFileError::Empty(path.to_owned()));
    }
    check_identity_secret(text).map_err(unusable)?;
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn a_missing_file_is_created_private_with_32_random_bytes() {
        let dir = TempDir::new();
        let path = dir.join("identity-secret");
        let first = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(first.expose())
            .unwrap();
        assert_eq!(decoded.len(), 32);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first.expose());
        // Read again, not replaced.
        assert_eq!(load_or_create(&path).unwrap(), first);
        let other = dir.join("other-secret");
        assert_ne!(load_or_create(&other).unwrap(), first, "random per file");
    }

    #[test]
    fn processes_starting_together_share_one_secret_and_leave_no_temporary_file() {
        let dir = TempDir::new();
        let path = dir.join("identity-secret");
        let secrets: Vec<Secret> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            secrets.iter().all(|s| *s == secrets[0]),
            "one secret for all"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), secrets[0].expose());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("identity-secret")]);
    }

    #[test]
    fn a_link_planted_where_the_file_would_be_created_is_never_followed_for_writing() {
        let dir = TempDir::new();
        let target = dir.join("elsewhere");
        let path = dir.join("identity-secret");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(load_or_create(&path).is_err());
        assert!(!target.exists(), "nothing was written through the link");
    }

    #[test]
    fn a_file_of_another_user_is_refused_naming_the_owner() {
        let dir = TempDir::new();
        let planted = dir.file("planted", "planted-secret-0123456789", 0o600);
        // Only root can give a file away; elsewhere this user cannot plant such a file either.
        if std::os::unix::fs::chown(&planted, Some(54321), None).is_err() {
            return;
        }
        let err = load_or_create(&planted).unwrap_err().to_string();
        assert!(
            err.contains("belongs to user 54321") && !err.contains("planted-secret"),
            "{err}"
        );
    }

    #[test]
    fn an_existing_shared_or_empty_file_is_refused_and_left_alone() {
        let dir = TempDir::new();
        let shared = dir.file("shared", "canary-SECRET-0123456789", 0o644);
        let err = load_or_create(&shared).unwrap_err().to_string();
        assert!(
            err.contains("group or others") && !err.contains("canary"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&shared).unwrap(),
            "canary-SECRET-0123456789"
        );
        let empty = dir.file("empty", "\n", 0o600);
        assert!(
            load_or_create(&empty)
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
        let short = dir.file("short", "x", 0o600);
        let err = load_or_create(&short).unwrap_err().to_string();
        assert!(err.contains("shorter than 16"), "{err}");
        let spaced = dir.file("spaced", "a secret with spaces in it", 0o600);
        assert!(
            load_or_create(&spaced)
                .unwrap_err()
                .to_string()
                .contains("printable ASCII")
        );
        let missing_dir = dir.join("nope/secret");
        assert!(
            load_or_create(&missing_dir)
                .unwrap_err()
                .to_string()
                .contains("cannot create")
        );
    }
}
