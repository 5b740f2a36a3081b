//! How each managed-identity source asks for a token: one [`Endpoint`] per source, built at detection, that
//! [`Endpoint::call`] turns into the request for a resource. Every request carries `Metadata: true`.
//!
//! | source           | request                                                                                  |
//! |------------------|------------------------------------------------------------------------------------------|
//! | IMDS             | `GET {url}?api-version=2018-02-01&resource=…[&client_id│object_id│msi_res_id]`            |
//! | App Service      | `GET {url}?api-version=2019-08-01&resource=…[&client_id│principal_id│mi_res_id]` + `X-IDENTITY-HEADER` |
//! | Azure ML compute | `GET {url}?api-version=2017-09-01&resource=…[&clientid]` + `secret`                       |
//! | Cloud Shell      | `POST {url}` with the form `resource=…`                                                  |
//! | Azure Arc        | `GET {url}?api-version=2020-06-01&resource=…`, then the same with the challenge's key     |

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

use super::{ManagedIdentitySource, SOURCE, UserAssignedId};
use crate::auth::{Secret, TokenError, Unusable};

/// IMDS's link-local address. Tests must never send anything there.
#[cfg(test)]
pub(super) const LINK_LOCAL_HOST: &str = "169.254.169.254";

/// The base URL that `AZURE_POD_IDENTITY_AUTHORITY_HOST` replaces.
pub(super) const IMDS_BASE: &str = "http://169.254.169.254";

/// The IMDS token path under the base URL.
pub(super) const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

/// How one source asks for a token: everything but the resource.
#[derive(Debug)]
pub(super) struct Endpoint {
    pub(super) kind: ManagedIdentitySource,
    /// The full token URL, without the query.
    pub(super) url: Uri,
    /// `api-version`, the first query parameter (Cloud Shell sends none).
    api_version: Option<&'static str>,
    /// The user-assigned identity as this source names it, sent after `resource`.
    identity: Option<(&'static str, String)>,
    /// The source's secret header (App Service `X-IDENTITY-HEADER`, Azure ML `secret`), sent as sensitive.
    secret: Option<(HeaderName, Secret)>,
    /// Cloud Shell: `resource` goes in a POSTed form, not in the query.
    form: bool,
}

/// One token-service request, rebuilt for every attempt.
#[derive(Debug, Clone)]
pub(super) struct Call {
    pub(super) method: Method,
    pub(super) url: Uri,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    /// The user-assigned identity asked for in the query, as `name=value`: what an operator needs to see next to
    /// "Identity not found".
    pub(super) identity: Option<String>,
}

// === impl Endpoint ===

impl Endpoint {
    /// The Instance Metadata Service of VMs, scale sets, AKS nodes and container instances, at `url` (the full
    /// token URL). Every kind of user-assigned id can be named.
    pub(super) fn imds(url: Uri, user_assigned: Option<&UserAssignedId>) -> Self {
        let ids = ("client_id", "object_id", "msi_res_id");
        Self {
            api_version: Some("2018-02-01"),
            identity: identity_param(user_assigned, ids),
            ..Self::new(ManagedIdentitySource::Imds, url)
        }
    }

    /// App Service, Functions and Container Apps, authenticated by `header` (`IDENTITY_HEADER`). `principal_id` is
    /// the documented name of an object id. `Metadata: true` is not needed by App Service but is by Azure
    /// Automation (MSAL and the Rust SDK send it too). The answer carries `expires_on` only, as an epoch string.
    pub(super) fn app_service(
        url: Uri,
        header: Secret,
        user_assigned: Option<&UserAssignedId>,
    ) -> Self {
        let ids = ("client_id", "principal_id", "mi_res_id");
        Self {
            api_version: Some("2019-08-01"),
            identity: identity_param(user_assigned, ids),
            secret: Some((HeaderName::from_static("x-identity-header"), header)),
            ..Self::new(ManagedIdentitySource::AppService, url)
        }
    }

    /// Azure ML compute instances and clusters (the 2017-09-01 MSI protocol), authenticated by `secret`
    /// (`MSI_SECRET`). It knows client ids only, as `clientid` (no underscore), which defaults to the compute's
    /// assigned identity (`DEFAULT_IDENTITY_CLIENT_ID`) as MSAL Go, MSAL-node and azidentity do. `expires_on` may
    /// be an epoch or a legacy date string.
    pub(super) fn azure_ml(
        url: Uri,
        secret: Secret,
        user_assigned: Option<&UserAssignedId>,
        default_client_id: Option<String>,
    ) -> Result<Self, Unusable> {
        let client_id = match user_assigned {
            None => default_client_id,
            Some(UserAssignedId::ClientId(id)) => Some(id.clone()),
            Some(other) => {
                return Err(Unusable::Unavailable(format!(
                    "Azure ML compute managed identity (MSI_ENDPOINT + MSI_SECRET) selects a user-assigned identity by client_id only; {} is not supported",
                    id_kind(other)
                )));
            }
        };
        Ok(Self {
            api_version: Some("2017-09-01"),
            identity: client_id.map(|id| ("clientid", id)),
            secret: Some((HeaderName::from_static("secret"), secret)),
            ..Self::new(ManagedIdentitySource::AzureMl, url)
        })
    }

    /// Azure Cloud Shell: `MSI_ENDPOINT` without `MSI_SECRET`. Its tokens are the signed-in user's, so there is no
    /// user-assigned identity to choose.
    pub(super) fn cloud_shell(
        url: Uri,
        user_assigned: Option<&UserAssignedId>,
    ) -> Result<Self, Unusable> {
        if let Some(id) = user_assigned {
            return Err(Unusable::Unavailable(format!(
                "Cloud Shell managed identity (MSI_ENDPOINT without MSI_SECRET) serves the signed-in user only; a user-assigned identity ({}) is not supported",
                id_kind(id)
            )));
        }
        Ok(Self {
            form: true,
            ..Self::new(ManagedIdentitySource::CloudShell, url)
        })
    }

    /// Azure Arc-enabled servers: the Connected Machine agent's endpoint, which answers the first request with a
    /// challenge (see `arc`). User-assigned identities are not supported on Arc (the Rust and Go SDKs refuse them
    /// too).
    pub(super) fn arc(url: Uri, user_assigned: Option<&UserAssignedId>) -> Result<Self, Unusable> {
        if let Some(id) = user_assigned {
            return Err(Unusable::Unavailable(format!(
                "Azure Arc managed identity supports the system-assigned identity only; a user-assigned identity ({}) is not supported",
                id_kind(id)
            )));
        }
        Ok(Self {
            api_version: Some("2020-06-01"),
            ..Self::new(ManagedIdentitySource::AzureArc, url)
        })
    }

    fn new(kind: ManagedIdentitySource, url: Uri) -> Self {
        Self {
            kind,
            url,
            api_version: None,
            identity: None,
            secret: None,
            form: false,
        }
    }

    /// The token request for `resource`, as sent.
    pub(super) fn call(&self, resource: &str) -> Result<Call, TokenError> {
        self.probe(resource)?
            .header(HeaderName::from_static("metadata"), "true", false)
    }

    /// The token request without the `Metadata` header: IMDS's probe.
    pub(super) fn probe(&self, resource: &str) -> Result<Call, TokenError> {
        let mut query: Vec<(&str, &str)> = self
            .api_version
            .map(|v| ("api-version", v))
            .into_iter()
            .collect();
        let mut call = if self.form {
            let body = form_urlencoded::Serializer::new(String::new())
                .append_pair("resource", resource)
                .finish();
            Call {
                method: Method::POST,
                body: Bytes::from(body),
                ..Call::get(&self.url, &query)?
            }
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded", false)?
        } else {
            query.push(("resource", resource));
            query.extend(
                self.identity
                    .as_ref()
                    .map(|(name, value)| (*name, value.as_str())),
            );
            Call {
                identity: self.identity.as_ref().map(|(k, v)| format!("{k}={v}")),
                ..Call::get(&self.url, &query)?
            }
        };
        if let Some((name, value)) = &self.secret {
            call = call.header(name.clone(), value.expose(), true)?;
        }
        Ok(call)
    }
}

/// The user-assigned identity as a (parameter name, value) pair, with a source's names for client, object and
/// resource ids.
fn identity_param(
    id: Option<&UserAssignedId>,
    (client_id, object_id, resource_id): (&'static str, &'static str, &'static str),
) -> Option<(&'static str, String)> {
    match id? {
        UserAssignedId::ClientId(v) => Some((client_id, v.clone())),
        UserAssignedId::ObjectId(v) => Some((object_id, v.clone())),
        UserAssignedId::ResourceId(v) => Some((resource_id, v.clone())),
    }
}

/// How messages name a user-assigned id kind.
pub(super) fn id_kind(id: &UserAssignedId) -> &'static str {
    match id {
        UserAssignedId::ClientId(_) => "client_id",
        UserAssignedId::ObjectId(_) => "object_id",
        UserAssignedId::ResourceId(_) => "resource_id",
    }
}

// === impl Call ===

impl Call {
    /// A GET of `base` with `params` appended to its query.
    fn get(base: &Uri, params: &[(&str, &str)]) -> Result<Self, TokenError> {
        Ok(Self {
            method: Method::GET,
            url: with_query(base, params)?,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            identity: None,
        })
    }

    /// Adds a header; `sensitive` values are kept out of any debug output of the HTTP stack.
    pub(super) fn header(
        mut self,
        name: HeaderName,
        value: &str,
        sensitive: bool,
    ) -> Result<Self, TokenError> {
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            TokenError::rejected(
                SOURCE,
                format!("the {name} header value contains characters that cannot be sent"),
            )
        })?;
        value.set_sensitive(sensitive);
        self.headers.insert(name, value);
        Ok(self)
    }

    pub(super) fn request(&self) -> Result<Request<Full<Bytes>>, TokenError> {
        guard_test_url(&self.url);
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.url.clone())
            .body(Full::new(self.body.clone()))
            .map_err(|e| {
                TokenError::service_unavailable(SOURCE, format!("building the token request: {e}"))
            })?;
        *request.headers_mut() = self.headers.clone();
        Ok(request)
    }

    /// `host:port`, for messages.
    pub(super) fn host(&self) -> String {
        self.url
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default()
    }
}

/// `base` with `params` form-encoded and appended to any query it has.
pub(super) fn with_query(base: &Uri, params: &[(&str, &str)]) -> Result<Uri, TokenError> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name, value);
    }
    let query = query.finish();
    let text = base.to_string();
    let text = match (base.query(), query.is_empty()) {
        (_, true) => text,
        (Some(_), false) => format!("{text}&{query}"),
        (None, false) => format!("{text}?{query}"),
    };
    text.parse()
        .map_err(|_| TokenError::rejected(SOURCE, "the managed identity token URL is not valid"))
}

/// Unit tests must never reach the real IMDS: any request to 169.254.169.254 fails the test.
#[cfg(test)]
fn guard_test_url(url: &Uri) {
    assert_ne!(
        url.host(),
        Some(LINK_LOCAL_HOST),
        "a test tried to contact the real IMDS: point AZURE_POD_IDENTITY_AUTHORITY_HOST or `endpoint` at 127.0.0.1"
    );
}

#[cfg(not(test))]
fn guard_test_url(_url: &Uri) {}
