//! The workspace's MLflow tracking service, as the workspace data plane serves it under the workspace's
//! `mlFlowTrackingUri` path: `/mlflow/v1.0/subscriptions/{s}/resourceGroups/{rg}/providers/
//! Microsoft.MachineLearningServices/workspaces/{ws}/api/2.0/mlflow/…`. An in-memory store with the REST calls
//! the `mlflow` client makes to create and find experiments, create, update, find and read runs, and log metrics,
//! parameters and tags — enough for `mlflow.set_experiment`, `start_run`, `log_metric`, `log_param`,
//! `search_runs` and `MlflowClient.get_metric_history` against the emulator. Errors use MLflow's shape
//! (`{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": …}`). The experiment `0` (`Default`) exists from the
//! start, as on an MLflow server.
//!
//! | method | path after `api/2.0/mlflow/` | answer |
//! |---|---|---|
//! | POST | `experiments/create` | `{experiment_id}`; a taken name is 400 `RESOURCE_ALREADY_EXISTS` |
//! | GET | `experiments/get`, `experiments/get-by-name` | `{experiment}` |
//! | GET, POST | `experiments/search` | `{experiments}` (`filter` ignored) |
//! | POST | `runs/create`, `runs/update` | `{run}`, `{run_info}` |
//! | GET | `runs/get` | `{run}` |
//! | POST | `runs/log-metric`, `runs/log-parameter`, `runs/set-tag`, `runs/log-batch`, `runs/log-inputs` | `{}` |
//! | GET, POST | `runs/search` | `{runs}` of the given experiments, newest first (`filter` ignored) |
//! | GET | `metrics/get-history` | `{metrics}` |

use std::collections::BTreeMap;
use std::sync::Mutex;

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::faults::now_secs;
use super::serve::{self, Body};

/// The tracking store.
#[derive(Debug)]
pub(crate) struct Store {
    inner: Mutex<Data>,
}

#[derive(Debug, Default)]
struct Data {
    experiments: Vec<Experiment>,
    runs: Vec<Run>,
}

#[derive(Debug)]
struct Experiment {
    id: String,
    name: String,
    created_ms: i64,
    tags: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Run {
    id: String,
    experiment_id: String,
    name: String,
    user: String,
    status: String,
    start_ms: i64,
    end_ms: Option<i64>,
    metrics: Vec<Metric>,
    params: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Metric {
    key: String,
    value: f64,
    timestamp: i64,
    step: i64,
}

type Answer = Result<Value, (StatusCode, &'static str, String)>;

// === impl Store ===

impl Default for Store {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Data {
                experiments: vec![Experiment {
                    id: "0".to_owned(),
                    name: "Default".to_owned(),
                    created_ms: now_ms(),
                    tags: BTreeMap::new(),
                }],
                runs: Vec::new(),
            }),
        }
    }
}

/// The MLflow call in `path`, if it is one under `tracking_path` (the workspace's tracking path).
pub(crate) fn call_of<'a>(path: &'a str, tracking_path: &str) -> Option<Result<&'a str, ()>> {
    let (scope, call) = path.split_once("/api/2.0/mlflow/")?;
    Some(if scope.eq_ignore_ascii_case(tracking_path) {
        Ok(call)
    } else {
        Err(())
    })
}

impl Store {
    /// Answers MLflow call `call` (the path after `api/2.0/mlflow/`) with `query` and JSON `body`.
    pub(crate) fn handle(
        &self,
        method: &Method,
        call: &str,
        query: &[(String, String)],
        body: &[u8],
    ) -> Response<Body> {
        let mut args: serde_json::Map<String, Value> = if body.is_empty() {
            serde_json::Map::new()
        } else {
            match serde_json::from_slice(body) {
                Ok(Value::Object(map)) => map,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_PARAMETER_VALUE",
                        "the request body is not a JSON object".to_owned(),
                    );
                }
            }
        };
        for (k, v) in query {
            args.entry(k.clone())
                .or_insert_with(|| Value::String(v.clone()));
        }
        let mut data = crate::lock(&self.inner);
        let answer = match (method.as_str(), call) {
            ("POST", "experiments/create") => data.create_experiment(&args),
            ("GET", "experiments/get") => data
                .experiment(|e| Some(e.id.as_str()) == text(&args, "experiment_id"))
                .map(|e| json!({"experiment": e})),
            ("GET", "experiments/get-by-name") => data
                .experiment(|e| Some(e.name.as_str()) == text(&args, "experiment_name"))
                .map(|e| json!({"experiment": e})),
            ("GET" | "POST", "experiments/search") => Ok(json!({
                "experiments": data.experiments.iter().map(Experiment::to_json).collect::<Vec<_>>()
            })),
            ("POST", "runs/create") => data.create_run(&args),
            ("GET", "runs/get") => data
                .run_mut(&args)
                .map(|r| json!({"run": r.to_json()})),
            ("POST", "runs/update") => data.run_mut(&args).map(|r| {
                if let Some(s) = text(&args, "status") {
                    s.clone_into(&mut r.status);
                }
                if let Some(end) = number(&args, "end_time") {
                    r.end_ms = Some(end as i64);
                }
                if let Some(name) = text(&args, "run_name") {
                    name.clone_into(&mut r.name);
                }
                json!({"run_info": r.info()})
            }),
            ("POST", "runs/log-metric") => data.run_mut(&args).and_then(|r| {
                r.metrics.push(metric(&Value::Object(args.clone()))?);
                Ok(json!({}))
            }),
            ("POST", "runs/log-parameter") => data.run_mut(&args).and_then(|r| {
                let (k, v) = pair(&Value::Object(args.clone()))?;
                r.params.insert(k, v);
                Ok(json!({}))
            }),
            ("POST", "runs/set-tag") => data.run_mut(&args).and_then(|r| {
                let (k, v) = pair(&Value::Object(args.clone()))?;
                r.tags.insert(k, v);
                Ok(json!({}))
            }),
            ("POST", "runs/log-batch") => data.run_mut(&args).and_then(|r| {
                let list = |key: &str| args.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
                for m in list("metrics") {
                    r.metrics.push(metric(&m)?);
                }
                for p in list("params") {
                    let (k, v) = pair(&p)?;
                    r.params.insert(k, v);
                }
                for t in list("tags") {
                    let (k, v) = pair(&t)?;
                    r.tags.insert(k, v);
                }
                Ok(json!({}))
            }),
            ("POST", "runs/log-inputs") => data.run_mut(&args).map(|_| json!({})),
            ("GET" | "POST", "runs/search") => Ok(data.search_runs(&args)),
            ("GET", "metrics/get-history") => data.run_mut(&args).map(|r| {
                let key = text(&args, "metric_key").unwrap_or_default();
                json!({"metrics": r.metrics.iter().filter(|m| m.key == key).map(Metric::to_json).collect::<Vec<_>>()})
            }),
            _ => Err((
                StatusCode::NOT_FOUND,
                "ENDPOINT_NOT_FOUND",
                format!("the emulator's MLflow tracking service has no {method} {call}"),
            )),
        };
        match answer {
            Ok(value) => serve::json(StatusCode::OK, &value),
            Err((status, code, message)) => error(status, code, message),
        }
    }
}

// === impl Data ===

impl Data {
    fn experiment(
        &self,
        pick: impl Fn(&Experiment) -> bool,
    ) -> Result<Value, (StatusCode, &'static str, String)> {
        self.experiments
            .iter()
            .find(|e| pick(e))
            .map(Experiment::to_json)
            .ok_or_else(|| not_found("experiment"))
    }

    fn create_experiment(&mut self, args: &serde_json::Map<String, Value>) -> Answer {
        let name = text(args, "name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("name"))?;
        if self.experiments.iter().any(|e| e.name == name) {
            return Err((
                StatusCode::BAD_REQUEST,
                "RESOURCE_ALREADY_EXISTS",
                format!("Experiment '{name}' already exists."),
            ));
        }
        let id = self.experiments.len().to_string();
        let tags = args
            .get("tags")
            .and_then(Value::as_array)
            .map(|tags| tags.iter().filter_map(|t| pair(t).ok()).collect())
            .unwrap_or_default();
        self.experiments.push(Experiment {
            id: id.clone(),
            name: name.to_owned(),
            created_ms: now_ms(),
            tags,
        });
        Ok(json!({"experiment_id": id}))
    }

    fn create_run(&mut self, args: &serde_json::Map<String, Value>) -> Answer {
        let experiment_id = text(args, "experiment_id").unwrap_or("0").to_owned();
        if !self.experiments.iter().any(|e| e.id == experiment_id) {
            return Err(not_found("experiment"));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tags: BTreeMap<String, String> = args
            .get("tags")
            .and_then(Value::as_array)
            .map(|tags| tags.iter().filter_map(|t| pair(t).ok()).collect())
            .unwrap_or_default();
        let name = text(args, "run_name")
            .map(str::to_owned)
            .or_else(|| tags.get("mlflow.runName").cloned())
            .unwrap_or_else(|| format!("run-{}", &id[..8]));
        let run = Run {
            id,
            experiment_id,
            name,
            user: text(args, "user_id").unwrap_or_default().to_owned(),
            status: "RUNNING".to_owned(),
            start_ms: number(args, "start_time").map_or_else(now_ms, |t| t as i64),
            end_ms: None,
            metrics: Vec::new(),
            params: BTreeMap::new(),
            tags,
        };
        let value = json!({"run": run.to_json()});
        self.runs.push(run);
        Ok(value)
    }

    fn run_mut(
        &mut self,
        args: &serde_json::Map<String, Value>,
    ) -> Result<&mut Run, (StatusCode, &'static str, String)> {
        let id = text(args, "run_id")
            .or_else(|| text(args, "run_uuid"))
            .ok_or_else(|| invalid("run_id"))?;
        self.runs
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| not_found("run"))
    }

    fn search_runs(&self, args: &serde_json::Map<String, Value>) -> Value {
        let ids: Vec<String> = match args.get("experiment_ids") {
            Some(Value::Array(ids)) => ids
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(id)) => vec![id.clone()],
            _ => Vec::new(),
        };
        let max = number(args, "max_results").map_or(1000, |n| n as usize);
        let mut runs: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| ids.is_empty() || ids.contains(&r.experiment_id))
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.start_ms));
        json!({"runs": runs.into_iter().take(max).map(Run::to_json).collect::<Vec<_>>()})
    }
}

// === impl Experiment, Run, Metric ===

impl Experiment {
    fn to_json(&self) -> Value {
        json!({
            "experiment_id": self.id,
            "name": self.name,
            "artifact_location": format!("mlflow-artifacts:/{}", self.id),
            "lifecycle_stage": "active",
            "creation_time": self.created_ms,
            "last_update_time": self.created_ms,
            "tags": tags_json(&self.tags),
        })
    }
}

impl Run {
    fn info(&self) -> Value {
        let mut info = json!({
            "run_id": self.id,
            "run_uuid": self.id,
            "run_name": self.name,
            "experiment_id": self.experiment_id,
            "user_id": self.user,
            "status": self.status,
            "start_time": self.start_ms,
            "artifact_uri": format!("mlflow-artifacts:/{}/{}/artifacts", self.experiment_id, self.id),
            "lifecycle_stage": "active",
        });
        if let Some(end) = self.end_ms {
            info["end_time"] = json!(end);
        }
        info
    }

    fn to_json(&self) -> Value {
        // The latest value of each metric, as MLflow reports it in a run.
        let mut latest: BTreeMap<&str, &Metric> = BTreeMap::new();
        for m in &self.metrics {
            let newer = latest
                .get(m.key.as_str())
                .is_none_or(|l| (m.step, m.timestamp) >= (l.step, l.timestamp));
            if newer {
                latest.insert(&m.key, m);
            }
        }
        json!({
            "info": self.info(),
            "data": {
                "metrics": latest.values().map(|m| m.to_json()).collect::<Vec<_>>(),
                "params": tags_json(&self.params),
                "tags": tags_json(&self.tags),
            },
            "inputs": {},
        })
    }
}

impl Metric {
    fn to_json(&self) -> Value {
        json!({"key": self.key, "value": self.value, "timestamp": self.timestamp, "step": self.step})
    }
}

fn tags_json(map: &BTreeMap<String, String>) -> Vec<Value> {
    map.iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

/// A metric from `{key, value, timestamp, step}` (numbers may come as strings, as proto JSON allows).
fn metric(v: &Value) -> Result<Metric, (StatusCode, &'static str, String)> {
    let obj = v.as_object().ok_or_else(|| invalid("metrics"))?;
    Ok(Metric {
        key: text(obj, "key").ok_or_else(|| invalid("key"))?.to_owned(),
        value: number(obj, "value").ok_or_else(|| invalid("value"))?,
        timestamp: number(obj, "timestamp").map_or_else(now_ms, |t| t as i64),
        step: number(obj, "step").map_or(0, |s| s as i64),
    })
}

/// A `{key, value}` pair.
fn pair(v: &Value) -> Result<(String, String), (StatusCode, &'static str, String)> {
    let obj = v.as_object().ok_or_else(|| invalid("key"))?;
    let key = text(obj, "key").ok_or_else(|| invalid("key"))?;
    let value = match obj.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Ok((key.to_owned(), value))
}

fn text<'a>(args: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

fn number(args: &serde_json::Map<String, Value>, key: &str) -> Option<f64> {
    match args.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn invalid(key: &str) -> (StatusCode, &'static str, String) {
    (
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
        format!("missing or invalid value for '{key}'"),
    )
}

fn not_found(what: &str) -> (StatusCode, &'static str, String) {
    (
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
        format!("the {what} does not exist"),
    )
}

/// MLflow's error shape.
pub(crate) fn error(status: StatusCode, code: &str, message: String) -> Response<Body> {
    serve::json(status, &json!({"error_code": code, "message": message}))
}

fn now_ms() -> i64 {
    now_secs() * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiments_runs_and_metrics() {
        let store = Store::default();
        let call = |method: Method, call: &str, body: Value| {
            let response = store.handle(&method, call, &[], body.to_string().as_bytes());
            response.status()
        };
        assert_eq!(
            call(Method::POST, "experiments/create", json!({"name": "e"})),
            StatusCode::OK
        );
        assert_eq!(
            call(Method::POST, "experiments/create", json!({"name": "e"})),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(
                Method::GET,
                "experiments/get",
                json!({"experiment_id": "9"})
            ),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(Method::POST, "runs/create", json!({"experiment_id": "1"})),
            StatusCode::OK
        );
        let run_id = crate::lock(&store.inner).runs[0].id.clone();
        for (step, value) in [(0, 1.5), (1, 0.5)] {
            let m = json!({"run_id": run_id, "key": "loss", "value": value, "timestamp": 1, "step": step});
            assert_eq!(call(Method::POST, "runs/log-metric", m), StatusCode::OK);
        }
        let data = crate::lock(&store.inner);
        let run = data.runs[0].to_json();
        assert_eq!(run["data"]["metrics"][0]["value"], json!(0.5));
        assert_eq!(data.runs[0].metrics.len(), 2);
        drop(data);
        assert_eq!(call(Method::GET, "nope", json!({})), StatusCode::NOT_FOUND);
        assert_eq!(
            call_of("/mlflow/v1.0/x/api/2.0/mlflow/runs/get", "/mlflow/v1.0/X"),
            Some(Ok("runs/get"))
        );
        assert_eq!(
            call_of("/other/api/2.0/mlflow/runs/get", "/mlflow/v1.0/x"),
            Some(Err(()))
        );
        assert_eq!(call_of("/echo", "/mlflow/v1.0/x"), None);
    }
}
