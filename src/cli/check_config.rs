//! `check-config`: validate a configuration file and print a secret-free summary (exit 0), or list every problem
//! with its key path (exit 64).

use std::io::Write;
use std::process::ExitCode;

use super::args::CheckConfigArgs;
use super::exit::{EXIT_USAGE, fail};
use crate::auth::{CredentialOptions, UserAssignedId};
use crate::env::Env;

pub(super) fn check_config(args: &CheckConfigArgs, env: &dyn Env) -> ExitCode {
    let Some(path) = args.config.file() else {
        return fail(
            EXIT_USAGE,
            "check-config needs --config FILE (or AML_AUTH_PROXY_CONFIG)",
        );
    };
    let config = match crate::config::load(path, env) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "configuration {} is valid: {} route(s), {} credential(s); listen {}, admin {}, cloud {}, authority {}\n",
        path.display(),
        config.routes.len(),
        config.credentials.len(),
        config.listen,
        config.admin_listen,
        config.cloud.name(),
        config.authority_host
    ));
    if let Some(auth) = &config.caller_auth {
        out.push_str(&format!(
            "  callers must send the key in {}{}\n",
            auth.header,
            if config.expose { " (expose: true)" } else { "" }
        ));
    }
    for r in &config.routes {
        let host = r
            .host
            .as_deref()
            .map(|h| format!("{h} "))
            .unwrap_or_default();
        if let Some(target) = &r.azure_ml {
            out.push_str(&format!(
                "  route {}: {host}{} -> {} through Resource Manager {} (credential {})\n",
                r.name,
                r.path_prefix,
                crate::azure_ml::describe(target),
                config.resource_manager,
                r.credential.as_deref().unwrap_or("-"),
            ));
            continue;
        }
        out.push_str(&format!(
            "  route {}: {host}{} -> {}{} (credential {}, scope {})\n",
            r.name,
            r.path_prefix,
            r.upstream.origin,
            r.upstream.base_path,
            r.credential.as_deref().unwrap_or("none: caller's token"),
            r.scope.as_deref().unwrap_or("-")
        ));
    }
    if let Some(ts) = &config.token_service {
        out.push_str(&format!(
            "  token service on {}: secret {} ({}), protocols app_service, azure_ml{}; identities {}; resources {}\n",
            ts.listen,
            ts.secret_file.display(),
            if ts.secret.is_some() { "read" } else { "created at start-up" },
            if ts.imds { ", imds" } else { "" },
            ts.identities
                .iter()
                .map(|m| format!("{} -> {}", m.id, m.credential))
                .collect::<Vec<_>>()
                .join(", "),
            ts.allowed_resources.join(", ")
        ));
    }
    for (name, spec) in &config.credentials {
        out.push_str(&format!("  credential {name}: {}\n", describe(spec)));
    }
    if let Some(otlp) = &config.telemetry {
        out.push_str(&format!(
            "  spans exported over OTLP to {} (service {})\n",
            otlp.endpoint, otlp.service_name
        ));
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    ExitCode::SUCCESS
}

/// A one-line, secret-free description of a credential.
fn describe(spec: &CredentialOptions) -> String {
    match spec {
        CredentialOptions::ClientSecret(s) => format!(
            "client_secret (tenant {}, client {})",
            s.tenant_id, s.client_id
        ),
        CredentialOptions::ClientCertificate(s) => format!(
            "client_certificate (tenant {}, client {}, {})",
            s.tenant_id,
            s.client_id,
            s.certificate_file.display()
        ),
        CredentialOptions::Chain(sources) => format!(
            "chain [{}]",
            sources
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        CredentialOptions::ManagedIdentity(m) => match &m.user_assigned {
            None => "managed_identity (system-assigned)".to_owned(),
            Some(UserAssignedId::ClientId(id)) => {
                format!("managed_identity (user-assigned, client_id {id})")
            }
            Some(UserAssignedId::ObjectId(id)) => {
                format!("managed_identity (user-assigned, object_id {id})")
            }
            Some(UserAssignedId::ResourceId(id)) => {
                format!("managed_identity (user-assigned, resource_id {id})")
            }
        },
        other => other.kind().to_owned(),
    }
}
