#!/usr/bin/env bash
# Every test: unit and behaviour tests (real ansible-playbook runs on this machine and on a fleet of
# namespace SSH hosts), the mutation check (scripts/mutants.py: deliberate breakages the suite must catch), then the
# ecosystem gates. `scripts/test.sh unit` runs the unit tests alone, `scripts/test.sh mutants` the mutation check.
#
# `all` runs its parts side by side, each on fleets of its own names: two shards of the fault matrix (each on its own
# 3-host fleet, mostly waiting on hosts, supervisor start-ups and health checks), each followed by a list of
# waiting-bound behaviour tests, a fourth stream of such tests and a fifth of the newest layers' tests (power cuts,
# infrastructure, pipelines, staging gates, the self-revert's alert), beside the other behaviour tests; the unit tests once,
# as the units gate (ansible-test units); and the mutation check and the other gates at a lower priority from the
# start. Each part's output is printed whole when it ends; the run fails if any part failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
out="$root/tests/output"
mkdir -p "$out"
start=$(date +%s)

# CPU accounting: where this machine lets a cgroup be made (cgroup v1's cpuacct, or cgroup v2, as root), each part
# of `all` runs in a group of its own, and the CPU seconds each used (its hosts' and servers' processes included:
# a process stays in the group of the part that started it) are printed and written to tests/output/durations.md.
cpu_root=""
cpu_file=""
for base in /sys/fs/cgroup/cpuacct /sys/fs/cgroup/unified /sys/fs/cgroup; do
  if { [ -f "$base/cpuacct.usage" ] || [ -f "$base/cgroup.procs" ]; } && [ -w "$base" ] \
      && mkdir -p "$base/failsafe-test-$$" 2>/dev/null; then
    cpu_root="$base/failsafe-test-$$"
    if [ -f "$cpu_root/cpuacct.usage" ]; then cpu_file=cpuacct.usage; else cpu_file=cpu.stat; fi
    if [ -f "$cpu_root/$cpu_file" ]; then break; fi
    rmdir "$cpu_root" 2>/dev/null || true
    cpu_root=""
  fi
done
# cpu_join PART: the calling (sub)shell and everything it starts from now on count as PART (tests/conftest.py
# records each test's CPU seconds from the usage file it exports).
cpu_join() {
  if [ -n "$cpu_root" ]; then
    if mkdir -p "$cpu_root/$1" && echo "$BASHPID" > "$cpu_root/$1/cgroup.procs"; then
      export FAILSAFE_CPU_USAGE="$cpu_root/$1/$cpu_file"
    fi
  fi
}
# CPU seconds of each part, one "part seconds" line each.
cpu_report() {
  [ -n "$cpu_root" ] || return 0
  local part usage
  for part in "$cpu_root"/*/; do
    [ -d "$part" ] || continue
    part=${part%/}
    if [ "$cpu_file" = cpuacct.usage ]; then
      usage=$(awk '{printf "%.0f", $1 / 1e9}' "$part/cpuacct.usage")
    else
      usage=$(awk '$1 == "usage_usec" {printf "%.0f", $2 / 1e6}' "$part/cpu.stat")
    fi
    printf '%s %s\n' "${part##*/}" "$usage"
  done
}
cpu_cleanup() {
  [ -n "$cpu_root" ] || return 0
  local part
  for part in "$cpu_root"/*/; do rmdir "$part" 2>/dev/null || true; done
  rmdir "$cpu_root" 2>/dev/null || true
}

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

# The slowest tests of every pytest run of this command, from their JUnit reports (setup and teardown included):
# the 30 slowest are printed, and every test is written to tests/output/durations.md.
durations() {
  python3 - "$out/durations.md" "$(cpu_report)" "$(( $(date +%s) - start ))" "$@" <<'EOF'
import os
import sys
import xml.etree.ElementTree as ET
rows = []
cpu = [line.split() for line in sys.argv[2].splitlines() if line.strip()]
wall = int(sys.argv[3])
for path in sys.argv[4:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        continue
    for case in root.iter('testcase'):
        seconds = [p.get('value') for p in case.iter('property') if p.get('name') == 'cpu_seconds']
        rows.append((float(case.get('time') or 0), '%s::%s' % (case.get('classname'), case.get('name')), path,
                     float(seconds[0]) if seconds else None))
rows.sort(reverse=True)
lines = ['# Test durations', '', '%d tests, %.0f s in total across the streams.' % (len(rows), sum(r[0] for r in rows)),
         '', '| seconds | test | report |', '| ---: | --- | --- |']
lines += ['| %.1f | %s | %s |' % (t, name, path.rsplit('/', 1)[-1]) for t, name, path, dummy in rows]
files = {}
for t, name, path, seconds in rows:
    if seconds is not None:
        entry = files.setdefault(name.split('::')[0], [0.0, 0.0])
        entry[0] += seconds
        entry[1] += t
if files:
    lines += ['', '# CPU seconds by test file', '',
              'The CPU its stream used while the file\'s tests ran (its hosts and servers included).', '',
              '| CPU-s | seconds | file |', '| ---: | ---: | --- |']
    lines += ['| %.0f | %.0f | %s |' % (cpu_s, t, name) for name, (cpu_s, t) in sorted(files.items(), key=lambda i: -i[1][0])]
if cpu:
    total = sum(int(seconds) for dummy, seconds in cpu)
    head = ['# CPU seconds by part', '',
            '%d CPU-s in %d s of wall time (%.0f%% of %d cores); each part with the hosts and servers it started.'
            % (total, wall, 100.0 * total / max(wall, 1) / os.cpu_count(), os.cpu_count()),
            '', '| part | CPU-s | share |', '| --- | ---: | ---: |']
    head += ['| %s | %s | %.0f%% |' % (part, seconds, 100.0 * int(seconds) / max(total, 1))
             for part, seconds in sorted(cpu, key=lambda row: -int(row[1]))]
    lines = head + [''] + lines
    print('\n'.join(head[2:]))
with open(sys.argv[1], 'w') as handle:
    handle.write('\n'.join(lines) + '\n')
print('==> the 30 slowest tests (all of them: %s)' % sys.argv[1])
for t, name, path, dummy in rows[:30]:
    print('%8.1f s  %s' % (t, name))
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
    (
      cpu_join prereqs
      if [ -x scripts/fleet-prereqs.sh ]; then bash scripts/fleet-prereqs.sh; fi
      # Debian's prometheus for the metric gate tests (the real server they query).
      if [ "$(id -u)" -eq 0 ]; then bash scripts/prometheus-prereqs.sh; fi
      # Debian's prometheus-alertmanager for the watch window tests (it posts to the rulebook's webhook).
      if [ "$(id -u)" -eq 0 ]; then bash scripts/alertmanager-prereqs.sh; fi
      # Debian's haproxy and nginx for the traffic layer's tests (installed as root; the tests' fixture does it too).
      if [ "$(id -u)" -eq 0 ]; then bash scripts/lb-prereqs.sh; fi
      # Debian's chromium for the HTML report test; a non-root run without it skips that test (with -rs its reason).
      if [ "$(id -u)" -eq 0 ]; then bash scripts/browser-prereqs.sh; fi
      # MariaDB and sqitch for the database layer's tests (PostgreSQL 15 comes with the machine).
      if [ "$(id -u)" -eq 0 ]; then bash scripts/db-prereqs.sh; fi
      # Debian's fuse3 for the power-cut filesystem (tests/powercut) of the power-cut tests.
      if [ "$(id -u)" -eq 0 ]; then bash scripts/powercut-prereqs.sh; fi
      # systemd (PID 1 of the systemd fleet hosts: tests/fleet, init='systemd') for the systemd host tests.
      if [ "$(id -u)" -eq 0 ]; then bash scripts/systemd-prereqs.sh; fi
      # Node.js 22 and gitlab-ci-local from npm for the pipeline tests (into the tool cache; the tests call it too).
      bash scripts/pipeline-prereqs.sh >/dev/null
    ) || exit 1
    rm -rf "$out"/pytest*.xml "$out/waiting.log" "$out/layers.log" "$out"/fault-matrix*.md "$out"/fault-matrix*.json "$out/units-junit"
    status=0
    # Four pytest streams side by side, each on fleets of its own names and subnets: the fault matrix is split in
    # two shards (fleets fsx and fsy), each followed by a list of waiting-bound behaviour files (deadlines, bake
    # times, unreachable hosts; fleets fsb and fsc); a fourth stream runs another such list (fleet fse) and the first
    # stream everything else. (balanced by the files' times in tests/output/durations.md: about a quarter each)
    second=(tests/behaviour/test_outcome_oracle.py tests/behaviour/test_database_deploy.py
            tests/behaviour/test_new_user.py tests/behaviour/test_awx_slices.py)
    third=(tests/behaviour/test_bench_smoke.py tests/behaviour/test_flags_deploy.py
           tests/behaviour/test_rollback_connection.py tests/behaviour/test_flags_unleash.py
           tests/behaviour/test_history.py tests/behaviour/test_alert_channel_limits.py
           tests/behaviour/test_alert_blackhole.py tests/behaviour/test_awx_runner.py)
    fourth=(tests/behaviour/test_canary.py tests/behaviour/test_traffic_blue_green.py
            tests/behaviour/test_commit_confirmed.py tests/behaviour/test_callback_auto_rollback.py
            tests/behaviour/test_local_rollback.py tests/behaviour/test_secrets.py
            tests/behaviour/test_molecule.py tests/behaviour/test_metric_gate_runs.py
            tests/behaviour/test_local_commit_confirmed.py tests/behaviour/test_rollback_resume.py)
    ignore=(--ignore=tests/behaviour/test_fault_matrix.py)
    # the fifth stream (fleet fsf; the power-cut tests build their own fleet, hb): each file drives real servers,
    # tools and pipelines of its own and waits on them
    fifth=(tests/behaviour/test_powercut_crash.py tests/behaviour/test_powercut_fs.py
           tests/behaviour/test_infra_terraform.py tests/behaviour/test_ci_pipelines.py
           tests/behaviour/test_versioned_builds.py tests/behaviour/test_staging_gate.py
           tests/behaviour/test_redeploy_gate.py tests/behaviour/test_reproduce.py
           tests/behaviour/test_self_revert_alert.py tests/behaviour/test_systemd_hosts.py
           tests/behaviour/test_watch_window.py tests/behaviour/test_infra_cloudformation.py)
    for path in "${second[@]}" "${third[@]}" "${fourth[@]}" "${fifth[@]}"; do ignore+=("--ignore=$path"); done
    # The unit tests run once, as the units gate (ansible-test units, in its own virtualenv): beside the streams,
    # at the same priority; their JUnit reports join the streams' in the summary and the durations report.
    echo "==> unit tests: the units gate (ansible-test units; output: $out/units.log)"
    (cpu_join units; FAILSAFE_CHECKS_JUNIT_DIR="$out/units-junit" exec bash scripts/checks.sh units) \
      > "$out/units.log" 2>&1 &
    units=$!
    # The mutation check and the other ecosystem gates start at once too, at a lower priority, so that they fill
    # the time the streams spend waiting. A mutant's kill counts only when its killer tests pass unmutated, which
    # the streams and the unit tests prove: this command fails when any of them fails, whatever the mutation check
    # reported.
    other_gates=()
    while IFS= read -r gate; do
      if [ "$gate" != units ]; then other_gates+=("$gate"); fi
    done < <(bash scripts/checks.sh --list)
    echo "==> mutation check (output: $out/mutants.log) and gates ${other_gates[*]} (output: $out/gates.log)" \
         "at a lower priority"
    (cpu_join mutants; FAILSAFE_MUTANTS_SUBNET=244 exec nice -n 10 python scripts/mutants.py) > "$out/mutants.log" 2>&1 &
    mutants=$!
    (cpu_join gates; exec nice -n 10 bash scripts/checks.sh "${other_gates[@]}") > "$out/gates.log" 2>&1 &
    gates=$!
    echo "==> fault matrix shards with ${#second[@]} + ${#third[@]} waiting-bound test files, ${#fourth[@]} more" \
         "such files and ${#fifth[@]} of the newest layers, beside the other tests; their output:" \
         "$out/fault-matrix-1.log, $out/fault-matrix-2.log, $out/waiting.log, $out/layers.log"
    (cpu_join stream-2; FAILSAFE_FAULT_SHARD=1/2 FAILSAFE_FAULT_FLEET=fsx FAILSAFE_FLEET_NAME=fsb \
      FAILSAFE_FLEET_SUBNET=10.213.250.0/24 run_pytest -q -rs -p no:cacheprovider tests/behaviour/test_fault_matrix.py \
      "${second[@]}" --junitxml="$out/pytest-matrix-1.xml") > "$out/fault-matrix-1.log" 2>&1 &
    stream2=$!
    (cpu_join stream-3; FAILSAFE_FAULT_SHARD=2/2 FAILSAFE_FAULT_FLEET=fsy FAILSAFE_FLEET_NAME=fsc \
      FAILSAFE_FLEET_SUBNET=10.213.251.0/24 run_pytest -q -rs -p no:cacheprovider tests/behaviour/test_fault_matrix.py \
      "${third[@]}" --junitxml="$out/pytest-matrix-2.xml") > "$out/fault-matrix-2.log" 2>&1 &
    stream3=$!
    (cpu_join stream-4; FAILSAFE_FLEET_NAME=fse FAILSAFE_FLEET_SUBNET=10.213.252.0/24 \
      run_pytest -q -rs -p no:cacheprovider "${fourth[@]}" --junitxml="$out/pytest-waiting.xml") \
      > "$out/waiting.log" 2>&1 &
    stream4=$!
    (cpu_join stream-5; FAILSAFE_FLEET_NAME=fsf FAILSAFE_FLEET_SUBNET=10.213.253.0/24 \
      run_pytest -q -rs -p no:cacheprovider "${fifth[@]}" --junitxml="$out/pytest-layers.xml") \
      > "$out/layers.log" 2>&1 &
    stream5=$!
    (cpu_join stream-1; run_pytest -q -rs tests/behaviour "${ignore[@]}" --junitxml="$out/pytest.xml") || status=1
    wait "$stream2" || status=1
    echo "==> fault matrix shard 1 and waiting-bound tests output"
    cat "$out/fault-matrix-1.log"
    wait "$stream3" || status=1
    echo "==> fault matrix shard 2 and waiting-bound tests output"
    cat "$out/fault-matrix-2.log"
    wait "$stream4" || status=1
    echo "==> waiting-bound tests output"
    cat "$out/waiting.log"
    wait "$stream5" || status=1
    echo "==> the newest layers' tests output"
    cat "$out/layers.log"
    wait "$units" || status=1
    echo "==> unit tests (units gate) output"
    cat "$out/units.log"
    wait "$gates" || status=1
    echo "==> gates output"
    cat "$out/gates.log"
    wait "$mutants" || status=1
    echo "==> mutation check output"
    cat "$out/mutants.log"
    # ansible-test writes one report per test context; with none, the unmatched pattern stays as a path that
    # summary() counts as an error
    reports=("$out/pytest.xml" "$out/pytest-matrix-1.xml" "$out/pytest-matrix-2.xml" "$out/pytest-waiting.xml"
             "$out/pytest-layers.xml" "$out"/units-junit/*.xml)
    durations "${reports[@]}"
    echo "test.sh: finished in $(( $(date +%s) - start )) s"
    cpu_cleanup
    summary "${reports[@]}"
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
