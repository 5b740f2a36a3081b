#!/usr/bin/env bash
# User-space instructions per proxied request, aml-auth-proxy vs nginx, counted by callgrind: a deterministic
# number (unlike time on a shared 2-core machine) for judging hot-path changes. Kernel time is not counted.
#
#   benches/profile/callgrind.sh            # builds the release binary, prints Ir/request for both proxies
#   AAP_BIN=/path/to/binary benches/profile/callgrind.sh
#
# Each proxy runs under callgrind twice, for N1 and N2 requests (h2load --h1, 8 connections, keep-alive) to an
# nginx upstream answering a small fixed body; (Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one request, start-up
# and shutdown cancel out. Both proxies send a 1,500-character bearer token; aml-auth-proxy gets it from an
# `azure_cli` credential (a fake `az` on PATH) and writes its JSON access log, nginx its default access log. The
# callgrind files stay in the work directory (KEEP=1) for `callgrind_annotate --inclusive=yes`.
# Installs valgrind, nginx, nghttp2-client and curl with apt-get when missing. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${N1:-2000}
N2=${N2:-6000}

need=()
for tool in valgrind:valgrind nginx:nginx h2load:nghttp2-client curl:curl callgrind_annotate:valgrind; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "${AAP_BIN:-}" ]; then
  cargo build --release --locked --bin aml-auth-proxy >&2
  AAP_BIN=$PWD/target/release/aml-auth-proxy
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); NGX=$(free_port); AAP=$(free_port); ADMIN=$(free_port)
TOKEN="eyJ0eXAiOiJKV1Qi.$(head -c 1480 /dev/zero | tr '\0' a).sig"

mkdir -p "$work/bin" "$work/up" "$work/px"
cat > "$work/up.conf" <<EOF
worker_processes 1; pid $work/up/pid; error_log $work/up/err; daemon off;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $work/up;
  server { listen 127.0.0.1:$UP; location / { default_type application/json; return 200 '{"status":"ok"}'; } } }
EOF
cat > "$work/px.conf" <<EOF
worker_processes 1; pid $work/px/pid; error_log $work/px/err; daemon off; master_process off;
events { worker_connections 4096; }
http { access_log $work/px/access.log; keepalive_requests 1000000; client_body_temp_path $work/px;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_set_header Authorization "Bearer $TOKEN"; } } }
EOF
cat > "$work/bin/az" <<EOF
#!/bin/sh
echo "{\"accessToken\": \"$TOKEN\", \"expires_on\": \$((\$(date +%s) + 3600)), \"tokenType\": \"Bearer\"}"
EOF
chmod +x "$work/bin/az"
cat > "$work/aap.yaml" <<EOF
listen: 127.0.0.1:$AAP
admin_listen: 127.0.0.1:$ADMIN
credentials:
  dev:
    azure_cli: {}
routes:
  - name: up
    path_prefix: /
    upstream: http://127.0.0.1:$UP
    scope: https://ml.azure.com/.default
    credential: dev
EOF

nginx -c "$work/up.conf" -p "$work/up" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$UP/" >/dev/null && break; sleep 0.05; done

# Ir of one run of `$@` serving N requests on a port (ready when a URL answers), stopped with a signal.
measure() {
  local signal=$1 port=$2 ready=$3 n=$4 out=$5; shift 5
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" > "$out.log" 2>&1 &
  local vpid=$!
  for _ in $(seq 600); do curl -sf -H 'Host: 127.0.0.1' "$ready" >/dev/null && break; sleep 0.1; done
  h2load --h1 -n "$n" -c 8 "http://127.0.0.1:$port/" | grep -q "succeeded, 0 failed" || {
    echo "h2load reported failures against port $port" >&2; kill "$vpid"; return 1; }
  kill "-$signal" "$vpid" 2>/dev/null || true
  wait "$vpid" || true
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

per_request() {
  local name=$1; shift
  local a b
  a=$("$@" "$N1" "$work/$name.$N1.out")
  b=$("$@" "$N2" "$work/$name.$N2.out")
  echo $(( (b - a) / (N2 - N1) ))
}

aap_run() { PATH="$work/bin:$PATH" measure INT "$AAP" "http://127.0.0.1:$ADMIN/readyz" "$1" "$2" \
  "$AAP_BIN" --config "$work/aap.yaml" --log-format json; }
ngx_run() { measure QUIT "$NGX" "http://127.0.0.1:$NGX/" "$1" "$2" nginx -c "$work/px.conf" -p "$work/px"; }

aap=$(per_request aap aap_run)
ngx=$(per_request nginx ngx_run)
echo "instructions per request (callgrind Ir, user space, $N1 vs $N2 requests):"
echo "  aml-auth-proxy  $aap"
echo "  nginx           $ngx"
python3 -c "print(f'  ratio           {$aap / $ngx:.2f}x')"
