#!/usr/bin/env bash
# Interop suite: the release binary, driven by real, unmodified clients a legacy tool would be — curl (HTTP/1.1
# and --http2-prior-knowledge), Python requests, httpx over HTTP/2 and an azure-core PipelineClient with no
# authentication policy — against aml-azure-emulator (the package's second binary) in --tls mode: its Entra ID,
# and its echoing upstream over HTTPS with HTTP/2 by ALPN.
# It also scrapes the running proxy's /metrics through `promtool check metrics`, and checks that the metric
# names the alerting rules and the dashboard use exist.
#
#   tests/interop/run.sh            (from anywhere; needs curl, promtool and python3; see .ci/apt-tools.sh)
#
# Environment: BIN (default target/release/aml-auth-proxy, built if missing), EMULATOR (default
# target/release/aml-azure-emulator, built with it), CI_VENV (where the venv lives; see .ci/python-venv.sh),
# KEEP=1 keeps the work directory. Exits non-zero on any mismatch, after printing every failed check.
set -euo pipefail
cd "$(dirname "$0")/../.."
label="interop"
# shellcheck source=tests/interop/common.sh
source tests/interop/common.sh
interop_setup interop curl promtool python3
# expect_json NAME FILE EXPR: EXPR is a Python expression over `j` (the JSON in FILE) and `h` (the response
# headers in FILE.h, lower-case names), e.g. 'j["path"] == "/x" and h["x-a"] == "1"'.
expect_json() {
  local name=$1 file=$2 expr=$3
  if python3 - "$file" "$expr" <<'PY'
import json, sys
file, expr = sys.argv[1], sys.argv[2]
text = open(file, encoding="utf-8").read()
try:
    j = json.loads(text)
except ValueError:
    j = None
h = {}
try:
    for line in open(file + ".h", encoding="latin-1"):
        if ":" in line and not line.startswith("HTTP/"):
            k, v = line.split(":", 1)
            h[k.strip().lower()] = v.strip()
except FileNotFoundError:
    pass
sys.exit(0 if eval(expr) else 1)
PY
  then ok "$name"; else bad "$name" "expected $expr; got $(head -c 700 "$file") / headers: $(tr '\r\n' '  ' < "$file.h" 2>/dev/null | head -c 500)"; fi
}
# fetch FILE CURL-ARGS...: saves the body to FILE and the headers to FILE.h; prints "<status> <http version>".
fetch() {
  local file=$1
  shift
  curl -sS --max-time 20 -o "$file" -D "$file.h" -w '%{http_code} %{http_version}' "$@" || echo "curl-failed $?"
}
expect_status() {
  if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "expected '$3', got '$2'"; fi
}

# === the emulator and the proxy ===

# The tenant ca-blocked is refused by Conditional Access (AADSTS53003), every other one gets tokens.
"$emulator_bin" --port 0 --tls --ca-file "$work/ca.pem" --fault conditional-access,tenant=ca-blocked \
  > "$work/mock.json" 2> "$work/mock.err" &
mock_pid=$!
for _ in $(seq 300); do [ -s "$work/mock.json" ] && break; sleep 0.1; done
[ -s "$work/mock.json" ] || { echo "interop: the emulator did not start"; cat "$work/mock.err"; exit 1; }
read -r authority upstream ca_file < <(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["authority_host"], m["upstream"], m["ca_file"])' "$work/mock.json")

umask 077
printf 'interop-client-secret-value\n' > "$work/sp-secret"
cat > "$work/config.yaml" <<EOF
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
authority_host: $authority
tls:
  extra_ca_file: $ca_file
credentials:
  sp:
    client_secret: { tenant_id: interop-tenant, client_id: 11111111-2222-3333-4444-555555555555, client_secret_file: $work/sp-secret }
  blocked:
    client_secret: { tenant_id: ca-blocked, client_id: 11111111-2222-3333-4444-555555555555, client_secret_file: $work/sp-secret }
routes:
  - name: arm
    path_prefix: /
    upstream: $upstream
    scope: https://management.azure.com/.default
    credential: sp
  - name: scoring
    path_prefix: /score/my-endpoint
    strip_prefix: true
    upstream: $upstream/score
    scope: https://ml.azure.com/.default
    credential: sp
    allow: { methods: [POST] }
  - name: blocked
    path_prefix: /blocked
    upstream: $upstream
    scope: https://ml.azure.com/.default
    credential: blocked
EOF
umask 022

echo "interop: $("$bin" --version | tr '\n' ' ')"
if "$bin" check-config --config "$work/config.yaml" > "$work/check.out"; then ok "check-config accepts the interop configuration"; else bad "check-config" "$(cat "$work/check.out")"; fi

"$bin" run --config "$work/config.yaml" --log-format json --log-level debug 2> "$work/proxy.log" &
proxy_pid=$!
listening=$(wait_listening "$work/proxy.log" proxy admin)
read -r proxy_addr admin_addr <<< "$listening"
proxy=http://$proxy_addr
admin=http://$admin_addr
echo "interop: proxy $proxy, admin $admin, emulated Entra ID $authority, emulated upstream $upstream"

# Liveness at once; the two good routes' tokens soon (the blocked route never gets one).
if "$bin" probe "$admin/healthz"; then ok "probe /healthz (the exec probe the manifests use)"; else bad "probe /healthz" "exit $?"; fi
for _ in $(seq 100); do
  fetch "$work/ready" "$admin/readyz" > /dev/null
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if {r["route"] for r in j.get("routes", [])} >= {"arm", "scoring"} else 1)' "$work/ready" 2>/dev/null && break
  sleep 0.1
done
expect_json "readyz names the route whose token Conditional Access blocks" "$work/ready" \
  'j["ready"] is False and [m["route"] for m in j["missing"]] == ["blocked"] and j["missing"][0].get("code") == "ConditionalAccessBlocked"'
if ! "$bin" probe "$admin/readyz" 2> "$work/probe.err"; then ok "probe /readyz fails while a route has no token"; else bad "probe /readyz" "exit 0 while not ready"; fi

# === curl ===

status=$(fetch "$work/c1" --http1.1 -H 'Authorization: Bearer caller-token' "$proxy/subscriptions/sub-1/resourceGroups?api-version=2024-04-01&%24top=5&name=a%20b")
expect_status "curl HTTP/1.1: 200" "$status" "200 1.1"
expect_json "curl HTTP/1.1: path, query and the emulator's token (the caller's Authorization replaced)" "$work/c1" \
  'j["path"] == "/subscriptions/sub-1/resourceGroups" and j["query"] == "api-version=2024-04-01&%24top=5&name=a%20b" and j["authorization"]["claims"]["tid"] == "interop-tenant" and j["authorization"]["claims"]["aud"] == "https://management.azure.com" and j["authority"] == "'"${upstream#https://}"'"'

status=$(fetch "$work/c2" --http2-prior-knowledge "$proxy/subscriptions?api-version=2022-12-01")
expect_status "curl --http2-prior-knowledge: 200 over h2c" "$status" "200 2"
expect_json "curl h2c: echoed by the upstream over h2 (ALPN)" "$work/c2" \
  'j["path"] == "/subscriptions" and j["version"] == "HTTP/2.0" and j["authorization"]["claims"]["tid"] == "interop-tenant"'

status=$(fetch "$work/c3" --http1.1 -X POST -H 'content-type: application/json' --data '{"input_data": [[1, 2, 3]]}' "$proxy/score/my-endpoint")
expect_status "curl POST to the scoring route: 200" "$status" "200 1.1"
expect_json "curl POST: prefix stripped, body intact, Azure ML token" "$work/c3" \
  'j["path"] == "/score" and j["method"] == "POST" and json.loads(j["body"]) == {"input_data": [[1, 2, 3]]} and j["authorization"]["claims"]["aud"] == "https://ml.azure.com"'

status=$(fetch "$work/c4" "$proxy/score/my-endpoint")
expect_status "curl GET on a POST-only route: 405" "$status" "405 1.1"
expect_json "curl 405: the proxy's JSON error" "$work/c4" \
  'j["error"]["code"] == "MethodNotAllowed" and h["x-aml-auth-proxy-error"] == "MethodNotAllowed" and h["allow"] == "POST" and h["content-type"].startswith("application/json")'

status=$(fetch "$work/c5" -H 'Host: attacker.example' "$proxy/subscriptions")
expect_status "curl with a foreign Host: 421" "$status" "421 1.1"
expect_json "curl 421: HostNotAllowed" "$work/c5" 'j["error"]["code"] == "HostNotAllowed"'

status=$(fetch "$work/c6" "$proxy/blocked/models")
expect_status "curl on the route Conditional Access blocks: 403" "$status" "403 1.1"
expect_json "curl 403: ConditionalAccessBlocked with Entra ID's ids" "$work/c6" \
  'j["error"]["code"] == "ConditionalAccessBlocked" and j["error"]["aad"]["error_codes"] == [53003] and len(j["error"]["aad"]["correlation_id"]) == 36 and j["error"]["aad"]["correlation_id"] in j["error"]["aad"]["error_description"]'

status=$(fetch "$work/c7" -X POST "$proxy/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/jobs/j/lro?api-version=2024-04-01")
expect_status "curl LRO start: 202" "$status" "202 1.1"
expect_json "curl LRO: Location, Azure-AsyncOperation and Operation-Location point at the proxy" "$work/c7" \
  'h["location"] == "'"$proxy"'/operations/1/result?api-version=2024-04-01" and h["azure-asyncoperation"].startswith("'"$proxy"'/operations/1/status") and h["operation-location"].startswith("'"$proxy"'/")'

curl -sS -N --max-time 20 "$proxy/stream?chunks=3&interval_ms=50" > "$work/c8"
if [ "$(grep -c '^data: ' "$work/c8")" = 3 ]; then ok "curl -N: server-sent events stream through"; else bad "curl SSE" "$(cat "$work/c8")"; fi

# === Python: requests, httpx (HTTP/2), azure-core ===

if "$venv/bin/python" "$root/tests/interop/clients.py" --proxy "$proxy" --upstream "$upstream"; then
  ok "python clients (requests, httpx, azure-core)"
else
  bad "python clients" "see the FAIL lines above"
fi

# === what the proxy reported ===

fetch "$work/stats" --cacert "$ca_file" "$authority/__stats" > /dev/null
expect_json "two token requests served every request (one per scope, cached)" "$work/stats" \
  'j["token_requests"]["by_tenant"]["interop-tenant"] == 2 and j["token_requests"]["by_tenant"]["ca-blocked"] >= 1'

fetch "$work/metrics" "$admin/metrics" > /dev/null
if promtool check metrics < "$work/metrics" > "$work/promtool.out" 2>&1; then
  ok "promtool check metrics accepts the live /metrics"
else
  bad "promtool check metrics" "$(cat "$work/promtool.out")"
fi
if python3 "$root/tests/interop/check_metrics.py" "$work/metrics" "$root/deploy/monitoring"; then
  ok "metrics: series present, and every name the rules and dashboard use exists"
else
  bad "metrics" "see above"
fi

# Real bash loads the completion script.
if bash -c 'source <("$1" completions bash) && complete -p aml-auth-proxy' _ "$bin" > /dev/null; then
  ok "bash loads the completion script"
else
  bad "bash completions" "complete -p failed"
fi

echo "interop: proxy resident memory after the run: $(awk '/^VmHWM/ {print $2 " " $3 " peak"}' "/proc/$proxy_pid/status" 2>/dev/null || echo unknown)"

# SIGTERM: drain and exit 0; no token or secret ever reached the log; access lines carry the documented fields.
kill -TERM "$proxy_pid"
code=0
wait "$proxy_pid" || code=$?
proxy_pid=""
expect_status "SIGTERM drains and exits 0" "$code" "0"
# A JWT (the emulator's tokens are JWTs) or the secret.
if grep -qE -e 'eyJ[A-Za-z0-9_-]{10,}\.eyJ' -e 'interop-client-secret-value' "$work/proxy.log"; then
  bad "no token or secret in the logs" "$(grep -m3 -E -e 'eyJ[A-Za-z0-9_-]{10,}\.eyJ' -e 'interop-client-secret-value' "$work/proxy.log")"
else
  ok "no token or secret in the debug-level logs"
fi
if python3 - "$work/proxy.log" <<'PY'
import json, sys
# upstream_status is left out when no upstream answered (a proxy-generated error).
fields = {"timestamp", "level", "target", "message", "route", "method", "path", "version", "status", "duration_ms",
          "bytes", "completed", "error_code", "x_ms_request_id", "x_ms_correlation_request_id", "trace_id"}
access = []
for line in open(sys.argv[1]):
    e = json.loads(line)  # every line is JSON
    if e.get("target") == "aml_auth_proxy::access":
        access.append(e)
missing = [sorted(fields - set(e)) for e in access if not fields <= set(e)]
assert len(access) >= 8, len(access)
assert not missing, missing
assert all("?" not in e["path"] for e in access), "a query string reached the access log"
assert any(e.get("upstream_status") == 200 for e in access), "no access line with upstream_status"
assert any(e["error_code"] == "MethodNotAllowed" and "upstream_status" not in e for e in access)
PY
then ok "JSON log lines; access lines carry the documented fields, never the query"; else bad "log fields" "see above"; fi

echo "interop: $passed passed, $failed failed ($((SECONDS - started))s)"
if [ "$failed" -ne 0 ]; then
  echo "--- proxy log (last 40 lines) ---"
  tail -n 40 "$work/proxy.log" || true
  exit 1
fi
