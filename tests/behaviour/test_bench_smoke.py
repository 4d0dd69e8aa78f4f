# Smoke run of every benchmark of `make bench` at tiny sizes, so that the benchmarks do not rot.
import json
import os
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _stat(st):
    assert st and st['n'] >= 1 and all(_number(st[k]) for k in ('median', 'min', 'max')), st
    assert st['min'] <= st['median'] <= st['max']


@pytest.mark.fleet
@pytest.mark.slow
def test_bench_smoke(tmp_path):
    if os.geteuid() != 0:
        pytest.skip('the fleet benchmarks need root')
    out = tmp_path / 'out'
    start = time.time()
    proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts/bench.sh'), '--smoke', '--out', str(out)],
                          cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, FAILSAFE_FLEET_NAME='fss', FAILSAFE_BENCH_FLEET='fss'),
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
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

    scale = results['scaling'][0]
    _stat(scale['deploy'])
    _stat(scale['baseline'])
    _stat(scale['controller_peak_rss_mb'])
    assert scale['ratio'] > 0

    for title in ('## 1. Time to recover', '## 2. Snapshot cost', '## 3. Callback overhead', '## 4. Fleet scaling',
                  '## 5. Peak memory'):
        assert title in md
    # smoke output goes where it was asked, never over the committed results
    assert not os.path.samefile(str(out), os.path.join(ROOT, 'bench'))
    print('bench smoke: %.0f s' % (time.time() - start))
