#!/usr/bin/env bash
# Installs the Debian tools .ci/run needs when they are missing: curl (interop client), promtool (package
# `prometheus`: checks the alerting rules and a live /metrics scrape), headless Chromium (the browser sign-in
# test) and podman with runc (builds and runs the container image). Runs `apt-get update` at most once.
set -euo pipefail
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
if [ ${#missing[@]} -eq 0 ]; then
  echo "apt tools: curl, promtool, chromium, podman and runc already present"
  exit 0
fi
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The `prometheus` package ships a server too: make sure installing it starts no daemon here.
policy=/usr/sbin/policy-rc.d
added_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=true
fi
status=0
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
if $added_policy; then rm -f "$policy"; fi
if [ $status -ne 0 ]; then
  echo "apt-get install ${missing[*]} failed (exit $status)" >&2
  exit $status
fi
echo "apt tools: installed ${missing[*]} in $((SECONDS - start))s"
