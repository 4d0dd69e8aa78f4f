#!/usr/bin/env bash
# Prepares a demo directory: the release archives of the example app.
# Usage: prepare.sh DIR
set -euo pipefail
dir=$(mkdir -p "$1" && cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/dist" "$dir/srv" "$dir/state"
python3 "$here/../app/build.py" --out "$dir/dist" >/dev/null
