//! Azure ML route blocks: `online_endpoint: { subscription_id, resource_group, workspace, name, auth }` and
//! `workspace: { config_file }` or `workspace: { subscription_id, resource_group, name }`.
//!
//! A `config_file` is the `config.json` that `Workspace.from_config()` and `MLClient.from_config()` read (the file
//! the studio's "Download config file" link produces): either `subscription_id`, `resource_group` and
//! `workspace_name`, or one `Scope` resource id, which wins when both are present. Other keys are ignored, as the
//! SDKs ignore them. A directory is searched for `config.json`, `.azureml/config.json` and
//! `aml_config/config.json`, in that order.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::walk::{Field, Walker, child};
use crate::config::{EndpointAuth, OnlineEndpointConfig, WorkspaceId};
use crate::file_read::{self, Access};

/// `config.json` files larger than this are refused (the real file is about 150 bytes).
const MAX_CONFIG_JSON_BYTES: u64 = 64 * 1024;

/// Where a directory given as `config_file` is searched, in order.
const CONFIG_JSON_CANDIDATES: [&str; 3] = [
    "config.json",
    ".azureml/config.json",
    "aml_config/config.json",
];

/// `online_endpoint:`.
pub(super) fn online_endpoint(
    w: &mut Walker<'_>,
    path: &str,
    value: &Value,
) -> Option<OnlineEndpointConfig> {
    let mut ids = IdFields::default();
    let (mut name, mut auth) = (Field::Absent, Field::Absent);
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "subscription_id" => ids.subscription_id.set(w.checked(p, v, check_arm_name)),
            "resource_group" => ids.resource_group.set(w.checked(p, v, check_arm_name)),
            "workspace" => ids.name.set(w.checked(p, v, check_arm_name)),
            "name" => name.set(w.checked(p, v, check_arm_name)),
            "auth" => auth.set(endpoint_auth(w, p, v)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return None;
    }
    let workspace = ids.required(w, path, "workspace");
    let name = name.required(w, &child(path, "name"));
    Some(OnlineEndpointConfig {
        workspace: workspace?,
        name: name?,
        auth: auth.or(EndpointAuth::Auto)?,
    })
}

/// `workspace:`: a `config_file`, or the three ids.
pub(super) fn workspace(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<WorkspaceId> {
    let mut ids = IdFields::default();
    let mut config_file: Field<PathBuf> = Field::Absent;
    let is_map = w.fields(path, value, |w, key, p, v| {
        match key {
            "config_file" => config_file.set(w.path(p, v)),
            "subscription_id" => ids.subscription_id.set(w.checked(p, v, check_arm_name)),
            "resource_group" => ids.resource_group.set(w.checked(p, v, check_arm_name)),
            "name" => ids.name.set(w.checked(p, v, check_arm_name)),
            _ => return false,
        }
        true
    });
    if !is_map {
        return None;
    }
    let file_path = child(path, "config_file");
    match config_file {
        Field::Valid(file) if ids.any_present() => {
            w.problem(
                &file_path,
                "give either config_file or subscription_id, resource_group and name, not both",
            );
            let _ = file;
            None
        }
        Field::Valid(file) => match read_config_json(&file) {
            Ok(id) => Some(id),
            Err(message) => {
                w.problem(&file_path, message);
                None
            }
        },
        Field::Invalid => None,
        Field::Absent => ids.required(w, path, "name"),
    }
}

/// `auth:` of an online endpoint.
fn endpoint_auth(w: &mut Walker<'_>, path: &str, value: &Value) -> Option<EndpointAuth> {
    let text = w.string(path, value)?;
    let auth = match text.to_ascii_lowercase().as_str() {
        "auto" => EndpointAuth::Auto,
        "key" => EndpointAuth::Key,
        "aml_token" | "amltoken" => EndpointAuth::AmlToken,
        "aad_token" | "aadtoken" => EndpointAuth::AadToken,
        _ => {
            w.problem(
                path,
                format!("unknown auth {text:?} (expected auto, key, aml_token or aad_token)"),
            );
            return None;
        }
    };
    Some(auth)
}

/// A Resource Manager name or id that becomes one URL path segment: letters, digits, `_`, `.`, `-`, `(`, `)`;
/// not `.` or `..`.
fn check_arm_name(text: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_.-()".contains(&b);
    if text.is_empty() || text == "." || text == ".." || !text.bytes().all(allowed) {
        Err(format!(
            "invalid name {text:?}: use letters, digits, `_`, `.`, `-`, `(` and `)`"
        ))
    } else {
        Ok(())
    }
}

/// Reads a `config.json` (or finds one in a directory) and returns the workspace it names.
fn read_config_json(path: &Path) -> Result<WorkspaceId, String> {
    let file = if path.is_dir() {
        CONFIG_JSON_CANDIDATES
            .iter()
            .map(|name| path.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "no config.json, .azureml/config.json or aml_config/config.json in {}",
                    path.display()
                )
            })?
    } else {
        path.to_path_buf()
    };
    let bytes =
        file_read::read(&file, MAX_CONFIG_JSON_BYTES, Access::Any).map_err(|e| e.to_string())?;
    parse_config_json(&bytes).map_err(|why| format!("{}: {why}", file.display()))
}

/// The workspace a `config.json` names: its `Scope` resource id, else `subscription_id`, `resource_group` and
/// `workspace_name`.
fn parse_config_json(bytes: &[u8]) -> Result<WorkspaceId, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON document ({e})"))?;
    let text = |key: &str| value.get(key).and_then(serde_json::Value::as_str);
    let id = if let Some(scope) = text("Scope") {
        let pieces: Vec<&str> = scope.split('/').collect();
        match pieces.as_slice() {
            ["", s, sub, r, rg, p, ns, w, ws]
                if s.eq_ignore_ascii_case("subscriptions")
                    && r.eq_ignore_ascii_case("resourceGroups")
                    && p.eq_ignore_ascii_case("providers")
                    && ns.eq_ignore_ascii_case("Microsoft.MachineLearningServices")
                    && w.eq_ignore_ascii_case("workspaces") =>
            {
                WorkspaceId {
                    subscription_id: (*sub).to_owned(),
                    resource_group: (*rg).to_owned(),
                    name: (*ws).to_owned(),
                }
            }
            _ => {
                return Err(
                    "Scope must be /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.MachineLearningServices/workspaces/<name>"
                        .to_owned(),
                );
            }
        }
    } else {
        match (
            text("subscription_id"),
            text("resource_group"),
            text("workspace_name"),
        ) {
            (Some(s), Some(rg), Some(ws)) => WorkspaceId {
                subscription_id: s.to_owned(),
                resource_group: rg.to_owned(),
                name: ws.to_owned(),
            },
            _ => {
                return Err(
                    "must contain subscription_id, resource_group and workspace_name (or Scope)"
                        .to_owned(),
                );
            }
        }
    };
    for (key, v) in [
        ("subscription_id", &id.subscription_id),
        ("resource_group", &id.resource_group),
        ("workspace_name", &id.name),
    ] {
        check_arm_name(v).map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(id)
}

/// The three ids of a workspace, as walked.
#[derive(Default)]
struct IdFields {
    subscription_id: Field<String>,
    resource_group: Field<String>,
    name: Field<String>,
}

// === impl IdFields ===

impl IdFields {
    fn any_present(&self) -> bool {
        self.subscription_id.is_present()
            || self.resource_group.is_present()
            || self.name.is_present()
    }

    /// All three, each reported missing at its key (`name_key` is the workspace name's key).
    fn required(self, w: &mut Walker<'_>, path: &str, name_key: &str) -> Option<WorkspaceId> {
        let subscription_id = self
            .subscription_id
            .required(w, &child(path, "subscription_id"));
        let resource_group = self
            .resource_group
            .required(w, &child(path, "resource_group"));
        let name = self.name.required(w, &child(path, name_key));
        Some(WorkspaceId {
            subscription_id: subscription_id?,
            resource_group: resource_group?,
            name: name?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{CREDS, ok, parse_with, problems};
    use super::*;
    use crate::config::AzureMlTarget;
    use crate::env::MapEnv;

    #[test]
    fn azure_ml_routes_take_their_upstream_from_resource_manager_and_strip_their_prefix() {
        let config = ok(&format!(
            "resource_manager: http://127.0.0.1:8182\n{CREDS}routes:
  - name: scoring
    path_prefix: /endpoints/e/
    online_endpoint: {{ subscription_id: s-1, resource_group: rg, workspace: ws, name: e, auth: AMLToken }}
  - name: ws
    path_prefix: /ws
    host: ml.local
    workspace: {{ subscription_id: s-1, resource_group: rg, name: ws }}
    credential: default
"
        ));
        assert_eq!(config.resource_manager.to_string(), "http://127.0.0.1:8182");
        let scoring = &config.routes[0];
        assert_eq!(scoring.path_prefix, "/endpoints/e");
        assert!(scoring.strip_prefix && scoring.scope.is_none());
        assert_eq!(scoring.credential.as_deref(), Some("default"));
        assert_eq!(scoring.upstream.origin, config.resource_manager);
        let Some(AzureMlTarget::OnlineEndpoint(e)) = &scoring.azure_ml else {
            panic!("{scoring:?}");
        };
        assert_eq!((e.name.as_str(), e.auth), ("e", EndpointAuth::AmlToken));
        assert_eq!(e.workspace.subscription_id, "s-1");
        let ws = &config.routes[1];
        assert_eq!(ws.host.as_deref(), Some("ml.local"));
        assert!(matches!(&ws.azure_ml, Some(AzureMlTarget::Workspace(w)) if w.name == "ws"));
        // Without the key: the cloud's.
        let config = ok(&format!(
            "cloud: AzureUSGovernment\n{CREDS}routes:\n  - name: ws\n    path_prefix: /ws\n    workspace: {{ subscription_id: s, resource_group: rg, name: ws }}\n"
        ));
        assert_eq!(
            config.resource_manager.to_string(),
            "https://management.usgovcloudapi.net"
        );
    }

    #[test]
    fn a_config_file_is_read_relative_to_the_configuration() {
        let dir = std::env::temp_dir().join(format!("aml-config-json-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join(".azureml")).unwrap();
        std::fs::write(
            dir.join(".azureml/config.json"),
            r#"{"subscription_id": "s", "resource_group": "rg", "workspace_name": "from-file"}"#,
        )
        .unwrap();
        let text = format!(
            "{CREDS}routes:\n  - name: ws\n    path_prefix: /ws\n    workspace: {{ config_file: . }}\n"
        );
        let config = parse_with(&MapEnv::new(), &dir, &text).unwrap();
        assert!(
            matches!(&config.routes[0].azure_ml, Some(AzureMlTarget::Workspace(w)) if w.name == "from-file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_azure_ml_route_needs_a_credential() {
        let found = problems(
            "credentials:\n  sp: { azure_cli: {} }\nroutes:\n  - name: ws\n    path_prefix: /ws\n    workspace: { subscription_id: s, resource_group: rg, name: ws }\n",
        );
        assert_eq!(
            found,
            [
                "routes[0].credential: required key is missing (and no credential named \"default\" is configured)"
            ]
        );
    }

    #[test]
    fn config_json_in_both_shapes() {
        let ids = br#"{"subscription_id": "sub-1", "resource_group": "rg", "workspace_name": "ws", "extra": 1}"#;
        let id = parse_config_json(ids).unwrap();
        assert_eq!(
            (
                id.subscription_id.as_str(),
                id.resource_group.as_str(),
                id.name.as_str()
            ),
            ("sub-1", "rg", "ws")
        );
        let scope = br#"{"Scope": "/subscriptions/s2/resourceGroups/g2/providers/Microsoft.MachineLearningServices/workspaces/w2", "workspace_name": "ignored"}"#;
        let id = parse_config_json(scope).unwrap();
        assert_eq!(
            (
                id.subscription_id.as_str(),
                id.resource_group.as_str(),
                id.name.as_str()
            ),
            ("s2", "g2", "w2")
        );
        assert!(
            parse_config_json(br#"{"subscription_id": "s"}"#)
                .unwrap_err()
                .contains("workspace_name")
        );
        assert!(parse_config_json(b"not json").is_err());
        assert!(parse_config_json(br#"{"Scope": "/subscriptions/s"}"#).is_err());
        assert!(
            parse_config_json(
                br#"{"subscription_id": "s", "resource_group": "../x", "workspace_name": "w"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn arm_names_are_single_path_segments() {
        assert!(check_arm_name("my-rg_(1).x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a?b", "a%2f"] {
            assert!(check_arm_name(bad).is_err(), "{bad}");
        }
    }
}
