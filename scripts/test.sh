#!/usr/bin/env bash
# Every test: unit and behaviour tests (real ansible-playbook runs on this machine and on a fleet of
# namespace SSH hosts), the mutation check (scripts/mutants.py: deliberate breakages the suite must catch), then the
# ecosystem gates. `scripts/test.sh unit` runs the unit tests alone, `scripts/test.sh mutants` the mutation check.
#
# `all` runs waiting-bound work side by side, each on fleets of its own names: the fault matrix (its own 3-host
# fleet, mostly waiting on hosts, supervisor start-ups and health checks) and then the most waiting-bound behaviour
# tests, beside the other tests; then the mutation check beside the gates. Each part's output is printed whole when it ends; the run fails if any part failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
out="$root/tests/output"
mkdir -p "$out"
start=$(date +%s)

run_pytest() {
  local rc=0
  pytest "$@" || rc=$?
  # pytest exits 5 when it collected nothing: that is a failure of this command, never a pass.
  return "$rc"
}

# The closing line: every test of every pytest run of this command, from their JUnit reports.
summary() {
  python3 - "$@" <<'EOF'
import sys
import xml.etree.ElementTree as ET
totals = dict(tests=0, failures=0, errors=0, skipped=0)
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        print('test.sh: no JUnit report %s (%s)' % (path, exc))
        totals['errors'] += 1
        continue
    for suite in ([root] if root.tag == 'testsuite' else root.iter('testsuite')):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals['failures'] + totals['errors']
passed = totals['tests'] - failed - totals['skipped']
print('tests: %d passed, %d failed, %d skipped' % (passed, failed, totals['skipped']))
EOF
}

case "${1:-all}" in
  unit)
    # Debian's chromium for the HTML report test (installed as root; without root and without it, the test skips).
    if [ "$(id -u)" -eq 0 ]; then bash scripts/browser-prereqs.sh; fi
    # MariaDB and sqitch for the database layer's tests (root: they run private servers as their own users).
    if [ "$(id -u)" -eq 0 ]; then bash scripts/db-prereqs.sh; fi
    run_pytest -q tests/unit
    ;;
  all)
    if [ -x scripts/fleet-prereqs.sh ]; then bash scripts/fleet-prereqs.sh; fi
    # Debian's prometheus for the metric gate tests (the real server they query).
    if [ "$(id -u)" -eq 0 ]; then bash scripts/prometheus-prereqs.sh; fi
    # Debian's haproxy and nginx for the traffic layer's tests (installed as root; the tests' fixture does it too).
    if [ "$(id -u)" -eq 0 ]; then bash scripts/lb-prereqs.sh; fi
    # Debian's chromium for the HTML report test; a non-root run without it skips that test (with -rs its reason).
    if [ "$(id -u)" -eq 0 ]; then bash scripts/browser-prereqs.sh; fi
    # MariaDB and sqitch for the database layer's tests (PostgreSQL 15 comes with the machine).
    if [ "$(id -u)" -eq 0 ]; then bash scripts/db-prereqs.sh; fi
    rm -f "$out/pytest.xml" "$out/pytest-matrix.xml"
    status=0
    # The second stream: the fault matrix (its own fleet, fsx), then the most waiting-bound behaviour tests (deadlines,
    # bake times, unreachable hosts) on fleets named fsb on a subnet of their own. The first stream runs the rest.
    second=(tests/behaviour/test_canary.py tests/behaviour/test_bench_smoke.py tests/behaviour/test_commit_confirmed.py
            tests/behaviour/test_flags_unleash.py tests/behaviour/test_alert_blackhole.py
            tests/behaviour/test_rollback_connection.py tests/behaviour/test_awx_slices.py
            tests/behaviour/test_metric_gate_runs.py)
    ignore=(--ignore=tests/behaviour/test_fault_matrix.py)
    for path in "${second[@]}"; do ignore+=("--ignore=$path"); done
    echo "==> fault matrix and ${#second[@]} waiting-bound test files beside the other tests; their output: $out/fault-matrix.log"
    FAILSAFE_FLEET_NAME=fsb FAILSAFE_FLEET_SUBNET=10.213.250.0/24 \
      run_pytest -q -rs -p no:cacheprovider tests/behaviour/test_fault_matrix.py "${second[@]}" \
      --junitxml="$out/pytest-matrix.xml" > "$out/fault-matrix.log" 2>&1 &
    matrix=$!
    run_pytest -q -rs tests/unit tests/behaviour "${ignore[@]}" --junitxml="$out/pytest.xml" || status=1
    wait "$matrix" || status=1
    echo "==> fault matrix and waiting-bound tests output"
    cat "$out/fault-matrix.log"

    # Every mutant must be killed by its named tests (which the runs above have just seen pass), beside the gates.
    echo "==> mutation check beside the gates; its output: $out/mutants.log"
    python scripts/mutants.py > "$out/mutants.log" 2>&1 &
    mutants=$!
    # The ecosystem gates are part of the test: a failing gate fails this command.
    bash scripts/checks.sh || status=1
    wait "$mutants" || status=1
    echo "==> mutation check output"
    cat "$out/mutants.log"
    echo "test.sh: finished in $(( $(date +%s) - start )) s"
    summary "$out/pytest.xml" "$out/pytest-matrix.xml"
    exit "$status"
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
