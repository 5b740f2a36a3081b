#!/usr/bin/env bash
# Token-service interop: the proxy binary with a `token_service` block, driven by real, unmodified clients —
# azure-identity (ManagedIdentityCredential and DefaultAzureCredential over the App Service, Azure ML and IMDS
# protocols), MSAL Python's ManagedIdentityClient, an azure-core pipeline and azure-ai-ml's MLClient against the
# emulated ARM over HTTPS, and @azure/identity in Node (tests/interop/token_service.py) — then curl for the
# refusals, a burst of 1,000 concurrent requests against the emulator's token-request counter, a reload that turns
# IMDS off, the metrics through promtool, and the logs for tokens and the secret.
#
#   tests/interop/token_service.sh     (from anywhere; needs curl, promtool, python3 and node; see .ci/apt-tools.sh)
#
# Environment: BIN / EMULATOR (default target/release/…, built if missing), CI_VENV, CI_NODE, KEEP=1 keeps the work
# directory. Exits non-zero on any failed check, after printing all of them.
set -euo pipefail
cd "$(dirname "$0")/../.."
label="token-service"
# shellcheck source=tests/interop/common.sh
source tests/interop/common.sh
interop_setup token-service curl promtool python3 node
node_dir=$(bash "$root/.ci/node-clients.sh")
# check NAME FILE EXPR: EXPR is a Python expression over `j` (the JSON body in FILE, or None), `h` (its headers,
# lower-case names) and `s` (the status).
check() {
  local name=$1 file=$2 expr=$3
  if python3 - "$file" "$expr" <<'PY'
import json, sys
file, expr = sys.argv[1], sys.argv[2]
try:
    j = json.loads(open(file, encoding="utf-8").read())
except ValueError:
    j = None
h, s = {}, 0
for line in open(file + ".h", encoding="latin-1"):
    if line.startswith("HTTP/"):
        s = int(line.split()[1])
    elif ":" in line:
        k, v = line.split(":", 1)
        h[k.strip().lower()] = v.strip()
sys.exit(0 if eval(expr) else 1)
PY
  then ok "$name"; else bad "$name" "expected $expr; got $(head -c 900 "$file") / $(tr '\r\n' '  ' < "$file.h" | head -c 400)"; fi
}
fetch() {
  local file=$1
  shift
  curl -sS --max-time 20 -o "$file" -D "$file.h" "$@" > /dev/null || echo "curl failed: $*" > "$file"
}

# === the emulator (HTTPS) and the proxy with a token service ===

# Tenant ca-blocked is refused by Conditional Access (AADSTS53003); every other tenant gets tokens.
"$emulator_bin" --port 0 --tls --ca-file "$work/ca.pem" --fault conditional-access,tenant=ca-blocked --fault conditional-access,tenant=ca-burst \
  > "$work/mock.json" 2> "$work/mock.err" &
mock_pid=$!
for _ in $(seq 300); do [ -s "$work/mock.json" ] && break; sleep 0.1; done
[ -s "$work/mock.json" ] || { echo "token-service interop: the emulator did not start"; cat "$work/mock.err"; exit 1; }
read -r authority ca_file < <(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["authority_host"], m["ca_file"])' "$work/mock.json")

uami=aaaaaaaa-0000-4000-8000-000000000001
blocked=bbbbbbbb-0000-4000-8000-000000000002
burst=cccccccc-0000-4000-8000-000000000003
burst_blocked=dddddddd-0000-4000-8000-000000000004
umask 077
printf 'token-service-interop-client-secret\n' > "$work/sp-secret"
write_config() {
  cat > "$work/config.yaml" <<EOF
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
authority_host: $authority
tls:
  extra_ca_file: $ca_file
credentials:
  sp:
    client_secret: { tenant_id: interop-tenant, client_id: 11111111-2222-3333-4444-555555555555, client_secret_file: $work/sp-secret }
  uami:
    client_secret: { tenant_id: uami-tenant, client_id: 22222222-2222-3333-4444-555555555555, client_secret_file: $work/sp-secret }
  blocked:
    client_secret: { tenant_id: ca-blocked, client_id: 33333333-2222-3333-4444-555555555555, client_secret_file: $work/sp-secret }
  burst:
    client_secret: { tenant_id: burst-tenant, client_id: 44444444-2222-3333-4444-555555555555, client_secret_file: $work/sp-secret }
  burst-blocked:
    client_secret: { tenant_id: ca-burst, client_id: 55555555-2222-3333-4444-555555555555, client_secret_file: $work/sp-secret }
routes:
  - name: arm
    path_prefix: /
    upstream: $authority
    scope: https://management.azure.com/.default
    credential: sp
token_service:
  listen: 127.0.0.1:0
  secret_file: $work/identity-secret
  imds: $1
  identities:
    default: sp
    "$uami": uami
    "$blocked": blocked
    "$burst": burst
    "$burst_blocked": burst-blocked
  allowed_resources: [https://management.azure.com, https://ml.azure.com]
EOF
}
write_config true
umask 022

if "$bin" check-config --config "$work/config.yaml" > "$work/check.out"; then
  ok "check-config accepts the token_service block and says the secret file will be created"
  grep -q "created at start-up" "$work/check.out" || bad "check-config summary" "$(cat "$work/check.out")"
else
  bad "check-config" "$(cat "$work/check.out")"
fi
[ ! -e "$work/identity-secret" ] && ok "check-config creates no secret file" || bad "check-config" "it created the secret file"

"$bin" run --config "$work/config.yaml" --log-format json --log-level debug 2> "$work/proxy.log" &
proxy_pid=$!
listening=$(wait_listening "$work/proxy.log" proxy admin token_service)
read -r proxy_addr admin_addr ts_addr <<< "$listening"
ts=http://$ts_addr
admin=http://$admin_addr
echo "token-service interop: token service $ts, admin $admin, emulated Entra ID $authority"

mode=$(stat -c %a "$work/identity-secret")
secret=$(cat "$work/identity-secret")
if [ "$mode" = 600 ] && [ "${#secret}" = 43 ]; then ok "the secret file is created 0600 with 32 random bytes (base64url)"; else bad "secret file" "mode $mode, ${#secret} characters"; fi

# === real clients ===

if "$venv/bin/python" "$root/tests/interop/token_service.py" --endpoint "$ts" --secret-file "$work/identity-secret" \
  --emulator-json "$work/mock.json" --tenant interop-tenant --uami "$uami" --uami-tenant uami-tenant \
  --blocked "$blocked" --node-dir "$node_dir"; then
  ok "real clients (azure-identity, MSAL, azure-core, azure-ai-ml, @azure/identity)"
else
  bad "real clients" "see the FAIL lines above"
fi

# === the raw answers: shapes, refusals, defences ===

msi="$ts/msi/token?api-version=2019-08-01&resource=https://management.azure.com"
fetch "$work/r1" -H "X-IDENTITY-HEADER: $secret" "$msi"
check "App Service: 200, the five fields, expires_on a string, Cache-Control: no-store" "$work/r1" \
  's == 200 and set(j) == {"access_token", "expires_on", "resource", "token_type", "client_id"} and j["expires_on"].isdigit() and j["token_type"] == "Bearer" and h["cache-control"] == "no-store"'
fetch "$work/r2" -H "Metadata: true" "$ts/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://ml.azure.com"
check "IMDS: 200, every field a string" "$work/r2" \
  's == 200 and set(j) == {"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before", "resource", "token_type"} and all(isinstance(v, str) for v in j.values())'
fetch "$work/r3" "$msi"
check "no secret: 401 CallerNotAuthenticated" "$work/r3" 's == 401 and j["code"] == "CallerNotAuthenticated" and h["x-aml-auth-proxy-error"] == "CallerNotAuthenticated"'
fetch "$work/r4" -H "X-IDENTITY-HEADER: not-the-secret" "$msi"
check "wrong secret: 401" "$work/r4" 's == 401 and j["statusCode"] == 401'
fetch "$work/r5" -H "X-IDENTITY-HEADER: $secret" "$ts/msi/token?api-version=2019-08-01&resource=https://vault.azure.net"
check "a resource not allowed: 403 ResourceNotAllowed" "$work/r5" 's == 403 and j["code"] == "ResourceNotAllowed"'
fetch "$work/r6" "$ts/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://ml.azure.com"
check "IMDS without Metadata: true: 400 Required metadata header not specified" "$work/r6" \
  's == 400 and j["error"] == "invalid_request" and j["error_description"] == "Required metadata header not specified"'
fetch "$work/r7" -H "Metadata: true" -H "X-Forwarded-For: 10.0.0.1" "$ts/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://ml.azure.com"
check "IMDS with X-Forwarded-For: 400" "$work/r7" 's == 400'
fetch "$work/r8" -H "X-IDENTITY-HEADER: $secret" "$msi&client_id=99999999-0000-0000-0000-000000000000"
check "unknown identity: 400 IdentityNotFound" "$work/r8" 's == 400 and j["code"] == "IdentityNotFound"'
fetch "$work/r9" -H "X-IDENTITY-HEADER: $secret" -H "Host: attacker.example" "$msi"
check "foreign Host: 421 HostNotAllowed" "$work/r9" 's == 421 and j["code"] == "HostNotAllowed"'
fetch "$work/r10" -H "X-IDENTITY-HEADER: $secret" -H "Origin: https://attacker.example" "$msi"
check "browser Origin: 403 OriginNotAllowed" "$work/r10" 's == 403 and j["code"] == "OriginNotAllowed"'
fetch "$work/r11" -H "X-IDENTITY-HEADER: $secret" "$msi&client_id=$blocked"
check "Conditional Access: 403 ConditionalAccessBlocked, the aad object, AADSTS53003 in error_description and message" "$work/r11" \
  's == 403 and j["code"] == "ConditionalAccessBlocked" and j["aad"]["error_codes"] == [53003] and "AADSTS53003" in j["error_description"] and j["aad"]["correlation_id"] in j["message"]'

# === 1,000 concurrent requests ===

# 1,000 SDK-style requests, 300 at a time (curl's most parallel transfers): the tests in tests/it/token_service
# prove 1,000 at once in process. An identity Conditional Access blocks (its own tenant, used by nothing else),
# right after a refusal: at most one token request per damping window (5 s) the burst spans, counted from the
# refusal. A fresh identity: exactly one token request, every answer 200.
token_requests() {
  curl -sS --cacert "$ca_file" "$authority/__stats" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token_requests"]["by_tenant"].get(sys.argv[1], 0))' "$1"
}
burst() { # OUT CLIENT_ID: 1,000 requests; OUT gets one status per line
  local i
  for i in $(seq 1000); do
    printf 'url = "%s/msi/token?api-version=2019-08-01&resource=https://ml.azure.com&client_id=%s"\noutput = "/dev/null"\n' "$ts" "$2"
  done > "$work/burst.cfg"
  curl -sS --parallel --parallel-immediate --parallel-max 300 --http1.1 -H "X-IDENTITY-HEADER: $secret" \
    -w '%{http_code}\n' -K "$work/burst.cfg" > "$1" 2> "$1.err" || true
}
curl -sS -o /dev/null -H "X-IDENTITY-HEADER: $secret" "$ts/msi/token?api-version=2019-08-01&resource=https://ml.azure.com&client_id=$burst_blocked"
refused_at=$(date +%s.%N)
before=$(token_requests ca-burst)
burst "$work/burst-blocked" "$burst_blocked"
windows=$(python3 -c 'import math,sys,time; print(max(1, math.ceil((time.time() - float(sys.argv[1])) / 5)))' "$refused_at")
blocked_cost=$(( $(token_requests ca-burst) - before ))
before=$(token_requests burst-tenant)
burst "$work/burst-fresh" "$burst"
fresh_cost=$(( $(token_requests burst-tenant) - before ))
summary="blocked: $(sort "$work/burst-blocked" | uniq -c | tr -s ' \n' ' ')-> $blocked_cost token request(s) over $windows damping window(s); fresh: $(sort "$work/burst-fresh" | uniq -c | tr -s ' \n' ' ')-> $fresh_cost"
if [ "$(grep -c '^403$' "$work/burst-blocked")" = 1000 ] && [ "$blocked_cost" -le "$windows" ] \
  && [ "$(grep -c '^200$' "$work/burst-fresh")" = 1000 ] && [ "$fresh_cost" = 1 ]; then
  ok "1,000 requests: the blocked identity's all 403 at one token request per damping window at most; a fresh identity's all 200 for one token request ($summary)"
else
  bad "bursts of 1,000" "$summary $(head -c 300 "$work/burst-blocked.err")"
fi

# === readiness, metrics ===

fetch "$work/ready" "$admin/readyz"
check "/readyz names the token service's identity whose token Conditional Access blocks" "$work/ready" \
  's == 503 and any(m.get("token_service") and m["credential"] == "blocked" and m.get("code") == "ConditionalAccessBlocked" for m in j["missing"]) and {e["credential"] for e in j["token_service"]} >= {"sp", "uami", "burst"}'
fetch "$work/metrics" "$admin/metrics"
if promtool check metrics < "$work/metrics" > "$work/promtool.out" 2>&1; then ok "promtool check metrics accepts /metrics"; else bad "promtool" "$(cat "$work/promtool.out")"; fi
if python3 - "$work/metrics" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
series = re.findall(r'^aml_auth_proxy_token_service_requests_total\{([^}]*)\} (\d+)', text, re.M)
labels = [dict(re.findall(r'(\w+)="([^"]*)"', l)) for l, _ in series]
assert any(l["protocol"] == "app_service" and l["identity"] == "default" and l["outcome"] == "success" for l in labels), labels
assert any(l["protocol"] == "imds" and l["outcome"] == "success" for l in labels), labels
assert any(l["protocol"] == "azure_ml" and l["outcome"] == "success" for l in labels), labels
assert any(l["outcome"] == "CallerNotAuthenticated" for l in labels), labels
assert any(l["outcome"] == "ConditionalAccessBlocked" for l in labels), labels
assert any(l["outcome"] == "ResourceNotAllowed" for l in labels), labels
assert all(set(l) == {"protocol", "identity", "outcome"} for l in labels), labels
PY
then ok "aml_auth_proxy_token_service_requests_total{protocol,identity,outcome} counts each protocol and outcome"; else bad "metric" "see above"; fi

# === a reload that turns IMDS off ===

umask 077
write_config false
umask 022
kill -HUP "$proxy_pid"
for _ in $(seq 100); do grep -q '"configuration reloaded"' "$work/proxy.log" && break; sleep 0.1; done
fetch "$work/r12" -H "Metadata: true" "$ts/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://ml.azure.com"
check "with imds: false the IMDS path answers 404" "$work/r12" 's == 404 and j["code"] == "NotFound"'

# === shutdown, logs ===

kill -TERM "$proxy_pid"
code=0
wait "$proxy_pid" || code=$?
proxy_pid=""
[ "$code" = 0 ] && ok "SIGTERM: exit 0" || bad "SIGTERM" "exit $code"
if grep -qE -e 'eyJ[A-Za-z0-9_-]{10,}\.eyJ' -e 'token-service-interop-client-secret' "$work/proxy.log" || grep -qF -e "$secret" "$work/proxy.log"; then
  bad "no token or secret in the logs" "$(grep -m3 -E -e 'eyJ[A-Za-z0-9_-]{10,}\.eyJ' -e 'token-service-interop-client-secret' "$work/proxy.log")"
else
  ok "no token, client secret or token-service secret in the debug-level logs"
fi
if python3 - "$work/proxy.log" <<'PY'
import json, sys
issued = [e for e in map(json.loads, open(sys.argv[1])) if e.get("message") == "token service: token issued"]
assert issued, "no issuance line"
assert all({"identity", "resource", "credential", "expires_on", "protocol"} <= set(e) for e in issued), issued[:2]
assert all(e["level"] == "INFO" for e in issued)
PY
then ok "one info line per issuance: identity, resource, credential, expiry"; else bad "issuance log lines" "see above"; fi

echo "token-service interop: $passed passed, $failed failed ($((SECONDS - started))s)"
if [ "$failed" -ne 0 ]; then
  echo "--- proxy log (last 30 lines) ---"
  tail -n 30 "$work/proxy.log" || true
  exit 1
fi
