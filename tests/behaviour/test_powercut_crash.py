# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine's crash points under power cuts, on a 2-host namespace fleet whose hosts keep their state directory
(/var/lib/failsafe-deploy) and app root (/srv/app) on the power-cut filesystem (tests/powercut).

A killed process leaves everything it wrote in the page cache; a power cut does not: what was not fsynced (file
data) or made durable in its directory (creates, renames, unlinks) is gone. Each cell deploys a new good release,
holds a module of one host at a crash point of the engine (FAILSAFE_CRASH_AT with FAILSAFE_CRASH_HOLD, armed on
that host by the interpreter wrapper of test_fault_matrix), or holds the step through its after-hook (verify, which
has no crash point of its own), then kills every process of that host and cuts its power: the filesystems are
mounted again from what was durable and the host boots (its supervisor starts the app, as init would). Then
recover.yml, and the next deploy.

The watchdog cell deploys with commit confirmed, holds the other host's verify step and SIGKILLs the controller
there (both hosts switched and armed); at the deadline each host's watchdog reverts by itself, the target's holding
part-way through its revert's restore (its own crash point, FAILSAFE_WATCHDOG_CRASH_AT), where the power is cut.
recover.yml must finish that revert and record it as interrupted; the other host's self-revert stands.

After recover.yml every host must be healthy on a verified release whose files are the release archive's, byte for
byte; every journal, history, ledger and snapshot manifest must read as JSON; the release the cut interrupted must
not be verified on the host whose power was cut, unless that host's commit was durable. Then the next deploy must
bring every host to a new verified release.

FAILSAFE_POWERCUT_FLEET / FAILSAFE_POWERCUT_SUBNET name the fleet (default hb, 10.213.232.0/24; the mutation
check gives it a name of its own).
"""

import json
import os
import signal
import sys
import tarfile
import time

import pytest

from support import ROOT
from test_fault_matrix import (FAULT_ENV, FAULT_PYTHON, HOOK, MARKER, Matrix, _arm, _disarm, _install_fault_python,
                               _wait_for_marker)

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.fleet import Fleet, ensure_prereqs  # noqa: E402  pylint: disable=wrong-import-position
from tests.powercut import PowerCutMount, ensure_prereqs as powercut_prereqs, missing  # noqa: E402
from tests.requires import require, require_root  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.fleet

FLEET_NAME = os.environ.get('FAILSAFE_POWERCUT_FLEET', 'hb')
# another name (the mutation check's) gets the subnet the fleet derives from it
FLEET_SUBNET = os.environ.get('FAILSAFE_POWERCUT_SUBNET') or ('10.213.232.0/24' if FLEET_NAME == 'hb' else None)
# What sits on the power-cut filesystem: host path -> folder of the host under the fleet's base_dir.
POWERCUT_PATHS = (('/srv/app', 'srv/app'), ('/var/lib/failsafe-deploy', 'state'))
STATE = '/var/lib/failsafe-deploy/app'
# cell -> (crash point where the host's module holds, or None to hold in the step's after-hook; the step)
CELLS = {
    'open': ('journal.opened', 'preflight'),
    'stage': ('release.staged-renamed', 'release'),
    # current renamed over, its directory not yet fsynced: the power cut decides which release the host boots on
    'activate': ('symlink.replaced', 'activate'),
    'verify': (None, 'verify'),
    'commit': ('journal.history-appended', 'commit'),
    'rollback': ('restore.entry-restored', 'rollback'),
    # commit confirmed, the controller SIGKILLed after the switch: the host's own watchdog reverts at its deadline and
    # holds part-way through that revert's restore (its own crash point, FAILSAFE_WATCHDOG_CRASH_AT)
    'watchdog': ('restore.entry-restored', 'watchdog'),
}
# The watchdog cell's confirmation deadline: long enough for both hosts to switch and the other host to hold its
# verify step before it passes (the controller is killed then), short enough to keep the cell cheap.
CONFIRM_SECONDS = 15


class PowerCutFleet(Matrix):
    """The fault matrix's runs and host reads, on hosts whose app root and state dir can lose power."""

    def __init__(self, fleet, base, mounts):
        super().__init__(fleet, base)
        self.mounts = mounts

    def power_cut(self, host):
        """Every process of the host killed, its power cut, its disks mounted again from what was durable, and the
        host booted (its supervisor starts the app)."""
        self.fleet.crash(host)
        mounts = [m for (h, dummy), m in self.mounts.items() if h == host]
        for mount in mounts:
            mount.cut()
        for mount in mounts:
            mount.unmount()
            mount.mount()
        _disarm(self, host)
        self.fleet.restart(host)
        self.boot(host)


@pytest.fixture(scope='module')
def hb(tmp_path_factory):
    """One 2-host fleet on the power-cut filesystem for the file, on release 1.0.0 (verified); everything unmounted
    at the end, pass or fail."""
    require_root('the namespace fleet and the power-cut filesystem need root')
    ensure_prereqs()
    powercut_prereqs()
    require(missing() is None, missing())
    base = str(tmp_path_factory.mktemp('powercut'))
    fleet = Fleet(2, name=FLEET_NAME, subnet=FLEET_SUBNET, base_dir=os.path.join(base, 'fleet'))
    mounts = {}
    try:
        # mounted below the hosts' folders before they boot: each host binds them in with its own folders
        for host in fleet.names:
            for dummy, folder in POWERCUT_PATHS:
                mounts[(host, folder)] = PowerCutMount(
                    os.path.join(base, 'powercut', host, folder.replace('/', '-')),
                    os.path.join(fleet.host_dir(host), folder)).mount()
        fleet.up()
        matrix = PowerCutFleet(fleet, base, mounts)
        matrix.build.build(matrix.dist, 0, [('1.0.0', 'good')])
        setup_dir = os.path.join(base, 'setup')
        os.makedirs(setup_dir)
        rc, dummy = matrix.play(setup_dir, 'failsafe.deploy.deploy', '-e', 'release_version=1.0.0')
        assert rc == 0, 'the first deploy of 1.0.0 failed: see %s/runs.log' % setup_dir
        _install_fault_python(matrix)
        yield matrix
    finally:
        for host in fleet.names:
            if fleet.is_running(host):
                fleet.crash(host)
        for mount in mounts.values():
            mount.unmount()
        fleet.down()
        left = [m.mountpoint for m in mounts.values() if m.mounted()]
        assert not left, 'power-cut filesystems still mounted: %s' % left


def _archive_files(matrix, release):
    """{member path: bytes} of the release archive's regular files."""
    out = {}
    with tarfile.open(os.path.join(matrix.dist, 'app-%s.tar.gz' % release)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                out[os.path.normpath(member.name)] = tar.extractfile(member).read()
    return out


def _release_files(matrix, host, release):
    root = matrix.path(host, '/srv/app/releases/%s' % release)
    out = {}
    for top, dummy, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                with open(path, 'rb') as handle:
                    out[os.path.relpath(path, root)] = handle.read()
    return out


def _state_files_readable(matrix, host):
    """Every journal, history, ledger and snapshot manifest of the host parses: nothing torn."""
    paths = [matrix.path(host, '/srv/app/.failsafe/ledger.json')]
    for top, dummy, files in os.walk(matrix.path(host, STATE)):
        paths += [os.path.join(top, name) for name in files
                  if name.endswith('.json') or name.endswith('.jsonl') and not name.startswith('.')]
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
        assert text.strip(), '%s: %s is empty' % (host, path)
        if path.endswith('.jsonl'):
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except ValueError:
                        # a torn last line is the history's documented tolerance; anything before it is not
                        assert number == len(text.splitlines()), '%s: %s line %d is torn' % (host, path, number)
        else:
            try:
                json.loads(text)
            except ValueError as e:
                raise AssertionError('%s: %s is torn: %s' % (host, path, e))


def _assert_host_sound(matrix, host):
    """Healthy on a verified release whose files are the archive's; every state file readable."""
    _state_files_readable(matrix, host)
    state = matrix.state(host)
    assert state['current'] and state['current'] == state['last_verified'], (host, state)
    assert state['served'] == state['current'], (host, state)
    assert state['journal'] != 'open' and not state['lock'], (host, state)
    for release, entry in state['ledger'].items():
        if entry.get('state') == 'verified' or release == state['last_verified']:
            files = _release_files(matrix, host, release)
            expected = _archive_files(matrix, release)
            assert {k: files.get(k) for k in expected} == expected, \
                '%s: verified release %s is not the archive on disk' % (host, release)
    return state


@pytest.mark.parametrize('cell', list(CELLS))
def test_power_cut_at_crash_point(hb, cell):  # pylint: disable=redefined-outer-name,too-many-locals
    """Given a fleet on a verified release, when one host's power is cut at a crash point of the engine (its
    processes killed, what was not durable lost), then after recover.yml every host is healthy on a verified
    release that is on disk byte for byte, no state file is torn, the interrupted release is not verified where
    its commit was not durable, and the next deploy brings the fleet to a new verified release."""
    matrix = hb
    fleet = matrix.fleet
    hosts = fleet.names
    index = list(CELLS).index(cell)
    target = hosts[index % len(hosts)]
    other = hosts[(index + 1) % len(hosts)]
    point, step = CELLS[cell]
    cell_dir = os.path.join(matrix.base, cell)
    os.makedirs(cell_dir)
    try:
        for host in hosts:
            _assert_host_sound(matrix, host)
            _disarm(matrix, host)
        new = matrix.new_release()
        args = ['-e', 'release_version=%s' % new, '-e', 'ansible_python_interpreter=%s' % FAULT_PYTHON]
        if step == 'watchdog':
            # the target's watchdog holds in its revert; the other host holds its verify step, where the controller
            # is killed with both hosts switched and armed
            _arm_watchdog(matrix, target, point)
            args += ['-e', 'failsafe_confirm_timeout=%d' % CONFIRM_SECONDS,
                     '-e', 'failsafe_verify_before_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=%s' % other,
                     '-e', 'failsafe_fault_kind=hold', '-e', 'failsafe_fault_step=verify',
                     '-e', 'failsafe_fault_marker=%s' % MARKER]
        elif point:
            _arm(matrix, target, point, hold=True)
        else:
            args += ['-e', 'failsafe_%s_after_tasks=%s' % (step, HOOK), '-e', 'failsafe_fault_host=%s' % target,
                     '-e', 'failsafe_fault_kind=hold', '-e', 'failsafe_fault_step=%s' % step,
                     '-e', 'failsafe_fault_marker=%s' % MARKER]
        if step == 'rollback':
            # the deploy fails on the other host at activate: the rollback of the target holds inside its restore
            args += ['-e', 'failsafe_activate_after_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=%s' % other,
                     '-e', 'failsafe_fault_kind=fail', '-e', 'failsafe_fault_step=activate']
        proc = matrix.start(cell_dir, 'failsafe.deploy.deploy', *args, run_id='powercut-%s' % cell)
        if step == 'watchdog':
            _kill_controller_then_wait_for_revert(matrix, proc, target, other, new)
            time.sleep(0.3)
            matrix.power_cut(target)
        else:
            _wait_for_marker(matrix, target, proc)
            time.sleep(0.3)
            matrix.power_cut(target)
            rc = matrix.finish(proc)
            assert rc != 0, 'the deploy whose host lost power exited 0'

        rc, dummy = matrix.play(cell_dir, 'failsafe.deploy.recover')
        assert rc == 0, 'recover.yml failed: see %s/runs.log' % cell_dir
        states = {host: _assert_host_sound(matrix, host) for host in hosts}
        entry = states[target]['ledger'].get(new) or {}
        committed = [t for t in _history(matrix, target)
                     if (t.get('run_id'), t.get('status')) == ('powercut-%s' % cell, 'committed')]
        if not committed:
            assert entry.get('state') != 'verified' and 'verified' not in entry, \
                '%s: release %s is marked verified but its commit was not durable: %r' % (target, new, entry)

        if step == 'watchdog':
            _assert_revert_finished(matrix, target, other, 'powercut-%s' % cell)

        following = matrix.new_release()
        rc, dummy = matrix.play(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % following)
        assert rc == 0, 'the next deploy failed: see %s/runs.log' % cell_dir
        for host in hosts:
            assert _assert_host_sound(matrix, host)['current'] == following, host
        if step == 'watchdog':
            # recover.yml reported the other host's self-revert; the next deploy does not report (page) it again
            reverted = [i for i in _incidents(cell_dir) if i.get('outcome') == 'self_reverted']
            assert [i['summary']['self_reverted_hosts'] for i in reverted] == [[other]], reverted
    finally:
        if os.path.exists(matrix.path(target, FAULT_ENV)) or not fleet.is_running(target):
            _disarm(matrix, target)
        if not fleet.is_running(target):
            fleet.restart(target)
            matrix.boot(target)


def _history(matrix, host):
    try:
        with open(matrix.path(host, STATE + '/history.jsonl'), encoding='utf-8') as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except (FileNotFoundError, ValueError):
        return []


def _arm_watchdog(matrix, host, point):
    """The host's next watchdog holds at point (the modules of the deploy itself run unarmed)."""
    with open(matrix.path(host, FAULT_ENV), 'w', encoding='utf-8') as handle:
        handle.write('FAILSAFE_WATCHDOG_CRASH_AT=%s\nFAILSAFE_WATCHDOG_CRASH_HOLD=%s\n' % (point, MARKER))


def _kill_controller_then_wait_for_revert(matrix, proc, target, other, new):
    """Once both hosts switched to new and the other host holds its verify step, SIGKILL the controller and let
    the other host's step go; then wait until the target's watchdog, at its deadline, holds inside its revert."""
    _wait_for_marker(matrix, other, proc)
    for host in (target, other):
        assert matrix.current(host) == new, '%s has not switched to %s' % (host, new)
        confirm = (matrix.read_json(host, STATE + '/journal.json') or {}).get('confirm') or {}
        assert confirm.get('state') == 'armed', '%s: no watchdog armed: %r' % (host, confirm)
    os.killpg(proc.pid, signal.SIGKILL)
    matrix.finish(proc)
    with open(matrix.path(other, MARKER), encoding='utf-8') as handle:
        held = handle.read().strip()
    matrix.fleet.run(other, ['kill', held], timeout=30)
    os.unlink(matrix.path(other, MARKER))
    marker = matrix.path(target, MARKER)
    deadline = time.monotonic() + CONFIRM_SECONDS + 120
    while not (os.path.exists(marker) and os.path.getsize(marker) > 0):
        assert time.monotonic() < deadline, '%s: its watchdog never reached its revert' % target
        time.sleep(0.1)
    confirm = (matrix.read_json(target, STATE + '/journal.json') or {}).get('confirm') or {}
    assert confirm.get('state') == 'reverting', '%s: the watchdog holds, yet the journal says %r' % (target, confirm)


def _assert_revert_finished(matrix, target, other, run_id):
    """The other host reverted itself; the target's revert, cut part-way, was finished by recover.yml and its
    record says so (never 'reverting' for ever); no watchdog parameters (they may carry credentials) stay behind."""
    mine = [t for t in _history(matrix, target) if t.get('run_id') == run_id]
    assert [t.get('status') for t in mine] == ['rolled_back'], (target, mine)
    confirm = mine[0].get('confirm') or {}
    assert confirm.get('state') == 'revert_interrupted' and 'interrupted' in confirm.get('why', ''), (target, confirm)
    assert not os.path.exists(matrix.path(target, '%s/confirm/%s.json' % (STATE, mine[0]['txid']))), target
    theirs = matrix.read_json(other, STATE + '/journal.json') or {}
    assert (theirs.get('run_id'), theirs.get('status'), (theirs.get('confirm') or {}).get('state')) == \
        (run_id, 'rolled_back', 'reverted'), (other, theirs)
    facts = matrix.read_json(other, STATE + '/self_revert.json') or {}
    assert facts.get('txid') == theirs['txid'] and facts.get('outcome') == 'rolled_back', (other, facts)
    assert facts.get('reported_by'), '%s: recover.yml reported the self-revert without marking it reported' % other


def _incidents(cell_dir):
    folder = os.path.join(cell_dir, 'incidents')
    found = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.startswith('inc-') and name.endswith('.json') and name.count('.') == 1:
            with open(os.path.join(folder, name), encoding='utf-8') as handle:
                found.append(json.load(handle))
    return found
