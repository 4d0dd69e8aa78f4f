# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Given an automatic rollback whose controller dies part-way through the restore, a later run finishes it.

Real ansible-playbook runs on this machine (the examples/demo setup, as in test_local_rollback.py). The crash point
``restore.entry-restored`` of the snapshot restore, with FAILSAFE_CRASH_SCOPE=controller, SIGKILLs the callback's
rollback child (the controller of the rollback) after the first path is restored: no rescue section runs, so the
journal must still say what is left to do. The transaction stays open until the restore has finished, and then
recover.yml, or the next deploy's preflight, finishes the rollback.
"""
import json
import os
import subprocess

import pytest

from support import DEMO

pytestmark = pytest.mark.slow

CRASH = {'FAILSAFE_CRASH_AT': 'restore.entry-restored', 'FAILSAFE_CRASH_SCOPE': 'controller'}


def run(d, args, extra_env=None):
    """ansible-playbook in a session of its own (the crash kills a whole process group, never this test's)."""
    env = dict(d.env)
    env.update(extra_env or {})
    cmd = ['ansible-playbook', '-i', os.path.join(DEMO, 'inventory.yml')] + list(args)
    proc = subprocess.run(cmd, env=env, cwd=d.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, check=False, start_new_session=True)
    with open(os.path.join(d.dir, 'runs.log'), 'a') as log:
        log.write('$ %s %s\n%s\nrc=%s\n' % (' '.join('%s=%s' % kv for kv in (extra_env or {}).items()),
                                            ' '.join(cmd), proc.stdout, proc.returncode))
    return proc


def deploy(d, version, extra_env=None):
    return run(d, ['failsafe.deploy.deploy', '-e', 'release_version=%s' % version], extra_env)


@pytest.fixture(name='crashed_rollback')
def fixture_crashed_rollback(local_deploy):
    """1.0.0 verified; 3.0.0 fails its health check; the rollback's controller dies mid-restore."""
    d = local_deploy
    proc = deploy(d, '1.0.0')
    assert proc.returncode == 0, proc.stdout[-6000:]
    before = d.digest()
    failed = deploy(d, '3.0.0', CRASH)
    assert failed.returncode != 0
    return d, before, failed


def assert_rolled_back_to_1(d, before):
    assert d.digest() == before
    assert d.current() == 'releases/1.0.0'
    ledger = d.ledger()
    assert ledger['releases']['3.0.0']['state'] == 'failed'
    assert ledger['last_verified'] == '1.0.0'
    journal = d.journal()
    assert journal['release'] == '3.0.0'
    assert journal['status'] == 'rolled_back'
    assert not os.path.exists(d.lock_path())
    assert d.http('/version') == (200, '1.0.0')


def test_when_the_rollback_dies_mid_restore_then_it_is_loud_and_the_transaction_stays_open(crashed_rollback):
    d, dummy, failed = crashed_rollback
    assert 'ROLLBACK FAILED' in failed.stdout
    reports = d.incident_reports()
    assert len(reports) == 1
    with open(reports[0]) as f:
        assert json.load(f)['outcome'] == 'rollback_failed'
    assert d.receiver.kinds() == ['deploy_failed', 'rollback_failed']
    # The rollback never finished: the journal must not claim it did, and the release is not yet quarantined.
    assert d.journal()['status'] in ('open', 'rollback_failed')
    assert d.ledger()['releases']['3.0.0']['state'] != 'verified'


def test_then_recover_finishes_the_restore_byte_for_byte(crashed_rollback):
    d, before, dummy = crashed_rollback
    proc = run(d, ['failsafe.deploy.recover'])
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert_rolled_back_to_1(d, before)


def test_then_the_next_deploy_finishes_the_rollback_first(crashed_rollback):
    d, before, dummy = crashed_rollback
    proc = deploy(d, '1.0.0')
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert_rolled_back_to_1(d, before)
    assert 'left open by run' in d.journal()['outcome']['reason']
