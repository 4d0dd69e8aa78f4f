#!/usr/bin/env bash
# Installs what the Unleash backend's tests of the flags layer need: Node.js and npm, PostgreSQL 15's server
# binaries (Debian), and the Unleash server from npm into DIR (default: unleash-7.5 in the cache of scripts/venv.sh,
# outside the checkout, so fresh clones and the mutation check's scratch copies share one install). unleash-server
# 7.5.x is the last line that runs on Node 20 (8.x needs Node 22). Quick when everything is present; the last line
# of its output is always `unleash-dir: DIR`.
# Usage: unleash-prereqs.sh [DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/venv.sh
source "$root/scripts/venv.sh"
dir=${1:-$(venv_cache_dir)/unleash-7.5}

declare -A need=(
  [/usr/bin/node]=nodejs
  [/usr/bin/npm]=npm
  [/usr/lib/postgresql/15/bin/initdb]=postgresql-15
  [/usr/lib/postgresql/15/bin/pg_ctl]=postgresql-15
)
missing=()
for path in "${!need[@]}"; do
  [ -x "$path" ] || missing+=("${need[$path]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  bash "$root/scripts/apt-prereqs.sh" --for "the Unleash tests" "${missing[@]}"
fi

if [ ! -f "$dir/node_modules/unleash-server/package.json" ]; then
  echo "==> Installing unleash-server 7.5.x into $dir"
  mkdir -p "$dir"
  cd "$dir"
  [ -f package.json ] || printf '{"name": "failsafe-unleash-test", "private": true}\n' > package.json
  (
    flock 9
    if [ ! -f node_modules/unleash-server/package.json ]; then
      npm install --no-audit --no-fund --loglevel=error 'unleash-server@~7.5.1' >/dev/null
    fi
  ) 9>"$dir/.install.lock"
fi
echo "unleash-dir: $dir"
