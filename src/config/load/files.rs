//! File-valued keys: path resolution (`~/`, relative to the config file), secret files, CA bundles. Files are
//! read through [`crate::file_read`]: regular files only, bounded in size and time.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_yaml::Value;

use super::walk::Walker;
use crate::file_read::{self, Access, FileError};
use crate::secret::Secret;

/// Secret files larger than this are refused (a secret is a short string).
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// CA bundles larger than this are refused.
const MAX_PEM_BYTES: u64 = 16 * 1024 * 1024;

// === impl Walker ===

impl Walker<'_> {
    /// A path value: `~/` expands with `HOME`, a relative path is resolved against the config's directory.
    pub(super) fn path(&mut self, path: &str, value: &Value) -> Option<PathBuf> {
        let text = self.string(path, value)?;
        self.resolve(path, &text)
    }

    /// Resolves `text` like [`Walker::path`]; `path` is the key path for problems.
    pub(super) fn resolve(&mut self, path: &str, text: &str) -> Option<PathBuf> {
        if text.is_empty() {
            self.problem(path, "must not be empty");
            return None;
        }
        let home_relative = match text {
            "~" => Some(""),
            _ => text.strip_prefix("~/"),
        };
        let Some(rest) = home_relative else {
            return Some(self.base_dir().join(text));
        };
        match self.env().non_empty("HOME") {
            Some(home) => Some(Path::new(&home).join(rest)),
            None => {
                self.problem(path, format!("cannot expand {text}: HOME is not set"));
                None
            }
        }
    }

    /// A file holding a secret: readable, regular, and not accessible by group or others.
    pub(super) fn private_file(&mut self, path: &str, value: &Value) -> Option<PathBuf> {
        let file = self.path(path, value)?;
        file_read::check(&file, Access::Private(secret_mode_refused))
            .map_err(|e| self.file_problem(path, e))
            .ok()?;
        Some(file)
    }

    /// The secret held in a private file: its content minus one trailing newline.
    pub(super) fn secret_file(&mut self, path: &str, value: &Value) -> Option<Secret> {
        let file = self.path(path, value)?;
        let bytes = file_read::read(
            &file,
            MAX_SECRET_BYTES,
            Access::Private(secret_mode_refused),
        )
        .map_err(|e| self.file_problem(path, e))
        .ok()?;
        let Ok(text) = std::str::from_utf8(&bytes) else {
            self.problem(path, format!("{} is not valid UTF-8", file.display()));
            return None;
        };
        let secret = Secret::new(strip_one_newline(text));
        if secret.is_empty() {
            self.problem(path, format!("{} is empty", file.display()));
            return None;
        }
        Some(secret)
    }

    /// The certificates of a PEM bundle (at least one).
    pub(super) fn ca_file(
        &mut self,
        path: &str,
        value: &Value,
    ) -> Option<Vec<CertificateDer<'static>>> {
        let file = self.path(path, value)?;
        let bytes = file_read::read(&file, MAX_PEM_BYTES, Access::Any)
            .map_err(|e| self.file_problem(path, e))
            .ok()?;
        let shown = file.display();
        let roots: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
        match roots {
            Ok(roots) if roots.is_empty() => {
                self.problem(path, format!("{shown} contains no PEM certificate"));
                None
            }
            Ok(roots) => Some(roots),
            Err(e) => {
                self.problem(path, format!("{shown} is not a valid PEM file: {e}"));
                None
            }
        }
    }

    /// Reports why a file could not be used; a shared secret file gets the chmod advice.
    fn file_problem(&mut self, path: &str, error: FileError) {
        let message = match error {
            FileError::Shared { path: file, mode } => {
                let access = if mode & 0o044 != 0 {
                    "readable"
                } else {
                    "accessible"
                };
                format!(
                    "{} is {access} by group or others (mode {mode:04o}); chmod 600 it{}",
                    file.display(),
                    if mode & 0o077 == 0o040 {
                        " (group read is accepted only on a root-owned file, as Kubernetes mounts a Secret with fsGroup)"
                    } else {
                        ""
                    }
                )
            }
            other => other.to_string(),
        };
        self.problem(path, message);
    }
}

/// The rule for every file that holds a secret (`refused_mode` below), as an [`Access::Private`] rule.
pub fn secret_mode_refused(mode: u32, owner_uid: u32) -> bool {
    refused_mode(mode, owner_uid).is_some()
}

/// A secret file may give group and others no access at all, with one exception, PostgreSQL's rule for key
/// files: a file **owned by root** may also be readable (only readable) by its group. That is what Kubernetes
/// makes of a Secret volume mounted with `defaultMode: 0400` in a pod with `fsGroup` (root:fsGroup, mode
/// 0440), and the only way a non-root container can read a Secret file at all: without `fsGroup` the file is
/// root's alone. Only root could have set that group, so the grant is deliberate.
fn refused_mode(mode: u32, owner_uid: u32) -> Option<u32> {
    let tolerated = if owner_uid == 0 { 0o040 } else { 0 };
    (mode & 0o077 & !tolerated != 0).then_some(mode)
}

/// `text` without one trailing `\n` or `\r\n`.
fn strip_one_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests;
