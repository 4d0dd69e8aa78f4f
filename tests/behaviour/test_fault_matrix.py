# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fault-injection matrix: every deploy step x every fault, on one 3-host namespace SSH fleet.

Each cell deploys a new good release (2.0.<n>) with the auto_rollback callback enabled, and injects its fault inside
the step's role, after the step's work, through the step's after-hook (fault_hooks/fault.yml) on one host:

- task_failure: the hook task fails on that host;
- unreachable: the hook holds the step on that host, the test cuts its network (fleet.cut);
- host_crash: the hook holds the step, the test kills every process of the host (fleet.crash);
- sigkill / sigint / sigterm: the hook holds the step, the test sends the signal to ansible-playbook (SIGINT to its
  process group, as Ctrl-C does; SIGKILL and SIGTERM to the process alone).

Recovery, where the fault needs one: after SIGKILL the next deploy (of the previous release) or recover.yml; a host
that was cut or crashed is brought back (a crashed one boots its supervisor, as init would) and recover.yml runs.

Then every host must be in one of two states, never a mix: the previous verified release, byte-identical to what it
was before the cell (tree digest of current, shared/ and the supervisor program file), healthy from inside the host,
lock released, journal closed; or, only when the fault came after the commit (the commit step's after-hook), the new
verified release on every host. A host that could not be rolled back at once must be named by the incident report.

The summary (cell, outcome, rollback seconds) goes to tests/output/fault-matrix.md and .json.
"""

import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support import ROOT, VENV_BIN, assert_log_has_no_ignored_callback_errors, tree_digest

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.fleet import Fleet, ensure_prereqs  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.fleet

STEPS = ('preflight', 'snapshot', 'release', 'activate', 'verify', 'commit')
FAULTS = ('task_failure', 'unreachable', 'host_crash', 'sigkill', 'sigint', 'sigterm')
CELLS = [(step, fault) for step in STEPS for fault in FAULTS]

FLEET_NAME = 'fsx'
HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fault_hooks', 'fault.yml')
APP_VARS = os.path.join(ROOT, 'tests', 'fleet', 'app-vars.yml')
OUTPUT_DIR = os.path.join(ROOT, 'tests', 'output')
MARKER = '/srv/fault-held'
# What a deploy captures and a rollback must give back byte for byte (see tests/fleet/app-vars.yml).
CAPTURED = ('/srv/app/current', '/srv/app/shared', '/srv/supervisor/conf.d/app.conf')
SUPERVISOR_CONF = '/srv/supervisor/supervisord.conf'
VERSION_PROBE = ("import urllib.request;"
                 "print(urllib.request.urlopen('http://127.0.0.1:8080/version', timeout=5).read().decode().strip())")
PLAYBOOK_TIMEOUT = 600


def _load_build():
    spec = importlib.util.spec_from_file_location('failsafe_example_build', os.path.join(ROOT, 'examples', 'app',
                                                                                         'build.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Matrix:
    """The shared fleet, the release archives and the playbook runs of the matrix."""

    def __init__(self, fleet, base):
        self.fleet = fleet
        self.base = base
        self.dist = os.path.join(base, 'dist')
        self.build = _load_build()
        self.serial = 0
        self.rows = []
        self.started = time.time()
        self.env = dict(os.environ)
        self.env.update(fleet.env())
        self.env.update({
            'PATH': VENV_BIN + os.pathsep + os.environ.get('PATH', ''),
            'ANSIBLE_CONFIG': os.path.join(ROOT, 'examples', 'demo', 'ansible.cfg'),
            'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.build', 'collections'),
            'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
            'ANSIBLE_HOME': os.path.join(base, 'ansible-home'),
            'ANSIBLE_NOCOLOR': '1',
            'ANSIBLE_FORCE_COLOR': '0',
            'ANSIBLE_PIPELINING': 'True',
            'ANSIBLE_DEPRECATION_WARNINGS': 'False',
            'FAILSAFE_DIST': self.dist,
            'FAILSAFE_VENV_BIN': VENV_BIN,
        })
        for key in ('ANSIBLE_STDOUT_CALLBACK', 'ANSIBLE_CALLBACKS_ENABLED', 'FAILSAFE_WEBHOOK_URL',
                    'FAILSAFE_CONTROLLER_PID', 'FAILSAFE_RUN_ID', 'FAILSAFE_ROLLBACK_CHILD'):
            self.env.pop(key, None)

    # releases and runs ------------------------------------------------------------------------------------
    def new_release(self):
        """A fresh good release id built like 2.0.0 (the app reports its own version)."""
        self.serial += 1
        version = '2.0.%d' % self.serial
        self.build.build(self.dist, 0, [(version, 'good')])
        return version

    def argv(self, playbook, *args):
        return ['ansible-playbook', '-i', self.fleet.inventory_path, playbook, '-e', '@' + APP_VARS] + list(args)

    def start(self, cell_dir, playbook, *args):
        env = dict(self.env, FAILSAFE_REPORT_DIR=os.path.join(cell_dir, 'incidents'))
        log = open(os.path.join(cell_dir, 'runs.log'), 'a', encoding='utf-8')  # pylint: disable=consider-using-with
        log.write('$ %s\n' % ' '.join(self.argv(playbook, *args)))
        log.flush()
        proc = subprocess.Popen(self.argv(playbook, *args), env=env, cwd=cell_dir, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log
        return proc

    @staticmethod
    def finish(proc, timeout=PLAYBOOK_TIMEOUT):
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            _kill_group(proc.pid)
            proc.log.write('rc=%s\n' % proc.returncode)
            proc.log.close()
        # a handler exception the callback swallowed fails the cell, whatever the outcome looked like
        assert_log_has_no_ignored_callback_errors(proc.log.name)
        return rc

    def play(self, cell_dir, playbook, *args):
        started = time.monotonic()
        rc = self.finish(self.start(cell_dir, playbook, *args))
        return rc, time.monotonic() - started

    # host state -------------------------------------------------------------------------------------------
    def path(self, host, path):
        return self.fleet.host_path(host, path)

    def digest(self, host):
        return tree_digest([self.path(host, p) for p in CAPTURED])

    def current(self, host):
        try:
            return os.path.basename(os.readlink(self.path(host, '/srv/app/current')))
        except OSError:
            return None

    def read_json(self, host, path):
        try:
            with open(self.path(host, path), encoding='utf-8') as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None

    def served_version(self, host):
        result = self.fleet.run(host, ['/usr/bin/python3', '-c', VERSION_PROBE], timeout=30)
        return result.stdout.strip() if result.returncode == 0 else 'unhealthy: %s' % result.stderr.strip()[-200:]

    def boot(self, host):
        """What init does when a crashed host comes back: start its supervisor (which starts the app)."""
        if os.path.exists(self.path(host, SUPERVISOR_CONF)):
            self.fleet.run(host, [os.path.join(VENV_BIN, 'supervisord'), '-c', SUPERVISOR_CONF], timeout=30)

    def state(self, host):
        ledger = self.read_json(host, '/srv/app/.failsafe/ledger.json') or {}
        journal = self.read_json(host, '/var/lib/failsafe-deploy/app/journal.json') or {}
        return {
            'current': self.current(host),
            'last_verified': ledger.get('last_verified'),
            'ledger': ledger.get('releases', {}),
            'journal': journal.get('status'),
            'lock': os.path.exists(self.path(host, '/var/lib/failsafe-deploy/app/lock.json')),
            'served': self.served_version(host),
        }

    def write_summary(self):
        os.makedirs(OUTPUT_DIR, exist_ok=True)
        total = time.time() - self.started
        data = {'fleet_hosts': len(self.fleet.names), 'cells': self.rows, 'total_seconds': round(total, 1)}
        with open(os.path.join(OUTPUT_DIR, 'fault-matrix.json'), 'w', encoding='utf-8') as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        lines = ['# Fault-injection matrix', '',
                 '3 namespace SSH hosts; a good release per cell; the fault hits one host inside the step (its '
                 'after-hook). Rollback seconds: the automatic rollback run plus the recovery run, where needed.', '',
                 '| cell | outcome | rollback s | recovery | cell s |', '| --- | --- | ---: | --- | ---: |']
        for row in self.rows:
            lines.append('| %s | %s | %s | %s | %.1f |' % (
                row['cell'], row['outcome'], '%.1f' % row['rollback_seconds'] if row['rollback_seconds'] is not None
                else '-', row['recovery'] or '-', row['cell_seconds']))
        lines += ['', 'Total: %.1f s for %d cells (module setup included).' % (total, len(self.rows)), '']
        with open(os.path.join(OUTPUT_DIR, 'fault-matrix.md'), 'w', encoding='utf-8') as handle:
            handle.write('\n'.join(lines))


def _kill_group(pgid):
    """Leftovers of a run (workers and ssh clients orphaned by SIGKILL): gone before the next cell."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope='module')
def fsx(tmp_path_factory):
    """One 3-host fleet for the whole matrix, on release 1.0.0 (verified), torn down even on failure."""
    if os.geteuid() != 0:
        pytest.skip('the namespace fleet needs root')
    ensure_prereqs()
    base = str(tmp_path_factory.mktemp('fault-matrix'))
    fleet = Fleet(3, name=FLEET_NAME, base_dir=os.path.join(base, 'fleet'))
    fleet.up()
    matrix = Matrix(fleet, base)
    try:
        matrix.build.build(matrix.dist, 0, [('1.0.0', 'good')])
        setup_dir = os.path.join(base, 'setup')
        os.makedirs(setup_dir)
        rc, _elapsed = matrix.play(setup_dir, 'failsafe.deploy.deploy', '-e', 'release_version=1.0.0')
        assert rc == 0, 'the first deploy of 1.0.0 failed: see %s/runs.log' % setup_dir
        yield matrix
    finally:
        matrix.write_summary()
        fleet.down()


def _wait_for_marker(matrix, host, proc, timeout=300):
    marker = matrix.path(host, MARKER)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(marker) and os.path.getsize(marker) > 0:
            return
        if proc.poll() is not None:
            raise AssertionError('the deploy ended (rc %s) before the fault hook held the step' % proc.returncode)
        time.sleep(0.1)
    raise AssertionError('the fault hook did not hold the step within %s s' % timeout)


def _incidents(cell_dir):
    out = []
    for path in sorted(glob.glob(os.path.join(cell_dir, 'incidents', 'inc-*.json'))):
        if path.count('.') == 1:  # inc-<id>.json, not the rollback side files
            with open(path, encoding='utf-8') as handle:
                out.append(json.load(handle))
    return out


@pytest.mark.parametrize('step,fault', CELLS, ids=['%s-%s' % cell for cell in CELLS])
def test_fault_matrix(fsx, step, fault):  # pylint: disable=redefined-outer-name,too-many-locals,too-many-statements
    """Given a fleet on a verified release, when a deploy meets the fault inside the step (and the recovery the
    fault needs runs), then every host is on the previous verified release, byte-identical and healthy, or, only
    for a fault after the commit, every host is on the new verified release: never a mix."""
    matrix = fsx
    fleet = matrix.fleet
    hosts = fleet.names
    index = CELLS.index((step, fault))
    target = hosts[index % len(hosts)]
    cell = '%s-%s' % (step, fault)
    cell_dir = os.path.join(matrix.base, cell)
    os.makedirs(cell_dir)
    started = time.monotonic()
    row = {'cell': cell, 'host': target, 'outcome': 'FAILED', 'rollback_seconds': None, 'recovery': None,
           'cell_seconds': None}
    try:
        before = {}
        for host in hosts:
            state = matrix.state(host)
            assert state['current'] == state['last_verified'] and state['served'] == state['current'], \
                'precondition: %s is not on a healthy verified release: %r' % (host, state)
            assert not state['lock'] and state['journal'] != 'open', (host, state)
            before[host] = (state['current'], matrix.digest(host))
        previous = {host: before[host][0] for host in hosts}
        assert len(set(previous.values())) == 1, 'precondition: mixed fleet %r' % previous
        new = matrix.new_release()
        kind = 'fail' if fault == 'task_failure' else 'hold'
        for host in hosts:
            if os.path.exists(matrix.path(host, MARKER)):
                os.unlink(matrix.path(host, MARKER))

        proc = matrix.start(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % new,
                            '-e', 'failsafe_%s_after_tasks=%s' % (step, HOOK), '-e', 'failsafe_fault_host=%s' % target,
                            '-e', 'failsafe_fault_kind=%s' % kind, '-e', 'failsafe_fault_step=%s' % step,
                            '-e', 'failsafe_fault_marker=%s' % MARKER)
        if kind == 'hold':
            _wait_for_marker(matrix, target, proc)
            time.sleep(0.3)
            if fault == 'unreachable':
                fleet.cut(target)
            elif fault == 'host_crash':
                fleet.crash(target)
            elif fault == 'sigkill':
                os.kill(proc.pid, signal.SIGKILL)
            elif fault == 'sigint':
                os.killpg(proc.pid, signal.SIGINT)
            elif fault == 'sigterm':
                os.kill(proc.pid, signal.SIGTERM)
        rc = matrix.finish(proc)
        assert rc != 0, 'the faulty deploy exited 0'
        if fault in ('sigint', 'sigterm'):
            assert rc == 99, 'interrupted ansible-playbook should exit 99 (KeyboardInterrupt), not %s' % rc
        incidents = _incidents(cell_dir)
        rollback_seconds = sum(i.get('rollback', {}).get('duration') or 0 for i in incidents)

        # Recovery, where the fault needs one.
        recovery = None
        if fault == 'unreachable':
            fleet.restore_network(target)
            fleet.wait_ssh(target)
            recovery = 'recover.yml'
        elif fault == 'host_crash':
            fleet.restart(target)
            matrix.boot(target)
            recovery = 'recover.yml'
        elif fault == 'sigkill':
            recovery = 'deploy %s' % previous[target] if STEPS.index(step) % 2 == 0 else 'recover.yml'
        if recovery == 'recover.yml':
            rc_rec, took = matrix.play(cell_dir, 'failsafe.deploy.recover')
        elif recovery:
            rc_rec, took = matrix.play(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s'
                                       % previous[target])
        if recovery:
            assert rc_rec == 0, 'recovery (%s) failed: see %s/runs.log' % (recovery, cell_dir)
            rollback_seconds += took
        row['recovery'] = recovery
        row['rollback_seconds'] = round(rollback_seconds, 1)

        after = {host: matrix.state(host) for host in hosts}
        expect_new = step == 'commit'
        log = 'see %s/runs.log' % cell_dir
        currents = {host: after[host]['current'] for host in hosts}
        assert len(set(currents.values())) == 1, 'MIXED fleet after %s: %r; %s' % (cell, currents, log)
        for host in hosts:
            state = after[host]
            assert not state['lock'], '%s: lock still held; %s' % (host, log)
            assert state['journal'] in ('committed', 'rolled_back'), '%s: journal %s; %s' % (
                host, state['journal'], log)
            if expect_new:
                assert state['current'] == new and state['last_verified'] == new, (host, state, log)
                assert state['ledger'][new]['state'] == 'verified', (host, state['ledger'].get(new))
                assert state['served'] == new, '%s serves %r, not %s' % (host, state['served'], new)
            else:
                assert state['current'] == previous[host], (host, state, log)
                assert state['last_verified'] == previous[host], (host, state)
                assert matrix.digest(host) == before[host][1], '%s is not byte-identical to its snapshot' % host
                assert state['served'] == previous[host], '%s serves %r, not %s' % (host, state['served'],
                                                                                    previous[host])
                if new in state['ledger'] and STEPS.index(step) > STEPS.index('activate'):
                    assert state['ledger'][new]['state'] == 'failed', (host, state['ledger'][new])
                elif new in state['ledger']:
                    # Failed before or during activation: quarantined only if the switch happened.
                    assert state['ledger'][new]['state'] != 'verified', (host, state['ledger'][new])
        if fault in ('unreachable', 'host_crash') and not expect_new:
            # The automatic rollback could not reach the host: the incident report names it.
            assert incidents, 'no incident report for %s' % cell
            named = [i for i in incidents if target in json.dumps(i.get('rollback', {}).get('hosts', {}))
                     and (i['rollback']['hosts'].get(target) or {}).get('status') != 'ok']
            assert named, 'the incident report does not name %s as not rolled back' % target
            assert incidents[-1]['outcome'] == 'rollback_failed'
        if fault in ('sigint', 'sigterm') and not expect_new:
            assert incidents and incidents[-1]['outcome'] == 'rolled_back', [i.get('outcome') for i in incidents]
        row['outcome'] = 'new release %s on every host' % new if expect_new else \
            'previous %s restored on every host' % previous[target]
    finally:
        row['cell_seconds'] = round(time.monotonic() - started, 1)
        matrix.rows.append(row)
        if fault == 'unreachable':
            fleet.restore_network(target)
        if not fleet.is_running(target):
            fleet.restart(target)
            matrix.boot(target)
