//! The client of Entra ID's v2 endpoints (`{authority}/{tenant}/oauth2/v2.0/token` and `/devicecode`): encodes
//! and posts the forms (client credentials, device code, refresh token), reads a success with `token_response`,
//! and turns a refusal into a classified [`TokenError`] with `entra_error`.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::Full;

use super::http::{HttpResponse, TokenHttpClient, retry_after};
use super::token_response::parse_token_response;
use super::{AadError, AccessToken, CredentialError, Secret, TokenError, TokenRequest};
use crate::origin::HttpsOrigin;

/// The `User-Agent`/`x-client-sku` the proxy announces to token services.
pub(crate) const CLIENT_SKU: &str = "aml-auth-proxy";

/// A client of one Entra ID authority host.
#[derive(Debug, Clone)]
pub struct EntraClient {
    http: TokenHttpClient,
    authority: HttpsOrigin,
}

/// How a confidential client proves its identity.
pub enum ClientAuth<'a> {
    /// `client_secret=…`.
    Secret(&'a Secret),
    /// `client_assertion=…` (a signed JWT or a federated token).
    Assertion(&'a str),
}

// === impl EntraClient ===

impl EntraClient {
    /// A client of `authority` (e.g. `https://login.microsoftonline.com`).
    pub fn new(http: TokenHttpClient, authority: HttpsOrigin) -> Self {
        Self { http, authority }
    }

    /// A client of another authority host, sharing this one's connection pool.
    pub fn with_authority(&self, authority: HttpsOrigin) -> Self {
        Self {
            http: self.http.clone(),
            authority,
        }
    }

    /// The HTTP client (shared with other token services, e.g. managed identity).
    pub fn http(&self) -> &TokenHttpClient {
        &self.http
    }

    /// The authority host.
    pub fn authority(&self) -> &HttpsOrigin {
        &self.authority
    }

    /// `{authority}/{tenant}/oauth2/v2.0/{endpoint}`. The tenant was validated by configuration
    /// (`[A-Za-z0-9.-]`), so it is a valid path segment.
    pub fn endpoint_url(&self, tenant: &str, endpoint: &str) -> Result<Uri, TokenError> {
        let text = format!("{}/{tenant}/oauth2/v2.0/{endpoint}", self.authority);
        text.parse::<Uri>().map_err(|_| {
            TokenError::rejected(
                "entra",
                format!("tenant {tenant:?} does not form a valid token endpoint URL"),
            )
        })
    }

    /// The client-credentials grant, body order as the Azure SDKs send it.
    pub async fn client_credentials(
        &self,
        source: &str,
        tenant: &str,
        client_id: &str,
        auth: ClientAuth<'_>,
        request: &TokenRequest,
    ) -> Result<AccessToken, CredentialError> {
        let mut pairs = vec![("client_id", client_id)];
        match auth {
            ClientAuth::Secret(secret) => pairs.push(("client_secret", secret.expose())),
            ClientAuth::Assertion(assertion) => pairs.extend([
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ]),
        }
        pairs.extend([
            ("grant_type", "client_credentials"),
            ("scope", &request.scope),
        ]);
        let body = form(&pairs, request.claims_parameter().as_deref());
        let (token, _refresh_token) = self.post_token(source, tenant, &body).await?;
        Ok(token)
    }

    /// POSTs an encoded form to the tenant's token endpoint and parses the answer: the access token, and the
    /// refresh token user flows get.
    pub async fn post_token(
        &self,
        source: &str,
        tenant: &str,
        form: &Secret,
    ) -> Result<(AccessToken, Option<Secret>), TokenError> {
        let parse = |body: &[u8]| parse_token_response(body, source);
        self.post(source, tenant, "token", form, parse).await
    }

    /// POSTs an encoded form to `{authority}/{tenant}/oauth2/v2.0/{endpoint}` and reads a success with `parse`;
    /// a refusal, a transport failure or a body `parse` cannot use is a classified error.
    pub(crate) async fn post<T>(
        &self,
        source: &str,
        tenant: &str,
        endpoint: &str,
        form: &Secret,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<T, TokenError> {
        let url = self.endpoint_url(tenant, endpoint)?;
        let host = url.host().unwrap_or_default().to_owned();
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header("x-client-sku", CLIENT_SKU)
            .header("x-client-ver", env!("CARGO_PKG_VERSION"))
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
            .header("return-client-request-id", "true")
            .body(Full::new(Bytes::copy_from_slice(form.expose().as_bytes())))
            .map_err(|e| {
                TokenError::service_unavailable(source, format!("building the token request: {e}"))
            })?;
        // A transport failure (unreachable, TLS, timeout, oversized body) is a token-service outage.
        let response = self.http.send(request).await.map_err(|e| {
            TokenError::service_unavailable(
                source,
                format!("token service {host} unreachable: {e}"),
            )
        })?;
        if !response.status.is_success() {
            return Err(error_from_response(source, &host, &response));
        }
        parse(&response.body).map_err(|why| {
            let what = match endpoint {
                "devicecode" => "device-code",
                other => other,
            };
            let message = format!("{host} sent an unusable {what} response: {why}");
            TokenError::service_unavailable(source, message)
        })
    }
}

/// A form body: `pairs` in order, then `claims` if any. It holds secrets, so it is kept in a zeroizing buffer
/// until hyper owns the bytes.
pub(crate) fn form(pairs: &[(&str, &str)], claims: Option<&str>) -> Secret {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(pairs)
        .extend_pairs(claims.map(|c| ("claims", c)));
    Secret::new(form.finish())
}

/// Turns a non-2xx token-endpoint answer into a classified error (by status alone without an Entra ID error body).
pub(crate) fn error_from_response(source: &str, host: &str, response: &HttpResponse) -> TokenError {
    let status = response.status.as_u16();
    let aad = AadError::parse(&response.body);
    let (kind, message) = match &aad {
        Some(aad) => (aad.classify(status), aad.message()),
        None => (
            AadError::default().classify(status),
            format!("{host} answered HTTP {status} without an Entra ID error body"),
        ),
    };
    let mut e =
        TokenError::new(kind, source, message).with_retry_after(retry_after(&response.headers));
    e.aad = aad.map(Box::new);
    e
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::TokenErrorKind;
    use crate::auth::test_support::response;

    #[test]
    fn error_bodies_are_classified() {
        let classify = |response| error_from_response("client_secret", "login.example", &response);
        let e = classify(response(
            401,
            br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: t","error_codes":[7000215]}"#,
        ));
        assert_eq!(e.kind, TokenErrorKind::CredentialRejected);
        assert_eq!(e.message, "AADSTS7000215: Invalid client secret provided.");
        let mut throttled = response(429, br#"{"error":"temporarily_unavailable"}"#);
        let thirty = http::HeaderValue::from_static("30");
        throttled.headers.insert(http::header::RETRY_AFTER, thirty);
        let e = classify(throttled);
        assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
        let e = classify(response(502, b"<html>bad gateway</html>"));
        assert_eq!(e.kind, TokenErrorKind::TokenServiceUnavailable);
        assert!(!e.message.contains("<html>"), "bodies are never echoed");
    }
}
