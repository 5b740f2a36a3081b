//! What the credentials' unit tests share: the recorded fixtures under `tests/fixtures`, a temporary directory,
//! UTC instants, the two outcomes of a failed token request, form pairs, and an Entra ID client that is never
//! contacted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::tz::TimeZone;

use super::{CredentialError, EntraClient, HttpClientOptions, TokenError, TokenHttpClient};

/// The directory of recorded payloads.
pub(crate) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

/// The text of a fixture.
pub(crate) fn fixture(name: &str) -> String {
    let path = Path::new(FIXTURES).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture without its `#` comment lines.
pub(crate) fn fixture_without_comments(name: &str) -> String {
    let text = fixture(name);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    lines.join("\n")
}

/// The one-line JSON objects of a fixture (lines starting with `{`), in order.
pub(crate) fn fixture_json_lines(name: &str) -> Vec<String> {
    fixture(name)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(str::to_owned)
        .collect()
}

/// Unix seconds of a UTC civil time.
pub(crate) fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> i64 {
    TimeZone::UTC
        .to_timestamp(jiff::civil::date(y, mo, d).at(h, mi, s, 0))
        .unwrap()
        .as_second()
}

/// The reason of an `Unavailable` error from the one source `source`; panics otherwise.
pub(crate) fn unavailable(e: CredentialError, source: &str) -> String {
    match e {
        CredentialError::Unavailable(attempts) => {
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].source, source);
            attempts[0].reason.clone()
        }
        CredentialError::Failed(e) => panic!("expected unavailable, got {e}"),
    }
}

/// The error of a `Failed` error from `source`; panics otherwise.
pub(crate) fn failed(e: CredentialError, source: &str) -> TokenError {
    match e {
        CredentialError::Failed(e) => {
            assert_eq!(e.source, source);
            e
        }
        CredentialError::Unavailable(a) => panic!("expected a failure, got unavailable: {a:?}"),
    }
}

/// The pairs of a form-encoded text (a body or a query), decoded, in order.
pub(crate) fn pairs(form: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect()
}

/// Owned pairs, to compare with [`pairs`].
pub(crate) fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A client of the public cloud's authority host; tests that use it never send a request.
pub(crate) fn entra() -> EntraClient {
    let tls = crate::tls::client_config(&[]).unwrap();
    let http = TokenHttpClient::new(Arc::new(tls), &HttpClientOptions::default());
    let origin = crate::origin::authority_origin("https://login.microsoftonline.com").unwrap();
    EntraClient::new(http, origin)
}

// === impl TempDir ===

impl TempDir {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("aml-auth-unit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `bytes` to `name` (creating its directories) and returns the path.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The names in the directory, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
