# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Commit confirmed on a 3-host namespace SSH fleet: real deploys with the auto_rollback callback, real supervisor
services, and the hosts' own revert watchdogs, found in each host's process table (inside its pid namespace).

- a good deploy arms a watchdog on every host and leaves none behind; a failed deploy's rollback disarms them;
- the controller is SIGKILLed right after the switch: with no further command, every host is back on the previous
  verified release, byte-identical, healthy, restore proven, within the deadline plus a few seconds, and its journal
  says it reverted itself, and the release is not quarantined; the next run (recover.yml) reports it as an
  incident and changes nothing, and the same release then deploys again without force;
- one host's network is cut after the switch: the run fails, its rollback cannot reach that host, the host reverts
  itself; when the network is back, recover.yml reports the self-revert and leaves the host as it is.

The fleet is named by FAILSAFE_FLEET_NAME (default fsd) on FAILSAFE_FLEET_SUBNET, like every fleet test.
"""

import glob
import json
import os
import signal
import sys
import time

import pytest

from support import ROOT
from test_fault_matrix import HOOK, MARKER, Matrix, _wait_for_marker

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.fleet import Fleet, ensure_prereqs  # noqa: E402  pylint: disable=wrong-import-position
from tests.requires import require_root  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.fleet

STATE = '/var/lib/failsafe-deploy/app'
# Lists the watchdogs in the process table of the host it runs in (its own pid namespace): pid and command line.
PS = r'''
import os
for pid in os.listdir('/proc'):
    if not pid.isdigit():
        continue
    try:
        argv = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\0')
        state = open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()[0]
    except OSError:
        continue
    if state != 'Z' and any(a.endswith(b'/confirm/runner.py') for a in argv):
        print(pid, b' '.join(argv).decode())
'''
# Hard upper bound from a host's deadline to its restore proven (the watchdog wakes at the deadline, then a restart
# with supervisor's startsecs of 2 s, the health checks and the proof): "the deadline plus a few seconds". Measured on
# a 2-core machine at a load average of 8 to 9 (three hosts reverting at once beside other test runs): 5.8 to 7.5 s;
# the bound leaves half as much again for a machine busier still.
REVERT_BOUND = 12.0


@pytest.fixture(scope='module')
def fcc(tmp_path_factory):
    """A 3-host fleet on release 1.0.0 (verified), torn down even on failure."""
    require_root('the namespace fleet needs root')
    ensure_prereqs()
    base = str(tmp_path_factory.mktemp('commit-confirmed'))
    fleet = Fleet(3, base_dir=os.path.join(base, 'fleet'))
    fleet.up()
    matrix = Matrix(fleet, base)
    try:
        matrix.build.build(matrix.dist, 0, [('1.0.0', 'good')])
        setup = os.path.join(base, 'setup')
        os.makedirs(setup)
        rc, _elapsed = matrix.play(setup, 'failsafe.deploy.deploy', '-e', 'release_version=1.0.0')
        assert rc == 0, 'the first deploy of 1.0.0 failed: see %s/runs.log' % setup
        yield matrix
    finally:
        fleet.down()


def watchdogs(matrix, host):
    """The watchdog processes in the host's own process table."""
    res = matrix.fleet.run(host, ['/usr/bin/python3', '-c', PS], timeout=30)
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines() if line.strip()]


def journal(matrix, host):
    return matrix.read_json(host, STATE + '/journal.json') or {}


def _revert_ended(j):
    """Whether the host's own revert has finished: the rollback closes the journal first, then the watchdog records
    how the revert ended (reverted or revert_failed) and keeps the facts."""
    return j.get('status') == 'rolled_back' and (j.get('confirm') or {}).get('state') in ('reverted', 'revert_failed')


def facts(matrix, host):
    return matrix.read_json(host, STATE + '/self_revert.json')


def history(matrix, host):
    try:
        with open(matrix.path(host, STATE + '/history.jsonl'), encoding='utf-8') as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def incidents(cell_dir):
    out = []
    for path in sorted(glob.glob(os.path.join(cell_dir, 'incidents', 'inc-*.json'))):
        if path.count('.') == 1:
            with open(path, encoding='utf-8') as handle:
                out.append(json.load(handle))
    return out


def precondition(matrix):
    before = {}
    for host in matrix.fleet.names:
        state = matrix.state(host)
        assert state['current'] == state['last_verified'] == state['served'], (host, state)
        assert not state['lock'] and state['journal'] != 'open', (host, state)
        assert not watchdogs(matrix, host), '%s: a watchdog is left from before' % host
        before[host] = (state['current'], matrix.digest(host))
    return before


def cell(matrix, name):
    path = os.path.join(matrix.base, name)
    os.makedirs(path)
    return path


def test_a_good_deploy_arms_and_leaves_no_watchdog_and_a_failed_one_disarms_it(fcc):
    """Given a fleet on a verified release, a good deploy arms a watchdog on every host (recorded in the journal)
    and its commit confirms it: no watchdog process is left. A failed deploy's rollback disarms them too, and no host
    reverts anything afterwards."""
    matrix = fcc
    hosts = matrix.fleet.names
    precondition(matrix)
    good = matrix.new_release()
    cell_dir = cell(matrix, 'good')
    rc, dummy = matrix.play(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % good)
    assert rc == 0, 'see %s/runs.log' % cell_dir
    for host in hosts:
        confirm = journal(matrix, host).get('confirm') or {}
        assert journal(matrix, host)['status'] == 'committed', host
        assert confirm.get('state') == 'confirmed' and confirm.get('pid') and confirm.get('seconds') == 300, \
            (host, confirm)
        assert watchdogs(matrix, host) == [], '%s: a watchdog is left after a good deploy' % host
        assert matrix.served_version(host) == good

    before = precondition(matrix)
    bad = matrix.new_release()
    target = hosts[1]
    cell_dir = cell(matrix, 'failed')
    rc, dummy = matrix.play(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % bad,
                            '-e', 'failsafe_verify_after_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=%s' % target,
                            '-e', 'failsafe_fault_kind=fail', '-e', 'failsafe_fault_step=verify',
                            # a deadline the callback's rollback meets even on a busy 2-CPU machine: this test is
                            # about the rollback disarming the watchdogs, not about the race with their deadline
                            '-e', 'failsafe_confirm_timeout=60')
    assert rc != 0
    assert [i['outcome'] for i in incidents(cell_dir)] == ['rolled_back'], 'see %s/runs.log' % cell_dir
    for host in hosts:
        j = journal(matrix, host)
        assert (j['release'], j['status']) == (bad, 'rolled_back'), (host, j.get('status'))
        assert j['confirm']['state'] == 'disarmed' and j['confirm']['pid'], (host, j['confirm'])
        assert watchdogs(matrix, host) == [], '%s: the rollback left the watchdog running' % host
    # past the deadline nothing reverts again: the rollback's outcome stands
    time.sleep(max(0.0, max(journal(matrix, h)['confirm']['deadline'] for h in hosts) - time.time()) + 2)
    for host in hosts:
        assert facts(matrix, host) is None, host
        assert journal(matrix, host)['confirm']['state'] == 'disarmed'
        assert matrix.digest(host) == before[host][1] and matrix.served_version(host) == before[host][0]


def test_controller_sigkilled_after_the_switch_every_host_reverts_itself(fcc):
    """Given a deploy whose controller is SIGKILLed once every host switched, when nothing else runs, then every
    host is back on the previous verified release, byte-identical, healthy, restore proven, within its deadline plus a
    few seconds, and its journal says it reverted itself; recover.yml then reports it and changes nothing."""
    matrix = fcc
    fleet = matrix.fleet
    hosts = fleet.names
    seconds = 12
    before = precondition(matrix)
    new = matrix.new_release()
    cell_dir = cell(matrix, 'sigkill')
    for host in hosts:
        if os.path.exists(matrix.path(host, MARKER)):
            os.unlink(matrix.path(host, MARKER))
    proc = matrix.start(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % new,
                        '-e', 'failsafe_confirm_timeout=%d' % seconds,
                        '-e', 'failsafe_verify_before_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=%s' % hosts[0],
                        '-e', 'failsafe_fault_kind=hold', '-e', 'failsafe_fault_step=verify',
                        '-e', 'failsafe_fault_marker=%s' % MARKER)
    _wait_for_marker(matrix, hosts[0], proc)
    for host in hosts:
        assert matrix.current(host) == new, '%s has not switched' % host
        assert len(watchdogs(matrix, host)) == 1, '%s: no watchdog armed' % host
    killed = time.monotonic()
    os.killpg(proc.pid, signal.SIGKILL)
    matrix.finish(proc)

    deadline = killed + seconds + REVERT_BOUND + 10
    back = {}
    while time.monotonic() < deadline and len(back) < len(hosts):
        for host in hosts:
            if host not in back and _revert_ended(journal(matrix, host)) \
                    and matrix.served_version(host) == before[host][0]:
                back[host] = time.monotonic() - killed
        time.sleep(0.2)
    assert sorted(back) == sorted(hosts), 'not every host reverted itself: %r' % back
    # seconds from each host's deadline to its restore proven, by the host's own record
    late = dict((host, round(facts(matrix, host)['finished'] - journal(matrix, host)['confirm']['deadline'], 2))
                for host in hosts)
    print('commit confirmed: restore proven %s s after the deadline' % late)
    assert max(late.values()) <= REVERT_BOUND, late
    for host in hosts:
        j = journal(matrix, host)
        f = facts(matrix, host)
        state = matrix.state(host)
        assert j['release'] == new and j['confirm']['state'] == 'reverted', (host, j.get('confirm'))
        assert 'not confirmed within %d s' % seconds in j['outcome']['reason'], j['outcome']
        assert j['outcome']['verified'] is True
        assert f['txid'] == j['txid'] and f['outcome'] == 'rolled_back' and f['rollback']['verified'] is True
        assert f['cause'] == 'not confirmed within %d s' % seconds
        assert f['started'] >= j['confirm']['deadline'], 'reverted before its deadline'
        assert state['current'] == before[host][0] == state['last_verified'] == state['served'], (host, state)
        # reverted for lack of confirmation, never shown bad: not quarantined
        assert state['ledger'][new]['state'] == 'staged', state['ledger'][new]
        assert state['ledger'][new]['history'][-1]['event'] == 'reverted', state['ledger'][new]['history']
        assert j['outcome']['quarantined'] is False, j['outcome']
        assert matrix.digest(host) == before[host][1], '%s is not byte-identical to its snapshot' % host
        assert not state['lock'], '%s: the revert did not release the lock' % host
        assert watchdogs(matrix, host) == [], host

    # The next run reports the self-revert as an incident and leaves the hosts as they are.
    digests = {host: matrix.digest(host) for host in hosts}
    lengths = {host: len(history(matrix, host)) for host in hosts}
    rc, dummy = matrix.play(cell_dir, 'failsafe.deploy.recover')
    assert rc == 0, 'see %s/runs.log' % cell_dir
    reports = incidents(cell_dir)
    assert [i['outcome'] for i in reports] == ['self_reverted'], reports
    assert sorted(reports[0]['self_reverted']) == sorted(hosts)
    assert reports[0]['summary']['self_reverted_hosts'] == sorted(hosts)
    for host in hosts:
        assert reports[0]['self_reverted'][host]['cause'] == 'not confirmed within %d s' % seconds
        assert matrix.digest(host) == digests[host] and len(history(matrix, host)) == lengths[host]
        assert journal(matrix, host)['status'] == 'rolled_back'
    with open(glob.glob(os.path.join(cell_dir, 'incidents', 'inc-*.md'))[0], encoding='utf-8') as handle:
        assert 'Hosts that reverted by themselves' in handle.read()

    # The same release deploys again without failsafe_force: nothing quarantined it.
    again = os.path.join(cell_dir, 'again')
    os.makedirs(again)
    rc, dummy = matrix.play(again, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % new)
    assert rc == 0, 'see %s/runs.log' % again
    for host in hosts:
        state = matrix.state(host)
        assert state['current'] == state['last_verified'] == state['served'] == new, (host, state)
        assert state['ledger'][new]['state'] == 'verified' and journal(matrix, host)['status'] == 'committed', host


def test_a_cut_host_reverts_itself_and_recover_reports_it(fcc):
    """Given a deploy during which one host's network is cut after the switch, the run fails and its rollback cannot
    reach that host; the host reverts itself at its deadline; with the network back, recover.yml reports the
    self-revert and leaves the host as it is."""
    matrix = fcc
    fleet = matrix.fleet
    hosts = fleet.names
    target = hosts[2]
    # the callback's rollback must reach the two other hosts before their deadline, even on a busy 2-CPU machine
    # (then the cut host's own revert is what the test waits for)
    seconds = 60
    before = precondition(matrix)
    new = matrix.new_release()
    cell_dir = cell(matrix, 'cut')
    if os.path.exists(matrix.path(target, MARKER)):
        os.unlink(matrix.path(target, MARKER))
    try:
        proc = matrix.start(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % new,
                            '-e', 'failsafe_confirm_timeout=%d' % seconds,
                            '-e', 'failsafe_verify_before_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=%s' % target,
                            '-e', 'failsafe_fault_kind=hold', '-e', 'failsafe_fault_step=verify',
                            '-e', 'failsafe_fault_marker=%s' % MARKER)
        _wait_for_marker(matrix, target, proc)
        assert matrix.current(target) == new
        fleet.cut(target)
        rc = matrix.finish(proc)
        assert rc != 0
        outcomes = incidents(cell_dir)
        assert [i['outcome'] for i in outcomes] == ['rollback_failed'], 'see %s/runs.log' % cell_dir
        assert (outcomes[0]['rollback']['hosts'].get(target) or {}).get('status') not in (None, 'ok')
        # the host, still cut off, reverts itself (its files are read from outside)
        armed = journal(matrix, target)['confirm']
        limit = time.time() + max(0.0, armed['deadline'] - time.time()) + REVERT_BOUND + 10
        while time.time() < limit and not _revert_ended(journal(matrix, target)):
            time.sleep(0.2)
        j = journal(matrix, target)
        assert j['status'] == 'rolled_back' and j['confirm']['state'] == 'reverted', j
        assert fleet.run(target, ['true']).returncode == 0
        assert matrix.served_version(target) == before[target][0]
    finally:
        fleet.restore_network(target)
    fleet.wait_ssh(target)
    digest = matrix.digest(target)
    lengths = len(history(matrix, target))
    reverted = facts(matrix, target)
    assert reverted['outcome'] == 'rolled_back' and reverted['rollback']['verified'] is True
    assert reverted['started'] >= armed['deadline']
    print('commit confirmed: the cut host proved its restore %.2f s after the deadline'
          % (reverted['finished'] - armed['deadline']))
    assert reverted['finished'] - armed['deadline'] <= REVERT_BOUND, (reverted['finished'], armed['deadline'])
    recover_dir = os.path.join(cell_dir, 'recover')
    os.makedirs(recover_dir)
    rc, dummy = matrix.play(recover_dir, 'failsafe.deploy.recover')
    assert rc == 0, 'see %s/runs.log' % recover_dir
    with open(os.path.join(recover_dir, 'runs.log'), encoding='utf-8') as handle:
        log = handle.read()
    assert '%s reverted transaction %s' % (target, reverted['txid']) in log
    reports = incidents(recover_dir)
    assert [i['outcome'] for i in reports] == ['self_reverted'], reports
    assert list(reports[0]['self_reverted']) == [target]
    # left as it is
    assert matrix.digest(target) == digest == before[target][1]
    assert len(history(matrix, target)) == lengths
    assert journal(matrix, target)['status'] == 'rolled_back'
    for host in hosts:
        state = matrix.state(host)
        assert state['current'] == before[host][0] == state['served'], (host, state)
        assert not state['lock'] and watchdogs(matrix, host) == [], host
