#!/usr/bin/env bash
# Installs the real Node.js clients the interop tests drive (tests/interop/node/package.json, pinned by its lock
# file) into target/ci-node with `npm ci`. Idempotent: a stamp holding the lock file's checksum skips npm when
# nothing changed. Prints the directory (holding node_modules) on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CI_NODE:-$PWD/target/ci-node}
want=$(cat tests/interop/node/package.json tests/interop/node/package-lock.json | sha256sum | cut -d' ' -f1)
if [ -d "$dir/node_modules" ] && [ "$(cat "$dir/.lock.sha256" 2>/dev/null)" = "$want" ]; then
  echo "node clients: $dir is up to date" >&2
  echo "$dir"
  exit 0
fi
start=$SECONDS
rm -rf "$dir"
mkdir -p "$dir"
cp tests/interop/node/package.json tests/interop/node/package-lock.json "$dir/"
npm_ci() { (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2); }
npm_ci || { echo "npm ci failed; retrying once" >&2; sleep 5; npm_ci; }
echo "$want" > "$dir/.lock.sha256"
echo "node clients: installed into $dir in $((SECONDS - start))s" >&2
echo "$dir"
