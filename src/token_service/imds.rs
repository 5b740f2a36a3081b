//! The instance metadata service protocol (`api-version=2018-02-01`), answered only with `imds: true`:
//! `GET /metadata/identity/oauth2/token?api-version=…&resource=R[&client_id=|object_id=|msi_res_id=]` with
//! `Metadata: true` → every field a string: `access_token, client_id, expires_in, expires_on, ext_expires_in,
//! not_before, resource, token_type`.
//!
//! It has no secret. Like IMDS, it refuses a request without `Metadata: true` (400, the body SDK probes expect) and
//! one carrying `X-Forwarded-For`, so neither a browser nor a forwarding proxy can be used to reach it.

use http::HeaderMap;
use serde_json::{Value, json};

use super::Issued;
use super::respond::Refusal;

/// The path.
pub(super) const PATH: &str = "/metadata/identity/oauth2/token";

/// The earliest `api-version` of the token endpoint.
const FIRST_VERSION: &str = "2018-02-01";

/// The checks IMDS makes before anything else: no `X-Forwarded-For`, and `Metadata: true`.
pub(super) fn admit(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.contains_key("x-forwarded-for") {
        return Err(Refusal::bad_request(
            "requests carrying X-Forwarded-For are refused: the metadata endpoint is not reachable through a proxy",
        ));
    }
    let metadata = headers.get_all("metadata").iter().collect::<Vec<_>>();
    match metadata.as_slice() {
        [one] if one.as_bytes() == b"true" => Ok(()),
        _ => Err(Refusal::bad_request(
            "Required metadata header not specified",
        )),
    }
}

/// `api-version` must be a date (`YYYY-MM-DD`) from 2018-02-01 on.
pub(super) fn check_version(version: Option<&str>) -> Result<(), Refusal> {
    match version {
        Some(v)
            if v.len() == FIRST_VERSION.len()
                && v.bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                })
                && v >= FIRST_VERSION =>
        {
            Ok(())
        }
        Some(_) => Err(Refusal::bad_request(format!(
            "unsupported api-version: the token endpoint answers {FIRST_VERSION} and later"
        ))),
        None => Err(Refusal::bad_request(format!(
            "the api-version parameter is missing (api-version={FIRST_VERSION})"
        ))),
    }
}

/// The success body: every field a string, as IMDS sends them.
pub(super) fn body(issued: &Issued<'_>) -> Value {
    let expires_in = issued.expires_on.saturating_sub(issued.now).to_string();
    json!({
        "access_token": issued.access_token,
        "client_id": issued.client_id,
        "expires_in": expires_in,
        "expires_on": issued.expires_on.to_string(),
        "ext_expires_in": expires_in,
        "not_before": issued.not_before.to_string(),
        "resource": issued.resource,
        "token_type": "Bearer",
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn metadata_true_and_no_forwarding() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            admit(&headers).unwrap_err().description,
            "Required metadata header not specified"
        );
        headers.insert("metadata", HeaderValue::from_static("True"));
        assert!(admit(&headers).is_err(), "lower-case only, as IMDS");
        headers.insert("metadata", HeaderValue::from_static("true"));
        assert!(admit(&headers).is_ok());
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        assert!(
            admit(&headers)
                .unwrap_err()
                .description
                .contains("X-Forwarded-For")
        );
    }

    #[test]
    fn versions() {
        assert!(check_version(Some("2018-02-01")).is_ok());
        assert!(check_version(Some("2021-10-01")).is_ok());
        assert!(check_version(Some("2017-09-01")).is_err());
        assert!(check_version(Some("2019-8-01x")).is_err());
        assert!(check_version(None).is_err());
    }
}
