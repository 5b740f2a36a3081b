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
root=$PWD
started=$SECONDS

for tool in curl promtool python3 node; do
  command -v "$tool" >/dev/null 2>&1 || { echo "token-service interop: $tool is missing (run .ci/apt-tools.sh)" >&2; exit 1; }
done
bin=${BIN:-$root/target/release/aml-auth-proxy}
emulator_bin=${EMULATOR:-$root/target/release/aml-azure-emulator}
if [ ! -x "$bin" ] || [ ! -x "$emulator_bin" ]; then
  cargo build --locked --release
fi
venv=$(bash "$root/.ci/python-venv.sh")
node_dir=$(bash "$root/.ci/node-clients.sh")

work=$(mktemp -d "${TMPDIR:-/tmp}/aml-auth-proxy-token-service.XXXXXX")
mock_pid=""
proxy_pid=""
cleanup() {
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
  [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "token-service interop: work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "PASS [token-service] $1"; }
bad() { failed=$((failed + 1)); echo "FAIL [token-service] $1: $2"; }
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
"$emulator_bin" --port 0 --tls --ca-file "$work/ca.pem" --fault conditional-access,tenant=ca-blocked \
  > "$work/mock.json" 2> "$work/mock.err" &
mock_pid=$!
for _ in $(seq 300); do [ -s "$work/mock.json" ] && break; sleep 0.1; done
[ -s "$work/mock.json" ] || { echo "token-service interop: the emulator did not start"; cat "$work/mock.err"; exit 1; }
read -r authority ca_file < <(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["authority_host"], m["ca_file"])' "$work/mock.json")

uami=aaaaaaaa-0000-4000-8000-000000000001
blocked=bbbbbbbb-0000-4000-8000-000000000002
burst=cccccccc-0000-4000-8000-000000000003
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
listening=""
for _ in $(seq 150); do
  listening=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("message") == "listening":
        print(e["proxy"], e["admin"], e["token_service"]); break' "$work/proxy.log" 2>/dev/null || true)
  [ -n "$listening" ] && break
  kill -0 "$proxy_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$listening" ] || { echo "token-service interop: the proxy did not start"; cat "$work/proxy.log"; exit 1; }
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

# The blocked identity, right after a refusal (inside its damping window): 1,000 concurrent requests cost at most
# one token request. A fresh identity: 1,000 concurrent requests cost exactly one, and all get the same token.
if "$venv/bin/python" - "$ts" "$secret" "$burst" "$blocked" "$authority" "$ca_file" > "$work/burst.out" 2>&1 <<'PY'
import asyncio, sys
import httpx

ts, secret, burst, blocked, authority, ca_file = sys.argv[1:7]

def token_requests(tenant):
    stats = httpx.get(authority + "/__stats", verify=ca_file).json()
    return stats["token_requests"]["by_tenant"].get(tenant, 0)

async def burst_of(client_id, n=1000):
    url = ts + "/msi/token"
    params = {"api-version": "2019-08-01", "resource": "https://ml.azure.com", "client_id": client_id}
    # 1,000 requests in flight at once over 200 connections: a thousand fresh connections at once overflow a
    # loaded machine's accept queue (a kernel limit, not the proxy's), which would test the machine, not the cache.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        answers = await asyncio.gather(*(client.get(url, params=params, headers={"X-IDENTITY-HEADER": secret}) for _ in range(n)))
    return sorted({r.status_code for r in answers}), len({r.json().get("access_token") for r in answers if r.status_code == 200})

asyncio.run(burst_of(blocked, 1))  # a refusal: the damping window starts
before = token_requests("ca-blocked")
blocked_statuses, _ = asyncio.run(burst_of(blocked))
blocked_cost = token_requests("ca-blocked") - before
before = token_requests("burst-tenant")
ok_statuses, distinct = asyncio.run(burst_of(burst))
ok_cost = token_requests("burst-tenant") - before
print("blocked:", blocked_statuses, "token requests", blocked_cost, "| fresh:", ok_statuses, distinct, "token(s), token requests", ok_cost)
sys.exit(0 if blocked_statuses == [403] and blocked_cost <= 1 and ok_statuses == [200] and distinct == 1 and ok_cost == 1 else 1)
PY
then ok "1,000 concurrent requests: blocked identity all 403 for at most one token request; fresh identity all 200, one token, one token request ($(cat "$work/burst.out"))"
else bad "bursts of 1,000" "$(cat "$work/burst.out")"; fi

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
