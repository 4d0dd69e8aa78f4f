# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Canary waves (playbooks/canary.yml) on a 3-host namespace fleet, judged by a real Prometheus server that scrapes
every host's example app each second, under a steady load from this machine.

- A release that errors on one request in four (6.0.0, flaky) is caught by the gate in its first wave; the wave is
  rolled back (current symlink and /version back on 1.0.0), the hosts of later waves were never touched, and the
  incident report shows the gate's queries, values and thresholds.
- A failed gate in the second wave also rolls back the first wave's host, whose transaction had already committed.
- A marginal gate pauses: the next wave does not start by itself; abort rolls the wave back, promote goes on.
- A wave whose first host already had the release is still judged, and its failure still rolls back the wave.
- Behind a real HAProxy (on a fourth host): each wave leaves the load balancer before it changes and comes back with
  the canary's weight; a failed gate puts the load balancer's traffic back before the code is rolled back; a good
  release ends with every server at its full weight and serves no failed request through HAProxy.
- The same failed gate with rollback_via controller: the rollback job template launched on a fake AWX
  (tests/behaviour/awx_fake.py, whose jobs really run rollback.yml with ansible-runner) puts traffic back before the
  code just as the local child does.
"""

import ctypes
import glob
import json
import os
import select
import struct
import subprocess
import threading
import time

import pytest

import awx_fake
import lb
from support import (ROOT, assert_log_has_no_ignored_callback_errors, assert_no_ignored_callback_errors, fleet_env,
                     load_example_build)
from tests.helpers import SteadyLoad

pytestmark = pytest.mark.fleet

APP_VARS = os.path.join(ROOT, 'tests', 'fleet', 'app-vars.yml')
VERSION_PROBE = ("import urllib.request;"
                 "print(urllib.request.urlopen('http://127.0.0.1:8080/version', timeout=5).read().decode().strip())")
ERROR_RATE = ('sum(rate(app_errors_total{instance=~"$canary"}[5s])) '
              '/ sum(rate(app_request_duration_seconds_count{instance=~"$canary"}[5s]))')
# Errors answered by the canary's processes since they started (each activation restarts the app).
ERRORS_SINCE_START = 'sum(app_errors_total{instance=~"$canary"})'


class Canary:
    def __init__(self, fleet, base, prometheus, apps=None):
        self.fleet = fleet
        self.apps = list(apps or fleet.names)
        self.inventories = [fleet.inventory_path]
        self.base = base
        self.prometheus = prometheus
        self.dist = os.path.join(base, 'dist')
        self.env = fleet_env(fleet, base, self.dist)
        self.env['ANSIBLE_DEPRECATION_WARNINGS'] = 'False'
        self.instances = dict((h, '%s:8080' % fleet.host(h).address) for h in self.apps)
        self.runs = 0

    def argv(self, playbook, *args):
        inventories = [arg for path in self.inventories for arg in ('-i', path)]
        return ['ansible-playbook'] + inventories + [playbook, '-e', '@' + APP_VARS] + list(args)

    def start(self, name, playbook, *args):
        self.runs += 1
        run_dir = os.path.join(self.base, '%02d-%s' % (self.runs, name))
        os.makedirs(run_dir)
        env = dict(self.env, FAILSAFE_REPORT_DIR=os.path.join(run_dir, 'incidents'))
        log = open(os.path.join(run_dir, 'run.log'), 'w', encoding='utf-8')  # pylint: disable=consider-using-with
        proc = subprocess.Popen(self.argv(playbook, *args), env=env, cwd=run_dir, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log, proc.dir = log, run_dir
        return proc

    @staticmethod
    def finish(proc, timeout=600):
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.log.close()
        assert_log_has_no_ignored_callback_errors(proc.log.name)
        return rc

    def play(self, name, playbook, *args):
        proc = self.start(name, playbook, *args)
        return self.finish(proc), proc.dir

    def canary_args(self, release, waves, gate):
        """Extra vars of a canary deploy: the release, the waves and the gate settings (as JSON)."""
        settings = {'release_version': release, 'failsafe_canary_waves': waves,
                    'failsafe_canary_prometheus_url': self.prometheus.url}
        settings.update(gate)
        path = os.path.join(self.base, 'canary-%s-%d.json' % (release, self.runs + 1))
        with open(path, 'w') as handle:
            json.dump(settings, handle)
        return ['-e', '@' + path]

    # host state -------------------------------------------------------------------------------------------
    def current(self, host):
        try:
            return os.path.basename(os.readlink(self.fleet.host_path(host, '/srv/app/current')))
        except OSError:
            return None

    def served(self, host):
        result = self.fleet.run(host, ['/usr/bin/python3', '-c', VERSION_PROBE], timeout=30)
        return result.stdout.strip() if result.returncode == 0 else 'unhealthy: %s' % result.stderr.strip()[-200:]

    def journal(self, host):
        try:
            with open(self.fleet.host_path(host, '/var/lib/failsafe-deploy/app/journal.json')) as handle:
                return json.load(handle)
        except FileNotFoundError:
            return {}

    def assert_on(self, host, release):
        assert self.current(host) == release, '%s: current is %s, not %s' % (host, self.current(host), release)
        assert self.served(host) == release, '%s serves %r, not %s' % (host, self.served(host), release)

    def incident(self, run_dir):
        paths = [p for p in glob.glob(os.path.join(run_dir, 'incidents', 'inc-*.json')) if p.count('.') == 1]
        assert len(paths) == 1, 'expected one incident report in %s, found %r' % (run_dir, paths)
        with open(paths[0]) as handle:
            incident = json.load(handle)
        with open(paths[0][:-len('.json')] + '.md') as handle:
            return incident, handle.read()


@pytest.fixture
def canary(fleet, prometheus, tmp_path):
    """3 fleet hosts on 1.0.0 (verified), scraped by Prometheus, with the load thread ready (no target yet)."""
    hosts = fleet(3)
    setup = Canary(hosts, str(tmp_path), prometheus)
    load_example_build().build(setup.dist, 0, [('1.0.0', 'good'), ('2.0.0', 'good'), ('6.0.0', 'flaky')])
    rc, run_dir = setup.play('setup', 'failsafe.deploy.deploy', '-e', 'release_version=1.0.0')
    assert rc == 0, 'the first deploy of 1.0.0 failed: see %s/run.log' % run_dir
    prometheus.set_targets(list(setup.instances.values()))
    prometheus.wait_for('count(up{job="app"} == 1)', lambda r: r and float(r[0]['value'][1]) == 3, timeout=60)
    setup.load = SteadyLoad()
    try:
        yield setup
    finally:
        setup.load.stop()
        prometheus.set_targets([])


def test_flaky_release_is_caught_in_its_first_wave_and_rolled_back(canary):
    """The issue's done-when: errors on a fraction of requests are detected by the Prometheus gate, every host done
    so far is rolled back, and the report shows the queries, values and thresholds that decided it."""
    h1, h2, h3 = canary.fleet.names
    canary.load.targets = list(canary.instances.values())
    gate = {'failsafe_canary_bake': 3, 'failsafe_canary_interval': 1, 'failsafe_canary_count': 3,
            'failsafe_canary_thresholds': [{'name': 'error_rate', 'query': ERROR_RATE, 'max': 0.05}],
            'failsafe_canary_comparisons': [{'name': 'errors_vs_baseline',
                                             'canary_query': 'sum(rate(app_errors_total{instance=~"$canary"}[3s]))',
                                             'baseline_query': 'sum(rate(app_errors_total{instance=~"$baseline"}[3s]))',
                                             'critical': True}],
            'failsafe_canary_window': 6, 'failsafe_canary_step': 1}
    rc, run_dir = canary.play('flaky', 'failsafe.deploy.canary', *canary.canary_args('6.0.0', [1, '100%'], gate))
    assert rc != 0, 'the flaky canary passed its gate: see %s/run.log' % run_dir
    # the first wave (h1) is back on 1.0.0; the later waves never started
    for host in (h1, h2, h3):
        canary.assert_on(host, '1.0.0')
    assert canary.journal(h1)['status'] == 'rolled_back' and canary.journal(h1)['release'] == '6.0.0'
    for host in (h2, h3):
        assert canary.journal(host).get('release') == '1.0.0', canary.journal(host)
    incident, markdown = canary.incident(run_dir)
    assert incident['outcome'] == 'rolled_back'
    assert incident['summary']['scope_hosts'] == [h1]
    failure = incident['failures'][0]
    assert failure['cause'] == 'health' and failure['evidence'] == 'metric gate failed'
    gate_report = failure['metric_gate']
    assert gate_report['verdict'] == 'fail'
    assert gate_report['canary_instances'] == [canary.instances[h1]]
    assert gate_report['baseline_instances'] == [canary.instances[h2], canary.instances[h3]]
    rows = dict((row['metric'], row) for row in gate_report['rows'])
    error_rate = rows['error_rate']
    assert canary.instances[h1].replace('.', '\\\\.') in error_rate['query']
    assert error_rate['thresholds']['max'] == 0.05 and error_rate['verdict'] == 'fail'
    # one request in four fails on the canary: that is what the gate measured
    assert len(error_rate['values']) == 3 and all(0.15 < v < 0.35 for v in error_rate['values']), error_rate
    assert rows['errors_vs_baseline']['verdict'] == 'fail'
    assert '## Metric gates' in markdown and '| error_rate | threshold |' in markdown and '"max": 0.05' in markdown


def test_failed_gate_in_a_later_wave_rolls_back_the_committed_earlier_wave(canary):
    """Wave 1 gets no traffic and passes (no error since its start) and commits; wave 2 gets traffic, its gate sees
    errors on both canary hosts and fails: both are rolled back, the committed one too, and h3 is never touched."""
    h1, h2, h3 = canary.fleet.names
    canary.load.targets = []
    gate = {'failsafe_canary_bake': 4, 'failsafe_canary_interval': 1, 'failsafe_canary_count': 3,
            'failsafe_canary_thresholds': [{'name': 'errors_since_start', 'query': ERRORS_SINCE_START, 'max': 0}]}
    proc = canary.start('later-wave', 'failsafe.deploy.canary', *canary.canary_args('6.0.0', [1, 1, '100%'], gate))
    try:
        deadline = time.monotonic() + 300
        # wave 2 has switched h2 to the new release: now the load starts, on every host
        while canary.current(h2) != '6.0.0':
            assert proc.poll() is None, 'the deploy ended (rc %s) before wave 2 switched h2' % proc.returncode
            assert time.monotonic() < deadline, 'wave 2 never switched h2'
            time.sleep(0.1)
        # wave 1 committed before wave 2 started
        assert canary.journal(h1)['status'] == 'committed' and canary.journal(h1)['release'] == '6.0.0'
        canary.load.targets = list(canary.instances.values())
        rc = canary.finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc != 0, 'the gate of wave 2 passed: see %s/run.log' % proc.dir
    for host in (h1, h2, h3):
        canary.assert_on(host, '1.0.0')
    for host in (h1, h2):
        journal = canary.journal(host)
        assert (journal['status'], journal['release']) == ('rolled_back', '6.0.0'), (host, journal)
    assert canary.journal(h3).get('release') == '1.0.0'
    incident, markdown = canary.incident(proc.dir)
    assert incident['outcome'] == 'rolled_back'
    assert sorted(incident['summary']['scope_hosts']) == [h1, h2]
    assert incident['failures'][0]['metric_gate']['rows'][0]['values'][0] > 0
    assert 'errors_since_start' in markdown


@pytest.mark.parametrize('decision', ['abort', 'promote'])
def test_paused_canary_waits_for_a_person(canary, decision):
    """A gate without data under no_data=pause waits: the next wave does not start by itself. abort rolls the
    wave back; promote goes on to the next wave (which pauses again and is promoted too)."""
    h1, h2, h3 = canary.fleet.names
    canary.load.targets = list(canary.instances.values())
    decision_file = os.path.join(canary.base, 'decision')
    gate = {'failsafe_canary_bake': 0, 'failsafe_canary_interval': 1, 'failsafe_canary_count': 1,
            'failsafe_canary_no_data': 'pause', 'failsafe_canary_decision_file': decision_file,
            'failsafe_canary_thresholds': [{'name': 'absent', 'query': 'app_metric_nobody_exports', 'max': 1}]}
    proc = canary.start('pause-%s' % decision, 'failsafe.deploy.canary',
                        *canary.canary_args('2.0.0', [1, '100%'], gate))
    try:
        _wait_paused(proc, decision_file)
        # An empty decision file is no decision: the waiting gate opens it at each look (every 0.5 s). Six looks
        # seen, each one a chance to go on, and the canary has not gone on: the gate still waits, its pause file
        # is still there, the next wave has not started.
        open(decision_file, 'w').close()
        looks = _gate_looks(decision_file, 6, timeout=60)
        assert looks >= 6, 'the paused gate looked for a decision %d times in 60 s, then stopped looking' % looks
        assert proc.poll() is None, 'a paused canary went on by itself'
        assert os.path.exists(decision_file + '.paused'), 'the gate stopped waiting without a decision'
        assert canary.current(h1) == '2.0.0' and canary.current(h2) == canary.current(h3) == '1.0.0'
        assert canary.journal(h1)['status'] == 'open'
        rc, dummy = canary.play('decide-%s' % decision, 'failsafe.deploy.canary_decision',
                                '-e', 'failsafe_canary_decision=%s' % decision,
                                '-e', 'failsafe_canary_decision_file=%s' % decision_file)
        assert rc == 0
        if decision == 'promote':
            # the gate takes the decision (and removes its pause file), then the last wave pauses too: promote it
            deadline = time.monotonic() + 60
            while os.path.exists(decision_file + '.paused'):
                assert time.monotonic() < deadline, 'the paused gate never took the decision'
                time.sleep(0.1)
            _wait_paused(proc, decision_file)
            assert canary.current(h2) == canary.current(h3) == '2.0.0'
            rc, dummy = canary.play('decide-again', 'failsafe.deploy.canary_decision',
                                    '-e', 'failsafe_canary_decision=promote',
                                    '-e', 'failsafe_canary_decision_file=%s' % decision_file)
            assert rc == 0
        rc = canary.finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    if decision == 'abort':
        assert rc != 0
        for host in (h1, h2, h3):
            canary.assert_on(host, '1.0.0')
        assert canary.journal(h1)['status'] == 'rolled_back'
        incident, dummy = canary.incident(proc.dir)
        assert incident['outcome'] == 'rolled_back'
        assert incident['failures'][0]['metric_gate']['decision']['decision'] == 'abort'
    else:
        assert rc == 0, 'see %s/run.log' % proc.dir
        for host in (h1, h2, h3):
            canary.assert_on(host, '2.0.0')
            assert canary.journal(host)['status'] == 'committed'


IN_OPEN = 0x20


def _gate_looks(path, wanted, timeout):
    """How many times ``path`` was opened (inotify IN_OPEN) until ``wanted`` opens or ``timeout`` seconds."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0, 'inotify_init1: %s' % os.strerror(ctypes.get_errno())
    try:
        assert libc.inotify_add_watch(fd, path.encode(), IN_OPEN) >= 0, \
            'inotify_add_watch %s: %s' % (path, os.strerror(ctypes.get_errno()))
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < wanted and time.monotonic() < deadline:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            data = os.read(fd, 4096)
            offset = 0
            while offset < len(data):   # struct inotify_event: wd, mask, cookie, len, then len bytes of name
                dummy, mask, dummy2, length = struct.unpack_from('iIII', data, offset)
                offset += 16 + length
                seen += 1 if mask & IN_OPEN else 0
        return seen
    finally:
        os.close(fd)


def _wait_paused(proc, decision_file, timeout=300):
    deadline = time.monotonic() + timeout
    while not os.path.exists(decision_file + '.paused'):
        assert proc.poll() is None, 'the canary ended (rc %s) instead of pausing' % proc.returncode
        assert time.monotonic() < deadline, 'the canary never paused'
        time.sleep(0.2)


def test_wave_is_judged_even_when_its_first_host_had_nothing_to_deploy(canary):
    """The gate runs once per wave (run_once), which takes the first host's condition: a wave whose first host was
    already on the release must still be judged by its other hosts."""
    h1, h2, h3 = canary.fleet.names
    rc, run_dir = canary.play('h1-first', 'failsafe.deploy.deploy', '-e', 'release_version=6.0.0', '--limit', h1)
    assert rc == 0, 'see %s/run.log' % run_dir
    canary.load.targets = list(canary.instances.values())
    gate = {'failsafe_canary_bake': 3, 'failsafe_canary_interval': 1, 'failsafe_canary_count': 3,
            'failsafe_canary_thresholds': [{'name': 'error_rate', 'query': ERROR_RATE, 'max': 0.05}]}
    rc, run_dir = canary.play('first-host-done', 'failsafe.deploy.canary',
                              *canary.canary_args('6.0.0', [2, '100%'], gate))
    assert rc != 0, 'the wave of %s and %s was not judged: see %s/run.log' % (h1, h2, run_dir)
    canary.assert_on(h2, '1.0.0')
    canary.assert_on(h3, '1.0.0')
    canary.assert_on(h1, '6.0.0')  # committed by the earlier run, not part of this one
    incident, dummy = canary.incident(run_dir)
    assert incident['failures'][0]['metric_gate']['verdict'] == 'fail'
    assert incident['summary']['scope_hosts'] == [h2]


# --- behind a load balancer ----------------------------------------------------------------------------------------
DRAIN = 0x08   # HAProxy's SRV_ADMF_DRAIN bit of srv_admin_state


@pytest.fixture
def canary_lb(fleet, prometheus, tmp_path):
    """3 app hosts on 1.0.0 (verified) behind a real HAProxy on a fourth fleet host (weight 100 each), scraped by
    Prometheus, with a steady load through HAProxy on / (counting every failed request)."""
    hosts = fleet(4)
    apps, lb_host = hosts.names[:3], hosts.names[3]
    setup = Canary(hosts, str(tmp_path), prometheus, apps=apps)
    load_example_build().build(setup.dist, 0, [('1.0.0', 'good'), ('2.0.0', 'good'), ('6.0.0', 'flaky')])
    rc, run_dir = setup.play('setup', 'failsafe.deploy.deploy', '-e', 'release_version=1.0.0',
                             '-e', 'failsafe_hosts=%s' % ','.join(apps))
    assert rc == 0, 'the first deploy of 1.0.0 failed: see %s/run.log' % run_dir
    problem = lb.ensure_prereqs()
    assert problem is None, problem
    haproxy = lb.HAProxy(hosts.host_path(lb_host, '/srv/haproxy'),
                         [(h, 8080, 100, hosts.host(h).address) for h in apps],
                         bind_host=hosts.host(lb_host).address, inner='/srv/haproxy',
                         run=lambda argv: hosts.run(lb_host, argv))
    haproxy.start()
    extra = os.path.join(str(tmp_path), 'lb-inventory.json')
    with open(extra, 'w') as handle:
        json.dump({'all': {'hosts': {lb_host: {
            'failsafe_traffic_name': 'traffic', 'failsafe_traffic_driver': 'haproxy',
            'failsafe_traffic_haproxy_socket': haproxy.inner_socket, 'failsafe_traffic_haproxy_backend': 'app',
            'failsafe_traffic_haproxy_state_file': haproxy.inner_state_file,
            'failsafe_traffic_haproxy_config': haproxy.inner_config}}}}, handle)
    setup.inventories.append(extra)
    setup.lb, setup.lb_host = haproxy, lb_host
    prometheus.set_targets(list(setup.instances.values()))
    prometheus.wait_for('count(up{job="app"} == 1)', lambda r: r and float(r[0]['value'][1]) == 3, timeout=60)
    setup.load = lb.Load(haproxy.port, host=hosts.host(lb_host).address, path='/', workers=2, interval=0.01)
    setup.load.start()
    try:
        yield setup
    finally:
        setup.load.stop()
        haproxy.stop()
        prometheus.set_targets([])


class Watch:
    """Samples, every 50 ms from a thread of the test, HAProxy's state of every server and each app host's current
    release: what the load balancer and the hosts really went through during a run."""

    def __init__(self, site):
        self.site = site
        self.samples = []       # (time, {server: (admin_state, weight)}, {host: current release})
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            # HAProxy first, then the hosts: within a sample, what HAProxy said came before what the hosts said
            try:
                servers = self.site.lb.server_state()
            except OSError:
                servers = {}
            current = dict((h, self.site.current(h)) for h in self.site.apps)
            self.samples.append((time.time(), servers, current))
            time.sleep(0.05)

    def stop(self):
        self.stopped.set()
        self.thread.join(timeout=10)
        return self

    def states_of(self, server):
        return [servers[server] for dummy, servers, dummy2 in self.samples if server in servers]

    def first(self, predicate, after=0.0):
        return next((t for t, servers, current in self.samples if t >= after and predicate(servers, current)), None)


def _lb_journal(site):
    with open(site.fleet.host_path(site.lb_host, '/var/lib/failsafe-deploy/traffic/journal.json')) as handle:
        return json.load(handle)


def test_behind_haproxy_a_failed_gate_puts_traffic_back_before_the_code(canary_lb):
    """The issue's done-when, with the load balancer: the canary host leaves HAProxy before it changes, takes
    traffic at the canary's weight (10 against 100) while it is judged, the gate sees its errors and fails; the
    rollback gives HAProxy back the traffic it had before the deploy (every server ready at weight 100), and does so
    before the canary host's code goes back to 1.0.0."""
    _failed_gate_behind_haproxy(canary_lb)


def _failed_gate_behind_haproxy(site):
    """The flaky canary behind HAProxy, whichever path rolls it back: its gate fails, traffic is put back before the
    code, every app host ends on 1.0.0 and healthy. Returns the run's directory and its incident report."""
    h1, h2, h3 = site.apps
    gate = {'failsafe_canary_lb': site.lb_host, 'failsafe_canary_weight': 10, 'failsafe_canary_full_weight': 100,
            'failsafe_canary_bake': 3, 'failsafe_canary_interval': 1, 'failsafe_canary_count': 3,
            'failsafe_canary_thresholds': [{'name': 'error_rate', 'query': ERROR_RATE, 'max': 0.05}]}
    watch = Watch(site)
    try:
        rc, run_dir = site.play('lb-flaky', 'failsafe.deploy.canary', *site.canary_args('6.0.0', [1, '100%'], gate))
    finally:
        watch.stop()
    assert rc != 0, 'the flaky canary passed its gate: see %s/run.log' % run_dir
    for host in (h1, h2, h3):
        site.assert_on(host, '1.0.0')
    # HAProxy went through drain, then the canary's weight, for h1 only; the others kept their traffic
    seen = watch.states_of(h1)
    assert any(state & DRAIN for state, dummy in seen), 'h1 never left the load balancer: %r' % seen[:5]
    assert (0, 10) in seen, 'h1 never took traffic at the canary weight: %r' % sorted(set(seen))
    for host in (h2, h3):
        assert set(watch.states_of(host)) == {(0, 100)}, (host, sorted(set(watch.states_of(host))))
    # and is back as it was before the deploy
    assert site.lb.server_state() == dict((h, (0, 100)) for h in site.apps), site.lb.server_state()
    journal = _lb_journal(site)
    assert journal['status'] == 'rolled_back' and journal['outcome']['verified'] is True, journal
    # traffic first, in a strict order: a sample read HAProxy with h1 back at weight 100 and then, after that read,
    # still found h1's current release on 6.0.0 (every sample reads HAProxy first, then the hosts); a rollback
    # that put both back between two samples shows no such sample and fails
    switched = watch.first(lambda servers, current: current.get(h1) == '6.0.0')
    assert switched is not None, 'h1 never switched to 6.0.0'
    traffic_first = watch.first(lambda servers, current: servers.get(h1) == (0, 100) and current.get(h1) == '6.0.0',
                                after=switched)
    code_back = watch.first(lambda servers, current: current.get(h1) == '1.0.0', after=switched)
    assert code_back is not None, 'h1 never went back to 1.0.0'
    assert traffic_first is not None, 'no sample saw h1 back in HAProxy while its code was still 6.0.0: %r' % [
        (round(t - switched, 2), servers.get(h1), current.get(h1)) for t, servers, current in watch.samples
        if t >= switched][-40:]
    assert traffic_first < code_back
    incident, markdown = site.incident(run_dir)
    assert incident['outcome'] == 'rolled_back'
    assert sorted(incident['summary']['scope_hosts']) == sorted([h1, site.lb_host])
    assert incident['failures'][0]['metric_gate']['verdict'] == 'fail'
    assert 'error_rate' in markdown
    return run_dir, incident


AWX_TOKEN = 'awx-T0ken-5ecret-0f1e2d3c4b5a'


@pytest.fixture
def awx(canary_lb):
    """A fake AWX (tests/behaviour/awx_fake.py) whose job template "failsafe rollback" runs the project's
    rollback.yml (failsafe.deploy.rollback) with ansible-runner against the scenario's own inventory (the fleet and
    the load balancer's variables). The template has no variables of its own: what the rollback needs beyond the
    inventory comes from the launch's extra vars and the hosts' journals, never from the deploy's settings."""
    site = canary_lb
    template = awx_fake.JobTemplate(11, 'failsafe rollback', 'rollback.yml', site.inventories)
    env = dict(site.env, FAILSAFE_REPORT_DIR=os.path.join(site.base, 'awx-incidents'))
    env.pop('ANSIBLE_CONFIG')   # the project's own ansible.cfg enables the callback, as in AWX
    project = awx_fake.project(os.path.join(site.base, 'awx-project'), ['rollback'])
    fake = awx_fake.FakeAwx(os.path.join(site.base, 'awx'), project, env, [template], AWX_TOKEN)
    site.env.update({'FAILSAFE_ROLLBACK_VIA': 'controller', 'FAILSAFE_CONTROLLER_HOST': fake.url,
                     'FAILSAFE_CONTROLLER_TOKEN': AWX_TOKEN, 'FAILSAFE_CONTROLLER_ROLLBACK_TEMPLATE': 'failsafe rollback',
                     'FAILSAFE_CONTROLLER_POLL_INTERVAL': '0.2'})
    try:
        yield fake
    finally:
        fake.close()


def test_behind_haproxy_the_controller_rollback_puts_traffic_back_before_the_code(canary_lb, awx):
    """The same failed canary behind HAProxy with rollback_via controller: the callback launches the rollback job
    template on a fake AWX (AWX cannot run here; tests/behaviour/awx_fake.py answers the API v2 calls of
    ControllerClient and runs each launched job for real, with ansible-runner, as AWX does). The job's real run
    undoes the load balancer's traffic before the canary host's code, exactly as the local child does: the same
    samples of HAProxy and the hosts prove it, every app host is back on 1.0.0 and healthy, and the rollback went
    through the controller: one launch of the template, with the hosts in scope as its limit and the load balancer's
    traffic stage in its extra vars, whose job succeeded with every host of its limit ok."""
    site = canary_lb
    h1 = site.apps[0]
    run_dir, incident = _failed_gate_behind_haproxy(site)
    launches = awx.launches()
    assert len(launches) == 1, awx.requests
    request = launches[0]['body']
    assert sorted(request['limit'].split(',')) == sorted([h1, site.lb_host]), request['limit']
    extra = request['extra_vars']
    assert extra['failsafe_rollback_stages'][site.lb_host] == ['traffic'], extra
    assert 'traffic' not in extra['failsafe_rollback_stages'].get(h1, ['code']), extra
    assert sorted(extra['failsafe_rollback_hosts']) == sorted([h1, site.lb_host]), extra
    assert len(awx.jobs) == 1, awx.jobs
    job = list(awx.jobs.values())[0]
    assert job.status == 'successful' and job.rc == 0, 'see %s/job.log' % job.dir
    summaries = dict((row['host_name'], row['failed']) for row in job.host_summaries())
    assert summaries == {h1: False, site.lb_host: False}, job.host_summaries()
    assert_no_ignored_callback_errors(job.events, where='job events of the rollback job')
    # the incident names the job as the rollback, whose end the callback waited for, with each host's result
    rollback = incident['rollback']
    assert rollback['command'] == ['controller', '%s/api/v2/jobs/%d/' % (awx.url, job.id)], rollback
    assert rollback['rc'] == 0 and rollback['ended'] >= job.finished, (rollback, job.finished)
    outcome = dict((host, (info['status'], info['controller_job'])) for host, info in rollback['hosts'].items())
    assert outcome == {h1: ('ok', job.id), site.lb_host: ('ok', job.id)}, rollback['hosts']
    with open(os.path.join(run_dir, 'run.log'), encoding='utf-8') as handle:
        log = handle.read()
    assert 'launched controller job %d' % job.id in log, log[-3000:]
    assert AWX_TOKEN not in log and AWX_TOKEN not in json.dumps(incident)


def test_behind_haproxy_a_good_canary_ends_at_full_weight_without_a_failed_request(canary_lb):
    """A good release in two waves: each wave's hosts are drained before their restart and come back at the canary
    weight; the last play gives every host its full weight and commits the load balancer. HAProxy answered every
    request of the steady load. A re-run changes nothing on the load balancer."""
    site = canary_lb
    h1, h2, h3 = site.apps
    gate = {'failsafe_canary_lb': site.lb_host, 'failsafe_canary_weight': 10, 'failsafe_canary_full_weight': 100,
            'failsafe_canary_bake': 2, 'failsafe_canary_interval': 1, 'failsafe_canary_count': 2,
            'failsafe_canary_thresholds': [{'name': 'error_rate', 'query': ERROR_RATE, 'max': 0.05}]}
    since = time.time()
    watch = Watch(site)
    try:
        rc, run_dir = site.play('lb-good', 'failsafe.deploy.canary', *site.canary_args('2.0.0', [1, '100%'], gate))
    finally:
        watch.stop()
    assert rc == 0, 'see %s/run.log' % run_dir
    for host in (h1, h2, h3):
        site.assert_on(host, '2.0.0')
        assert any(state & DRAIN for state, dummy in watch.states_of(host)), '%s was never drained' % host
        assert (0, 10) in watch.states_of(host), '%s never had the canary weight' % host
    assert site.lb.server_state() == dict((h, (0, 100)) for h in site.apps), site.lb.server_state()
    assert _lb_journal(site)['status'] == 'committed'
    time.sleep(1)
    answered = site.load.served_since(since)
    assert len(answered) > 100 and None not in answered, (len(answered), sorted(set(answered), key=str))
    assert site.load.failures == [], site.load.failures[:5]
    # a re-run deploys nothing and leaves the load balancer and its transaction alone
    txid = _lb_journal(site)['txid']
    rc, run_dir = site.play('lb-again', 'failsafe.deploy.canary', *site.canary_args('2.0.0', [1, '100%'], gate))
    assert rc == 0, 'see %s/run.log' % run_dir
    assert _lb_journal(site)['txid'] == txid and _lb_journal(site)['status'] == 'committed'
    assert site.lb.server_state() == dict((h, (0, 100)) for h in site.apps), site.lb.server_state()
