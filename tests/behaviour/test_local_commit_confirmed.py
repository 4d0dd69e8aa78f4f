# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Commit confirmed on this machine: a host's own revert against the deploy run it reverted, and its timing.

Real ansible-playbook runs of failsafe.deploy.deploy against the demo site (examples/demo in a private directory,
a real supervisord, the real example app, the auto_rollback callback); the host's revert watchdog is the real one.

- a deploy whose verify reaches the host after the host began to revert the transaction by itself (its deadline
  passed): the verify fails naming the self-revert, nothing of it is written into the reverted transaction's
  journal, a late commit of that run is refused too, and the app serves the previous release;
- with a verify delay of 40 s, the host's own revert (the controller SIGKILLed after the switch) does not wait that
  delay: its journal closes a few seconds after the deadline.
"""
import json
import os
import signal
import subprocess
import time

import pytest

from support import DEMO, assert_no_ignored_callback_errors

pytestmark = pytest.mark.slow

HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fault_hooks', 'fault.yml')
# Seconds from the activation (which arms the revert timer) to the host's own revert. The run is held at the verify
# step meanwhile, so the deadline only has to come after the activation, which restarts the app (supervisor's
# startsecs) and takes a few seconds on a loaded machine.
SECONDS = 15
# The deploy's verify delay in the timing test, and the bound from the deadline to the journal closing there: the
# revert restarts the app and runs its checks, 4 s after the deadline on an idle two-core machine and 11 s at a load
# average of 20; a revert that waited the verify delay before its checks closed the journal 37 s after the deadline
# with a delay of 30 s.
VERIFY_DELAY = 40
CLOSE_BOUND = 20.0


def start_deploy(d, version, data):
    """ansible-playbook failsafe.deploy.deploy in the background (a session of its own), its output in a file."""
    vars_file = os.path.join(d.dir, 'vars-%s.json' % version)
    with open(vars_file, 'w') as handle:
        json.dump(data, handle)
    out = os.path.join(d.dir, 'run-%s.log' % version)
    cmd = ['ansible-playbook', '-i', os.path.join(DEMO, 'inventory.yml'), 'failsafe.deploy.deploy',
           '-e', 'release_version=%s' % version, '-e', '@' + vars_file]
    with open(out, 'w') as log:
        proc = subprocess.Popen(cmd, env=d.env, cwd=d.dir, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    proc.out = out
    return proc


def output(proc):
    with open(proc.out, encoding='utf-8', errors='replace') as handle:
        return handle.read()


def wait_for(what, limit, proc=None, step=0.1):
    """Polls ``what()`` until it is truthy or ``limit`` seconds passed; fails when ``proc`` ended before."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        found = what()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError('the deploy ended (rc %s) first:\n%s' % (proc.returncode, output(proc)[-5000:]))
        time.sleep(step)
    return what()


def journal_or_none(d):
    try:
        return d.journal()
    except (OSError, ValueError):
        return None


def revert_ended(d):
    j = journal_or_none(d) or {}
    return j.get('status') == 'rolled_back' and (j.get('confirm') or {}).get('state') in ('reverted', 'revert_failed')


def serves(d):
    status, body = d.http('/health')
    return status, json.loads(body).get('version')


def health_check(d):
    """The demo inventory's health check of the app, with its port."""
    return {'name': 'health', 'url': 'http://127.0.0.1:%d/health' % d.port, 'json_query': "status == 'ok'",
            'retries': 6, 'sleep': 0.5, 'timeout': 2}


def test_a_verify_that_reaches_the_host_after_its_revert_began_fails_and_records_nothing(local_deploy):
    """Given a deploy whose commit-confirmed deadline passes before its verify step, when the host reverts the
    transaction by itself and the verify of that run reaches the host while the revert is under way, then the verify
    fails saying the host reverted, the reverted transaction's journal holds no verify or commit record, a commit of
    that run afterwards is refused and changes nothing, and the app serves the release it served before."""
    d = local_deploy
    first = d.deploy('1.0.0')
    assert first.returncode == 0, first.stdout[-5000:]
    reached = os.path.join(d.dir, 'revert-at-its-checks')
    gate = os.path.join(d.dir, 'revert-may-end')
    # The host's revert runs its checks on the release restored: the app's health, then a command that says the
    # revert got there and holds it (with the transaction still open, its confirm state 'reverting') until the test
    # opens the gate, 30 s at most.
    hold = {'name': 'hold the revert', 'timeout': 60,
            'cmd': ['/bin/sh', '-c', 'touch "$1"; i=0; while [ ! -e "$2" ] && [ "$i" -lt 150 ]; do sleep 0.2; '
                    'i=$((i + 1)); done', 'hold', reached, gate]}
    # The verify step starts once the revert is at its checks: the app then serves the previous release again,
    # healthy, so a verify that did not look at the journal would pass and record itself.
    wait = os.path.join(d.dir, 'wait-for-the-revert.yml')
    with open(wait, 'w') as handle:
        handle.write('---\n- name: Wait until the host reverts by itself\n  ansible.builtin.wait_for:\n'
                     '    path: %s\n    timeout: 120\n' % reached)
    proc = start_deploy(d, '2.0.0', {'failsafe_confirm_timeout': SECONDS,
                                     'failsafe_confirm_checks': [health_check(d), hold],
                                     'failsafe_verify_before_tasks': wait})
    try:
        assert wait_for(lambda: os.path.exists(reached), 120, proc), 'the host did not revert by itself'
        reverting = d.journal()
        assert reverting['release'] == '2.0.0' and reverting['status'] == 'open', reverting
        assert reverting['confirm']['state'] == 'reverting', reverting['confirm']

        def verify_done():
            steps = [s['step'] for s in (journal_or_none(d) or {}).get('steps') or []]
            return 'verify' in steps or 'host reverted before confirmation' in output(proc) or proc.poll() is not None

        wait_for(verify_done, 60)
    finally:
        with open(gate, 'w'):
            pass
    rc = proc.wait(timeout=300)
    text = output(proc)
    assert rc != 0, text[-5000:]
    assert_no_ignored_callback_errors(text)
    # the verify failed loudly, naming the transaction the host reverted
    assert 'host reverted before confirmation: transaction %s (release 2.0.0, run %s)' % (
        reverting['txid'], reverting['run_id']) in text, text[-5000:]
    assert 'This verify phase reached the host after that' in text

    j = d.journal()
    assert (j['txid'], j['release'], j['status']) == (reverting['txid'], '2.0.0', 'rolled_back'), j
    assert j['confirm']['state'] == 'reverted' and j['confirm']['outcome'] == 'rolled_back', j['confirm']
    began = j['confirm']['reverting']
    # the verify was held until the revert began: any record of it (or of a commit) came after that
    late = [s for s in j.get('steps') or [] if s['step'] in ('verify', 'commit')]
    assert late == [], 'written into the reverted transaction after its revert began at %s: %r' % (
        j['confirm']['reverting_iso'], late)
    assert all(s['time'] < began for s in j.get('steps') or []), j['steps']
    assert d.current() == 'releases/1.0.0'
    assert serves(d) == (200, '1.0.0')
    ledger = d.ledger()
    assert ledger['releases']['2.0.0']['state'] == 'staged', ledger['releases']['2.0.0']
    assert ledger['last_verified'] == '1.0.0'

    # The commit of the same run, reaching the host now, is refused and changes nothing.
    path = os.path.join(d.state_dir, 'demo-app', 'journal.json')
    with open(path, 'rb') as handle:
        before = handle.read()
    commit = os.path.join(d.dir, 'late-commit.yml')
    with open(commit, 'w') as handle:
        handle.write('---\n- name: A late commit\n  hosts: localhost\n  gather_facts: false\n  tasks:\n'
                     '    - name: Commit the transaction of the run the host reverted\n'
                     '      failsafe.deploy.transaction: %s\n'
                     % json.dumps({'phase': 'commit', 'state_dir': d.state_dir, 'name': 'demo-app',
                                   'app_root': d.app_root, 'release': '2.0.0', 'run_id': j['run_id']}))
    late_commit = d.playbook(commit)
    assert late_commit.returncode != 0, late_commit.stdout[-5000:]
    assert 'host reverted before confirmation' in late_commit.stdout, late_commit.stdout[-5000:]
    with open(path, 'rb') as handle:
        assert handle.read() == before
    assert d.current() == 'releases/1.0.0' and d.ledger()['releases']['2.0.0']['state'] == 'staged'


def test_the_hosts_own_revert_does_not_wait_the_verify_delay(local_deploy):
    """Given a deploy with failsafe_verify_delay 40 s whose controller is SIGKILLed after the switch, when the
    commit-confirmed deadline passes, then the host reverts by itself and its journal closes within CLOSE_BOUND
    seconds of the deadline, well before the verify delay, on the previous release, healthy."""
    d = local_deploy
    first = d.deploy('1.0.0')
    assert first.returncode == 0, first.stdout[-5000:]
    marker = os.path.join(d.dir, 'verify-held')
    proc = start_deploy(d, '2.0.0', {'failsafe_confirm_timeout': SECONDS, 'failsafe_verify_delay': VERIFY_DELAY,
                                     'failsafe_verify_before_tasks': HOOK, 'failsafe_fault_host': 'localhost',
                                     'failsafe_fault_kind': 'hold', 'failsafe_fault_step': 'verify',
                                     'failsafe_fault_marker': marker, 'failsafe_fault_hold_seconds': 120})
    try:
        assert wait_for(lambda: os.path.exists(marker) and os.path.getsize(marker) > 0, 120, proc), \
            'the verify step was not held'
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    armed = d.journal()
    assert armed['release'] == '2.0.0' and armed['confirm']['state'] == 'armed', armed.get('confirm')
    assert d.current() == 'releases/2.0.0'
    deadline = armed['confirm']['deadline']
    # long enough to see the journal close even after a revert that waited the verify delay
    wait_for(lambda: revert_ended(d), max(0.0, deadline - time.time()) + VERIFY_DELAY + CLOSE_BOUND + 15, step=0.2)
    j = d.journal()
    assert revert_ended(d), (j.get('status'), j.get('confirm'))
    closed = j['closed'] - deadline
    print('commit confirmed with a verify delay of %d s: the journal closed %.2f s after the deadline'
          % (VERIFY_DELAY, closed))
    assert j['confirm']['reverting'] >= deadline, 'reverted before its deadline'
    assert closed <= CLOSE_BOUND, 'the journal closed %.2f s after the deadline' % closed
    assert j['confirm']['outcome'] == 'rolled_back' and j['outcome']['verified'] is True, (j['confirm'], j['outcome'])
    assert d.current() == 'releases/1.0.0'
    assert serves(d) == (200, '1.0.0')
