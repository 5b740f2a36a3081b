#!/usr/bin/env bash
# F21: a bounded leak soak of the release binary, not part of CI.
#
# Builds the release binary, starts loopback mocks (benches/soak/mocks.py: an Entra ID token endpoint issuing
# short-lived tokens, and a plain-HTTP upstream), runs the proxy, and drives a mixed load with wrk
# (benches/soak/mix.lua: small GETs, 64 KiB downloads, 16 KiB POSTs, upstream resets mid-body, slow answers, 404s)
# while Python clients (benches/soak/abort_client.py) start large downloads and uploads and drop them mid-way.
# Every 10 s it samples the proxy's RSS, peak RSS, open file descriptors, threads and in-flight gauge from /proc
# and /metrics, and writes the before/after numbers to benches/soak/RESULTS.md.
#
#   benches/soak/run.sh                       # 150 s of load (the recorded run)
#   SOAK_DURATION=1800 benches/soak/run.sh    # the full 30-minute soak (~1M+ requests)
#
# Knobs: SOAK_DURATION (s), SOAK_CONNECTIONS (wrk connections), SOAK_THREADS (wrk threads), SOAK_ABORTERS
# (concurrent aborting clients), SOAK_TOKEN_TTL (s; tokens rotate at about half of it).
# Pass criteria: RSS growth between the first sixth of the run and its end < 10 %; open file
# descriptors back to the idle baseline after the load; no proxy-generated 5xx other than the expected
# UpstreamUnavailable for the deliberate resets. Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${SOAK_DURATION:-150}
CONNECTIONS=${SOAK_CONNECTIONS:-32}
THREADS=${SOAK_THREADS:-2}
ABORTERS=${SOAK_ABORTERS:-4}
TOKEN_TTL=${SOAK_TOKEN_TTL:-60}
RESULTS=benches/soak/RESULTS.md

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building the release binary"
cargo build --release --locked --quiet
BIN=$PWD/target/release/aml-auth-proxy

if ! command -v wrk >/dev/null 2>&1; then
  echo "== installing wrk"
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null; }
  fi
  command -v wrk >/dev/null 2>&1 || { echo "wrk is required (apt-get install wrk)"; exit 1; }
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_file() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "no $1"; exit 1; }

echo "== starting the mocks"
python3 benches/soak/mocks.py token "$work/token.port" "$TOKEN_TTL" & pids+=($!)
python3 benches/soak/mocks.py upstream "$work/upstream.port" & pids+=($!)
wait_file "$work/token.port"; wait_file "$work/upstream.port"
TOKEN_PORT=$(cat "$work/token.port"); UPSTREAM_PORT=$(cat "$work/upstream.port")
PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port)

cat > "$work/config.yaml" <<YAML
listen: 127.0.0.1:$PROXY_PORT
admin_listen: 127.0.0.1:$ADMIN_PORT
authority_host: http://127.0.0.1:$TOKEN_PORT
limits:
  max_in_flight: 10000
  upstream_response_timeout: 30s
credentials:
  soak:
    client_secret: { tenant_id: soak, client_id: 11111111-2222-3333-4444-555555555555, client_secret: soak-secret }
routes:
  - name: soak
    path_prefix: /
    upstream: http://127.0.0.1:$UPSTREAM_PORT
    scope: https://management.azure.com/.default
    credential: soak
YAML

echo "== starting the proxy"
env -i PATH=/usr/bin:/bin HOME="$work" AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:9 \
  "$BIN" run --config "$work/config.yaml" --log-level warn 2> "$work/proxy.log" & PROXY_PID=$!
pids+=("$PROXY_PID")
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null

status_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$PROXY_PID/status"; }
fds() { ls "/proc/$PROXY_PID/fd" | wc -l; }
metric() { curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
T0=$SECONDS
sample() { # label
  printf '%s,%s,%s,%s,%s,%s,%s\n' "$1" "$((SECONDS - T0))" "$(status_kb VmRSS)" "$(status_kb VmHWM)" "$(fds)" \
    "$(status_kb Threads)" "$(metric aml_auth_proxy_in_flight_requests)" >> "$work/samples.csv"
}
echo "label,t_s,rss_kb,hwm_kb,fds,threads,in_flight" > "$work/samples.csv"

echo "== warm-up"
wrk -t1 -c4 -d3s "http://127.0.0.1:$PROXY_PORT/ok" > /dev/null
sleep 2
T0=$SECONDS
cut -d' ' -f1-3 /proc/loadavg > "$work/load_before"
sample baseline

echo "== load: ${DURATION}s, $CONNECTIONS connections + $ABORTERS aborting clients"
start=$SECONDS
( while [ $((SECONDS - start)) -lt "$DURATION" ]; do sleep 10; sample load; done ) & SAMPLER=$!
python3 benches/soak/abort_client.py 127.0.0.1 "$PROXY_PORT" "$DURATION" "$ABORTERS" > "$work/aborts.json" & ABORT=$!
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency -s benches/soak/mix.lua \
  "http://127.0.0.1:$PROXY_PORT" > "$work/wrk.txt" 2>&1 || true
wait "$ABORT" || true
wait "$SAMPLER" || true
sample end-of-load
cut -d' ' -f1-3 /proc/loadavg > "$work/load_after"
# Idle again: in-flight should be back to 0 and the clients' connections closed; wait up to 30 s for it.
for _ in $(seq 30); do
  sleep 1
  [ "$(metric aml_auth_proxy_in_flight_requests)" = 0 ] && break
done
sample after-idle

echo "== results"
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" > "$work/metrics.txt"
kill -TERM "$PROXY_PID"
exit_code=0; wait "$PROXY_PID" || exit_code=$?

python3 - "$work" "$RESULTS" "$DURATION" "$CONNECTIONS" "$ABORTERS" "$TOKEN_TTL" "$exit_code" <<'PY'
import csv, json, re, sys, datetime, platform, os
work, out, duration, conns, aborters, ttl, exit_code = sys.argv[1:8]
rows = list(csv.DictReader(open(f"{work}/samples.csv")))
wrk = open(f"{work}/wrk.txt").read()
aborts = json.loads(open(f"{work}/aborts.json").read() or "{}")
metrics = open(f"{work}/metrics.txt").read() if os.path.exists(f"{work}/metrics.txt") else ""
base = rows[0]; end = [r for r in rows if r["label"] == "end-of-load"][0]; after = rows[-1]
load = [r for r in rows if r["label"] == "load"]
early = load[max(0, len(load) // 6 - 1)] if load else base
mb = lambda kb: int(kb) / 1024
growth = (int(end["rss_kb"]) - int(early["rss_kb"])) / int(early["rss_kb"]) * 100
reqs = re.search(r"(\d+) requests in ([\d.]+\w+)", wrk)
errors = re.search(r"Socket errors:.*", wrk)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk)
total = int(reqs.group(1)) if reqs else 0
aborted = aborts.get("aborted_downloads", 0) + aborts.get("aborted_uploads", 0)
lines = [
  "# Soak results (fault F21: a bounded leak soak)", "",
  f"Recorded by `benches/soak/run.sh` on {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC ({platform.machine()}, "
  f"{os.cpu_count()} CPUs; the proxy, the Python mocks, wrk and the aborting clients share them; load average "
  f"{open(f'{work}/load_before').read().strip()} before the load, {open(f'{work}/load_after').read().strip()} at its end). "
  f"Load: {duration} s, wrk with {conns} connections (benches/soak/mix.lua) plus {aborters} aborting clients; "
  f"tokens live {ttl} s, so the proxy rotated its token about every {int(ttl)//2} s throughout.", "",
  "| | requests / events |", "|---|---|",
  f"| wrk requests (mixed) | {total} ({rps.group(1) if rps else '?'} req/s) |",
  f"| of which non-2xx (the deliberate /reset aborts show as socket read errors instead; /no-such-path is an upstream 404) | {non2xx.group(1) if non2xx else 0} |",
  f"| wrk socket errors (each /reset is one read error by design) | {errors.group(0) if errors else 'none'} |",
  f"| aborted downloads / uploads (client went away mid-body) | {aborts.get('aborted_downloads', 0)} / {aborts.get('aborted_uploads', 0)} |",
  f"| total requests including aborted ones | {total + aborted} |",
  f"| proxy exit code after SIGTERM | {exit_code} |", "",
  "| sample | t (s) | RSS (MiB) | peak RSS (MiB) | open fds | threads | in-flight |", "|---|---|---|---|---|---|---|",
]
for r in rows:
  lines.append(f"| {r['label']} | {r['t_s']} | {mb(r['rss_kb']):.1f} | {mb(r['hwm_kb']):.1f} | {r['fds']} | {r['threads']} | {r['in_flight']} |")
lines += ["",
  f"- RSS growth from the first sixth of the load (t = {early['t_s']} s, {mb(early['rss_kb']):.1f} MiB) to its end "
  f"({mb(end['rss_kb']):.1f} MiB): **{growth:+.1f} %** (criterion: < 10 %).",
  f"- Open file descriptors: {base['fds']} idle before, {end['fds']} at the end of the load, **{after['fds']}** once idle "
  f"(criterion: back to the baseline).",
  f"- Threads: {base['threads']} before, {after['threads']} after (tokio's worker pool; the proxy exposes no task "
  "count, so the in-flight gauge stands in for it).",
  f"- In-flight gauge once idle (t = {after['t_s']} s): **{after['in_flight']}** (criterion: 0). A value above 0 would be a leaked "
  "request slot (`f11_client_disconnect_before_the_response_head_releases_its_in_flight_slot` in tests/faults.rs "
  "guards the case the first soak found: a caller that disconnects before the response head).", "",
  "Proxy metrics at the end (requests by status class, token requests). The 4xx are the upstream's 404s for "
  "`/no-such-path` plus the proxy's 400 `BadRequest` (\"the request body is malformed or was interrupted\") for "
  "uploads the aborting clients dropped mid-body; the `/reset` aborts are counted as 2xx (the head was 200).", "", "```"]
lines += [l for l in metrics.splitlines() if l.startswith(("aml_auth_proxy_requests_total", "aml_auth_proxy_token_requests_total", "aml_auth_proxy_auth_failures_total"))]
lines += ["```", "", "wrk's own summary:", "", "```", wrk.strip(), "```", ""]
open(out, "w").write("\n".join(lines))
print("\n".join(lines[:40]))
PY
