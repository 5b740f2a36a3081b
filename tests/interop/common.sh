# Sourced by the interop scripts (run.sh, aml_routes.sh, token_service.sh): the set-up they share. Each script
# sets `label` (its prefix in messages), cds to the repository root, then calls `interop_setup`.

# interop_setup WORK-NAME TOOL...: checks the tools, finds (or builds) both release binaries ($bin, $emulator_bin,
# overridable with BIN / EMULATOR), makes the Python venv ($venv), a work directory ($work) that the EXIT trap
# removes unless KEEP=1, and stops whatever the script started in $proxy_pid, $mock_pid or $emulator_pid.
interop_setup() {
  local name=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$label: $tool is missing (run .ci/apt-tools.sh)" >&2; exit 1; }
  done
  root=$PWD
  started=$SECONDS
  bin=${BIN:-$root/target/release/aml-auth-proxy}
  emulator_bin=${EMULATOR:-$root/target/release/aml-azure-emulator}
  if [ ! -x "$bin" ] || [ ! -x "$emulator_bin" ]; then
    cargo build --locked --release   # both binaries of the package
  fi
  venv=$(bash "$root/.ci/python-venv.sh")   # idempotent: reuses an up-to-date venv
  work=$(mktemp -d "${TMPDIR:-/tmp}/aml-auth-proxy-$name.XXXXXX")
  proxy_pid="" mock_pid="" emulator_pid=""
  passed=0
  failed=0
  trap interop_cleanup EXIT
}

interop_cleanup() {
  local pid
  for pid in "$proxy_pid" "$mock_pid" "$emulator_pid"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "$label: work directory kept: $work"; else rm -rf "$work"; fi
}

ok() { passed=$((passed + 1)); echo "PASS [$label] $1"; }
bad() { failed=$((failed + 1)); echo "FAIL [$label] $1: $2"; }

# wait_listening LOG FIELD...: waits (15 s at most, while $proxy_pid lives) for the proxy's JSON "listening" line in
# LOG and prints the named fields of it, space-separated; exits the script with the log when the proxy did not start.
wait_listening() {
  local log=$1 fields
  shift
  fields="$*"
  local line=""
  for _ in $(seq 150); do
    line=$(python3 -c '
import json, sys
for text in open(sys.argv[1]):
    try:
        e = json.loads(text)
    except ValueError:
        continue
    if e.get("message") == "listening":
        print(" ".join(str(e[f]) for f in sys.argv[2:])); break' "$log" $fields 2>/dev/null || true)
    [ -n "$line" ] && break
    kill -0 "$proxy_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$line" ] || { echo "$label: the proxy did not start" >&2; cat "$log" >&2; exit 1; }
  echo "$line"
}
