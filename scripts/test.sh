#!/usr/bin/env bash
# Every test: unit and behaviour tests (real ansible-playbook runs on this machine and on a fleet of
# namespace SSH hosts), the mutation check (scripts/mutants.py: deliberate breakages the suite must catch), then the
# ecosystem gates. `scripts/test.sh unit` runs the unit tests alone, `scripts/test.sh mutants` the mutation check.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
mkdir -p tests/output
start=$(date +%s)

run_pytest() {
  local rc=0
  pytest "$@" || rc=$?
  # pytest exits 5 when it collected nothing: that is a failure of this command, never a pass.
  return "$rc"
}

case "${1:-all}" in
  unit)
    run_pytest -q tests/unit
    ;;
  all)
    if [ -x scripts/fleet-prereqs.sh ]; then bash scripts/fleet-prereqs.sh; fi
    run_pytest -q -rs tests/unit tests/behaviour --junitxml=tests/output/pytest.xml
    # Every mutant must be killed by its named tests (which the run above has just seen pass).
    python scripts/mutants.py
    # The ecosystem gates are part of the test: a failing gate fails this command (set -e).
    bash scripts/checks.sh
    ;;
  mutants)
    python scripts/mutants.py
    ;;
  *)
    echo "usage: $0 [unit|mutants|all]" >&2
    exit 2
    ;;
esac
echo "test.sh: finished in $(( $(date +%s) - start )) s"
