#!/usr/bin/env bash
# Azure ML routes with real clients: aml-azure-emulator (the package's second binary) stands in for Entra ID,
# Resource Manager, a workspace (with its MLflow tracking service) and three online endpoints, one per auth mode.
# The proxy reads each endpoint's authMode and scoringUri, and the workspace (from a config.json, the file
# Workspace.from_config() reads) from the emulator's Resource Manager; `aml-auth-proxy env` prints
# MLFLOW_TRACKING_URI and SCORING_URI; tests/interop/aml_routes.py then drives the real `mlflow` client and
# `requests` through the proxy.
#
#   tests/interop/aml_routes.sh      (from anywhere; needs python3 and the CI venv, see .ci/python-venv.sh)
#
# Environment: BIN (default target/release/aml-auth-proxy, built if missing), EMULATOR (default
# target/release/aml-azure-emulator), CI_VENV, KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
label="aml routes"
# shellcheck source=tests/interop/common.sh
source tests/interop/common.sh
interop_setup aml-routes python3

"$emulator_bin" --port 0 > "$work/emulator.json" 2> "$work/emulator.err" &
emulator_pid=$!
for _ in $(seq 300); do [ -s "$work/emulator.json" ] && break; sleep 0.1; done
[ -s "$work/emulator.json" ] || { echo "aml routes: the emulator did not start"; cat "$work/emulator.err"; exit 1; }

# The workspace's config.json, as the studio's "Download config file" gives it.
python3 - "$work/emulator.json" "$work/config.json" <<'PY'
import json, sys
ws = json.load(open(sys.argv[1]))["workspace"]
json.dump({"subscription_id": ws["subscription_id"], "resource_group": ws["resource_group"],
           "workspace_name": ws["name"]}, open(sys.argv[2], "w"), indent=4)
PY
read -r authority arm sub rg ws < <(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); w=m["workspace"]; print(m["authority_host"], m["resource_manager"], w["subscription_id"], w["resource_group"], w["name"])' "$work/emulator.json")
# `env` prints the proxy's own address, so the proxy gets a fixed free port rather than port 0.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

endpoint() {
  printf '  - name: %s\n    path_prefix: /endpoints/%s\n    online_endpoint: { subscription_id: %s, resource_group: %s, workspace: %s, name: %s, auth: %s }\n' \
    "$1" "$1" "$sub" "$rg" "$ws" "$1" "$2"
}
umask 077
printf 'aml-routes-interop-secret\n' > "$work/sp-secret"
{
  cat <<EOF
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:0
authority_host: $authority
resource_manager: $arm
credentials:
  default:
    client_secret: { tenant_id: interop-tenant, client_id: 11111111-2222-3333-4444-555555555555, client_secret_file: $work/sp-secret }
routes:
  - name: ws
    path_prefix: /ws
    workspace: { config_file: $work/config.json }
EOF
  endpoint ep-aad auto
  endpoint ep-key key
  endpoint ep-amltoken auto
} > "$work/config.yaml"
umask 022

"$bin" check-config --config "$work/config.yaml" > "$work/check.out" || { cat "$work/check.out"; exit 1; }
"$bin" run --config "$work/config.yaml" --log-format json --log-level trace 2> "$work/proxy.log" &
proxy_pid=$!
admin=$(wait_listening "$work/proxy.log" admin)

# The shell lines of each route, as a user would `eval` them.
for route in ws ep-aad ep-key ep-amltoken; do
  "$bin" env --config "$work/config.yaml" --route "$route" > "$work/env-$route" \
    || { echo "aml routes: env --route $route failed"; exit 1; }
done

AML_ROUTES_ADMIN=http://$admin AML_ROUTES_WORK=$work AML_ROUTES_EMULATOR=$work/emulator.json \
  AML_ROUTES_LOG=$work/proxy.log "$venv/bin/python" tests/interop/aml_routes.py
