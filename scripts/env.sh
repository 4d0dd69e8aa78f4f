# shellcheck shell=bash
# Sourced by the other scripts: the environment in which ansible finds this checkout as failsafe.deploy.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${FAILSAFE_VENV:-$root/.venv}"
export PATH="$venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$root/.build/collections"
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
export ANSIBLE_HOME="${ANSIBLE_HOME:-$root/.build/ansible-home}"
export ANSIBLE_LOCAL_TEMP="$ANSIBLE_HOME/tmp"
export PYTHONDONTWRITEBYTECODE=1
