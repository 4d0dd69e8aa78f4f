# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fault-injection matrix: every deploy step x every fault, on one 3-host namespace SSH fleet.

The steps are the roles of failsafe.deploy.deploy; preflight opens the transaction and takes the snapshot in one
call, so its after-hook is the moment after the snapshot (faults inside the snapshot: test_fault_inside).

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

Each cell also asserts the outcome the deploy reported (rolled back; ROLLBACK FAILED naming the host; or no
incident, after a commit or when the controller was SIGKILLed) and that every host's journal holds this cell's run
(FAILSAFE_RUN_ID) and release.

test_fault_inside adds faults where they hurt, on the same fleet (DEEP_CELLS): a module that dies at a crash point of
module_utils on one host (FAILSAFE_CRASH_AT, armed on that host only by an interpreter wrapper), mid-snapshot,
mid-commit with the other hosts committed, and mid-restore in the rollback child; and a host crash, a network cut
and a controller SIGKILL while that host's restore holds part-way (FAILSAFE_CRASH_HOLD), and while its commit holds
with the other hosts committed.

test_fault_migrate adds the migrate step (the database layer, off in the other cells): each host migrates its own
SQLite database (/srv/db/app.db) with a release's versioned SQL files, and the fault hits after the migration
(task failure, host crash, controller SIGKILL). Every cell must end on the previous release as above and on the
previous schema and rows (no migration recorded), or with ROLLBACK FAILED naming the host until recover.yml ran.

The summary (cell, outcome, rollback seconds) goes to tests/output/fault-matrix.md and .json. FAILSAFE_FAULT_FLEET
names the fleet (default fsx), so that single cells can run beside a running matrix. FAILSAFE_FAULT_SHARD=K/N runs
every N-th cell of each table from the K-th on (the matrix split over N fleets of their own, side by side; each
shard writes fault-matrix-K-of-N.md and .json); the host a cell hits is the same in every split.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support import (ROOT, VENV_BIN, add_migrations, assert_log_has_no_ignored_callback_errors, fleet_env,
                     load_example_build, tree_digest)

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.fleet import Fleet, ensure_prereqs  # noqa: E402  pylint: disable=wrong-import-position
from tests.requires import require_root  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.fleet

STEPS = ('preflight', 'release', 'activate', 'verify', 'commit')
FAULTS = ('task_failure', 'unreachable', 'host_crash', 'sigkill', 'sigint', 'sigterm')
CELLS = [(step, fault) for step in STEPS for fault in FAULTS]
SHARD = os.environ.get('FAILSAFE_FAULT_SHARD', '')


def shard(cells):
    """The cells of this shard (FAILSAFE_FAULT_SHARD=K/N: every N-th cell from the K-th, 1-based), or all of them."""
    if not SHARD:
        return cells
    try:
        k, n = (int(part) for part in SHARD.split('/'))
    except ValueError:
        raise ValueError('FAILSAFE_FAULT_SHARD must be K/N, not %r' % SHARD)
    if not 1 <= k <= n:
        raise ValueError('FAILSAFE_FAULT_SHARD must be K/N with 1 <= K <= N, not %r' % SHARD)
    return [cell for index, cell in enumerate(cells) if index % n == k - 1]


def _summary_name(ext):
    return 'fault-matrix%s.%s' % ('-%s-of-%s' % tuple(SHARD.split('/')) if SHARD else '', ext)


# A mutation-testing run of single cells uses a fleet of its own name beside a running matrix.
FLEET_NAME = os.environ.get('FAILSAFE_FAULT_FLEET', 'fsx')
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


class Matrix:
    """The shared fleet, the release archives and the playbook runs of the matrix."""

    def __init__(self, fleet, base):
        self.fleet = fleet
        self.base = base
        self.dist = os.path.join(base, 'dist')
        self.build = load_example_build()
        self.serial = 0
        self.rows = []
        self.started = time.time()
        self.env = fleet_env(fleet, base, self.dist)
        self.env['ANSIBLE_DEPRECATION_WARNINGS'] = 'False'

    # releases and runs ------------------------------------------------------------------------------------
    def new_release(self):
        """A fresh good release id built like 2.0.0 (the app reports its own version)."""
        self.serial += 1
        version = '2.0.%d' % self.serial
        self.build.build(self.dist, 0, [(version, 'good')])
        return version

    def argv(self, playbook, *args):
        return ['ansible-playbook', '-i', self.fleet.inventory_path, playbook, '-e', '@' + APP_VARS] + list(args)

    def start(self, cell_dir, playbook, *args, run_id=None):
        env = dict(self.env, FAILSAFE_REPORT_DIR=os.path.join(cell_dir, 'incidents'))
        if run_id:
            env['FAILSAFE_RUN_ID'] = run_id  # the identity the deploy's journal must carry afterwards
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
            'journal_run': journal.get('run_id'),
            'journal_release': journal.get('release'),
            'lock': os.path.exists(self.path(host, '/var/lib/failsafe-deploy/app/lock.json')),
            'served': self.served_version(host),
        }

    def write_summary(self):
        os.makedirs(OUTPUT_DIR, exist_ok=True)
        total = time.time() - self.started
        data = {'fleet_hosts': len(self.fleet.names), 'cells': self.rows, 'total_seconds': round(total, 1)}
        with open(os.path.join(OUTPUT_DIR, _summary_name('json')), 'w', encoding='utf-8') as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        lines = ['# Fault-injection matrix', '',
                 '3 namespace SSH hosts; a good release per cell; the fault hits one host inside the step (its '
                 'after-hook), or, for the mid_* cells, inside a module (a crash point of the '
                 'target-side code). Outcome: what the deploy reported, then the state of the fleet. Rollback '
                 'seconds: the automatic rollback run plus the recovery run, where needed.', '',
                 '| cell | outcome | rollback s | recovery | cell s |', '| --- | --- | ---: | --- | ---: |']
        for row in self.rows:
            lines.append('| %s | %s | %s | %s | %.1f |' % (
                row['cell'], row['outcome'], '%.1f' % row['rollback_seconds'] if row['rollback_seconds'] is not None
                else '-', row['recovery'] or '-', row['cell_seconds']))
        lines += ['', 'Total: %.1f s for %d cells (module setup included).' % (total, len(self.rows)), '']
        with open(os.path.join(OUTPUT_DIR, _summary_name('md')), 'w', encoding='utf-8') as handle:
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
    require_root('the namespace fleet needs root')
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


BYTECODE_CACHE = '/root/.cache/failsafe-deploy/bytecode'


def _bytecode_entries(matrix, host):
    """{file name: inode} of a host's module_utils bytecode cache (module_utils/_bytecode.py)."""
    path = matrix.path(host, BYTECODE_CACHE)
    assert os.path.isdir(path), '%s has no bytecode cache at %s' % (host, BYTECODE_CACHE)
    assert os.stat(path).st_mode & 0o777 == 0o700
    return {name: os.stat(os.path.join(path, name)).st_ino for name in os.listdir(path)}


def test_module_utils_load_from_the_hosts_bytecode_cache(fsx):  # pylint: disable=redefined-outer-name
    """The deploy of 1.0.0 left each host the compiled code of the module_utils its modules imported; a later module
    run on the host loads it from there: no entry is written again (a miss writes a new file in its place)."""
    before = {host: _bytecode_entries(fsx, host) for host in fsx.fleet.names}
    for host, entries in before.items():
        assert len(entries) >= 10, '%s cached only %s' % (host, sorted(entries))
    result = subprocess.run(['ansible', '-i', fsx.fleet.inventory_path, 'all', '-m', 'failsafe.deploy.history_info',
                             '-a', 'name=app state_dir=/var/lib/failsafe-deploy'], env=fsx.env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count('SUCCESS') == len(fsx.fleet.names), result.stdout
    assert {host: _bytecode_entries(fsx, host) for host in fsx.fleet.names} == before


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


def _run_id(cell):
    return 'fm-%s-%s' % (cell, os.urandom(3).hex())


def _expected_outcome(step, fault):
    """The outcome the faulty deploy's own incident report must give: 'rolled_back', 'rollback_failed', or None
    (no incident at all: nothing to roll back after a commit, or the controller was killed before it could act)."""
    if step == 'commit' and fault != 'module_crash' or fault == 'sigkill':
        return None
    if step == 'rollback' or fault in ('unreachable', 'host_crash'):
        return 'rollback_failed'
    return 'rolled_back'


def _precondition(matrix):
    """Every host healthy on one verified release, unlocked, journal closed: {host: (release, digest)}."""
    before = {}
    for host in matrix.fleet.names:
        state = matrix.state(host)
        assert state['current'] == state['last_verified'] and state['served'] == state['current'], \
            'precondition: %s is not on a healthy verified release: %r' % (host, state)
        assert not state['lock'] and state['journal'] != 'open', (host, state)
        before[host] = (state['current'], matrix.digest(host))
    assert len({release for release, dummy in before.values()}) == 1, 'precondition: mixed fleet %r' % before
    return before


def _assert_outcome(cell_dir, cell, expected, run_id, target):
    """The faulty run reported what the cell expects, about this cell's run; a failed rollback names the host."""
    incidents = _incidents(cell_dir)
    outcomes = [i.get('outcome') for i in incidents]
    assert outcomes == ([expected] if expected else []), 'incident outcomes %r, expected %s; see %s/runs.log' % (
        outcomes, expected or 'none', cell_dir)
    for incident in incidents:
        assert incident['summary']['run_id'] == run_id, (incident['summary']['run_id'], run_id)
    if expected == 'rollback_failed':
        named = [i for i in incidents if (i['rollback']['hosts'].get(target) or {}).get('status') not in (None, 'ok')]
        assert named, 'the incident report does not name %s as not rolled back' % target
        with open(os.path.join(cell_dir, 'runs.log'), encoding='utf-8', errors='replace') as handle:
            banner = [line for line in handle if line.startswith('!!! ') and target in line]
        assert banner, 'no loud ROLLBACK FAILED banner naming %s in %s/runs.log' % (target, cell_dir)
    return incidents


def _assert_fleet(matrix, cell_dir, cell, before, new, run_id, expect_new, quarantined=None, unopened=()):
    """Every host on the previous verified release, byte-identical and healthy (or, only after a commit, on the new
    verified release): never a mix. The journal holds this cell's transaction, closed as the outcome says.
    ``quarantined``: True when the release failed after its activation (it must be marked failed), None when that
    depends on how far the host got (it must not be verified). ``unopened``: hosts that died before they opened
    this cell's transaction (the snapshot is taken before the open): their journal must still hold an earlier,
    closed transaction."""
    hosts = matrix.fleet.names
    after = {host: matrix.state(host) for host in hosts}
    log = 'see %s/runs.log' % cell_dir
    currents = {host: after[host]['current'] for host in hosts}
    assert len(set(currents.values())) == 1, 'MIXED fleet after %s: %r; %s' % (cell, currents, log)
    for host in hosts:
        state = after[host]
        previous = before[host][0]
        assert not state['lock'], '%s: lock still held; %s' % (host, log)
        if host in unopened:
            assert state['journal_run'] != run_id and state['journal'] in ('committed', 'rolled_back'), \
                '%s never opened this cell\'s transaction, yet its journal says %r; %s' % (host, state, log)
        else:
            assert (state['journal_run'], state['journal_release']) == (run_id, new), \
                '%s: the journal holds run %s release %s, not this cell\'s run %s release %s; %s' % (
                    host, state['journal_run'], state['journal_release'], run_id, new, log)
            assert state['journal'] == ('committed' if expect_new else 'rolled_back'), '%s: journal %s; %s' % (
                host, state['journal'], log)
        if expect_new:
            assert state['current'] == new and state['last_verified'] == new, (host, state, log)
            assert state['ledger'][new]['state'] == 'verified', (host, state['ledger'].get(new))
            assert state['served'] == new, '%s serves %r, not %s' % (host, state['served'], new)
        else:
            assert state['current'] == previous, (host, state, log)
            assert state['last_verified'] == previous, (host, state)
            assert matrix.digest(host) == before[host][1], '%s is not byte-identical to its snapshot' % host
            assert state['served'] == previous, '%s serves %r, not %s' % (host, state['served'], previous)
            if new in state['ledger'] and quarantined:
                assert state['ledger'][new]['state'] == 'failed', (host, state['ledger'][new])
            elif new in state['ledger']:
                # Failed before or during its activation: quarantined only where the switch happened.
                assert state['ledger'][new]['state'] != 'verified', (host, state['ledger'][new])


@pytest.mark.parametrize('step,fault', shard(CELLS), ids=['%s-%s' % cell for cell in shard(CELLS)])
def test_fault_matrix(fsx, step, fault):  # pylint: disable=redefined-outer-name,too-many-locals
    """Given a fleet on a verified release, when a deploy meets the fault inside the step (and the recovery the
    fault needs runs), then every host is on the previous verified release, byte-identical and healthy, or, only
    for a fault after the commit, every host is on the new verified release: never a mix. The deploy reports the
    outcome the fault calls for, and every journal holds this cell's run and release."""
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
        before = _precondition(matrix)
        previous = {host: before[host][0] for host in hosts}
        new = matrix.new_release()
        run_id = _run_id(cell)
        kind = 'fail' if fault == 'task_failure' else 'hold'
        for host in hosts:
            if os.path.exists(matrix.path(host, MARKER)):
                os.unlink(matrix.path(host, MARKER))

        proc = matrix.start(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % new,
                            '-e', 'failsafe_%s_after_tasks=%s' % (step, HOOK), '-e', 'failsafe_fault_host=%s' % target,
                            '-e', 'failsafe_fault_kind=%s' % kind, '-e', 'failsafe_fault_step=%s' % step,
                            '-e', 'failsafe_fault_marker=%s' % MARKER, run_id=run_id)
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
        incidents = _assert_outcome(cell_dir, cell, _expected_outcome(step, fault), run_id, target)
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
            # Alternate the two ways back; after the commit only recover.yml (a deploy of the previous release
            # would be a new deploy, not a recovery).
            recovery = ('deploy %s' % previous[target] if STEPS.index(step) % 2 == 0 and step != 'commit'
                        else 'recover.yml')
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

        expect_new = step == 'commit'
        # A release is quarantined only where a failure was seen after its activation: a recovery of what a dead
        # or cut-off run left (recover.yml, or the next deploy's open) quarantines only a release shown bad.
        _assert_fleet(matrix, cell_dir, cell, before, new, run_id, expect_new,
                      quarantined=None if recovery else STEPS.index(step) > STEPS.index('activate'))
        row['outcome'] = '%s; %s' % (_expected_outcome(step, fault) or 'no incident',
                                     'new release %s on every host' % new if expect_new else
                                     'previous %s restored on every host' % previous[target])
    finally:
        row['cell_seconds'] = round(time.monotonic() - started, 1)
        matrix.rows.append(row)
        if fault == 'unreachable':
            fleet.restore_network(target)
        if not fleet.is_running(target):
            fleet.restart(target)
            matrix.boot(target)


# Faults where they hurt, on the same fleet: inside a module (a crash point of module_utils, armed on one host by
# the interpreter wrapper FAULT_PYTHON), part-way through the commit with the other hosts committed, and during the
# rollback child (the deploy fails on another host first). Cell -> crash point on the target host.
# The ids (mid_<phase>-<fault>) differ from the matrix's <step>-<fault>: cell folders and summary rows are unique.
DEEP_CELLS = [
    ('mid_snapshot', 'module_crash'),   # dies inside the snapshot capture loop
    ('mid_commit', 'module_crash'),     # dies inside the journal commit while the other hosts commit
    ('mid_commit', 'sigkill'),          # the journal commit holds on one host, the others commit, the controller dies
    ('mid_rollback', 'module_crash'),   # dies inside the restore, between two paths: the next deploy finishes it
    ('mid_rollback', 'host_crash'),     # the restore holds part-way, the test kills the host
    ('mid_rollback', 'unreachable'),    # the restore holds part-way, the test cuts the host's network
    ('mid_rollback', 'sigkill'),        # the restore holds part-way, the test SIGKILLs the controller and its child
]
CRASH_AT = {'mid_snapshot': 'snapshot.entry-captured@3', 'mid_commit': 'journal.history-appended',
            'mid_rollback': 'restore.entry-restored'}
FAULT_PYTHON = '/srv/fault-python'
FAULT_ENV = '/srv/fault-crash.env'
# Runs every module on a host; arms the crash point named in FAULT_ENV on that host only, and once: after a crash
# (exit 137) it disarms itself, so the rollback or recovery that follows runs clean.
FAULT_PYTHON_SCRIPT = '''#!/bin/sh
# Interpreter of the fault tests (tests/behaviour/test_fault_matrix.py).
if [ -s %(env)s ]; then
  set -a; . %(env)s; set +a
  /usr/bin/python3 "$@"; rc=$?
  if [ "$rc" -eq 137 ]; then rm -f %(env)s; fi
  exit "$rc"
fi
exec /usr/bin/python3 "$@"
''' % {'env': FAULT_ENV}


def _install_fault_python(matrix):
    for host in matrix.fleet.names:
        path = matrix.path(host, FAULT_PYTHON)
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(FAULT_PYTHON_SCRIPT)
        os.chmod(path, 0o755)


def _arm(matrix, host, point, hold):
    lines = ['FAILSAFE_CRASH_AT=%s' % point] + (['FAILSAFE_CRASH_HOLD=%s' % MARKER] if hold else [])
    with open(matrix.path(host, FAULT_ENV), 'w', encoding='utf-8') as handle:
        handle.write('\n'.join(lines) + '\n')


def _disarm(matrix, host):
    for path in (FAULT_ENV, MARKER):
        if os.path.exists(matrix.path(host, path)):
            os.unlink(matrix.path(host, path))


def _release_hold(matrix, host, timeout=30):
    """Let a held module go (it then dies at its crash point, and the wrapper disarms the host)."""
    if os.path.exists(matrix.path(host, MARKER)):
        os.unlink(matrix.path(host, MARKER))
        deadline = time.monotonic() + timeout
        while os.path.exists(matrix.path(host, FAULT_ENV)) and time.monotonic() < deadline:
            time.sleep(0.05)
    _disarm(matrix, host)


def _process_tree(pid):
    """pid and all its descendants (the controller and the rollback child it started in a session of its own)."""
    children = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry, encoding='ascii', errors='replace') as handle:
                ppid = int(handle.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            tree.append(child)
            todo.append(child)
    return tree


def _wait_for_commits(matrix, hosts, run_id, proc, timeout=120):
    """Until the other hosts' commit of this run is on disk (the target's holds inside its own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        journals = [matrix.read_json(host, '/var/lib/failsafe-deploy/app/journal.json') or {} for host in hosts]
        if all((j.get('run_id'), j.get('status')) == (run_id, 'committed') for j in journals):
            return
        if proc.poll() is not None:
            raise AssertionError('the deploy ended (rc %s) before the other hosts committed' % proc.returncode)
        time.sleep(0.1)
    raise AssertionError('the other hosts did not commit within %s s' % timeout)


def _journal_history(matrix, host):
    try:
        with open(matrix.path(host, '/var/lib/failsafe-deploy/app/history.jsonl'), encoding='utf-8') as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize('where,fault', shard(DEEP_CELLS), ids=['%s-%s' % cell for cell in shard(DEEP_CELLS)])
def test_fault_inside(fsx, where, fault):  # pylint: disable=redefined-outer-name,too-many-locals,too-many-statements
    """Given a fleet on a verified release, when a module dies part-way on one host (in the snapshot, in the
    commit after the other hosts committed, in the rollback's restore), or the host crashes, loses its network or
    the controller is SIGKILLed while that host's rollback is part-way, then the deploy reports the outcome the
    fault calls for (rolled back; ROLLBACK FAILED naming the host; nothing, for a killed controller), the recovery
    finishes the job, and every host ends on the previous verified release, byte-identical: never a mix."""
    matrix = fsx
    fleet = matrix.fleet
    hosts = fleet.names
    index = DEEP_CELLS.index((where, fault))
    step = where[len('mid_'):]
    target = hosts[index % len(hosts)]
    failing = hosts[(index + 1) % len(hosts)]  # where the deploy fails first, for the rollback cells
    cell = '%s-%s' % (where, fault)
    cell_dir = os.path.join(matrix.base, cell)
    os.makedirs(cell_dir)
    started = time.monotonic()
    row = {'cell': cell, 'host': target, 'outcome': 'FAILED', 'rollback_seconds': None, 'recovery': None,
           'cell_seconds': None}
    hold = fault in ('host_crash', 'unreachable', 'sigkill')
    try:
        before = _precondition(matrix)
        previous = before[target][0]
        new = matrix.new_release()
        run_id = _run_id(cell)
        _install_fault_python(matrix)
        for host in hosts:
            _disarm(matrix, host)
        _arm(matrix, target, CRASH_AT[where], hold)
        args = ['-e', 'release_version=%s' % new, '-e', 'ansible_python_interpreter=%s' % FAULT_PYTHON]
        if step == 'rollback':
            args += ['-e', 'failsafe_activate_after_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=%s' % failing,
                     '-e', 'failsafe_fault_kind=fail', '-e', 'failsafe_fault_step=activate']
        proc = matrix.start(cell_dir, 'failsafe.deploy.deploy', *args, run_id=run_id)
        if hold:
            _wait_for_marker(matrix, target, proc)
            time.sleep(0.3)
            if step == 'commit':
                _wait_for_commits(matrix, [host for host in hosts if host != target], run_id, proc)
            if fault == 'host_crash':
                fleet.crash(target)
            elif fault == 'unreachable':
                fleet.cut(target)
            else:
                for pid in _process_tree(proc.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        rc = matrix.finish(proc)
        assert rc != 0, 'the faulty deploy exited 0'
        expected = _expected_outcome(step, fault)
        incidents = _assert_outcome(cell_dir, cell, expected, run_id, target)
        rollback_seconds = sum(i.get('rollback', {}).get('duration') or 0 for i in incidents)

        if fault == 'unreachable':
            fleet.restore_network(target)
            fleet.wait_ssh(target)
        if fault == 'host_crash':
            _disarm(matrix, target)
            fleet.restart(target)
            matrix.boot(target)
        else:
            _release_hold(matrix, target)
        if step == 'rollback':
            # What the interrupted rollback left on the host it could not finish: a loud mark, or an open
            # transaction, never a silent close.
            state = matrix.state(target)
            assert (state['journal_run'], state['journal']) == (
                run_id, 'rollback_failed' if fault == 'module_crash' else 'open'), (target, state)
        if step == 'commit' and fault == 'sigkill':
            # The controller died mid-commit: a mixed fleet that recover.yml must not leave behind.
            journals = {host: (matrix.state(host)['journal_run'], matrix.state(host)['journal']) for host in hosts}
            assert journals == {host: (run_id, 'open' if host == target else 'committed') for host in hosts}, journals
        elif step == 'commit':
            # The mixed-fleet risk was real: the other hosts had committed this run before the rollback undid it.
            for host in hosts:
                statuses = [t['status'] for t in _journal_history(matrix, host) if t.get('run_id') == run_id]
                if host != target:
                    assert statuses[-2:] == ['committed', 'rolled_back'], (host, statuses)

        # recover.yml after a lost host, and after the controller died mid-commit; the next deploy (preflight)
        # after a rollback that failed inside its restore and after a controller SIGKILL mid-rollback.
        if step == 'rollback':
            recovery = 'deploy %s' % previous if fault in ('module_crash', 'sigkill') else 'recover.yml'
        else:
            recovery = 'recover.yml' if fault == 'sigkill' else None
        if recovery == 'recover.yml':
            rc_rec, took = matrix.play(cell_dir, 'failsafe.deploy.recover')
        elif recovery:
            rc_rec, took = matrix.play(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % previous)
        if recovery:
            assert rc_rec == 0, 'recovery (%s) failed: see %s/runs.log' % (recovery, cell_dir)
            rollback_seconds += took
        row['recovery'] = recovery
        row['rollback_seconds'] = round(rollback_seconds, 1)

        # The snapshot is taken before the transaction opens: a host that died inside it never opened one.
        _assert_fleet(matrix, cell_dir, cell, before, new, run_id, expect_new=False,
                      unopened=[target] if step == 'snapshot' else [])
        row['outcome'] = '%s; previous %s restored on every host' % (expected or 'no incident', previous)
    finally:
        row['cell_seconds'] = round(time.monotonic() - started, 1)
        matrix.rows.append(row)
        if fault == 'unreachable':
            fleet.restore_network(target)
        if fleet.is_running(target):
            _release_hold(matrix, target)
        else:
            _disarm(matrix, target)
            fleet.restart(target)
            matrix.boot(target)


# The migrate step: a few fast cells on the same fleet (see the module docstring).
MIGRATE_FAULTS = ('task_failure', 'host_crash', 'sigkill')
DB_PATH = '/srv/db/app.db'
DB_MIGRATIONS = {
    '0001_note.up.sql': 'ALTER TABLE items ADD COLUMN note TEXT;\nCREATE TABLE tags (id INTEGER PRIMARY KEY);',
    '0001_note.down.sql': 'DROP TABLE tags;\nALTER TABLE items DROP COLUMN note;',
}
DB_VARS = json.dumps({'failsafe_migrate_enabled': True, 'failsafe_migrate_engine': 'sqlite',
                      'failsafe_migrate_database': DB_PATH})


def _db(matrix, host):
    """The host's database as the test reads it from disk: tables, columns of items, rows, migrations recorded."""
    import sqlite3
    path = matrix.path(host, DB_PATH)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        conn = sqlite3.connect(path)
        conn.executescript("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
                           "INSERT INTO items VALUES (1, 'one'), (2, 'two');")
        conn.commit()
        conn.close()
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]
        migrations = [r[0] for r in conn.execute('SELECT version FROM failsafe_migrations')] \
            if 'failsafe_migrations' in tables else []
        return {'tables': [t for t in tables if t != 'failsafe_migrations'],
                'columns': [r[1] for r in conn.execute('PRAGMA table_info(items)')],
                'rows': conn.execute('SELECT * FROM items ORDER BY id').fetchall(), 'migrations': migrations}
    finally:
        conn.close()


@pytest.mark.parametrize('fault', shard(MIGRATE_FAULTS), ids=['migrate-%s' % f for f in shard(MIGRATE_FAULTS)])
def test_fault_migrate(fsx, fault):  # pylint: disable=redefined-outer-name,too-many-locals
    """Given a fleet on a verified release whose hosts each hold a database, when a deploy meets the fault after
    its migration (and the recovery the fault needs runs), then every host is on the previous release and the
    previous schema, with its rows, and the deploy reported the outcome the fault calls for."""
    matrix = fsx
    fleet = matrix.fleet
    hosts = fleet.names
    target = hosts[MIGRATE_FAULTS.index(fault) % len(hosts)]
    cell = 'migrate-%s' % fault
    cell_dir = os.path.join(matrix.base, cell)
    os.makedirs(cell_dir)
    started = time.monotonic()
    row = {'cell': cell, 'host': target, 'outcome': 'FAILED', 'rollback_seconds': None, 'recovery': None,
           'cell_seconds': None}
    try:
        before = _precondition(matrix)
        db_before = {host: _db(matrix, host) for host in hosts}
        assert all(state['migrations'] == [] and 'note' not in state['columns'] for state in db_before.values())
        previous = {host: before[host][0] for host in hosts}
        new = matrix.new_release()
        add_migrations(os.path.join(matrix.dist, 'app-%s.tar.gz' % new), DB_MIGRATIONS)
        run_id = _run_id(cell)
        kind = 'fail' if fault == 'task_failure' else 'hold'
        for host in hosts:
            if os.path.exists(matrix.path(host, MARKER)):
                os.unlink(matrix.path(host, MARKER))
        proc = matrix.start(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % new, '-e', DB_VARS,
                            '-e', 'failsafe_migrate_after_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=%s' % target,
                            '-e', 'failsafe_fault_kind=%s' % kind, '-e', 'failsafe_fault_step=migrate',
                            '-e', 'failsafe_fault_marker=%s' % MARKER, run_id=run_id)
        if kind == 'hold':
            _wait_for_marker(matrix, target, proc)
            # the hold comes after the migration: the target's schema is the new one when the fault hits
            assert 'note' in _db(matrix, target)['columns']
            time.sleep(0.3)
            if fault == 'host_crash':
                fleet.crash(target)
            else:
                os.kill(proc.pid, signal.SIGKILL)
        rc = matrix.finish(proc)
        assert rc != 0, 'the faulty deploy exited 0'
        expected = _expected_outcome('migrate', fault)
        incidents = _assert_outcome(cell_dir, cell, expected, run_id, target)
        rollback_seconds = sum(i.get('rollback', {}).get('duration') or 0 for i in incidents)
        recovery = None
        if fault == 'host_crash':
            fleet.restart(target)
            matrix.boot(target)
            recovery = 'recover.yml'
        elif fault == 'sigkill':
            recovery = 'recover.yml'
        if recovery:
            rc_rec, took = matrix.play(cell_dir, 'failsafe.deploy.recover')
            assert rc_rec == 0, 'recovery (%s) failed: see %s/runs.log' % (recovery, cell_dir)
            rollback_seconds += took
        row['recovery'] = recovery
        row['rollback_seconds'] = round(rollback_seconds, 1)
        _assert_fleet(matrix, cell_dir, cell, before, new, run_id, expect_new=False, quarantined=None)
        for host in hosts:
            assert _db(matrix, host) == db_before[host], '%s: database not back to the previous schema; see %s' % (
                host, cell_dir)
        row['outcome'] = '%s; previous %s and schema restored on every host' % (
            expected or 'no incident', previous[target])
    finally:
        row['cell_seconds'] = round(time.monotonic() - started, 1)
        matrix.rows.append(row)
        if not fleet.is_running(target):
            fleet.restart(target)
            matrix.boot(target)
