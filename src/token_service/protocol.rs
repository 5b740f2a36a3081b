//! What the three managed-identity protocols have in common once a request is admitted: the query parameters
//! (each at most once), the requested resource, and the identity the caller names.

use std::collections::HashMap;

use super::respond::Refusal;

/// The protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// App Service, Functions, Container Apps: `api-version=2019-08-01`, header `X-IDENTITY-HEADER`.
    AppService,
    /// Azure ML compute: `api-version=2017-09-01`, header `secret`, identity in `clientid`.
    AzureMl,
    /// The instance metadata service: `api-version=2018-02-01`, header `Metadata: true`, no secret.
    Imds,
}

/// A request's query parameters, each given at most once.
#[derive(Debug, Default)]
pub struct Query {
    params: HashMap<String, String>,
}

/// The identity a request names: the parameter used and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedIdentity {
    /// `client_id`, `clientid`, `object_id`, `principal_id`, `mi_res_id` or `msi_res_id`.
    pub param: &'static str,
    /// What the caller sent.
    pub value: String,
}

/// The identity parameters each protocol accepts. Azure ML's own parameter is `clientid`; `client_id` is accepted
/// there too.
const APP_SERVICE_IDENTITY: &[&str] = &["client_id", "principal_id", "object_id", "mi_res_id"];
const AZURE_ML_IDENTITY: &[&str] = &["clientid", "client_id"];
const IMDS_IDENTITY: &[&str] = &["client_id", "object_id", "msi_res_id", "mi_res_id"];

/// Every parameter that names an identity in one of the protocols. A request that uses one its own protocol does
/// not accept is refused rather than answered for the default identity: its caller asked for someone else.
const ANY_IDENTITY: &[&str] = &[
    "client_id",
    "clientid",
    "principal_id",
    "object_id",
    "mi_res_id",
    "msi_res_id",
];

/// The query parameters that name a client id (echoed in answers when the token itself does not say).
const CLIENT_ID_PARAMS: &[&str] = &["client_id", "clientid"];

// === impl Protocol ===

impl Protocol {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::AppService => "app_service",
            Protocol::AzureMl => "azure_ml",
            Protocol::Imds => "imds",
        }
    }

    /// The protocol of a `/msi/token` request, by its `api-version`.
    pub fn of_msi_version(version: Option<&str>) -> Option<Self> {
        match version {
            Some("2019-08-01") => Some(Protocol::AppService),
            Some("2017-09-01") => Some(Protocol::AzureMl),
            _ => None,
        }
    }

    /// The identity parameters this protocol accepts.
    fn identity_params(self) -> &'static [&'static str] {
        match self {
            Protocol::AppService => APP_SERVICE_IDENTITY,
            Protocol::AzureMl => AZURE_ML_IDENTITY,
            Protocol::Imds => IMDS_IDENTITY,
        }
    }
}

// === impl Query ===

impl Query {
    /// Parses a query string. A parameter given twice is refused, as IMDS refuses it.
    pub fn parse(query: Option<&str>) -> Result<Self, Refusal> {
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if params
                .insert(name.to_ascii_lowercase(), value.into_owned())
                .is_some()
            {
                return Err(Refusal::bad_request(format!(
                    "the query parameter {name:?} is given more than once"
                )));
            }
        }
        Ok(Self { params })
    }

    /// A parameter's value; an empty value counts as absent (clients send `clientid=` when they have none).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The `resource` parameter, which is required.
    pub fn resource(&self) -> Result<&str, Refusal> {
        self.get("resource").ok_or_else(|| {
            Refusal::bad_request(
                "the resource parameter is missing (e.g. resource=https://management.azure.com)",
            )
        })
    }

    /// The identity the request names, if any: at most one of the protocol's identity parameters, and none that
    /// only another protocol accepts.
    pub fn identity(&self, protocol: Protocol) -> Result<Option<NamedIdentity>, Refusal> {
        let accepted = protocol.identity_params();
        if let Some(foreign) = ANY_IDENTITY
            .iter()
            .find(|param| !accepted.contains(param) && self.get(param).is_some())
        {
            return Err(Refusal::bad_request(format!(
                "the {} protocol does not take {foreign} to name an identity: use {}",
                protocol.label(),
                accepted.join(", ")
            )));
        }
        let mut named = protocol.identity_params().iter().filter_map(|param| {
            self.get(param).map(|value| NamedIdentity {
                param,
                value: value.to_owned(),
            })
        });
        let first = named.next();
        if let Some(second) = named.next()
            && let Some(first) = &first
        {
            return Err(Refusal::bad_request(format!(
                "name one identity, not {} and {}",
                first.param, second.param
            )));
        }
        Ok(first)
    }
}

// === impl NamedIdentity ===

impl NamedIdentity {
    /// The client id, when the request named the identity by one.
    pub fn client_id(&self) -> Option<&str> {
        CLIENT_ID_PARAMS
            .contains(&self.param)
            .then_some(self.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_once_each_and_one_identity() {
        let q = Query::parse(Some(
            "api-version=2019-08-01&resource=https%3A%2F%2Fml.azure.com&client_id=abc",
        ))
        .unwrap();
        assert_eq!(q.resource().unwrap(), "https://ml.azure.com");
        let id = q.identity(Protocol::AppService).unwrap().unwrap();
        assert_eq!((id.param, id.value.as_str()), ("client_id", "abc"));
        assert_eq!(id.client_id(), Some("abc"));

        assert!(Query::parse(Some("resource=a&resource=b")).is_err());
        let both = Query::parse(Some("resource=r&client_id=a&object_id=b")).unwrap();
        assert!(both.identity(Protocol::AppService).is_err());
        let empty = Query::parse(Some("resource=r&clientid=")).unwrap();
        assert_eq!(empty.identity(Protocol::AzureMl).unwrap(), None);
        let ml = Query::parse(Some("resource=r&clientid=c1")).unwrap();
        assert_eq!(
            ml.identity(Protocol::AzureMl).unwrap().unwrap().client_id(),
            Some("c1")
        );
        // A parameter only another protocol takes is refused, not ignored (the default identity was not asked for);
        // empty, it names nothing.
        for (query, protocol) in [
            ("resource=r&principal_id=p", Protocol::Imds),
            ("resource=r&object_id=o", Protocol::AzureMl),
            ("resource=r&msi_res_id=m", Protocol::AppService),
            ("resource=r&clientid=c", Protocol::AppService),
        ] {
            let q = Query::parse(Some(query)).unwrap();
            assert!(q.identity(protocol).is_err(), "{query} over {protocol:?}");
        }
        let q = Query::parse(Some("resource=r&object_id=")).unwrap();
        assert_eq!(q.identity(Protocol::AzureMl).unwrap(), None);
        assert!(Query::parse(None).unwrap().resource().is_err());
    }

    #[test]
    fn msi_versions() {
        assert_eq!(
            Protocol::of_msi_version(Some("2019-08-01")),
            Some(Protocol::AppService)
        );
        assert_eq!(
            Protocol::of_msi_version(Some("2017-09-01")),
            Some(Protocol::AzureMl)
        );
        assert_eq!(Protocol::of_msi_version(Some("2018-02-01")), None);
        assert_eq!(Protocol::of_msi_version(None), None);
    }
}
