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
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::Full;

use super::{ManagedIdentitySource, SOURCE, UserAssignedId};
use crate::auth::{Secret, TokenError, Unusable};

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

/// One token-service request, sent as a copy for every attempt.
#[derive(Debug, Clone)]
pub(super) struct Call {
    /// The source, for how messages name it and which statuses are retried.
    pub(super) kind: ManagedIdentitySource,
    pub(super) request: Request<Full<Bytes>>,
    /// The user-assigned identity asked for in the query, as `name=value`: what an operator needs to see next to
    /// "Identity not found".
    pub(super) identity: Option<String>,
}

// === impl Endpoint ===

impl Endpoint {
    /// The Instance Metadata Service of VMs, scale sets, AKS nodes and container instances, at `url` (the full
    /// token URL). Every kind of user-assigned id can be named.
    pub(super) fn imds(url: Uri, user_assigned: Option<&UserAssignedId>) -> Self {
        Self {
            api_version: Some("2018-02-01"),
            identity: user_assigned
                .map(|id| id_param(id, ["client_id", "object_id", "msi_res_id"])),
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
        Self {
            api_version: Some("2019-08-01"),
            identity: user_assigned
                .map(|id| id_param(id, ["client_id", "principal_id", "mi_res_id"])),
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
        let only = "Cloud Shell managed identity (MSI_ENDPOINT without MSI_SECRET) serves the signed-in user only";
        system_assigned_only(user_assigned, only)?;
        Ok(Self {
            form: true,
            ..Self::new(ManagedIdentitySource::CloudShell, url)
        })
    }

    /// Azure Arc-enabled servers: the Connected Machine agent's endpoint, which answers the first request with a
    /// challenge (see `arc`). User-assigned identities are not supported on Arc (the Rust and Go SDKs refuse them
    /// too).
    pub(super) fn arc(url: Uri, user_assigned: Option<&UserAssignedId>) -> Result<Self, Unusable> {
        let only = "Azure Arc managed identity supports the system-assigned identity only";
        system_assigned_only(user_assigned, only)?;
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
        let mut call = self.probe(resource)?;
        let headers = call.request.headers_mut();
        headers.insert("metadata", HeaderValue::from_static("true"));
        Ok(call)
    }

    /// The token request without the `Metadata` header: IMDS's probe.
    pub(super) fn probe(&self, resource: &str) -> Result<Call, TokenError> {
        let mut params = form_urlencoded::Serializer::new(String::new());
        params.extend_pairs(self.api_version.map(|v| ("api-version", v)));
        params.append_pair("resource", resource);
        params.extend_pairs(self.identity.iter().map(|(name, v)| (*name, v.as_str())));
        let params = params.finish();
        let request = if self.form {
            Request::post(self.url.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::from(params))
        } else {
            Request::get(with_query(&self.url, &params)?).body(Full::default())
        };
        let request = request.map_err(|e| {
            TokenError::service_unavailable(SOURCE, format!("building the token request: {e}"))
        })?;
        let call = Call {
            kind: self.kind,
            request,
            identity: self.identity.as_ref().map(|(k, v)| format!("{k}={v}")),
        };
        match &self.secret {
            Some((name, value)) => call.with_secret(name.clone(), value.expose()),
            None => Ok(call),
        }
    }
}

/// Refuses a user-assigned identity at a source that serves one identity, which `only` describes.
fn system_assigned_only(
    user_assigned: Option<&UserAssignedId>,
    only: &str,
) -> Result<(), Unusable> {
    match user_assigned {
        Some(id) => Err(Unusable::Unavailable(format!(
            "{only}; a user-assigned identity ({}) is not supported",
            id_kind(id)
        ))),
        None => Ok(()),
    }
}

/// A user-assigned id as a query parameter, with a source's `names` for client, object and resource ids.
fn id_param(id: &UserAssignedId, names: [&'static str; 3]) -> (&'static str, String) {
    let (index, value) = match id {
        UserAssignedId::ClientId(v) => (0, v),
        UserAssignedId::ObjectId(v) => (1, v),
        UserAssignedId::ResourceId(v) => (2, v),
    };
    (names[index], value.clone())
}

/// How messages name a user-assigned id kind.
pub(super) fn id_kind(id: &UserAssignedId) -> &'static str {
    id_param(id, ["client_id", "object_id", "resource_id"]).0
}

// === impl Call ===

impl Call {
    /// Adds a secret header, kept out of any debug output of the HTTP stack.
    pub(super) fn with_secret(mut self, name: HeaderName, value: &str) -> Result<Self, TokenError> {
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            TokenError::rejected(
                SOURCE,
                format!("the {name} header value contains characters that cannot be sent"),
            )
        })?;
        value.set_sensitive(true);
        self.request.headers_mut().insert(name, value);
        Ok(self)
    }

    /// A copy of the request, for one attempt.
    pub(super) fn attempt(&self) -> Request<Full<Bytes>> {
        guard_test_url(self.request.uri());
        self.request.clone()
    }

    /// `host:port`, for messages.
    pub(super) fn host(&self) -> &str {
        self.request.uri().authority().map_or("", |a| a.as_str())
    }
}

/// `base` with the form-encoded `query` appended to any query it has.
pub(super) fn with_query(base: &Uri, query: &str) -> Result<Uri, TokenError> {
    let separator = if base.query().is_some() { '&' } else { '?' };
    format!("{base}{separator}{query}")
        .parse()
        .map_err(|_| TokenError::rejected(SOURCE, "the managed identity token URL is not valid"))
}

/// Unit tests must never reach the real IMDS: any request to 169.254.169.254 fails the test.
#[cfg(test)]
fn guard_test_url(url: &Uri) {
    assert_ne!(
        url.host(),
        IMDS_BASE.strip_prefix("http://"),
        "a test tried to contact the real IMDS: point AZURE_POD_IDENTITY_AUTHORITY_HOST or `endpoint` at 127.0.0.1"
    );
}

#[cfg(not(test))]
fn guard_test_url(_url: &Uri) {}
