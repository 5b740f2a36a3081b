//! What the credentials' unit tests share: the recorded fixtures under `tests/fixtures`, UTC instants, the two
//! outcomes of a failed token request, form pairs, and an Entra ID client that is never contacted. (A temporary
//! directory is in the crate's `test_support`.)

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;

use jiff::tz::TimeZone;

use super::developer_tool::{DeveloperTool, DeveloperToolCredential};
use super::http::HttpResponse;
use super::process::Output;
use super::{
    Credential, CredentialError, DeveloperToolCredentialOptions, EntraClient, HttpClientOptions,
    TokenError, TokenHttpClient, TokenRequest,
};

/// The directory of recorded payloads.
pub(crate) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

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

/// The JSON objects of a fixture, in order: blocks from a line that starts with `{` to the first line (that one or a
/// later one) that ends with `}`, which is how the fixtures lay them out.
pub(crate) fn fixture_json_objects(name: &str) -> Vec<String> {
    let (mut blocks, mut open) = (Vec::<String>::new(), false);
    for line in fixture(name).lines() {
        if !open && line.starts_with('{') {
            blocks.push(String::new());
            open = true;
        }
        if let (true, Some(block)) = (open, blocks.last_mut()) {
            block.push_str(line);
            block.push('\n');
            open = !line.trim_end().ends_with('}');
        }
    }
    blocks
}

/// A `## ` section of a fixture: its title, and its lines other than blank ones and `# ` comments.
pub(crate) struct Section {
    pub(crate) title: String,
    pub(crate) body: String,
}

/// The `## ` sections of a fixture, in order (what precedes the first one is the fixture's header).
pub(crate) fn fixture_sections(name: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in fixture(name).lines() {
        if let Some(title) = line.strip_prefix("## ") {
            let title = title.to_owned();
            out.push(Section {
                title,
                body: String::new(),
            });
        } else if !line.is_empty()
            && !line.starts_with("# ")
            && let Some(section) = out.last_mut()
        {
            section.body.push_str(line);
            section.body.push('\n');
        }
    }
    out
}

/// Unix seconds of a UTC civil time.
pub(crate) fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> i64 {
    TimeZone::UTC
        .to_timestamp(jiff::civil::date(y, mo, d).at(h, mi, s, 0))
        .unwrap()
        .as_second()
}

/// The status of a process that exited with `code`.
pub(crate) fn exit(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

/// What a developer tool that exited with `code` left behind.
pub(crate) fn output(code: i32, stdout: &[u8], stderr: &str) -> Output {
    Output {
        status: exit(code),
        stdout: stdout.to_vec().into(),
        stderr: stderr.to_owned(),
    }
}

/// What the developer-tool credential `T` for `tenant` answers `request` with (no `PATH`: the tool never runs).
pub(crate) async fn tool_error<T: DeveloperTool>(
    tenant: Option<&str>,
    request: &TokenRequest,
) -> CredentialError {
    let options = DeveloperToolCredentialOptions {
        tenant_id: tenant.map(String::from),
        ..DeveloperToolCredentialOptions::default()
    };
    let credential = DeveloperToolCredential::<T>::new(options, &crate::env::MapEnv::new());
    credential.token(request).await.unwrap_err()
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

/// Asserts that `text` contains `part`.
#[track_caller]
pub(crate) fn assert_has(text: &str, part: &str) {
    assert!(text.contains(part), "{part:?} is not in {text:?}");
}

/// Asserts that `text` starts with `prefix`.
#[track_caller]
pub(crate) fn assert_starts(text: &str, prefix: &str) {
    assert!(
        text.starts_with(prefix),
        "{text:?} does not start with {prefix:?}"
    );
}

/// Asserts that `text` ends with `suffix`.
#[track_caller]
pub(crate) fn assert_ends(text: &str, suffix: &str) {
    assert!(
        text.ends_with(suffix),
        "{text:?} does not end with {suffix:?}"
    );
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

/// An answer with `status` and `body`, no headers.
pub(crate) fn response(status: u16, body: &[u8]) -> HttpResponse {
    HttpResponse {
        status: http::StatusCode::from_u16(status).unwrap(),
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::copy_from_slice(body),
    }
}

/// A client of the public cloud's authority host; tests that use it never send a request.
pub(crate) fn entra() -> EntraClient {
    let tls = crate::tls::client_config(&[]).unwrap();
    let http = TokenHttpClient::new(Arc::new(tls), &HttpClientOptions::default());
    let origin = crate::origin::authority_origin("https://login.microsoftonline.com").unwrap();
    EntraClient::new(http, origin)
}
