//! The token service's secret file: read when it exists, else created with mode 0600 holding 32 random bytes
//! (base64url, no padding) from the operating system's generator. Creation never replaces a file: if one
//! appears meanwhile, that one is read, and it must be private.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;

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
}

/// The secret in `path`, creating the file (mode 0600, 32 random bytes, base64url) when there is none.
pub fn load_or_create(path: &Path) -> Result<Secret, SecretFileError> {
    let create = |error| SecretFileError::Create {
        path: path.to_owned(),
        error,
    };
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_FILE_MODE)
        .open(path)
    {
        Ok(mut file) => {
            let mut bytes = [0u8; SECRET_BYTES];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| create(io::Error::other("the random generator failed")))?;
            let secret =
                Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
            file.write_all(secret.expose().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    let _ = std::fs::remove_file(path);
                    create(e)
                })?;
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

/// Reads an existing secret file: private (no access for group or others), without one trailing newline.
fn read(path: &Path) -> Result<Secret, SecretFileError> {
    let bytes = file_read::read(
        path,
        MAX_SECRET_FILE_BYTES,
        Access::Private(|mode, _| mode & 0o077 != 0),
    )?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(SecretFileError::Empty(path.to_owned()));
    }
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
        let missing_dir = dir.join("nope/secret");
        assert!(
            load_or_create(&missing_dir)
                .unwrap_err()
                .to_string()
                .contains("cannot create")
        );
    }
}
