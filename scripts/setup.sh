#!/usr/bin/env bash
# Sets up everything the demo and the tests need on a fresh machine: a virtualenv with the pinned
# tooling, and a collections path that exposes this checkout as failsafe.deploy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${FAILSAFE_VENV:-$root/.venv}"
stamp="$venv/.failsafe-stamp"
want=$(sha256sum "$root/requirements-dev.txt" | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> Creating virtualenv $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/requirements-dev.txt" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$venv/bin/python" -c "import ansible, jmespath, pytest, supervisor, ansible_runner" \
    || { echo "virtualenv install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# ansible needs the collection at .../ansible_collections/failsafe/deploy: a throwaway link, never a move.
coll="$root/.build/collections/ansible_collections/failsafe"
mkdir -p "$coll"
ln -sfn "$root" "$coll/deploy"
