#!/usr/bin/env bash
# Checks deploy/ with the real tools of each ecosystem (run by .ci/run; needs promtool, see .ci/apt-tools.sh):
#   - Kubernetes manifests: kubernetes-validate --strict against Kubernetes 1.29 (the first with native sidecars
#     on by default) and the newest version the package bundles; the kustomization rendered by
#     `kubectl kustomize` (when kubectl is installed) and validated the same way;
#   - Dockerfile: hadolint, and BuildKit's own parser (the `dockerfile` package); `docker build` itself needs a
#     Docker engine, which CI does not have;
#   - Prometheus: `promtool check rules` and the rules' unit tests (`promtool test rules`);
#   - Grafana: the dashboard is JSON, and every PromQL expression in it passes `promtool check rules`.
# The consistency of the Dockerfile with the manifests is checked by `cargo nextest run` (tests/it/deploy.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash .ci/python-venv.sh)   # idempotent: reuses an up-to-date venv
py=$venv/bin/python
work=$(mktemp -d "${TMPDIR:-/tmp}/aml-auth-proxy-deploy-check.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "--- Kubernetes manifests"
manifests=()
for f in deploy/kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
newest=$("$py" - <<'PY'
import os, re, kubernetes_validate
schemas = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
found = [tuple(map(int, m.groups())) for m in (re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local-strict", n) for n in os.listdir(schemas)) if m]
print("%d.%d.%d" % max(found))
PY
)
echo "kubernetes-validate $("$venv/bin/kubernetes-validate" --version 2>&1 | tail -n1); versions 1.29.0 and $newest (newest bundled)"
for version in 1.29.0 "$newest"; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
  echo "ok: ${manifests[*]} against $version (strict)"
done
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize deploy/kubernetes > "$work/rendered.yaml"
  for version in 1.29.0 "$newest"; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$work/rendered.yaml"
  done
  echo "ok: kubectl kustomize deploy/kubernetes ($(grep -c '^kind:' "$work/rendered.yaml") resources) validates against 1.29.0 and $newest"
else
  echo "skipped: kubectl is not installed, so the kustomization was not rendered"
fi

echo "--- Dockerfile"
"$venv/bin/hadolint" deploy/Dockerfile
echo "ok: hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}') deploy/Dockerfile"
"$py" - deploy/Dockerfile <<'PY'
import sys, dockerfile
commands = dockerfile.parse_file(sys.argv[1])
stages = [c for c in commands if c.cmd == "FROM"]
assert len(stages) == 2, stages
print("ok: BuildKit's parser reads %d instructions in %d stages" % (len(commands), len(stages)))
PY

echo "--- Prometheus rules"
promtool check rules deploy/monitoring/prometheus-rules.yaml
(cd deploy/monitoring && promtool test rules prometheus-rules.test.yaml)

echo "--- Grafana dashboard"
"$py" - deploy/monitoring/grafana-dashboard.json "$work/dashboard-rules.yaml" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1], encoding="utf-8"))
panels = [p for p in dashboard["panels"] if p["type"] != "row"]
ids = [p["id"] for p in dashboard["panels"]]
assert len(ids) == len(set(ids)), "panel ids repeat"
assert dashboard["uid"] and dashboard["title"], "uid and title"
variables = {v["name"] for v in dashboard["templating"]["list"]}
exprs = [t["expr"] for p in panels for t in p["targets"]]
assert all(p["datasource"]["uid"] == "${datasource}" for p in panels), "every panel uses the datasource variable"
# Grafana's variables, as Grafana would substitute them, so promtool can parse each expression.
def substitute(expr):
    for name in variables:
        expr = expr.replace("$" + name, ".*")
    return expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, expr in enumerate(exprs):
        assert "$" not in substitute(expr), expr
        out.write("      - record: dashboard:expr_%d\n        expr: %s\n" % (i, json.dumps(substitute(expr))))
print("ok: %d panels, %d PromQL expressions" % (len(panels), len(exprs)))
PY
promtool check rules "$work/dashboard-rules.yaml"
