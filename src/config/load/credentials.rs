//! `credentials:`: one named credential per entry, chain references, and chain cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_yaml::Value;

use super::suggest::CREDENTIAL_KINDS;
use super::syntax::{check_id, check_name, check_subscription, check_tenant_id};
use super::walk::{Field, Walker, child, either};
use crate::auth::{
    AzureCliCredentialOptions, AzureDeveloperCliCredentialOptions,
    AzurePowerShellCredentialOptions, ChainSource, ClientCertificateCredentialOptions,
    ClientSecretCredentialOptions, CredentialOptions, DeviceCodeCredentialOptions,
    InteractiveBrowserCredentialOptions, ManagedIdentityCredentialOptions,
    SdkAuthFileCredentialOptions, UserAssignedId, WorkloadIdentityCredentialOptions,
};

/// `tenant_id` and `client_id`, which several kinds take and check the same way.
#[derive(Default)]
struct TenantAndClient {
    tenant_id: Field<String>,
    client_id: Field<String>,
}

/// Depth-first search state for [`chain_cycles`].
struct CycleSearch<'g, 'a> {
    graph: &'g BTreeMap<&'a str, Vec<&'a str>>,
    stack: Vec<&'a str>,
    done: BTreeSet<&'a str>,
    cycles: Vec<Vec<&'a str>>,
}

/// Where `device_code` and `interactive_browser` persist their refresh token unless `cache_file` says otherwise.
const DEFAULT_CACHE_FILE: &str = "~/.aml-auth-proxy/tokens.json";

/// The built-in chain source names, for messages.
const BUILT_IN_SOURCES: &str = "environment, workload_identity, managed_identity, azure_cli, azure_developer_cli, azure_powershell, device_code, interactive_browser";

/// The credential names the document declares (valid or not), so references can be checked in document order.
pub(super) fn declared_names(root: &Value) -> BTreeSet<String> {
    root.get("credentials")
        .and_then(Value::as_mapping)
        .map(|map| {
            map.keys()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Walks `credentials:`; returns the valid options by name. Chain cycles are reported last.
pub(super) fn section(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
    names: &BTreeSet<String>,
) -> BTreeMap<String, CredentialOptions> {
    let mut specs = BTreeMap::new();
    w.fields(path, value, |w, name, entry_path, v| {
        if let Err(message) = check_name(name) {
            w.problem(entry_path, message);
        } else if !matches!(ChainSource::parse(name), ChainSource::Named(_)) {
            w.problem(
                entry_path,
                format!("{name:?} is the name of a built-in chain source; choose another credential name"),
            );
        }
        if let Some(spec) = credential(w, entry_path, name, v, names) {
            specs.insert(name.to_owned(), spec);
        }
        true
    });
    for cycle in chain_cycles(&specs) {
        let at = child(&child(path, cycle[0]), "chain");
        w.problem(&at, format!("chain cycle: {}", cycle.join(" -> ")));
    }
    specs
}

/// One `credentials.<name>` entry: a mapping with exactly one kind key.
fn credential(
    w: &mut Walker<'_>,
    path: &str,
    name: &str,
    value: &Value,
    names: &BTreeSet<String>,
) -> Option<CredentialOptions> {
    let mut kinds = Vec::new();
    let mut spec = None;
    let is_map = w.fields(path, value, |w, key, p, v| {
        spec = match key {
            "client_secret" => client_secret(w, p, v),
            "client_certificate" => client_certificate(w, p, v),
            "workload_identity" => workload_identity(w, p, v),
            "managed_identity" => managed_identity(w, p, v),
            "azure_cli" => azure_cli(w, p, v),
            "azure_developer_cli" => developer_tool(w, p, v, DeveloperTool::Azd),
            "azure_powershell" => developer_tool(w, p, v, DeveloperTool::PowerShell),
            "device_code" => device_code(w, p, v),
            "interactive_browser" => interactive_browser(w, p, v),
            "sdk_auth_file" => sdk_auth_file(w, p, v),
            "chain" => chain(w, p, v, name, names),
            _ => return false,
        };
        kinds.push(key.to_owned());
        true
    });
    match kinds.len() {
        _ if !is_map => None,
        0 => {
            w.problem(
                path,
                format!("needs exactly one of: {}", CREDENTIAL_KINDS.join(", ")),
            );
            None
        }
        1 => spec,
        _ => {
            w.problem(
                path,
                format!(
                    "has more than one kind ({}); give exactly one",
                    kinds.join(", ")
                ),
            );
            None
        }
    }
}

/// `client_secret: { tenant_id, client_id, client_secret | client_secret_file }`.
fn client_secret(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<CredentialOptions> {
    let (mut inline, mut file) = (Field::Absent, Field::Absent);
    let ids = TenantAndClient::walk(w, path, value, |w, key, p, v| {
        match key {
            "client_secret" => inline.set(w.secret(p, v)),
            "client_secret_file" => file.set(w.secret_file(p, v)),
            _ => return false,
        }
        true
    })?;
    let (tenant_id, client_id) = ids.required(w, path);
    let secret = either(
        w,
        path,
        ("client_secret", inline),
        ("client_secret_file", file),
    );
    let client_secret = secret.or_problem(w, path, "needs `client_secret` or `client_secret_file`");
    Some(CredentialOptions::ClientSecret(
        ClientSecretCredentialOptions {
            tenant_id: tenant_id?,
            client_id: client_id?,
            client_secret: client_secret?,
        },
    ))
}

/// `client_certificate: { tenant_id, client_id, certificate_file, password | password_file, send_certificate_chain }`.
fn client_certificate(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<CredentialOptions> {
    let mut certificate_file = Field::Absent;
    let (mut inline, mut file, mut send_chain) = (Field::Absent, Field::Absent, Field::Absent);
    let ids = TenantAndClient::walk(w, path, value, |w, key, p, v| {
        match key {
            "certificate_file" => certificate_file.set(w.private_file(p, v)),
            "password" => inline.set(w.secret(p, v)),
            "password_file" => file.set(w.secret_file(p, v)),
            "send_certificate_chain" => send_chain.set(w.boolean(p, v)),
            _ => return false,
        }
        true
    })?;
    let (tenant_id, client_id) = ids.required(w, path);
    let certificate_file = certificate_file.required(w, &child(path, "certificate_file"));
    let password = either(w, path, ("password", inline), ("password_file", file)).optional();
    Some(CredentialOptions::ClientCertificate(
        ClientCertificateCredentialOptions {
            tenant_id: tenant_id?,
            client_id: client_id?,
            certificate_file: certificate_file?,
            password: password?,
            send_certificate_chain: send_chain.or(false)?,
        },
    ))
}

/// `workload_identity: { tenant_id, client_id, token_file }`, all optional.
fn workload_identity(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<CredentialOptions> {
    let mut token_file = Field::Absent;
    let ids = TenantAndClient::walk(w, path, value, |w, key, p, v| {
        match key {
            "token_file" => token_file.set(w.path(p, v)),
            _ => return false,
        }
        true
    })?;
    Some(CredentialOptions::WorkloadIdentity(
        WorkloadIdentityCredentialOptions {
            tenant_id: ids.tenant_id.optional()?,
            client_id: ids.client_id.optional()?,
            token_file: token_file.optional()?,
        },
    ))
}

/// `managed_identity: { client_id | object_id | resource_id, endpoint }`, all optional.
fn managed_identity(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<CredentialOptions> {
    let mut ids: Vec<Option<UserAssignedId>> = Vec::new();
    let mut endpoint = Field::Absent;
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "client_id" => user_assigned_id(w, p, v, UserAssignedId::ClientId, &mut ids),
            "object_id" => user_assigned_id(w, p, v, UserAssignedId::ObjectId, &mut ids),
            "resource_id" => user_assigned_id(w, p, v, UserAssignedId::ResourceId, &mut ids),
            "endpoint" => endpoint.set(w.endpoint(p, v)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return None;
    }
    if ids.len() > 1 {
        w.problem(
            path,
            "give at most one of `client_id`, `object_id` or `resource_id`",
        );
        return None;
    }
    let user_assigned = match ids.pop() {
        Some(id) => Some(id?),
        None => None,
    };
    Some(CredentialOptions::ManagedIdentity(
        ManagedIdentityCredentialOptions {
            user_assigned,
            endpoint: endpoint.optional()?,
            ..ManagedIdentityCredentialOptions::default()
        },
    ))
}

/// The all-zero GUID: never an identity, but what an unset variable with a placeholder default becomes.
const NIL_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// One of `managed_identity`'s `client_id` / `object_id` / `resource_id`. A value that is empty once expanded
/// (`${AML_IDENTITY_CLIENT_ID:-}` with the variable unset or empty) counts as not given, so one file serves both
/// the system-assigned identity and a user-assigned one. The nil GUID is refused: Entra ID knows no such identity.
fn user_assigned_id(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
    make: fn(String) -> UserAssignedId,
    ids: &mut Vec<Option<UserAssignedId>>,
) {
    let Some(id) = w.string(path, value) else {
        ids.push(None);
        return;
    };
    if id.is_empty() {
        return;
    }
    let checked = check_id(&id).and_then(|()| {
        if id == NIL_GUID {
            Err(format!(
                "{NIL_GUID} is the nil GUID, not an identity; leave the key out (or empty) for the \
                 system-assigned identity"
            ))
        } else {
            Ok(())
        }
    });
    match checked {
        Ok(()) => ids.push(Some(make(id))),
        Err(message) => {
            w.problem(path, message);
            ids.push(None);
        }
    }
}

/// `azure_cli: { tenant_id, subscription, timeout }`, all optional.
fn azure_cli(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<CredentialOptions> {
    let (mut tenant_id, mut subscription, mut timeout) =
        (Field::Absent, Field::Absent, Field::Absent);
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "tenant_id" => tenant_id.set(w.checked(p, v, check_tenant_id)),
            "subscription" => subscription.set(w.checked(p, v, check_subscription)),
            "timeout" => timeout.set(w.positive_duration(p, v)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return None;
    }
    Some(CredentialOptions::AzureCli(AzureCliCredentialOptions {
        tenant_id: tenant_id.optional()?,
        subscription: subscription.optional()?,
        timeout: timeout.or(AzureCliCredentialOptions::DEFAULT_TIMEOUT)?,
    }))
}

/// The developer tools configured with `{ tenant_id, timeout }`.
#[derive(Clone, Copy)]
enum DeveloperTool {
    Azd,
    PowerShell,
}

/// `azure_developer_cli: { tenant_id, timeout }` or `azure_powershell: { tenant_id, timeout }`, all optional.
fn developer_tool(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
    tool: DeveloperTool,
) -> Option<CredentialOptions> {
    let (mut tenant_id, mut timeout) = (Field::Absent, Field::Absent);
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "tenant_id" => tenant_id.set(w.checked(p, v, check_tenant_id)),
            "timeout" => timeout.set(w.positive_duration(p, v)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return None;
    }
    Some(match tool {
        DeveloperTool::Azd => {
            CredentialOptions::AzureDeveloperCli(AzureDeveloperCliCredentialOptions {
                tenant_id: tenant_id.optional()?,
                timeout: timeout.or(AzureDeveloperCliCredentialOptions::DEFAULT_TIMEOUT)?,
            })
        }
        DeveloperTool::PowerShell => {
            CredentialOptions::AzurePowerShell(AzurePowerShellCredentialOptions {
                tenant_id: tenant_id.optional()?,
                timeout: timeout.or(AzurePowerShellCredentialOptions::DEFAULT_TIMEOUT)?,
            })
        }
    })
}

/// `device_code: { tenant_id, client_id, cache_file }`, all optional.
fn device_code(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<CredentialOptions> {
    let mut cache_file = Field::Absent;
    let ids = TenantAndClient::walk(w, path, value, |w, key, p, v| {
        match key {
            "cache_file" => cache_file.set(w.path(p, v)),
            _ => return false,
        }
        true
    })?;
    let cache_file = cache_file_or_default(w, path, cache_file);
    Some(CredentialOptions::DeviceCode(DeviceCodeCredentialOptions {
        tenant_id: ids.tenant_id.optional()?,
        client_id: ids.client_id.optional()?,
        cache_file: cache_file?,
        config_file: None,
    }))
}

/// `interactive_browser: { tenant_id, client_id, cache_file, login_hint, domain_hint, redirect_port, timeout }`,
/// all optional.
fn interactive_browser(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<CredentialOptions> {
    let (mut cache_file, mut login_hint, mut domain_hint) =
        (Field::Absent, Field::Absent, Field::Absent);
    let (mut redirect_port, mut timeout) = (Field::Absent, Field::Absent);
    let ids = TenantAndClient::walk(w, path, value, |w, key, p, v| {
        match key {
            "cache_file" => cache_file.set(w.path(p, v)),
            "login_hint" => login_hint.set(w.checked(p, v, check_id)),
            "domain_hint" => domain_hint.set(w.checked(p, v, check_tenant_id)),
            "redirect_port" => redirect_port.set(port(w, p, v)),
            "timeout" => timeout.set(w.positive_duration(p, v)),
            _ => return false,
        }
        true
    })?;
    let cache_file = cache_file_or_default(w, path, cache_file);
    Some(CredentialOptions::InteractiveBrowser(
        InteractiveBrowserCredentialOptions {
            session: DeviceCodeCredentialOptions {
                tenant_id: ids.tenant_id.optional()?,
                client_id: ids.client_id.optional()?,
                cache_file: cache_file?,
                config_file: None,
            },
            login_hint: login_hint.optional()?,
            domain_hint: domain_hint.optional()?,
            redirect_port: redirect_port.or(0)?,
            timeout: timeout.or(InteractiveBrowserCredentialOptions::DEFAULT_TIMEOUT)?,
        },
    ))
}

/// The `cache_file` of the kind at `path`: the one given, else [`DEFAULT_CACHE_FILE`].
fn cache_file_or_default(w: &mut Walker<'_>, path: &str, given: Field<PathBuf>) -> Option<PathBuf> {
    match given {
        Field::Absent => w.resolve(&child(path, "cache_file"), DEFAULT_CACHE_FILE),
        given => given.valid(),
    }
}

/// A TCP port, 0 to 65535 (0: any free port).
fn port(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<u16> {
    let n = w.count(path, value)?;
    u16::try_from(n)
        .map_err(|_| w.problem(path, format!("expected a port from 0 to 65535 (got {n})")))
        .ok()
}

/// `sdk_auth_file: { path }`: a private, readable JSON file (parsed later, by the credential).
fn sdk_auth_file(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<CredentialOptions> {
    let mut file = Field::Absent;
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "path" => file.set(w.private_file(p, v)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return None;
    }
    let file = file.required(w, &child(path, "path"))?;
    Some(CredentialOptions::SdkAuthFile(
        SdkAuthFileCredentialOptions { path: file },
    ))
}

/// `chain: [source, …]`: built-in sources or other credentials' names, no duplicates.
fn chain(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
    own: &str,
    names: &BTreeSet<String>,
) -> Option<CredentialOptions> {
    let mut seen = Vec::new();
    let sources = w.list(path, value, true, |w, p, v| {
        let source = chain_source(w, p, v, own, names, &seen)?;
        seen.push(source.clone());
        Some(source)
    });
    sources.map(CredentialOptions::Chain)
}

/// One chain entry.
fn chain_source(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
    own: &str,
    names: &BTreeSet<String>,
    seen: &[ChainSource],
) -> Option<ChainSource> {
    let text = w.string(path, value)?;
    let source = ChainSource::parse(&text);
    let problem = match &source {
        _ if seen.contains(&source) => format!("duplicate entry {text:?}"),
        ChainSource::Named(name) if name == own => format!("{name:?} is this credential itself"),
        ChainSource::Named(name) if !names.contains(name) => {
            format!("no credential named {name:?} (built-in sources: {BUILT_IN_SOURCES})")
        }
        _ => return Some(source),
    };
    w.problem(path, problem);
    None
}

/// Every cycle among chains' references to other credentials, each as `[a, b, …, a]`, found once.
fn chain_cycles(specs: &BTreeMap<String, CredentialOptions>) -> Vec<Vec<&str>> {
    let graph: BTreeMap<&str, Vec<&str>> = specs
        .iter()
        .filter_map(|(name, spec)| match spec {
            CredentialOptions::Chain(sources) => Some((name.as_str(), named_sources(sources))),
            _ => None,
        })
        .collect();
    let mut search = CycleSearch {
        graph: &graph,
        stack: Vec::new(),
        done: BTreeSet::new(),
        cycles: Vec::new(),
    };
    for &start in graph.keys() {
        search.visit(start);
    }
    search.cycles
}

/// The credential names a chain refers to.
fn named_sources(sources: &[ChainSource]) -> Vec<&str> {
    sources
        .iter()
        .filter_map(|s| match s {
            ChainSource::Named(name) => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

// === impl CycleSearch ===

impl<'a> CycleSearch<'_, 'a> {
    /// Visits `node`; a node already on the stack closes a cycle.
    fn visit(&mut self, node: &'a str) {
        if self.done.contains(node) {
            return;
        }
        if let Some(at) = self.stack.iter().position(|n| *n == node) {
            let mut cycle = self.stack[at..].to_vec();
            cycle.push(node);
            self.cycles.push(cycle);
            return;
        }
        self.stack.push(node);
        let graph = self.graph;
        for &next in graph.get(node).into_iter().flatten() {
            self.visit(next);
        }
        self.stack.pop();
        self.done.insert(node);
    }
}

// === impl TenantAndClient ===

impl TenantAndClient {
    /// Walks the kind's mapping at `path`: `tenant_id` and `client_id` here, every other key through `other` (as
    /// [`Walker::fields`] does). `None` when `value` is not a mapping.
    fn walk(
        w: &mut Walker<'_>,
        path: &str,
        value: &Value,
        mut other: impl FnMut(&mut Walker<'_>, &str, &str, &Value) -> bool,
    ) -> Option<Self> {
        let mut ids = Self::default();
        let is_map = w.fields(path, value, |w, key, p, v| {
            other(w, key, p, v) || ids.take(w, key, p, v)
        });
        is_map.then_some(ids)
    }

    /// Takes `tenant_id` or `client_id`; `false` for any other key.
    fn take(&mut self, w: &mut Walker<'_>, key: &str, p: &str, v: &Value) -> bool {
        match key {
            "tenant_id" => self.tenant_id.set(w.checked(p, v, check_tenant_id)),
            "client_id" => self.client_id.set(w.checked(p, v, check_id)),
            _ => return false,
        }
        true
    }

    /// Both ids, each reported under `path` if it is missing.
    fn required(self, w: &mut Walker<'_>, path: &str) -> (Option<String>, Option<String>) {
        let tenant_id = self.tenant_id.required(w, &child(path, "tenant_id"));
        let client_id = self.client_id.required(w, &child(path, "client_id"));
        (tenant_id, client_id)
    }
}

#[cfg(test)]
mod tests;
