#!/usr/bin/env bash
# Installs what the Unleash backend's tests of the flags layer need: Node.js and npm, PostgreSQL 15's server
# binaries (Debian), and the Unleash server from npm into DIR (default .build/unleash). unleash-server 7.5.x is the
# last line that runs on Node 20 (8.x needs Node 22). Quick and silent when everything is present.
# Usage: unleash-prereqs.sh [DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/.build/unleash}

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
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "unleash-prereqs: missing ${pkgs[*]}; run this script as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "==> Installing ${pkgs[*]} for the Unleash tests"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

if [ ! -f "$dir/node_modules/unleash-server/package.json" ]; then
  echo "==> Installing unleash-server 7.5.x into $dir"
  mkdir -p "$dir"
  cd "$dir"
  [ -f package.json ] || printf '{"name": "failsafe-unleash-test", "private": true}\n' > package.json
  npm install --no-audit --no-fund --loglevel=error 'unleash-server@~7.5.1' >/dev/null
fi
