#!/usr/bin/env bash
# Load benchmark: aml-auth-proxy against nginx (as a reverse proxy adding a static Authorization header) and
# against the upstream alone. Everything runs on 127.0.0.1. See benches/load/README.md.
#
#   benches/load/run.sh                 # full run (about 20 minutes on 2 cores, plus builds)
#   QUICK=1 benches/load/run.sh         # smoke run (about 3 minutes, plus builds)
#
# Knobs (environment): ROUNDS DURATION WARMUP CONNECTIONS THREADS QUICK SKIP_EXTRAS SKIP_FIXED_RATE
# SKIP_ROTATION SKIP_IDLE SKIP_STREAMS SKIP_H2 SKIP_STARTUP ROTATION_DURATION ROTATION_TTL IDLE_CONNECTIONS
# STREAMS STREAM_SIZE STARTUP_RUNS H2_CONNECTIONS H2_STREAMS FIXED_RATE_FRACTION ROTATION_RATE NO_INSTALL NO_OHA OHA
# AAP_BIN EMULATOR_BIN RESULTS_MD KEEP_WORKDIR.
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
RESULTS_MD=${RESULTS_MD:-$HERE/RESULTS.md}
NPROC=$(nproc)

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
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
  command -v openssl >/dev/null || need+=(openssl)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  command -v curl >/dev/null || need+=(curl)
  ((${#need[@]})) || return 0
  [[ ${NO_INSTALL:-0} == 1 ]] && die "missing ${need[*]} (NO_INSTALL=1)"
  log "installing ${need[*]} (Debian packages)"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
}
install_packages
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

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
log "building aml-auth-proxy and aml-azure-emulator (release)"
(cd "$REPO" && cargo build --release --locked --bin aml-auth-proxy --bin aml-azure-emulator)
TARGET_DIR=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
AAP=${AAP_BIN:-$TARGET_DIR/release/aml-auth-proxy}
MOCK=${EMULATOR_BIN:-$TARGET_DIR/release/aml-azure-emulator}
[[ -x $AAP && -x $MOCK ]] || die "binaries not found: $AAP $MOCK"

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
[[ $(ulimit -n) -ge $((IDLE_CONNECTIONS * 3 + 100)) ]] ||
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
)
truncate -s "$STREAM_SIZE" "$W/www/big.bin"
STREAM_BYTES=$(stat -c %s "$W/www/big.bin")

# A token of realistic length (an Entra ID access token is a JWT of about 1,500 characters). The emulator's JWTs
# carry the tenant twice (`tid`, `iss`), so a 182-character tenant makes them that long; nginx's static token is one
# the emulator issued (see below), so both proxies send tokens of the same length.
TENANT="bench-$(head -c 176 /dev/zero | tr '\0' 't')"
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
start_mock() { # start_mock TTL: sets AUTHORITY, MOCK_PID, BUNDLE (emulator CA + upstream CA)
  MOCK_N=$((MOCK_N + 1))
  local dir=$W/mock-$MOCK_N line
  mkdir -p "$dir"
  # HTTPS like Entra ID; one log line per token request goes to the .err file.
  start_bg "mock-$MOCK_N" "$MOCK" --port 0 --tls --ca-file "$dir/ca.pem" --token-lifetime "$1s" --log-format json
  MOCK_PID=$BG_PID
  line=$("${TOOLS[@]}" wait-line "$W/mock-$MOCK_N.out" 30) || die "aml-azure-emulator did not start: $(cat "$W/mock-$MOCK_N.err")"
  AUTHORITY=$("${TOOLS[@]}" json-get authority_host <<<"$line")
  BUNDLE=$dir/bundle.pem
  cat "$("${TOOLS[@]}" json-get ca_file <<<"$line")" "$W/pki/ca.pem" >"$BUNDLE"
}
token_requests() { # token_requests: total token requests the current emulator has seen
  curl -fsS --cacert "$BUNDLE" "$AUTHORITY/__stats" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token_requests"]["total"])'
}
issue_token() { # issue_token: an access token from the current emulator, as the benchmark credential gets it
  curl -fsS --cacert "$BUNDLE" "$AUTHORITY/$TENANT/oauth2/v2.0/token" \
    --data-urlencode grant_type=client_credentials --data-urlencode client_id=00000000-0000-0000-0000-00000000be9c \
    --data-urlencode client_secret=benchmark-client-secret --data-urlencode scope=https://ml.azure.com/.default |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
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
      client_id: 00000000-0000-0000-0000-00000000be9c
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
start_aap() { # start_aap UPSTREAM_URL [upload]: sets AAP_PID AAP_PORT AAP_ADMIN AAP_LOG AAP_CONFIG
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
  check_token "http://127.0.0.1:$AAP_PORT" aml-auth-proxy
}
check_token() { # check_token BASE NAME: the upstream must see "Bearer <~1500-character token>"
  local got
  got=$(curl -fsS "$1/__auth") || die "$2: request through the proxy failed"
  [[ $got == "Bearer eyJ"* && ${#got} -gt 1400 ]] || die "$2: upstream saw Authorization '${got:0:40}…'"
}

# ------------------------------------------------------------------------------------------ the main emulator
log "starting aml-azure-emulator (token lifetime 3600 s)"
start_mock 3600
MAIN_AUTHORITY=$AUTHORITY MAIN_BUNDLE=$BUNDLE MAIN_MOCK_PID=$MOCK_PID
use_main_mock() { AUTHORITY=$MAIN_AUTHORITY BUNDLE=$MAIN_BUNDLE MOCK_PID=$MAIN_MOCK_PID; }
STATIC_TOKEN=$(issue_token) || die "the emulator issued no token"
note "token length: ${#STATIC_TOKEN} characters (nginx sends this one; aml-auth-proxy fetches its own)"

# ------------------------------------------------------------------------------------------ nginx proxy
NGD=$W/nginx-proxy
mkdir -p "$NGD"
read -r NG_PLAIN NG_TLS NG_H2 <<<"$(free_ports 3)"
{
  nginx_common "$NGD"
  cat <<EOF
worker_processes $NPROC;
http {
  $(nginx_temp_paths "$NGD")
  access_log $NGD/access.log;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  upstream up_plain { server 127.0.0.1:$UP_HTTP; keepalive 64; keepalive_requests 1000000; }
  upstream up_tls   { server 127.0.0.1:$UP_TLS;  keepalive 64; keepalive_requests 1000000; }
  upstream up_sink  { server 127.0.0.1:$SINK;    keepalive 16; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Authorization "Bearer $STATIC_TOKEN";
  proxy_ssl_verify on;
  proxy_ssl_trusted_certificate $W/pki/ca.pem;
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
} >"$NGD/nginx.conf"
NG_PID=
start_nginx_proxy() { # sets NG_PID and NG_PIDS (master + workers)
  rm -f "$NGD/nginx.pid"
  start_nginx nginx-proxy "$NGD"
  NG_PID=$BG_PID
  NG_PIDS=("${NGINX_PIDS[@]}")
  "${TOOLS[@]}" wait-tcp "$NG_PLAIN" 10 || die "nginx proxy did not listen"
  check_token "http://127.0.0.1:$NG_PLAIN" nginx
  curl -fsS "http://127.0.0.1:$NG_TLS/" >/dev/null || die "nginx proxy to the HTTPS upstream: $(tail -3 "$NGD/error.log")"
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
  local cpu0 up0 l0 cpu1 up1 l1 mem
  cpu0=$("${TOOLS[@]}" cpu "${pids[@]}")
  up0=$("${TOOLS[@]}" cpu "${UP_PIDS[@]}")
  l0=$(lines_of "$logf")
  "$@" >"$W/load.out" 2>"$W/load.err" || { cat "$W/load.err" >&2; die "$scen: load generator failed: $*"; }
  cpu1=$("${TOOLS[@]}" cpu "${pids[@]}")
  up1=$("${TOOLS[@]}" cpu "${UP_PIDS[@]}")
  mem=$("${TOOLS[@]}" mem "${pids[@]}")
  sleep 0.2 # the access log is written by a background thread / may lag a little
  l1=$(lines_of "$logf")
  "${TOOLS[@]}" record "$RES" kind="$kind" upstream="$up" scenario="$scen" round="$round" \
    cpu0="$cpu0" cpu1="$cpu1" up_cpu0="$up0" up_cpu1="$up1" mem="$mem" log_lines=$((l1 - l0)) \
    ${MEASURE_EXTRA[@]+"${MEASURE_EXTRA[@]}"} "$parser" "$W/load.out"
}
pids_of() { # pids_of SCENARIO: the processes whose CPU and memory count for it
  case $1 in
    direct) echo "${UP_PIDS[*]}" ;;
    nginx) echo "${NG_PIDS[*]}" ;;
    aap) echo "$AAP_PID" ;;
  esac
}
log_of() {
  case $1 in
    nginx) echo "$NGD/access.log" ;;
    aap) echo "$AAP_LOG" ;;
    *) echo "" ;;
  esac
}

# ------------------------------------------------------------------------------------------ meta
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
START_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)


upstream_url() { # upstream_url plain|tls
  if [[ $1 == tls ]]; then echo "https://127.0.0.1:$UP_TLS"; else echo "http://127.0.0.1:$UP_HTTP"; fi
}

# ------------------------------------------------------------------------------------------ 1. saturation
saturation() { # saturation plain|tls
  local mode=$1 round scen url pids
  log "saturation, $mode upstream: wrk -t$THREADS -c$CONNECTIONS -d${DUR_S}s, $ROUNDS rounds (warm-up ${WARM_S}s each)"
  start_nginx_proxy
  start_aap "$(upstream_url "$mode")"
  for round in $(seq "$ROUNDS"); do
    for scen in direct nginx aap; do
      case $scen in
        direct) url="$(upstream_url "$mode")/" ;;
        nginx) url="http://127.0.0.1:$([[ $mode == tls ]] && echo "$NG_TLS" || echo "$NG_PLAIN")/" ;;
        aap) url="http://127.0.0.1:$AAP_PORT/" ;;
      esac
      note "round $round/$ROUNDS $scen ($url)"
      "${WRK[@]}" -d"${WARM_S}s" "$url" >/dev/null
      read -r -a pids <<<"$(pids_of "$scen")"
      measure saturation "$mode" "$scen" "$round" "$(log_of "$scen")" "${pids[@]}" -- \
        --wrk "${WRK[@]}" -d"${DUR_S}s" --latency -s "$LUA" "$url"
    done
  done
  stop_tree "$AAP_PID"
  stop_tree "$NG_PID"
}

# ------------------------------------------------------------------------------------------ a. fixed rate
OHA_ARGS=(--no-tui --output-format json --latency-correction -w -c "$CONNECTIONS")
fixed_rate() {
  local nginx_rps rate round scen url pids
  nginx_rps=$("${TOOLS[@]}" median "$RES" rps kind=saturation upstream=plain scenario=nginx)
  rate=$(python3 -c "print(max(1, int($nginx_rps * $FIXED_RATE_FRACTION)))")
  log "fixed rate: $rate req/s ($FIXED_RATE_FRACTION × nginx's plaintext saturation), oha -q $rate --latency-correction, $ROUNDS rounds"
  MEASURE_EXTRA=(target_rate="$rate")
  start_nginx_proxy
  start_aap "$(upstream_url plain)"
  for round in $(seq "$ROUNDS"); do
    for scen in nginx aap; do
      [[ $scen == nginx ]] && url="http://127.0.0.1:$NG_PLAIN/" || url="http://127.0.0.1:$AAP_PORT/"
      note "round $round/$ROUNDS $scen"
      "$OHA" "${OHA_ARGS[@]}" -q "$rate" -z "${WARM_S}s" "$url" >/dev/null
      read -r -a pids <<<"$(pids_of "$scen")"
      measure fixed_rate plain "$scen" "$round" "$(log_of "$scen")" "${pids[@]}" -- \
        --oha "$OHA" "${OHA_ARGS[@]}" -q "$rate" -z "${DUR_S}s" "$url"
    done
  done
  MEASURE_EXTRA=()
  stop_tree "$AAP_PID"
  stop_tree "$NG_PID"
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
idle_one() { # idle_one SCENARIO PORT PIDS...
  local scen=$1 port=$2
  shift 2
  local before during mark=$W/idle-$scen.mark out
  curl -fsS -o /dev/null "http://127.0.0.1:$port/"
  sleep 0.5
  before=$("${TOOLS[@]}" mem "$@")
  rm -f "$mark"
  python3 "$HERE/tools.py" idle "$port" "$IDLE_CONNECTIONS" "$CONNECTIONS" "$IDLE_HOLD" "$mark" >"$W/idle.out" &
  local ipid=$!
  PIDS+=("$ipid")
  for _ in $(seq 600); do [[ -s $mark ]] && break; kill -0 "$ipid" 2>/dev/null || break; sleep 0.1; done
  [[ -s $mark ]] || die "idle connections to $scen could not be opened"
  sleep 1
  during=$("${TOOLS[@]}" mem "$@")
  wait "$ipid" || die "idle-connection client failed for $scen"
  stop_tree "$ipid"
  out=$(cat "$W/idle.out")
  "${TOOLS[@]}" record "$RES" kind=idle scenario="$scen" before="$before" during="$during" client="$out"
  note "$scen: $out"
}
idle() {
  log "$IDLE_CONNECTIONS idle HTTP/1.1 keep-alive connections (one request each, held ${IDLE_HOLD}s)"
  start_nginx_proxy
  idle_one nginx "$NG_PLAIN" "${NG_PIDS[@]}"
  stop_tree "$NG_PID"
  start_aap "$(upstream_url plain)"
  idle_one aap "$AAP_PORT" "$AAP_PID"
  stop_tree "$AAP_PID"
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
  log "$STREAMS parallel $STREAM_SIZE streamed downloads and uploads"
  start_nginx_proxy
  start_aap "$(upstream_url plain)" upload
  local scen
  for scen in direct nginx aap; do
    note "download via $scen"
    case $scen in
      direct) stream_one download direct "http://127.0.0.1:$UP_HTTP/big/big.bin" "${UP_PIDS[@]}" ;;
      nginx) stream_one download nginx "http://127.0.0.1:$NG_PLAIN/big/big.bin" "${NG_PIDS[@]}" ;;
      aap) stream_one download aap "http://127.0.0.1:$AAP_PORT/big/big.bin" "$AAP_PID" ;;
    esac
  done
  for scen in direct nginx aap; do
    note "upload via $scen"
    case $scen in
      direct) stream_one upload direct "http://127.0.0.1:$SINK/upload" "$SINK_PID" ;;
      nginx) stream_one upload nginx "http://127.0.0.1:$NG_PLAIN/upload" "${NG_PIDS[@]}" ;;
      aap) stream_one upload aap "http://127.0.0.1:$AAP_PORT/upload" "$AAP_PID" ;;
    esac
  done
  stop_tree "$AAP_PID"
  stop_tree "$NG_PID"
}

# ------------------------------------------------------------------------------------------ e. HTTP/2 (h2c)
h2() {
  log "HTTP/2 inbound (h2c prior knowledge): h2load -c $H2_CONNECTIONS -m $H2_STREAMS -D ${DUR_S}s, $ROUNDS rounds"
  start_nginx_proxy
  start_aap "$(upstream_url plain)"
  local round scen url pids h2t=$((THREADS < H2_CONNECTIONS ? THREADS : H2_CONNECTIONS))
  for round in $(seq "$ROUNDS"); do
    for scen in direct nginx aap; do
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
  stop_tree "$NG_PID"
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

# ------------------------------------------------------------------------------------------ run
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

# ------------------------------------------------------------------------------------------ report
log "writing $RESULTS_MD"
export START_DATE START_LOAD FIXED_RATE_FRACTION ROUNDS DUR_S WARM_S CONNECTIONS THREADS NPROC ROT_S ROTATION_TTL IDLE_CONNECTIONS \
  IDLE_HOLD STREAMS STREAM_SIZE STARTUP_RUNS H2_CONNECTIONS H2_STREAMS QUICK OHA NGINX AAP REPO
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
export END_LOAD
python3 "$HERE/report.py" "$RES" "$RESULTS_MD"
cp "$RES" "${RESULTS_MD%.md}.jsonl"
