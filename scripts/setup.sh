#!/usr/bin/env bash
# Sets up everything the demo and the tests need on a fresh machine: a virtualenv with the locked tooling
# (scripts/venv.sh: cached outside the checkout by the hash of the lock), and a collections path that exposes this
# checkout as failsafe.deploy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/venv.sh
source "$root/scripts/venv.sh"
# requirements-dev.txt under the exact versions of requirements-dev.lock (refreshed on purpose: scripts/lock.sh)
ensure_venv dev "${FAILSAFE_VENV:-$root/.venv}" ansible jmespath pytest supervisor ansible_runner \
  || { echo "virtualenv install failed" >&2; exit 1; }

# ansible needs the collection at .../ansible_collections/failsafe/deploy: a throwaway link, never a move.
coll="$root/.build/collections/ansible_collections/failsafe"
mkdir -p "$coll"
ln -sfn "$root" "$coll/deploy"
