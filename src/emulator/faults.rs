//! Failure switches: rules that make one part of the emulator answer the way Azure does when something is wrong.
//!
//! A rule is written the same way on the command line (`--fault SPEC`) and in the control API
//! (`POST /__control/faults` with the spec as the body, or a JSON object with the same keys):
//!
//! ```text
//! KIND[=VALUE][,on=TARGET][,tenant=T][,client=C][,scope=S][,grant=G][,path=/P][,endpoint=E][,after=N][,count=N]
//! ```
//!
//! | kind | value | default `on` | what the target answers |
//! |---|---|---|---|
//! | `conditional-access` | | `token` | 400 AADSTS53003 (the recorded body); `authorize` redirects `error=access_denied` |
//! | `mfa` | | `token` | 400 `interaction_required` AADSTS50079 with `claims` (the recorded body) |
//! | `invalid-client` | | `token` | 401 `invalid_client` AADSTS7000215 (a wrong client secret) |
//! | `throttle` | Retry-After seconds (5) | `token` | 429 with `Retry-After`, in the target's own error shape |
//! | `status` | HTTP status (503) | `token` | that status, in the target's own error shape |
//! | `latency` | a duration (`2s`, `250ms`) | `token` | the normal answer, that much later |
//! | `lifetime` | a duration (`30s`) | every token issuer | tokens that live that long (`expires_in`, `exp`) |
//! | `cae` | `revoke` or `acrs:<value>` | `upstream` | 401 claims challenge until a token carrying the demanded claims is used |
//! | `deny` | `read`, `listkeys`, `token`, `regeneratekeys`, `score` | `arm` | 403 `AuthorizationFailed` naming the action |
//!
//! Targets: `token` (Entra ID's token endpoint, every grant), `authorize`, `devicecode`, `imds`, `msi` (App Service
//! and Azure ML), `arm`, `upstream`, `scoring`, or `all`; `on=` may be repeated. Filters narrow the requests a rule applies to: `tenant`,
//! `client` (client id), `scope` (scope or resource, compared without `/.default` and a trailing `/`), `grant`,
//! `path` (a path prefix), `endpoint` (an online endpoint's name). `after=N` lets the first N matching requests
//! through; `count=N` applies the rule N times, then it stays listed but inert.
//!
//! Rules apply in the order they were added: the first failure that matches answers; a `latency`, `lifetime` or
//! `cae` rule combines with whatever else matches.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use crate::lock;

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Entra ID's token endpoint (v2 and v1, every grant).
    Token,
    /// Entra ID's authorize endpoint.
    Authorize,
    /// Entra ID's device-code endpoint.
    DeviceCode,
    /// The IMDS managed-identity endpoint.
    Imds,
    /// The App Service (2019-08-01) and Azure ML (2017-09-01) managed-identity endpoint.
    Msi,
    /// Azure Resource Manager.
    Arm,
    /// The echoing upstream (the workspace data plane stand-in).
    Upstream,
    /// The online endpoints' scoring listeners.
    Scoring,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// AADSTS53003.
    ConditionalAccess,
    /// AADSTS50079 with claims.
    Mfa,
    /// AADSTS7000215.
    InvalidClient,
    /// 429 with `Retry-After: <retry_after>`.
    Throttle {
        /// Seconds.
        retry_after: u64,
    },
    /// An error status (4xx or 5xx).
    Status {
        /// The status code.
        code: u16,
    },
    /// A delay before the answer.
    Latency {
        /// How long.
        delay: Duration,
    },
    /// The lifetime of issued tokens.
    Lifetime {
        /// How long tokens live.
        lifetime: Duration,
    },
    /// A continuous-access-evaluation claims challenge.
    Cae {
        /// What the challenge demands.
        demand: CaeDemand,
    },
    /// ARM 403 `AuthorizationFailed`.
    Deny {
        /// The refused action.
        action: ArmAction,
    },
}

/// What a claims challenge demands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaeDemand {
    /// A session revocation: tokens must not be older than the moment the rule was added (`nbf`).
    Revoke,
    /// An authentication-context step-up: the token must carry `acrs` with this value (`c1`…`c99`).
    Acrs(String),
}

/// An ARM action a `deny` rule refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmAction {
    /// Reading workspaces and online endpoints.
    Read,
    /// `POST …/onlineEndpoints/{name}/listKeys`.
    ListKeys,
    /// `POST …/onlineEndpoints/{name}/token`.
    Token,
    /// `POST …/onlineEndpoints/{name}/regenerateKeys`.
    RegenerateKeys,
    /// Scoring with an Entra ID token (the `score/action` permission).
    Score,
}

/// One failure rule, as parsed from a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    /// What it does.
    pub kind: FaultKind,
    /// Where it applies (`None`: the kind's default targets).
    pub on: Option<Vec<Target>>,
    /// Only for this tenant.
    pub tenant: Option<String>,
    /// Only for this client id.
    pub client: Option<String>,
    /// Only for this scope or resource.
    pub scope: Option<String>,
    /// Only for this grant type.
    pub grant: Option<String>,
    /// Only for paths under this prefix.
    pub path: Option<String>,
    /// Only for this online endpoint.
    pub endpoint: Option<String>,
    /// Let this many matching requests through first.
    pub after: u32,
    /// Apply this many times (`None`: until removed).
    pub count: Option<u32>,
}

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault `{spec}`: {reason}")]
pub struct FaultSpecError {
    spec: String,
    reason: String,
}

/// The rules in force, with their counters.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    inner: Mutex<Rules>,
}

#[derive(Debug, Default)]
struct Rules {
    next_id: u64,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    id: u64,
    spec: FaultSpec,
    /// Unix seconds the rule was added (a revocation's time).
    added_at: i64,
    /// Matching requests seen.
    seen: u32,
    /// Times the rule acted.
    applied: u32,
}

/// What one request looks like to the rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe<'a> {
    pub(crate) target: Target,
    pub(crate) tenant: Option<&'a str>,
    pub(crate) client: Option<&'a str>,
    pub(crate) scope: Option<&'a str>,
    pub(crate) grant: Option<&'a str>,
    pub(crate) path: &'a str,
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) action: Option<ArmAction>,
}

/// What the rules decided for one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    /// Wait this long before answering.
    pub(crate) delay: Duration,
    /// Answer with this failure instead.
    pub(crate) failure: Option<FaultKind>,
    /// Issue tokens with this lifetime.
    pub(crate) lifetime: Option<Duration>,
    /// Challenge tokens that do not satisfy this (rule id, demand, rule's time).
    pub(crate) cae: Option<Challenge>,
}

/// A claims challenge in force.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    pub(crate) rule: u64,
    pub(crate) demand: CaeDemand,
    /// For a revocation: tokens need `nbf` at or after this (Unix seconds).
    pub(crate) not_before: i64,
}

// === impl Target ===

impl Target {
    const ALL: [Target; 8] = [
        Target::Token,
        Target::Authorize,
        Target::DeviceCode,
        Target::Imds,
        Target::Msi,
        Target::Arm,
        Target::Upstream,
        Target::Scoring,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::Token => "token",
            Target::Authorize => "authorize",
            Target::DeviceCode => "devicecode",
            Target::Imds => "imds",
            Target::Msi => "msi",
            Target::Arm => "arm",
            Target::Upstream => "upstream",
            Target::Scoring => "scoring",
        }
    }

    fn parse(text: &str) -> Option<Vec<Target>> {
        if text == "all" {
            return Some(Self::ALL.to_vec());
        }
        Self::ALL
            .into_iter()
            .find(|t| t.name() == text)
            .map(|t| vec![t])
    }
}

// === impl ArmAction ===

impl ArmAction {
    const ALL: [ArmAction; 5] = [
        ArmAction::Read,
        ArmAction::ListKeys,
        ArmAction::Token,
        ArmAction::RegenerateKeys,
        ArmAction::Score,
    ];

    fn name(self) -> &'static str {
        match self {
            ArmAction::Read => "read",
            ArmAction::ListKeys => "listkeys",
            ArmAction::Token => "token",
            ArmAction::RegenerateKeys => "regeneratekeys",
            ArmAction::Score => "score",
        }
    }

    /// The RBAC action ARM names in its `AuthorizationFailed` message, for a request on `resource_type`
    /// (`workspaces` or `workspaces/onlineEndpoints`).
    pub(crate) fn permission(self, resource_type: &str) -> String {
        let base = format!("Microsoft.MachineLearningServices/{resource_type}");
        match self {
            ArmAction::Read => format!("{base}/read"),
            ArmAction::ListKeys => format!("{base}/listkeys/action"),
            ArmAction::Token => format!("{base}/token/action"),
            ArmAction::RegenerateKeys => format!("{base}/regenerateKeys/action"),
            ArmAction::Score => format!("{base}/score/action"),
        }
    }
}

// === impl FaultKind ===

impl FaultKind {
    fn default_targets(&self) -> Vec<Target> {
        match self {
            FaultKind::Lifetime { .. } => {
                vec![Target::Token, Target::Imds, Target::Msi, Target::Arm]
            }
            FaultKind::Cae { .. } => vec![Target::Upstream],
            FaultKind::Deny {
                action: ArmAction::Score,
            } => vec![Target::Scoring],
            FaultKind::Deny { .. } => vec![Target::Arm],
            _ => vec![Target::Token],
        }
    }

    /// A failure answers instead of the target; the other kinds shape a normal answer.
    fn is_failure(&self) -> bool {
        !matches!(
            self,
            FaultKind::Latency { .. } | FaultKind::Lifetime { .. } | FaultKind::Cae { .. }
        )
    }
}

// === impl FaultSpec ===

impl FaultSpec {
    /// A rule of this kind with no filters.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            on: None,
            tenant: None,
            client: None,
            scope: None,
            grant: None,
            path: None,
            endpoint: None,
            after: 0,
            count: None,
        }
    }

    /// Parses the JSON form of the control API: an object with `kind`, optional `value` and the spec's keys
    /// (numbers may be JSON numbers).
    pub fn from_json(value: &Value) -> Result<Self, FaultSpecError> {
        let error = |reason: &str| FaultSpecError {
            spec: value.to_string(),
            reason: reason.to_owned(),
        };
        let Value::Object(map) = value else {
            return Err(error("expected a JSON object"));
        };
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let kind = map
            .get("kind")
            .and_then(text)
            .ok_or_else(|| error("`kind` is missing"))?;
        let mut spec = match map.get("value").and_then(text) {
            Some(v) => format!("{kind}={v}"),
            None => kind,
        };
        for (key, v) in map {
            if key == "kind" || key == "value" {
                continue;
            }
            let v = text(v).ok_or_else(|| error(&format!("`{key}` must be a string or number")))?;
            if v.contains(',') {
                return Err(error(&format!("`{key}` must not contain a comma")));
            }
            spec.push_str(&format!(",{key}={v}"));
        }
        spec.parse()
    }

    fn targets(&self) -> Vec<Target> {
        self.on
            .clone()
            .unwrap_or_else(|| self.kind.default_targets())
    }

    fn matches(&self, probe: &Probe<'_>) -> bool {
        let same = |want: &Option<String>, got: Option<&str>| {
            want.as_deref()
                .is_none_or(|w| got.is_some_and(|g| g.eq_ignore_ascii_case(w)))
        };
        self.targets().contains(&probe.target)
            && same(&self.tenant, probe.tenant)
            && same(&self.client, probe.client)
            && same(&self.grant, probe.grant)
            && same(&self.endpoint, probe.endpoint)
            && self.scope.as_deref().is_none_or(|w| {
                probe
                    .scope
                    .is_some_and(|g| normalize_resource(g) == normalize_resource(w))
            })
            && self
                .path
                .as_deref()
                .is_none_or(|p| probe.path.starts_with(p))
            && match (&self.kind, probe.action) {
                (FaultKind::Deny { action }, Some(got)) => *action == got,
                (FaultKind::Deny { .. }, None) => false,
                _ => true,
            }
    }
}

/// A scope or resource reduced to what identifies the resource: `https://ml.azure.com/.default`,
/// `https://ml.azure.com/` and `https://ml.azure.com` are the same.
pub(crate) fn normalize_resource(scope: &str) -> &str {
    let scope = scope.strip_suffix("/.default").unwrap_or(scope);
    scope.trim_end_matches('/')
}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let error = |reason: String| FaultSpecError {
            spec: text.to_owned(),
            reason,
        };
        let mut parts = text.split(',').map(str::trim);
        let head = parts.next().unwrap_or_default();
        let (kind, value) = match head.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (head, None),
        };
        let duration = |what: &str, v: Option<&str>| -> Result<Duration, FaultSpecError> {
            let v = v.ok_or_else(|| error(format!("`{kind}` needs a {what}, e.g. `{kind}=2s`")))?;
            humantime::parse_duration(v)
                .map_err(|e| error(format!("`{v}` is not a duration ({e}); e.g. 250ms, 2s, 5m")))
        };
        let kind = match (kind, value) {
            ("conditional-access" | "ca" | "53003", None) => FaultKind::ConditionalAccess,
            ("mfa" | "50079", None) => FaultKind::Mfa,
            ("invalid-client" | "7000215", None) => FaultKind::InvalidClient,
            ("throttle" | "429", v) => FaultKind::Throttle {
                retry_after: match v {
                    None => 5,
                    Some(v) => v
                        .parse()
                        .map_err(|_| error(format!("`{v}` is not a whole number of seconds")))?,
                },
            },
            ("status", v) => {
                let code = match v {
                    None => 503,
                    Some(v) => v
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (400..=599).contains(c))
                        .ok_or_else(|| error(format!("`{v}` is not a status from 400 to 599")))?,
                };
                FaultKind::Status { code }
            }
            ("latency", v) => FaultKind::Latency {
                delay: duration("duration", v)?,
            },
            ("lifetime", v) => {
                let lifetime = duration("duration", v)?;
                if lifetime < Duration::from_secs(1) {
                    return Err(error("a token lifetime is at least 1s".to_owned()));
                }
                FaultKind::Lifetime { lifetime }
            }
            ("cae", v) => FaultKind::Cae {
                demand: match v {
                    None | Some("revoke") => CaeDemand::Revoke,
                    Some(v) => match v.strip_prefix("acrs:") {
                        Some(value) if is_simple(value) => CaeDemand::Acrs(value.to_owned()),
                        _ => {
                            return Err(error(format!(
                                "`cae={v}`: the value is `revoke` or `acrs:<value>` (e.g. acrs:c1)"
                            )));
                        }
                    },
                },
            },
            ("deny", Some(v)) => FaultKind::Deny {
                action: ArmAction::ALL
                    .into_iter()
                    .find(|a| a.name() == v.to_ascii_lowercase())
                    .ok_or_else(|| {
                        error(format!(
                            "`deny={v}`: one of read, listkeys, token, regeneratekeys, score"
                        ))
                    })?,
            },
            ("deny", None) => {
                return Err(error(
                    "`deny` needs an action: read, listkeys, token, regeneratekeys or score"
                        .to_owned(),
                ));
            }
            (
                "conditional-access" | "ca" | "53003" | "mfa" | "50079" | "invalid-client"
                | "7000215",
                Some(_),
            ) => return Err(error(format!("`{kind}` takes no value"))),
            (other, _) => {
                return Err(error(format!(
                    "unknown kind `{other}`: conditional-access, mfa, invalid-client, throttle, status, latency, lifetime, cae or deny"
                )));
            }
        };
        let mut spec = FaultSpec::new(kind);
        for part in parts {
            let Some((key, v)) = part.split_once('=') else {
                return Err(error(format!("`{part}` is not key=value")));
            };
            let (key, v) = (key.trim(), v.trim());
            if v.is_empty() {
                return Err(error(format!("`{key}` is empty")));
            }
            let number = || {
                v.parse::<u32>()
                    .map_err(|_| error(format!("`{key}={v}` is not a whole number")))
            };
            match key {
                // Repeatable: `on=token,on=imds` applies to both.
                "on" => {
                    let targets = Target::parse(v).ok_or_else(|| {
                        error(format!(
                            "`on={v}`: one of token, authorize, devicecode, imds, msi, arm, upstream, scoring, all"
                        ))
                    })?;
                    let on = spec.on.get_or_insert_with(Vec::new);
                    for t in targets {
                        if !on.contains(&t) {
                            on.push(t);
                        }
                    }
                }
                "tenant" => spec.tenant = Some(v.to_owned()),
                "client" | "client_id" => spec.client = Some(v.to_owned()),
                "scope" | "resource" => spec.scope = Some(v.to_owned()),
                "grant" | "grant_type" => spec.grant = Some(v.to_owned()),
                "path" if v.starts_with('/') => spec.path = Some(v.to_owned()),
                "path" => return Err(error(format!("`path={v}` must start with /"))),
                "endpoint" => spec.endpoint = Some(v.to_owned()),
                "after" => spec.after = number()?,
                "count" => spec.count = Some(number()?),
                other => {
                    return Err(error(format!(
                        "unknown key `{other}`: on, tenant, client, scope, grant, path, endpoint, after, count"
                    )));
                }
            }
        }
        Ok(spec)
    }
}

/// Letters, digits, `-`, `_` and `.` (an `acrs` value goes into a header and a JSON string).
fn is_simple(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl fmt::Display for FaultSpec {
    /// The canonical spec (what `GET /__control/faults` shows).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FaultKind::ConditionalAccess => f.write_str("conditional-access")?,
            FaultKind::Mfa => f.write_str("mfa")?,
            FaultKind::InvalidClient => f.write_str("invalid-client")?,
            FaultKind::Throttle { retry_after } => write!(f, "throttle={retry_after}")?,
            FaultKind::Status { code } => write!(f, "status={code}")?,
            FaultKind::Latency { delay } => {
                write!(f, "latency={}", humantime::format_duration(*delay))?;
            }
            FaultKind::Lifetime { lifetime } => {
                write!(f, "lifetime={}", humantime::format_duration(*lifetime))?;
            }
            FaultKind::Cae {
                demand: CaeDemand::Revoke,
            } => f.write_str("cae=revoke")?,
            FaultKind::Cae {
                demand: CaeDemand::Acrs(v),
            } => write!(f, "cae=acrs:{v}")?,
            FaultKind::Deny { action } => write!(f, "deny={}", action.name())?,
        }
        let targets: Vec<&str> = self.targets().iter().map(|t| t.name()).collect();
        if targets.len() == Target::ALL.len() {
            f.write_str(",on=all")?;
        } else {
            for t in targets {
                write!(f, ",on={t}")?;
            }
        }
        let filters = [
            ("tenant", &self.tenant),
            ("client", &self.client),
            ("scope", &self.scope),
            ("grant", &self.grant),
            ("path", &self.path),
            ("endpoint", &self.endpoint),
        ];
        for (key, value) in filters {
            if let Some(v) = value {
                write!(f, ",{key}={v}")?;
            }
        }
        if self.after > 0 {
            write!(f, ",after={}", self.after)?;
        }
        if let Some(n) = self.count {
            write!(f, ",count={n}")?;
        }
        Ok(())
    }
}

// === impl Faults ===

impl Faults {
    /// Adds a rule; returns its id.
    pub(crate) fn add(&self, spec: FaultSpec) -> u64 {
        let mut rules = lock(&self.inner);
        rules.next_id += 1;
        let id = rules.next_id;
        rules.rules.push(Rule {
            id,
            spec,
            added_at: now_secs(),
            seen: 0,
            applied: 0,
        });
        id
    }

    /// Removes one rule; false if there was none with that id.
    pub(crate) fn remove(&self, id: u64) -> bool {
        let mut rules = lock(&self.inner);
        let before = rules.rules.len();
        rules.rules.retain(|r| r.id != id);
        rules.rules.len() != before
    }

    /// Removes every rule.
    pub(crate) fn clear(&self) {
        lock(&self.inner).rules.clear();
    }

    /// The rules as the control API lists them.
    pub(crate) fn list(&self) -> Value {
        let rules = lock(&self.inner);
        Value::Array(rules.rules.iter().map(Rule::to_json).collect())
    }

    /// One rule as the control API shows it.
    pub(crate) fn get(&self, id: u64) -> Option<Value> {
        let rules = lock(&self.inner);
        rules.rules.iter().find(|r| r.id == id).map(Rule::to_json)
    }

    /// [`Faults::decide`], then the decided latency waited out before the caller answers.
    pub(crate) async fn decide_and_wait(&self, probe: &Probe<'_>) -> Decision {
        let decision = self.decide(probe);
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        decision
    }

    /// Decides what `probe` gets. Failures and latency count as applied here; a claims challenge counts only when
    /// it is actually sent ([`Faults::challenged`]).
    pub(crate) fn decide(&self, probe: &Probe<'_>) -> Decision {
        let mut rules = lock(&self.inner);
        let mut decision = Decision::default();
        for rule in &mut rules.rules {
            if !rule.spec.matches(probe) {
                continue;
            }
            let exhausted = rule.spec.count.is_some_and(|n| rule.applied >= n);
            let is_failure = rule.spec.kind.is_failure();
            if exhausted || (is_failure && decision.failure.is_some()) {
                continue;
            }
            rule.seen = rule.seen.saturating_add(1);
            if rule.seen <= rule.spec.after {
                continue;
            }
            match &rule.spec.kind {
                FaultKind::Latency { delay } => {
                    decision.delay += *delay;
                    rule.applied += 1;
                }
                FaultKind::Lifetime { lifetime } => {
                    if decision.lifetime.is_none() {
                        decision.lifetime = Some(*lifetime);
                        rule.applied += 1;
                    }
                }
                FaultKind::Cae { demand } => {
                    if decision.cae.is_none() {
                        decision.cae = Some(Challenge {
                            rule: rule.id,
                            demand: demand.clone(),
                            // Whole seconds: a token issued in the same second as the revocation is not after it.
                            not_before: rule.added_at + 1,
                        });
                    }
                }
                kind => {
                    decision.failure = Some(kind.clone());
                    rule.applied += 1;
                }
            }
        }
        decision
    }

    /// Counts a claims challenge the rule `id` caused.
    pub(crate) fn challenged(&self, id: u64) {
        if let Some(rule) = lock(&self.inner).rules.iter_mut().find(|r| r.id == id) {
            rule.applied += 1;
        }
    }
}

// === impl Rule ===

impl Rule {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "spec": self.spec.to_string(),
            "seen": self.seen,
            "applied": self.applied,
            "remaining": self.spec.count.map(|n| n.saturating_sub(self.applied)),
        })
    }
}

// === impl Challenge ===

impl Challenge {
    /// The claims the challenge demands, as the JSON Entra ID expects back in `claims=`.
    pub(crate) fn claims(&self) -> Value {
        match &self.demand {
            CaeDemand::Revoke => json!({"access_token": {
                "nbf": {"essential": true, "value": self.not_before.to_string()},
                "xms_caeerror": {"value": "10012"},
            }}),
            CaeDemand::Acrs(value) => {
                json!({"access_token": {"acrs": {"essential": true, "value": value}}})
            }
        }
    }

    /// Whether a token with these claims satisfies the demand.
    pub(crate) fn satisfied_by(&self, claims: &serde_json::Map<String, Value>) -> bool {
        match &self.demand {
            CaeDemand::Revoke => claims
                .get("nbf")
                .and_then(Value::as_i64)
                .is_some_and(|nbf| nbf >= self.not_before),
            CaeDemand::Acrs(value) => claims
                .get("acrs")
                .and_then(Value::as_array)
                .is_some_and(|acrs| acrs.iter().any(|a| a.as_str() == Some(value))),
        }
    }
}

/// The wall clock in Unix seconds.
pub(crate) fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(target: Target) -> Probe<'static> {
        Probe {
            target,
            tenant: Some("contoso"),
            client: Some("app"),
            scope: Some("https://ml.azure.com/.default"),
            grant: Some("client_credentials"),
            path: "/echo/x",
            endpoint: None,
            action: None,
        }
    }

    #[test]
    fn specs_parse_and_print_canonically() {
        let cases = [
            ("ca", "conditional-access,on=token"),
            (
                "mfa,tenant=contoso,count=2",
                "mfa,on=token,tenant=contoso,count=2",
            ),
            ("throttle", "throttle=5,on=token"),
            ("throttle=30,on=imds,after=1", "throttle=30,on=imds,after=1"),
            ("status=500,on=arm", "status=500,on=arm"),
            (
                "latency=2s,on=upstream,path=/slow",
                "latency=2s,on=upstream,path=/slow",
            ),
            (
                "lifetime=30s",
                "lifetime=30s,on=token,on=imds,on=msi,on=arm",
            ),
            ("cae", "cae=revoke,on=upstream"),
            ("cae=acrs:c1,on=arm", "cae=acrs:c1,on=arm"),
            ("deny=listkeys", "deny=listkeys,on=arm"),
            ("deny=score", "deny=score,on=scoring"),
            ("status,on=all", "status=503,on=all"),
        ];
        for (input, canonical) in cases {
            let spec: FaultSpec = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(spec.to_string(), canonical, "{input}");
            // The canonical form parses back to the same rule.
            let again: FaultSpec = spec.to_string().parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(again.to_string(), canonical);
        }
    }

    #[test]
    fn bad_specs_name_the_problem() {
        for (input, needle) in [
            ("explode", "unknown kind `explode`"),
            ("status=200", "from 400 to 599"),
            ("latency", "needs a duration"),
            ("latency=fast", "not a duration"),
            ("lifetime=10ms", "at least 1s"),
            ("throttle=soon", "whole number of seconds"),
            ("mfa=1", "takes no value"),
            ("cae=acrs:c 1", "acrs:<value>"),
            ("deny", "needs an action"),
            ("deny=delete", "one of read"),
            ("mfa,on=moon", "`on=moon`"),
            ("mfa,colour=red", "unknown key `colour`"),
            ("mfa,path=x", "must start with /"),
            ("mfa,count=many", "not a whole number"),
            ("mfa,tenant", "not key=value"),
        ] {
            let e = input.parse::<FaultSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn the_json_form_is_the_same_rule() {
        let spec = FaultSpec::from_json(
            &json!({"kind": "throttle", "value": 30, "on": "imds", "count": 2}),
        )
        .unwrap();
        assert_eq!(spec, "throttle=30,on=imds,count=2".parse().unwrap());
        assert!(FaultSpec::from_json(&json!({"value": 1})).is_err());
        assert!(FaultSpec::from_json(&json!({"kind": "mfa", "tenant": "a,b"})).is_err());
        assert!(FaultSpec::from_json(&json!(["mfa"])).is_err());
    }

    #[test]
    fn filters_after_and_count_decide_which_requests_fail() {
        let faults = Faults::default();
        faults.add("mfa,tenant=other".parse().unwrap());
        faults.add(
            "throttle=7,scope=https://ml.azure.com/,after=1,count=2"
                .parse()
                .unwrap(),
        );
        let answers: Vec<Option<FaultKind>> = (0..5)
            .map(|_| faults.decide(&probe(Target::Token)).failure)
            .collect();
        let throttle = Some(FaultKind::Throttle { retry_after: 7 });
        assert_eq!(answers, [None, throttle.clone(), throttle, None, None]);
        // Another target is untouched.
        assert!(faults.decide(&probe(Target::Imds)).failure.is_none());
        let list = faults.list();
        assert_eq!(list[1]["applied"], 2);
        assert_eq!(list[1]["remaining"], 0);
        assert_eq!(list[0]["seen"], 0);
    }

    #[test]
    fn shaping_rules_combine_with_a_failure() {
        let faults = Faults::default();
        faults.add("latency=1s".parse().unwrap());
        faults.add("latency=500ms".parse().unwrap());
        faults.add("lifetime=10s".parse().unwrap());
        let id = faults.add("conditional-access".parse().unwrap());
        faults.add("mfa".parse().unwrap());
        let d = faults.decide(&probe(Target::Token));
        assert_eq!(d.delay, Duration::from_millis(1500));
        assert_eq!(d.lifetime, Some(Duration::from_secs(10)));
        assert_eq!(d.failure, Some(FaultKind::ConditionalAccess));
        assert!(faults.remove(id));
        assert!(!faults.remove(id));
        assert_eq!(
            faults.decide(&probe(Target::Token)).failure,
            Some(FaultKind::Mfa)
        );
        faults.clear();
        assert!(faults.decide(&probe(Target::Token)).failure.is_none());
    }

    #[test]
    fn deny_rules_match_their_action_only() {
        let faults = Faults::default();
        faults.add("deny=listkeys".parse().unwrap());
        let mut p = probe(Target::Arm);
        p.action = Some(ArmAction::Token);
        assert!(faults.decide(&p).failure.is_none());
        p.action = Some(ArmAction::ListKeys);
        assert_eq!(
            faults.decide(&p).failure,
            Some(FaultKind::Deny {
                action: ArmAction::ListKeys
            })
        );
        assert_eq!(
            ArmAction::ListKeys.permission("workspaces/onlineEndpoints"),
            "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/listkeys/action"
        );
    }

    #[test]
    fn a_revocation_is_satisfied_by_tokens_from_after_it() {
        let faults = Faults::default();
        let id = faults.add("cae".parse().unwrap());
        let challenge = faults.decide(&probe(Target::Upstream)).cae.unwrap();
        assert_eq!(challenge.rule, id);
        let claims = |nbf: i64| {
            let mut m = serde_json::Map::new();
            m.insert("nbf".into(), nbf.into());
            m
        };
        assert!(!challenge.satisfied_by(&claims(challenge.not_before - 1)));
        assert!(challenge.satisfied_by(&claims(challenge.not_before)));
        assert_eq!(
            challenge.claims()["access_token"]["nbf"]["value"],
            challenge.not_before.to_string()
        );
        faults.challenged(id);
        assert_eq!(faults.list()[0]["applied"], 1);

        let step_up = Challenge {
            rule: 0,
            demand: CaeDemand::Acrs("c1".into()),
            not_before: 0,
        };
        let mut with = serde_json::Map::new();
        with.insert("acrs".into(), json!(["c1"]));
        assert!(step_up.satisfied_by(&with));
        assert!(!step_up.satisfied_by(&claims(i64::MAX)));
    }
}
