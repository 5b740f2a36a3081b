//! What the emulator has seen, for tests: `GET /__stats`.
//!
//! One counter group per area, each with a total and counts per dimension:
//!
//! ```json
//! {"token_requests": {"total": 3, "by_tenant": {"contoso": 3}, "by_scope": {"https://ml.azure.com/.default": 3},
//!                     "by_grant": {"client_credentials": 3}, "by_outcome": {"issued": 2, "conditional_access": 1}},
//!  "managed_identity_requests": {…}, "arm_requests": {…}, "upstream_requests": {…}, …}
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::lock;

/// The areas counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Area {
    /// Entra ID's token endpoint (dimensions: tenant, scope, grant, client, outcome).
    Token,
    /// Entra ID's authorize endpoint (tenant, client, outcome).
    Authorize,
    /// Entra ID's device-code endpoint (tenant, client, outcome).
    DeviceCode,
    /// Managed-identity endpoints (protocol, resource, identity, outcome).
    ManagedIdentity,
    /// ARM (operation, status).
    Arm,
    /// The echoing upstream (status, audience).
    Upstream,
    /// Scoring endpoints (endpoint, auth, status).
    Scoring,
}

/// The counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    groups: Mutex<BTreeMap<Area, Group>>,
}

#[derive(Debug, Default)]
struct Group {
    total: u64,
    by: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

// === impl Area ===

impl Area {
    const ALL: [Area; 7] = [
        Area::Token,
        Area::Authorize,
        Area::DeviceCode,
        Area::ManagedIdentity,
        Area::Arm,
        Area::Upstream,
        Area::Scoring,
    ];

    fn key(self) -> &'static str {
        match self {
            Area::Token => "token_requests",
            Area::Authorize => "authorize_requests",
            Area::DeviceCode => "device_code_requests",
            Area::ManagedIdentity => "managed_identity_requests",
            Area::Arm => "arm_requests",
            Area::Upstream => "upstream_requests",
            Area::Scoring => "scoring_requests",
        }
    }
}

// === impl Stats ===

impl Stats {
    /// Counts one request of `area`, with its value for each dimension (`None` values are not counted).
    pub(crate) fn record(&self, area: Area, dimensions: &[(&'static str, Option<&str>)]) {
        let mut groups = lock(&self.groups);
        let group = groups.entry(area).or_default();
        group.total += 1;
        for (name, value) in dimensions {
            if let Some(value) = value {
                *group
                    .by
                    .entry(name)
                    .or_default()
                    .entry((*value).to_owned())
                    .or_default() += 1;
            }
        }
    }

    /// Forgets everything.
    pub(crate) fn reset(&self) {
        lock(&self.groups).clear();
    }

    /// The `/__stats` document (every area present, zero when unseen).
    pub(crate) fn to_json(&self) -> Value {
        let groups = lock(&self.groups);
        let mut out = Map::new();
        for area in Area::ALL {
            let mut group = Map::new();
            let (total, by) = groups
                .get(&area)
                .map(|g| (g.total, Some(&g.by)))
                .unwrap_or((0, None));
            group.insert("total".into(), total.into());
            for (name, counts) in by.into_iter().flatten() {
                let counts: Map<String, Value> = counts
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(*v)))
                    .collect();
                group.insert(format!("by_{name}"), Value::Object(counts));
            }
            out.insert(area.key().into(), Value::Object(group));
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_dimension_and_resets() {
        let stats = Stats::default();
        stats.record(
            Area::Token,
            &[("tenant", Some("a")), ("outcome", Some("issued"))],
        );
        stats.record(
            Area::Token,
            &[("tenant", Some("a")), ("outcome", Some("mfa"))],
        );
        stats.record(
            Area::Upstream,
            &[("status", Some("200")), ("audience", None)],
        );
        let json = stats.to_json();
        assert_eq!(json["token_requests"]["total"], 2);
        assert_eq!(json["token_requests"]["by_tenant"]["a"], 2);
        assert_eq!(json["token_requests"]["by_outcome"]["mfa"], 1);
        assert_eq!(json["upstream_requests"]["by_status"]["200"], 1);
        assert!(json["upstream_requests"].get("by_audience").is_none());
        assert_eq!(json["arm_requests"]["total"], 0);
        stats.reset();
        assert_eq!(stats.to_json()["token_requests"]["total"], 0);
    }
}
