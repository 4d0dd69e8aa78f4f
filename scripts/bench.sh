#!/usr/bin/env bash
# Benchmarks: time to recover, snapshot cost, callback overhead, fleet scaling, peak memory; the
# database layer's backup and restore against pg_dump + pg_restore; traffic: blue-green and switch-back behind
# HAProxy and nginx.
# `scripts/bench.sh` writes bench/results.json and bench/results.md (how long it took: the first line of results.md;
# needs root).
# `scripts/bench.sh --smoke [--out DIR]` runs every benchmark at tiny sizes, once (results to DIR, default a temp dir).
# Other options are passed to bench/run.py (--only PART, --ref REV, --snap-mb N, --snap-files N, --db-mb N).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
if ! command -v rsync >/dev/null 2>&1; then
  echo "==> Installing rsync (a baseline of the snapshot benchmark)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null; }
fi
if [ -x scripts/fleet-prereqs.sh ]; then bash scripts/fleet-prereqs.sh; fi
# Debian's haproxy and nginx for the traffic benchmark
if [ "$(id -u)" -eq 0 ]; then bash scripts/lb-prereqs.sh; fi
args=("$@")
smoke=0
for a in "$@"; do [ "$a" = "--smoke" ] && smoke=1; done
if [ "$smoke" = 1 ] && [[ " $* " != *" --out "* ]]; then
  args+=(--out "$(mktemp -d /tmp/failsafe-bench-smoke.XXXXXX)")
fi
exec python "$root/bench/run.py" "${args[@]}"
