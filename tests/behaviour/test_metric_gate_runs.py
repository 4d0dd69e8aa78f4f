# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""failsafe.deploy.metric_gate in real ansible-playbook runs against a real Prometheus server scraping two real
example app processes on this machine: a baseline (2.0.0, good) and a canary (6.0.0, flaky: 500 on one request in
four, or 2.0.0 again), both under a steady load from the test. Also bad input and broken dependencies: a query
that does not parse, a Prometheus that does not answer, and a marginal result that pauses until a person promotes
or aborts."""

import json
import os
import subprocess
import tarfile
import time
import urllib.request

import pytest

from support import DEMO, ROOT, VENV_BIN, free_port, load_example_build
from tests.helpers import SteadyLoad

ERROR_RATE = ('sum(rate(app_errors_total{instance=~"$canary"}[5s])) '
              '/ sum(rate(app_request_duration_seconds_count{instance=~"$canary"}[5s]))')
CANARY_ERRORS = 'sum(rate(app_errors_total{instance=~"$canary"}[3s]))'
BASELINE_ERRORS = 'sum(rate(app_errors_total{instance=~"$baseline"}[3s]))'


class App:
    """One example app process from a built release archive."""

    def __init__(self, dist, version, base):
        self.dir = os.path.join(base, 'app-%s-%s' % (version, os.urandom(2).hex()))
        os.makedirs(self.dir)
        with tarfile.open(os.path.join(dist, 'app-%s.tar.gz' % version)) as archive:
            archive.extractall(self.dir)
        self.port = free_port()
        self.log = open(os.path.join(self.dir, 'app.log'), 'w')  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen(['/usr/bin/python3', os.path.join(self.dir, 'app.py'), '--port', str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.instance = '127.0.0.1:%d' % self.port
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen('http://%s/health' % self.instance, timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError('app %s did not start' % version)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope='module')
def apps(tmp_path_factory, prometheus):
    base = str(tmp_path_factory.mktemp('gate-apps'))
    dist = os.path.join(base, 'dist')
    load_example_build().build(dist, 0, [('2.0.0', 'good'), ('6.0.0', 'flaky'), ('7.0.0', 'slow')])
    baseline = App(dist, '2.0.0', base)
    flaky = App(dist, '6.0.0', base)
    good = App(dist, '2.0.0', base)
    slow = App(dist, '7.0.0', base)
    everyone = [baseline, flaky, good, slow]
    prometheus.set_targets([a.instance for a in everyone])
    # the slow release gets a load of its own, so that its 0.25 s answers do not slow the others' load down
    loads = [SteadyLoad([baseline.instance, flaky.instance, good.instance]), SteadyLoad([slow.instance])]
    try:
        # a few scrapes with traffic in them, on every app
        prometheus.wait_for('count(rate(app_request_duration_seconds_count[5s]) > 0)',
                            lambda r: r and float(r[0]['value'][1]) >= 4, timeout=60)
        yield {'baseline': baseline, 'flaky': flaky, 'good': good, 'slow': slow, 'base': base}
    finally:
        for load in loads:
            load.stop()
        for app in everyone:
            app.stop()


def _env(base):
    env = dict(os.environ)
    env.update({
        'PATH': VENV_BIN + os.pathsep + os.environ['PATH'],
        'ANSIBLE_CONFIG': os.path.join(DEMO, 'ansible.cfg'),
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.build', 'collections'),
        'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
        'ANSIBLE_HOME': os.path.join(base, 'ansible-home'),
        'ANSIBLE_NOCOLOR': '1',
        'FAILSAFE_REPORT_DIR': os.path.join(base, 'incidents'),
        'ANSIBLE_PYTHON_INTERPRETER': os.path.join(VENV_BIN, 'python'),
    })
    for key in ('ANSIBLE_STDOUT_CALLBACK', 'ANSIBLE_CALLBACKS_ENABLED', 'FAILSAFE_WEBHOOK_URL'):
        env.pop(key, None)
    return env


def _gate_playbook(path, gate, out, after_marker=None):
    """A play on localhost: the gate (failures kept), its result written to ``out``, then a marker task that only
    runs when the gate passed."""
    tasks = [
        {'name': 'Gate', 'failsafe.deploy.metric_gate': gate, 'register': 'gate', 'ignore_errors': True},
        {'name': 'Keep the result', 'ansible.builtin.copy': {'content': '{{ gate | to_json }}', 'dest': out}},
        {'name': 'Fail when the gate failed', 'ansible.builtin.fail': {'msg': '{{ gate.msg }}'},
         'when': 'gate is failed'},
    ]
    if after_marker:
        tasks.append({'name': 'Next wave', 'ansible.builtin.copy': {'content': 'went on\n', 'dest': after_marker}})
    with open(path, 'w') as handle:
        json.dump([{'name': 'gate', 'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
                    'tasks': tasks}], handle)


def _run_gate(base, gate, name):
    playbook = os.path.join(base, '%s.yml' % name)
    out = os.path.join(base, '%s.json' % name)
    _gate_playbook(playbook, gate, out)
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,', playbook],
                          env=_env(base), cwd=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300, check=False)
    with open(os.path.join(base, '%s.log' % name), 'w') as log:
        log.write(proc.stdout)
    with open(out) as handle:
        return proc, json.load(handle)


def _gate(prometheus, canary, baseline, **extra):
    gate = {'prometheus_url': prometheus.url, 'canary_hosts': [canary.instance], 'baseline_hosts': [baseline.instance],
            'instance_format': '{name}', 'interval': 1, 'count': 3}
    gate.update(extra)
    return gate


def test_flaky_canary_fails_threshold_and_comparison(prometheus, apps):
    gate = _gate(prometheus, apps['flaky'], apps['baseline'],
                 thresholds=[{'name': 'error_rate', 'query': ERROR_RATE, 'max': 0.05}],
                 comparisons=[{'name': 'errors_vs_baseline', 'canary_query': CANARY_ERRORS,
                               'baseline_query': BASELINE_ERRORS, 'critical': True}], window=20, step=1)
    proc, result = _run_gate(apps['base'], gate, 'flaky')
    assert proc.returncode != 0, proc.stdout
    report = result['failsafe_metric_gate']
    assert result['verdict'] == report['verdict'] == 'fail'
    threshold, comparison = report['analyses']
    assert threshold['query'] == ERROR_RATE.replace('$canary', apps['flaky'].instance.replace('.', '\\\\.'))
    assert threshold['thresholds']['max'] == 0.05
    # one request in four fails: the measured rate is about 0.25, each of the 3 measurements
    assert len(threshold['values']) == 3 and all(0.15 < v < 0.35 for v in threshold['values']), threshold
    assert threshold['verdict'] == 'fail'
    metric = comparison['metrics'][0]
    assert metric['status'] == 'fail' and comparison['verdict'] == 'fail'
    assert metric['canary']['n'] >= 3 and max(metric['baseline']['values']) == 0
    assert 'metric gate failed' in result['msg'] and 'error_rate' in result['msg']


def test_good_canary_passes(prometheus, apps):
    gate = _gate(prometheus, apps['good'], apps['baseline'],
                 thresholds=[{'name': 'error_rate', 'query': ERROR_RATE, 'max': 0.05}],
                 comparisons=[{'name': 'errors_vs_baseline', 'canary_query': CANARY_ERRORS,
                               'baseline_query': BASELINE_ERRORS, 'critical': True}], window=20, step=1)
    proc, result = _run_gate(apps['base'], gate, 'good')
    assert proc.returncode == 0, proc.stdout
    assert result['verdict'] == 'pass'
    assert result['failsafe_metric_gate']['analyses'][0]['values'] == [0.0, 0.0, 0.0]


P99 = 'histogram_quantile(0.99, sum by (le) (rate(app_request_duration_seconds_bucket{instance=~"$canary"}[5s])))'


def test_slow_canary_fails_a_p99_latency_threshold(prometheus, apps):
    gate = _gate(prometheus, apps['slow'], apps['baseline'],
                 thresholds=[{'name': 'p99_latency', 'query': P99, 'max': 0.1}])
    proc, result = _run_gate(apps['base'], gate, 'slow')
    assert proc.returncode != 0, proc.stdout
    analysis = result['failsafe_metric_gate']['analyses'][0]
    # every answer of the slow release takes 0.25 s: its p99 lies in the 0.25-0.5 s bucket
    assert all(0.25 <= v <= 0.5 for v in analysis['values']), analysis
    assert analysis['verdict'] == 'fail' and 'p99_latency' in result['msg']
    # the same gate on the good release passes: its answers take milliseconds
    good = _gate(prometheus, apps['good'], apps['baseline'],
                 thresholds=[{'name': 'p99_latency', 'query': P99, 'max': 0.1}])
    proc, result = _run_gate(apps['base'], good, 'fast')
    assert proc.returncode == 0, proc.stdout
    assert all(v < 0.1 for v in result['failsafe_metric_gate']['analyses'][0]['values'])


@pytest.mark.parametrize('policy', ['fail', 'ignore'])
def test_query_that_does_not_parse_is_decided_by_the_policy(prometheus, apps, policy):
    gate = _gate(prometheus, apps['good'], apps['baseline'], count=2, no_data=policy, on_marginal='fail',
                 thresholds=[{'name': 'broken', 'query': 'sum(rate(app_errors_total[5s]', 'max': 1}])
    proc, result = _run_gate(apps['base'], gate, 'parse-%s' % policy)
    assert proc.returncode != 0, proc.stdout
    analysis = result['failsafe_metric_gate']['analyses'][0]
    assert analysis['values'] == [None, None]
    assert 'bad_data' in analysis['errors'][0] and 'rejected the query' in analysis['errors'][0]
    assert 'no_data=%s' % policy in result['msg'] and 'rejected the query' in result['msg']
    assert result['verdict'] == ('fail' if policy == 'fail' else 'marginal')


def test_prometheus_that_does_not_answer_is_never_a_pass(apps):
    gate = {'prometheus_url': 'http://127.0.0.1:%d' % free_port(), 'canary_hosts': ['x'], 'baseline_hosts': ['y'],
            'interval': 0, 'count': 2, 'timeout': 2, 'no_data': 'ignore', 'on_marginal': 'fail',
            'thresholds': [{'name': 'error_rate', 'query': 'vector(0)', 'max': 0.05}]}
    proc, result = _run_gate(apps['base'], gate, 'down')
    assert proc.returncode != 0
    assert result['verdict'] == 'marginal'
    assert 'did not answer' in result['msg'] and 'no_data=ignore' in result['msg']


def test_bad_settings_are_clear_errors(prometheus, apps):
    gate = _gate(prometheus, apps['good'], apps['baseline'], thresholds=[{'name': 'x', 'query': 'vector(1)'}])
    proc, result = _run_gate(apps['base'], gate, 'settings')
    assert proc.returncode != 0
    assert 'give a min, a max or both' in result['msg']


def _start_paused_gate(prometheus, apps, name):
    base = apps['base']
    decision = os.path.join(base, '%s.decision' % name)
    marker = os.path.join(base, '%s.went-on' % name)
    out = os.path.join(base, '%s.json' % name)
    playbook = os.path.join(base, '%s.yml' % name)
    gate = _gate(prometheus, apps['good'], apps['baseline'], count=1, no_data='pause', decision_file=decision,
                 thresholds=[{'name': 'absent', 'query': 'app_metric_that_does_not_exist', 'max': 1}])
    _gate_playbook(playbook, gate, out, after_marker=marker)
    log = open(os.path.join(base, '%s.log' % name), 'w')  # pylint: disable=consider-using-with
    proc = subprocess.Popen([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,', playbook],
                            env=_env(base), cwd=base, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not os.path.exists(decision + '.paused'):
        assert proc.poll() is None, 'the gate ended (rc %s) instead of pausing' % proc.returncode
        assert time.monotonic() < deadline, 'the gate never paused'
        time.sleep(0.2)
    # paused: it waits, and nothing after the gate runs by itself
    time.sleep(4)
    assert proc.poll() is None, 'a paused gate went on by itself'
    assert not os.path.exists(marker)
    return proc, log, decision, marker, out


def _decide(apps, decision, path):
    return subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), 'failsafe.deploy.canary_decision',
                           '-e', 'failsafe_canary_decision=%s' % decision, '-e', 'failsafe_canary_decision_file=%s' % path],
                          env=_env(apps['base']), cwd=apps['base'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120, check=False)


def test_paused_gate_waits_then_promote_goes_on(prometheus, apps):
    proc, log, decision, marker, out = _start_paused_gate(prometheus, apps, 'promote')
    try:
        decided = _decide(apps, 'promote', decision)
        assert decided.returncode == 0, decided.stdout
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert os.path.exists(marker)
    with open(out) as handle:
        result = json.load(handle)
    assert result['failsafe_metric_gate']['verdict'] == 'marginal'
    assert result['failsafe_metric_gate']['decision']['decision'] == 'promote'
    assert not os.path.exists(decision) and not os.path.exists(decision + '.paused')
    # no gate waits any more: a late decision is refused and writes nothing
    late = _decide(apps, 'abort', decision)
    assert late.returncode != 0 and 'No paused gate waits' in late.stdout
    assert not os.path.exists(decision)


def test_paused_gate_abort_fails_it(prometheus, apps):
    proc, log, decision, marker, out = _start_paused_gate(prometheus, apps, 'abort')
    try:
        decided = _decide(apps, 'abort', decision)
        assert decided.returncode == 0, decided.stdout
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert not os.path.exists(marker)
    with open(out) as handle:
        result = json.load(handle)
    assert result['failsafe_metric_gate']['decision']['decision'] == 'abort'
    assert 'aborted by a person' in result['msg']
