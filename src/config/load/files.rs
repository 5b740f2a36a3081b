//! File-valued keys: path resolution (`~/`, relative to the config file), secret files, CA bundles.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_yaml::Value;
use zeroize::Zeroize;

use super::walk::Walker;
use crate::auth::Secret;

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
        self.open_private(path, &file)?;
        Some(file)
    }

    /// The secret held in a private file: its content minus one trailing newline.
    pub(super) fn secret_file(&mut self, path: &str, value: &Value) -> Option<Secret> {
        let file = self.path(path, value)?;
        let handle = self.open_private(path, &file)?;
        let shown = file.display();
        let mut bytes = Vec::new();
        if let Err(e) = handle.take(MAX_SECRET_BYTES + 1).read_to_end(&mut bytes) {
            bytes.zeroize();
            self.problem(path, format!("cannot read {shown}: {e}"));
            return None;
        }
        if bytes.len() as u64 > MAX_SECRET_BYTES {
            bytes.zeroize();
            self.problem(
                path,
                format!("{shown} is larger than {MAX_SECRET_BYTES} bytes"),
            );
            return None;
        }
        let mut text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                e.into_bytes().zeroize();
                self.problem(path, format!("{shown} is not valid UTF-8"));
                return None;
            }
        };
        strip_one_newline(&mut text);
        let secret = Secret::new(text);
        if secret.is_empty() {
            self.problem(path, format!("{shown} is empty"));
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
        let handle = self.open(path, &file)?;
        let shown = file.display();
        let mut bytes = Vec::new();
        if let Err(e) = handle.take(MAX_PEM_BYTES).read_to_end(&mut bytes) {
            self.problem(path, format!("cannot read {shown}: {e}"));
            return None;
        }
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

    /// Opens a regular file (following symlinks).
    fn open(&mut self, path: &str, file: &Path) -> Option<File> {
        open_regular(file)
            .map(|(handle, _)| handle)
            .map_err(|message| self.problem(path, message))
            .ok()
    }

    /// Opens a regular file that group and others cannot access.
    fn open_private(&mut self, path: &str, file: &Path) -> Option<File> {
        let (handle, meta) = open_regular(file)
            .map_err(|message| self.problem(path, message))
            .ok()?;
        if let Some(mode) = shared_mode(&meta) {
            let access = if mode & 0o044 != 0 {
                "readable"
            } else {
                "accessible"
            };
            self.problem(
                path,
                format!(
                    "{} is {access} by group or others (mode {mode:04o}); chmod 600 it{}",
                    file.display(),
                    if mode & 0o077 == 0o040 {
                        " (group read is accepted only on a root-owned file, as Kubernetes mounts a Secret with fsGroup)"
                    } else {
                        ""
                    }
                ),
            );
            return None;
        }
        Some(handle)
    }
}

/// Opens `file` for reading and checks that it is a regular file. The error names the file, never its content.
fn open_regular(file: &Path) -> Result<(File, Metadata), String> {
    let shown = file.display();
    let handle = File::open(file).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let meta = handle
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    Ok((handle, meta))
}

/// The permission bits (`mode & 0o7777`) when group or others have more access than a secret file may give,
/// else `None`. See [`refused_mode`].
#[cfg(unix)]
fn shared_mode(meta: &Metadata) -> Option<u32> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    refused_mode(meta.permissions().mode() & 0o7777, meta.uid())
}

/// Non-Unix platforms have no mode bits to check.
#[cfg(not(unix))]
fn shared_mode(_meta: &Metadata) -> Option<u32> {
    None
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

/// Removes one trailing `\n` or `\r\n`.
fn strip_one_newline(text: &mut String) {
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::refused_mode;

    #[test]
    fn private_modes() {
        for mode in [0o600, 0o400, 0o700, 0o200] {
            assert_eq!(refused_mode(mode, 1000), None, "{mode:o}");
            assert_eq!(refused_mode(mode, 0), None, "{mode:o}");
        }
        // Group read: accepted only when root owns the file (a Kubernetes Secret with fsGroup).
        for mode in [0o440, 0o640] {
            assert_eq!(refused_mode(mode, 0), None, "{mode:o}");
            assert_eq!(refused_mode(mode, 65532), Some(mode), "{mode:o}");
        }
        // Anything more is refused whoever owns it: group write or execute, any access for others.
        for mode in [
            0o660, 0o620, 0o610, 0o644, 0o604, 0o602, 0o601, 0o666, 0o777, 0o460,
        ] {
            assert_eq!(refused_mode(mode, 0), Some(mode), "{mode:o}");
            assert_eq!(refused_mode(mode, 1000), Some(mode), "{mode:o}");
        }
    }
}
