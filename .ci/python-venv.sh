#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment for .ci/run and tests/interop: target/ci-venv, with the
# packages pinned in .ci/requirements.txt from PyPI. Idempotent: a stamp holding the requirements' checksum
# skips pip when nothing changed. Prints the venv's path on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CI_VENV:-$PWD/target/ci-venv}
requirements=.ci/requirements.txt
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
  echo "python venv: $venv is up to date" >&2
  echo "$venv"
  exit 0
fi
start=$SECONDS
rm -rf "$venv"
python3 -m venv "$venv" >&2
pip() { "$venv/bin/python" -m pip --disable-pip-version-check --no-input -q "$@"; }
# One retry: a registry hiccup should not fail CI.
pip install -r "$requirements" >&2 || { echo "pip install failed; retrying once" >&2; sleep 5; pip install -r "$requirements" >&2; }
echo "$want" > "$venv/.requirements.sha256"
echo "python venv: created $venv in $((SECONDS - start))s" >&2
echo "$venv"
