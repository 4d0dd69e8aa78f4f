# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""failsafe.deploy.deploy_state driven through main(), as Ansible runs it."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import getpass
import json
import os
import socket

import pytest

from ansible_collections.failsafe.deploy.plugins.modules import deploy_state
from ansible_collections.failsafe.deploy.tests.unit.plugins.modules.utils import run_module


@pytest.fixture
def warnings(patched_exits):
    """What the module passed to AnsibleModule.warn."""
    return patched_exits


@pytest.fixture
def path(tmp_path, warnings):
    return str(tmp_path / 'state')


def run(args, check=False, diff=False):
    return run_module(deploy_state, args, check=check, diff=diff)


def ok(args, **kw):
    res = run(args, **kw)
    assert not res.get('failed'), res
    return res


def load(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def files(top):
    out = {}
    for dirpath, dummy, names in os.walk(top):
        for n in names:
            with open(os.path.join(dirpath, n), 'rb') as f:
                out[os.path.join(dirpath, n)] = f.read()
    return out


def test_lock_held_by_another_run_fails_fast_and_same_run_is_unchanged(path):
    res = ok(dict(path=path, state='locked', run_id='r1', owner='alice@ctl', controller='ctl', pid=7, ttl=600))
    assert res['changed'] is True
    assert load(path, 'app', 'lock.json')['owner'] == 'alice@ctl'
    assert ok(dict(path=path, state='locked', run_id='r1', owner='alice@ctl'))['changed'] is False
    res = run(dict(path=path, state='locked', run_id='r2', owner='bob@ctl2'))
    assert res['failed']
    assert res['msg'].startswith("deploy lock for 'app' is held by alice@ctl (controller ctl, pid 7, run r1) since ")
    assert res['holder']['run_id'] == 'r1' and res['holder']['pid'] == 7


def test_stale_lock_is_taken_over_with_module_warn(path, warnings):
    ok(dict(path=path, state='locked', run_id='dead', owner='alice@ctl'))
    lock_path = os.path.join(path, 'app', 'lock.json')
    data = load(lock_path)
    data['expires'] = data['acquired'] - 10
    with open(lock_path, 'w') as f:
        json.dump(data, f)
    res = ok(dict(path=path, state='locked', run_id='r2', owner='bob@ctl2'))
    assert res['changed'] is True and res['stale_takeover'] is True
    assert len(warnings) == 1 and 'alice@ctl' in warnings[0] and 'dead' in warnings[0]
    assert load(lock_path)['run_id'] == 'r2'


def test_default_owner_is_user_at_host_of_the_module(path):
    ok(dict(path=path, state='locked', run_id='r1'))
    assert load(path, 'app', 'lock.json')['owner'] == '%s@%s' % (getpass.getuser(), socket.gethostname())


@pytest.mark.parametrize('args, needle', [
    pytest.param(dict(state='unlocked'), 'run_id', id='unlock-needs-run-or-force'),
    pytest.param(dict(state='locked'), 'run_id', id='lock-needs-run'),
    pytest.param(dict(state='step', run_id='r1'), 'step', id='step-needs-step'),
    pytest.param(dict(state='open', run_id='r1', name='../x'), 'invalid deployment name', id='bad-name'),
    pytest.param(dict(state='committed', run_id='r1'), 'no transaction', id='commit-without-open'),
])
def test_bad_calls_fail_with_a_message_naming_the_problem(path, args, needle):
    res = run(dict(path=path, **args))
    assert res['failed'] and needle in res['msg']


def test_unlock_by_holder_and_by_force(path):
    ok(dict(path=path, state='locked', run_id='r1'))
    res = run(dict(path=path, state='unlocked', run_id='r2'))
    assert res['failed'] and 'not releasing' in res['msg']
    assert ok(dict(path=path, state='unlocked', run_id='r1'))['changed'] is True
    assert not os.path.exists(os.path.join(path, 'app', 'lock.json'))
    assert ok(dict(path=path, state='unlocked', run_id='r1'))['changed'] is False
    ok(dict(path=path, state='locked', run_id='r1'))
    assert ok(dict(path=path, state='unlocked', force=True))['changed'] is True


def test_transaction_lifecycle_returns_failsafe_transaction_and_writes_history(path):
    ok(dict(path=path, name='web', state='locked', run_id='r1'))
    res = ok(dict(path=path, name='web', state='open', run_id='r1', release='1.4.2', previous_release='1.4.1',
                  app_root='/srv/app', snapshots={'files': 's1'}, data={'hosts': 3}))
    tx = res['failsafe_transaction']
    # no build, force or root-cause note was given to this open: the keys are there, empty
    assert tx == {'txid': tx['txid'], 'run_id': 'r1', 'name': 'web', 'state_dir': path, 'release': '1.4.2',
                  'previous_release': '1.4.1', 'app_root': '/srv/app', 'status': 'open', 'build': None,
                  'forced': None, 'rca': None}
    again = ok(dict(path=path, name='web', state='open', run_id='r1', release='1.4.2'))
    assert again['changed'] is False and again['failsafe_transaction']['txid'] == tx['txid']
    res = ok(dict(path=path, name='web', state='step', run_id='r1', step='snapshot', snapshots={'db': 'd1'},
                  data={'entries': 10}))
    assert res['failsafe_transaction']['status'] == 'open' and res['step']['step'] == 'snapshot'
    q = ok(dict(path=path, name='web'))
    assert q['open'] is True and q['journal']['snapshots'] == {'files': 's1', 'db': 'd1'}
    assert q['lock']['run_id'] == 'r1' and q['lock_expired'] is False and q['history_tail'] == []
    res = ok(dict(path=path, name='web', state='committed', run_id='r1'))
    assert res['failsafe_transaction']['status'] == 'committed' and res['lock_released'] is True
    q = ok(dict(path=path, name='web', state='query'))
    assert q['open'] is False and q['lock'] is None
    assert [(h['txid'], h['status']) for h in q['history_tail']] == [(tx['txid'], 'committed')]
    with open(os.path.join(path, 'web', 'history.jsonl')) as f:
        assert len(f.readlines()) == 1


def test_open_refused_while_another_runs_transaction_is_open(path):
    first = ok(dict(path=path, state='open', run_id='dead', release='1'))['failsafe_transaction']
    res = run(dict(path=path, state='open', run_id='r2', release='2'))
    assert res['failed'] and 'still open' in res['msg'] and first['txid'] in res['msg']
    assert res['open_transaction']['txid'] == first['txid']
    assert load(path, 'app', 'journal.json')['run_id'] == 'dead'


def test_rollback_closes_with_outcome_data(path):
    ok(dict(path=path, state='open', run_id='r1', release='2', previous_release='1'))
    res = ok(dict(path=path, state='rolled_back', run_id='r1', data={'target': '1', 'restored': ['/etc/x']}))
    assert res['failsafe_transaction']['status'] == 'rolled_back'
    journal = load(path, 'app', 'journal.json')
    assert journal['status'] == 'rolled_back' and journal['outcome'] == {'target': '1', 'restored': ['/etc/x']}
    assert ok(dict(path=path, state='rolled_back', run_id='r1'))['changed'] is False


@pytest.mark.parametrize('state, extra', [
    ('locked', dict(run_id='r2')),
    ('unlocked', dict(run_id='r1')),
    ('open', dict(run_id='r1', release='9')),
    ('step', dict(run_id='r1', step='x')),
    ('committed', dict(run_id='r1')),
    ('rolled_back', dict(run_id='r1')),
    ('rollback_failed', dict(run_id='r1')),
    ('query', dict()),
])
def test_check_mode_writes_nothing_for_any_state(path, state, extra):
    ok(dict(path=path, state='locked', run_id='r1'))
    ok(dict(path=path, state='open', run_id='r1', release='8'))
    before = files(path)
    res = run(dict(path=path, state=state, **extra), check=True, diff=True)
    assert files(path) == before
    if state == 'locked':
        assert res['failed']  # r1 holds it: check mode reports the refusal too
    elif state == 'open':
        assert res['failed'] and 'already open for release 8' in res['msg']
    else:
        assert not res.get('failed'), res
        assert res['changed'] is (state != 'query')
    if state in ('step', 'committed', 'rolled_back', 'rollback_failed'):
        assert res['failsafe_transaction']['status'] == 'planned'
        assert res['diff']['before']['journal']['status'] == 'open'


def test_check_mode_on_empty_state_dir_creates_nothing(path):
    for args in (dict(state='locked', run_id='r1'), dict(state='open', run_id='r1', release='1'),
                 dict(state='step', run_id='r1', step='s'), dict(state='committed', run_id='r1'),
                 dict(state='query')):
        res = ok(dict(path=path, **args), check=True)
        if args['state'] in ('open', 'step', 'committed'):
            assert res['failsafe_transaction']['status'] == 'planned'
    assert not os.path.exists(path)
