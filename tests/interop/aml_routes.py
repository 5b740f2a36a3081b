"""Azure ML routes through the proxy, with real clients (run by tests/interop/aml_routes.sh).

- The real `mlflow` client, pointed at the proxy with the MLFLOW_TRACKING_URI that `aml-auth-proxy env` printed,
  creates an experiment, starts a run, logs a parameter and a metric, ends the run and finds it again, against the
  emulated workspace's MLflow tracking service (the workspace was read from a config.json).
- `requests` scores each online endpoint (AADToken, Key, AMLToken) at the SCORING_URI `env` printed.
- A key rotation (regenerateKeys through Resource Manager) costs exactly one more listKeys, and the next request
  succeeds with the new key.
- The key never appears in the proxy's trace-level log, its metrics or its answers.

Prints PASS/FAIL per check; exits 1 if any check failed.
"""

import json
import os
import re
import sys
import time
import uuid

import requests

ADMIN = os.environ["AML_ROUTES_ADMIN"]
WORK = os.environ["AML_ROUTES_WORK"]
EMULATOR = json.load(open(os.environ["AML_ROUTES_EMULATOR"]))
LOG = os.environ["AML_ROUTES_LOG"]

failures = []


def check(name, condition, detail=""):
    if condition:
        print(f"PASS [aml-routes] {name}")
    else:
        failures.append(name)
        print(f"FAIL [aml-routes] {name}: {detail}")


def env_lines(route):
    """The variables `aml-auth-proxy env --route ROUTE` printed (`export NAME='value'`)."""
    values = {}
    for line in open(os.path.join(WORK, f"env-{route}")):
        m = re.fullmatch(r"export ([A-Z_]+)='(.*)'\n?", line)
        if m:
            values[m.group(1)] = m.group(2)
    return values


def arm_token():
    """A Resource Manager token from the emulated Entra ID (any secret is accepted there)."""
    r = requests.post(
        f"{EMULATOR['authority_host']}/interop-tenant/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": "22222222-0000-0000-0000-000000000000",
              "client_secret": "test-harness", "scope": "https://management.azure.com/.default"},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()["access_token"]


def endpoint_url(name, action):
    ws = EMULATOR["workspace"]
    return f"{EMULATOR['resource_manager']}{ws['id']}/onlineEndpoints/{name}/{action}?api-version=2024-04-01"


def list_keys_calls():
    stats = requests.get(EMULATOR["stats"], timeout=10).json()
    return stats["arm_requests"]["by_operation"].get("list_keys", 0)


# === readiness: every route resolved and holding its credential ===
ready = requests.get(f"{ADMIN}/readyz", timeout=10)
for _ in range(100):
    if ready.status_code == 200:
        break
    time.sleep(0.1)
    ready = requests.get(f"{ADMIN}/readyz", timeout=10)
check("readyz: 200 once every Azure ML route is resolved", ready.status_code == 200, ready.text)
check("readyz names all four routes",
      sorted(r["route"] for r in ready.json().get("routes", [])) == ["ep-aad", "ep-amltoken", "ep-key", "ws"],
      ready.text)

# === MLflow through the workspace route ===
ws_env = env_lines("ws")
tracking = ws_env.get("MLFLOW_TRACKING_URI", "")
ws = EMULATOR["workspace"]
check("env prints MLFLOW_TRACKING_URI under the route, with the workspace's tracking path",
      tracking.endswith(f"/ws/mlflow/v1.0{ws['id']}") and tracking.startswith("http://127.0.0.1:"), tracking)
os.environ["MLFLOW_TRACKING_URI"] = tracking

import mlflow  # noqa: E402  (after MLFLOW_TRACKING_URI is set, as a user's shell would have it)
from mlflow.tracking import MlflowClient  # noqa: E402

name = f"interop-{uuid.uuid4().hex[:8]}"
experiment_id = mlflow.create_experiment(name)
check("mlflow.create_experiment through the proxy", bool(experiment_id), experiment_id)
mlflow.set_experiment(name)
with mlflow.start_run(run_name="through-the-proxy") as run:
    mlflow.log_param("learning_rate", 0.01)
    mlflow.log_metric("loss", 0.75, step=0)
    mlflow.log_metric("loss", 0.25, step=1)
    run_id = run.info.run_id
client = MlflowClient()
finished = client.get_run(run_id)
check("the run ended FINISHED", finished.info.status == "FINISHED", finished.info.status)
check("the run's latest metric and its parameter", finished.data.metrics.get("loss") == 0.25
      and finished.data.params.get("learning_rate") == "0.01", f"{finished.data}")
history = client.get_metric_history(run_id, "loss")
check("the metric's history has both steps", sorted((m.step, m.value) for m in history) == [(0, 0.75), (1, 0.25)],
      f"{history}")
found = client.search_runs([experiment_id])
check("search_runs finds the run", [r.info.run_id for r in found] == [run_id], f"{found}")
check("get_experiment_by_name finds the experiment",
      client.get_experiment_by_name(name).experiment_id == experiment_id)

# === scoring each online endpoint ===
expected = {"ep-aad": "AADToken", "ep-key": "Key", "ep-amltoken": "AMLToken"}
for route, mode in expected.items():
    scoring = env_lines(route).get("SCORING_URI", "")
    check(f"env prints SCORING_URI for {route}", scoring.endswith(f"/endpoints/{route}/score"), scoring)
    r = requests.post(scoring, json={"input_data": [[1, 2, 3]]}, timeout=20)
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    check(f"requests scores {route} ({mode}) through the proxy",
          r.status_code == 200 and body.get("auth_mode") == mode and body.get("endpoint") == route
          and json.loads(body.get("body") or "{}") == {"input_data": [[1, 2, 3]]},
          f"{r.status_code} {r.text[:400]}")

# === key rotation: one more listKeys, the next request succeeds ===
token = arm_token()
headers = {"Authorization": f"Bearer {token}"}
old_key = requests.post(endpoint_url("ep-key", "listKeys"), headers=headers, timeout=10).json()["primaryKey"]
before = list_keys_calls()
rotated = requests.post(endpoint_url("ep-key", "regenerateKeys"), headers=headers, json={"keyType": "Primary"},
                        timeout=10)
check("regenerateKeys accepted by Resource Manager", rotated.status_code in (200, 202), rotated.text)
new_key = requests.post(endpoint_url("ep-key", "listKeys"), headers=headers, timeout=10).json()["primaryKey"]
check("the primary key changed", new_key != old_key)
mid = list_keys_calls()  # our own listKeys above counted too
scoring = env_lines("ep-key")["SCORING_URI"]
r = requests.post(scoring, json={"after": "rotation"}, timeout=20)
check("after the rotation the next request succeeds with the new primary key",
      r.status_code == 200 and r.json().get("authorization", {}).get("key") == "primary",
      f"{r.status_code} {r.text[:300]}")
after = list_keys_calls()
check("the rotation cost exactly one listKeys by the proxy", after - mid == 1, f"{before} {mid} {after}")

# === the key is a secret: not in the trace log, the metrics or any answer ===
metrics = requests.get(f"{ADMIN}/metrics", timeout=10).text
log = open(LOG, encoding="utf-8", errors="replace").read()
wrong = requests.get(scoring, timeout=20)  # a method the endpoint route allows, answered by the endpoint
for secret, what in ((old_key, "old key"), (new_key, "new key")):
    check(f"the {what} is not in the trace-level log", secret not in log)
    check(f"the {what} is not in /metrics", secret not in metrics)
    check(f"the {what} is not in an answer", secret not in wrong.text and secret not in r.text)
check("the proxy logged the rotation (without the key)", "endpoint refused its key or token" in log)

print(f"aml-routes: {len(failures)} failed" if failures else "aml-routes: all passed")
sys.exit(1 if failures else 0)
