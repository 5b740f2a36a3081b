#!/usr/bin/env bash
# Builds the runtime image and runs it the way a cluster would, against aml-azure-emulator on the host (run by
# .ci/run after the release build; needs podman and runc, see .ci/apt-tools.sh).
#
# No registry is reachable from CI, so deploy/Dockerfile's bases cannot be pulled. deploy/Containerfile.ci is its
# runtime stage on a base assembled from this Debian 12 host's files instead; a test checks the two files agree.
# Podman runs with its own storage under a temporary directory (vfs, runc, cgroupfs: what these machines support),
# so nothing outside that directory is touched; the image and container are removed by name and id at the end.
#
# Checks: `--version`; the container, read-only and as UID 65532, answers /healthz, then /readyz once it holds
# a token from the emulator; a proxied request comes back 200 with the token's claims; the image's own `probe`
# works; SIGTERM ends it with exit code 0. Prints the image size.
#
#   deploy/image-test.sh      (BIN and EMULATOR default to target/release/aml-auth-proxy and aml-azure-emulator;
#                              KEEP=1 keeps the work directory)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS

for tool in podman runc curl python3 strip ldd; do
  command -v "$tool" >/dev/null 2>&1 || { echo "image-test: $tool is missing (run .ci/apt-tools.sh)" >&2; exit 1; }
done
bin=${BIN:-$root/target/release/aml-auth-proxy}
emulator_bin=${EMULATOR:-$root/target/release/aml-azure-emulator}
for b in "$bin" "$emulator_bin"; do
  [ -x "$b" ] || { echo "image-test: $b is missing: run cargo build --locked --release first" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/aml-auth-proxy-image.XXXXXX")
tag=localhost/aml-auth-proxy:ci-$$
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
P=(env CONTAINERS_CONF="$work/containers.conf" podman --root "$work/storage" --runroot "$work/run"
   --storage-driver vfs --runtime runc --cgroup-manager=cgroupfs)
U=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
cid=""
emulator_pid=""
cleanup() {
  [ -n "$cid" ] && "${P[@]}" rm -f "$cid" >/dev/null 2>&1 || true
  "${P[@]}" rmi -f "$tag" >/dev/null 2>&1 || true
  [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "image-test: work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "PASS [image] $1"; }
bad() { failed=$((failed + 1)); echo "FAIL [image] $1: $2"; }

# === the build context: the stripped binary and a base made of the host's files ===

ctx=$work/context
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/home"
strip --strip-debug -o "$ctx/aml-auth-proxy" "$bin"   # as deploy/Dockerfile's build stage does
cp deploy/Containerfile.ci "$ctx/Containerfile"
# The dynamic loader and every library the binary links (glibc, libgcc_s…), at their paths.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u | while read -r lib; do
  cp --parents -L "$lib" "$ctx/rootfs/"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$ctx/rootfs/etc/group"

build_started=$SECONDS
"${P[@]}" build --quiet --network host "${U[@]}" -t "$tag" \
  --build-arg GIT_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || true)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -f "$ctx/Containerfile" "$ctx" > "$work/build.out"
size=$("${P[@]}" image inspect "$tag" --format '{{.Size}}')
echo "image-test: built $tag in $((SECONDS - build_started))s; image size $size bytes ($(( (size + 524288) / 1048576 )) MiB)"
user=$("${P[@]}" image inspect "$tag" --format '{{.Config.User}}')
if [ "$user" = "65532:65532" ]; then ok "the image runs as 65532:65532"; else bad "image user" "$user"; fi

# Every run: read-only root file system, the non-root user, host network (everything stays on loopback).
run=(run --network host "${U[@]}" --read-only --user 65532:65532)

version=$("${P[@]}" "${run[@]}" --rm "$tag" --version 2>&1 || true)
if [[ $version == "aml-auth-proxy 0.1.0"* ]]; then ok "--version: $(echo "$version" | head -n1)"; else bad "--version" "$version"; fi

# === the emulator on the host, the proxy in the container ===

"$emulator_bin" --port 0 > "$work/emulator.json" 2> "$work/emulator.err" &
emulator_pid=$!
for _ in $(seq 300); do [ -s "$work/emulator.json" ] && break; sleep 0.1; done
[ -s "$work/emulator.json" ] || { echo "image-test: the emulator did not start"; cat "$work/emulator.err"; exit 1; }
read -r authority upstream < <(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["authority_host"], m["upstream"])' "$work/emulator.json")
read -r listen admin < <(python3 -c '
import socket
ports = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s); 
print(*("127.0.0.1:%d" % s.getsockname()[1] for s in ports))')

mkdir -p "$work/etc"
cat > "$work/etc/config.yaml" <<EOF
listen: $listen
admin_listen: $admin
authority_host: $authority
credentials:
  sp:
    client_secret:
      tenant_id: image-test-tenant
      client_id: 00001111-aaaa-2222-bbbb-3333cccc4444
      client_secret_file: /etc/aml-auth-proxy/client-secret
routes:
  - name: echo
    path_prefix: /
    upstream: $upstream
    scope: https://ml.azure.com/.default
    credential: sp
EOF
printf 'image-test-client-secret\n' > "$work/etc/client-secret"
# As a mounted Kubernetes Secret: owned by the container's user, readable by it alone.
chown 65532:65532 "$work/etc/client-secret"
chmod 600 "$work/etc/client-secret"
chmod 644 "$work/etc/config.yaml"
chmod 755 "$work/etc"

cid=$("${P[@]}" "${run[@]}" -d -v "$work/etc:/etc/aml-auth-proxy:ro" "$tag" \
  run --config /etc/aml-auth-proxy/config.yaml --log-format json)

code() { curl -s -o "$work/answer" -w '%{http_code}' --max-time 5 "$1" || echo 000; }
healthz=000
for _ in $(seq 100); do
  healthz=$(code "http://$admin/healthz")
  [ "$healthz" = 200 ] && break
  sleep 0.1
done
if [ "$healthz" = 200 ]; then ok "/healthz 200"; else bad "/healthz" "$healthz; $("${P[@]}" logs "$cid" 2>&1 | tail -n 5)"; fi
readyz=000
for _ in $(seq 100); do
  readyz=$(code "http://$admin/readyz")
  [ "$readyz" = 200 ] && break
  sleep 0.1
done
if [ "$readyz" = 200 ]; then ok "/readyz 200 once the token is held"; else bad "/readyz" "$readyz: $(cat "$work/answer")"; fi

status=$(code "http://$listen/echo/from-the-image")
if [ "$status" = 200 ] && python3 - "$work/answer" <<'PY'
import json, sys
echo = json.load(open(sys.argv[1]))
claims = echo["authorization"]["claims"]
assert echo["path"] == "/echo/from-the-image", echo["path"]
assert claims["aud"] == "https://ml.azure.com" and claims["tid"] == "image-test-tenant", claims
assert claims["appid"] == "00001111-aaaa-2222-bbbb-3333cccc4444", claims
PY
then ok "a proxied request: 200 with the injected token's claims"; else bad "proxied request" "$status $(head -c 400 "$work/answer")"; fi

if "${P[@]}" exec "$cid" /usr/local/bin/aml-auth-proxy probe "http://$admin/readyz" > /dev/null 2>&1; then
  ok "the image's own probe (aml-auth-proxy probe …/readyz)"
else
  bad "probe" "exit $?"
fi

"${P[@]}" kill --signal TERM "$cid" > /dev/null
exit_code=$(timeout 60 "${P[@]}" wait "$cid" || echo timeout)
if [ "$exit_code" = 0 ]; then ok "SIGTERM: drained and exited 0"; else bad "SIGTERM" "exit $exit_code; $("${P[@]}" logs "$cid" 2>&1 | tail -n 5)"; fi
if "${P[@]}" logs "$cid" 2>&1 | grep -qE -e 'eyJ[A-Za-z0-9_-]{10,}\.eyJ' -e 'image-test-client-secret'; then
  bad "logs" "a token or the secret reached the container's log"
else
  ok "no token or secret in the container's log"
fi

echo "image-test: $passed passed, $failed failed ($((SECONDS - started))s); image size $size bytes"
[ "$failed" -eq 0 ]
