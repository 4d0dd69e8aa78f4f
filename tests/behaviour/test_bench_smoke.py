# Smoke run of every benchmark of `make bench` at tiny sizes, so that the benchmarks do not rot.
import json
import os
import re
import subprocess
import sys
import time

import pytest

from support import assert_no_ignored_callback_errors
from tests.requires import require_root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _stat(st):
    assert st and st['n'] >= 1 and all(_number(st[k]) for k in ('median', 'min', 'max')), st
    assert st['min'] <= st['median'] <= st['max']


def _bench_report():
    """bench/report.py, the module that writes bench/results.md and the README's summary."""
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    try:
        import report  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    return report


@pytest.mark.fleet
@pytest.mark.slow
def test_bench_smoke(tmp_path):
    require_root('the fleet benchmarks need root')
    out = tmp_path / 'out'
    start = time.time()
    proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts/bench.sh'), '--smoke', '--out', str(out)],
                          cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, FAILSAFE_FLEET_NAME='fss', FAILSAFE_BENCH_FLEET='fss',
                                   # its own subnet: the session's fleet holds the default one
                                   FAILSAFE_FLEET_SUBNET='10.213.240.0/24'),
                          check=False)
    readme = os.path.join(ROOT, 'README.md')
    with open(readme, 'rb') as handle:
        readme_before = handle.read()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert_no_ignored_callback_errors(proc.stdout, proc.stderr, where='bench.sh --smoke')
    results = json.loads((out / 'results.json').read_text())
    md = (out / 'results.md').read_text()
    assert results['meta']['smoke'] is True and results['errors'] == {}

    rec = results['recovery'][0]
    for who in ('ours', 'baseline'):
        for phase in ('total', 'detection', 'playbook_start', 'restore', 'verification'):
            _stat(rec[who][phase])
        # the phases add up to the total
        parts = sum(rec[who][p]['median'] for p in ('detection', 'playbook_start', 'restore', 'verification'))
        assert abs(parts - rec[who]['total']['median']) < 0.01
    assert rec['ratio'] > 0
    # modules run on each host by the rollback, counted from the task events: the engine's single call against the
    # baseline's symlink, restart and health check; the target is reported
    runs = rec['remote_runs_per_host']
    assert runs['baseline']['median'] >= 2 and runs['ours']['median'] >= 1
    assert rec['tasks_target'] == 3 and rec['tasks_met'] is (runs['ours']['max'] <= 3)

    snap = results['snapshot']
    for key in ('first', 'unchanged', 'changed_1pct', 'restore_1pct', 'cp_a', 'rsync_a', 'tar'):
        _stat(snap['seconds'][key])
    assert snap['extra_disk_kb']['first']['median'] > 0 and snap['extra_disk_kb']['cp_a']['median'] > 0
    assert snap['store_counters']['unchanged']['hashed'] == 0       # nothing changed: nothing re-read
    assert snap['module']['first']['seconds'] > 0 and snap['module']['first']['module_peak_rss_mb'] > 0

    cb = results['callback']
    _stat(cb['enabled'])
    _stat(cb['disabled'])
    assert cb['ratio'] > 0
    _stat(cb['cpu_enabled'])
    _stat(cb['cpu_disabled'])
    # the profiled run saw every task's events reach the callback, and measured their cost
    prof = cb['profile']
    assert prof['callback_calls'] >= 2 * cb['tasks'] and 0 < prof['callback_seconds'] < prof['wall_seconds']
    assert 0 < prof['share'] < 1

    scale = results['scaling'][0]
    _stat(scale['deploy'])
    _stat(scale['baseline'])
    _stat(scale['controller_peak_rss_mb'])
    assert scale['ratio'] > 0
    runs = scale['remote_runs_per_host']
    # a deploy is one module per phase on each host: open, stage, activate, verify, commit
    assert runs['baseline']['median'] >= 4 and runs['deploy']['median'] >= 5
    assert scale['tasks_target'] == 10 and scale['tasks_met'] is (runs['deploy']['max'] <= 10)
    assert scale['target'] == 1.3 and scale['met'] is (scale['ratio'] <= 1.3)

    db = results['database']
    for key in ('ours', 'ours_backup', 'ours_restore', 'fallback', 'baseline', 'verify_checksums'):
        _stat(db[key])
    assert db['db_bytes'] > 0 and db['speedup'] > 0 and db['fallback_speedup'] > 0
    assert '## Database backup and restore (PostgreSQL)' in md
    # commit confirmed: from the controller's death to every host back by itself, after its deadline, never before
    confirm = results['self_revert'][0]
    assert confirm['hosts'] == 2 and confirm['confirm_timeout'] == 15
    for key in ('death_to_healthy', 'per_host_back', 'revert_after_deadline'):
        _stat(confirm[key])
    assert confirm['per_host_back']['n'] == 2 and confirm['revert_after_deadline']['min'] >= 0
    assert confirm['death_to_healthy']['median'] == confirm['per_host_back']['max']
    # ... and the same on hosts whose PID 1 is systemd, in the same run: the revert timer a systemd timer (the bench
    # checks each host armed that mechanism, the timer gone and the old unit running afterwards), one more line of
    # section 6 with the ratio of the two
    timer = results['self_revert_systemd'][0]
    assert confirm['mechanism'] == 'process' and timer['mechanism'] == 'systemd'
    assert timer['hosts'] == 2 and timer['confirm_timeout'] == 15
    for key in ('death_to_healthy', 'per_host_back', 'revert_after_deadline'):
        _stat(timer[key])
    assert timer['per_host_back']['n'] == 2 and timer['revert_after_deadline']['min'] >= 0
    assert timer['death_to_healthy']['median'] == timer['per_host_back']['max']
    assert '| 2 | systemd timer (systemd hosts) | 15 s |' in md and '| 2 | watchdog process (supervisor hosts) |' in md
    assert 'On 2 hosts, the systemd timer / the watchdog process' in md
    # Mitogen beside the default strategy: a good deploy and a recovery each, on the same host
    mitogen = results['mitogen'][0]
    assert mitogen['hosts'] == 1 and mitogen['repeats'] == 1
    for side in ('default', 'mitogen'):
        for key in ('deploy', 'deploy_cpu', 'recovery', 'recovery_run'):
            _stat(mitogen[side][key])
            assert mitogen[side][key]['n'] == 1, (side, key)
    assert mitogen['deploy_ratio'] > 0 and mitogen['recovery_ratio'] > 0
    # the SSH settings side by side: recommended, ansible's default (no pipelining), no multiplexing
    transport = results['transport'][0]
    assert transport['hosts'] == 1 and transport['repeats'] == 1
    for side in ('recommended', 'no_pipelining', 'no_multiplexing'):
        for key in ('deploy', 'deploy_cpu', 'recovery', 'recovery_run'):
            _stat(transport[side][key])
            assert transport[side][key]['n'] == 1, (side, key)
    for side in ('no_pipelining', 'no_multiplexing'):
        assert transport['ratios_' + side]['deploy'] > 0 and transport['ratios_' + side]['recovery'] > 0
    # the breakdown: every transaction call of the deploy timed on the host, by category, the categories adding up
    # to the call's time; the rollback call's restart under supervisor is seen, and it starts no supervisorctl (the
    # service layer talks to supervisord over its socket)
    breakdown = results['breakdown']
    calls = [r for r in breakdown['deploy'] if r['module'] == 'transaction']
    for step in ('preflight', 'release', 'activate', 'verify', 'commit'):
        assert any(('failsafe.deploy.%s :' % step) in r['task'] for r in calls), (step, calls)
    for row in breakdown['deploy'] + breakdown['rollback']:
        assert abs(sum(row['categories'].values()) - row['seconds']) < 0.01 + 0.01 * row['seconds'], row
        assert row['interpreter_start'] >= 0
    assert all(r['payload_kb'] > 0 and r['categories']['imports'] > 0 for r in calls)
    undo = [r for r in breakdown['rollback'] if r['module'] == 'transaction']
    assert undo and undo[0]['categories']['service layer (manager and waits)'] > 0
    assert not any(r['module'] == 'supervisorctl' for r in breakdown['deploy'] + breakdown['rollback'])

    # blue-green and switch-back under load, behind HAProxy (a smoke run measures one load balancer)
    traffic = results['traffic']['drivers']
    assert list(traffic) == ['haproxy']
    for key in ('switch_back_playbook_traffic', 'switch_back_layer', 'switch_back_layer_traffic'):
        _stat(traffic['haproxy'][key])
    assert traffic['haproxy']['requests'] > 0 and traffic['haproxy']['rolling_served_new'] is True

    # the callback's gc_freeze and payload_cache on and off, the demo's deploy, one run a side
    for option in ('gc_freeze', 'payload_cache'):
        gcf = results[option]
        assert (gcf['deploy'], gcf['hosts'], gcf['repeats']) == ('examples/demo', 1, 1)
        assert [(row['side'], row['setting']) for row in gcf['rows']] == [('on', 'true'), ('off', 'false')]
        for row in gcf['rows']:
            for key in ('wall', 'cpu', 'peak_rss_kb'):
                _stat(row[key])
        assert gcf['cpu_ratio_on_to_off'] > 0 and gcf['peak_rss_ratio_on_to_off'] > 0

    for title in ('## 1. Time to recover', '## 2. Snapshot cost', '## 3. Callback overhead', '## 4. Fleet scaling',
                  '## 5. Peak memory', '## 6. Commit confirmed', '## 8. Mitogen', '## 9. Where a call',
                  '## 10. Transport', '## 11. The tooling', '## 12. The callback\'s gc_freeze',
                  '## 13. The callback\'s payload_cache'):
        assert title in md
    # smoke output goes where it was asked, never over the committed results or the README's summary
    assert not os.path.samefile(str(out), os.path.join(ROOT, 'bench'))
    with open(readme, 'rb') as handle:
        assert handle.read() == readme_before

    # the README summary a full run writes: one line per benchmark, numbers from these results
    report = _bench_report()
    copy = tmp_path / 'README.md'
    copy.write_text('intro\n%s\nold line\n%s\nrest\n' % (report.README_START, report.README_END))
    assert report.update_readme(str(copy), results)
    text = copy.read_text()
    assert 'old line' not in text and text.startswith('intro\n') and text.endswith('rest\n')
    for anchor in ('#1-time-to-recover', '#2-snapshot-cost', '#3-callback-overhead', '#4-fleet-scaling',
                   '#5-peak-memory'):
        assert text.count(anchor) == 1, anchor
    assert ('%.3fx' % cb['ratio']) in text
    print('bench smoke: %.0f s' % (time.time() - start))


def test_a_merged_part_names_the_run_it_came_from():
    """The committed results' note on a merged part names the parts its run had: one (that part alone) or several."""
    report = _bench_report()
    with open(os.path.join(ROOT, 'bench', 'results.json')) as handle:
        results = json.load(handle)
    run = dict(started=1796600000.0, seconds=417.0, commit='0' * 40, smoke=False, loadavg_start=[0.1, 0.2, 0.3])
    results['meta']['merged'] = {'breakdown': dict(run, only=['breakdown', 'transport']),
                                 'transport': dict(run, only=['breakdown', 'transport']),
                                 'scaling': dict(run)}     # recorded before runs named their parts: one part
    lines = dict((line.split('`')[1], line) for line in report.markdown(results).splitlines()
                 if line.startswith('Part `'))
    tail = ': %s, 417 s, collection %s, load average at start 0.1/0.2/0.3.' % (
        time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(run['started'])), '0' * 40)
    several = ' comes from a run of only these parts (`--only breakdown --only transport --merge`)'
    assert lines == {'breakdown': 'Part `breakdown`' + several + tail, 'transport': 'Part `transport`' + several + tail,
                     'scaling': 'Part `scaling` comes from a run of that part alone (`--only fleet --merge`)' + tail}


def test_the_benchmarks_duration_is_said_only_where_a_run_measured_it():
    """How long `make bench` takes is said by the measurement of the last full run (the first line of
    bench/results.md and the README's summary, both written from results.json), not by a figure in prose that drifts
    from it: the README once said 15 minutes beside a summary of 37."""
    report = _bench_report()
    with open(os.path.join(ROOT, 'bench', 'results.json')) as handle:
        minutes = '%.1f min' % (json.load(handle)['meta']['seconds'] / 60.0)
    with open(os.path.join(ROOT, 'README.md')) as handle:
        readme = handle.read()
    summary = readme.split(report.README_START, 1)[1].split(report.README_END, 1)[0]
    assert minutes + ' on ' in summary
    with open(os.path.join(ROOT, 'bench', 'results.md')) as handle:
        assert '(%s;' % minutes in handle.read().split('\n\n', 2)[1]
    for name in ('README.md', 'bench/README.md', 'scripts/bench.sh', 'bench/run.py'):
        with open(os.path.join(ROOT, name)) as handle:
            text = handle.read().replace(summary, '')
        said = re.findall(r'(?:about|within|takes|took)\s+(?:about\s+)?\d+\s*(?:minutes|min)\b', text)
        assert not said, '%s states a duration of the benchmarks that no run measured: %s' % (name, said)
