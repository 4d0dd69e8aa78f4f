# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The deploy lock and the transaction journal."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import re

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _journal as jr
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import (
    DeployState,
    JournalError,
    ensure_closed,
    ensure_locked,
    ensure_open,
    ensure_query,
    ensure_step,
    ensure_unlocked,
)


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / 'state')


@pytest.fixture
def ds(state_dir):
    return DeployState(state_dir, 'app')


def load(path):
    with open(path) as f:
        return json.load(f)


def history(ds):
    if not os.path.exists(ds.history_path):
        return []
    with open(ds.history_path) as f:
        return [json.loads(line) for line in f if line.strip()]


def files(state_dir):
    out = {}
    for dirpath, dummy, names in os.walk(state_dir):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, 'rb') as f:
                out[p] = f.read()
    return out


class Warnings(list):
    def __call__(self, msg):
        self.append(msg)


def lock(ds, run_id='run-1', **kw):
    kw.setdefault('owner', 'alice@ctl')
    return ensure_locked(ds, run_id, controller='ctl', pid=4242, **kw)


def expire_lock(ds):
    data = load(ds.lock_path)
    data['expires'] = data['acquired'] - 1
    data['expires_iso'] = jr.iso(data['expires'])
    with open(ds.lock_path, 'w') as f:
        json.dump(data, f)


# --- lock ----------------------------------------------------------------------------------------------------------

def test_given_no_lock_when_locked_then_lock_file_names_holder(ds):
    res = lock(ds, ttl=60)
    assert res['changed'] is True and res['stale_takeover'] is False
    data = load(ds.lock_path)
    assert data['owner'] == 'alice@ctl' and data['controller'] == 'ctl' and data['pid'] == 4242
    assert data['run_id'] == 'run-1'
    assert 59 <= data['expires'] - data['acquired'] <= 61
    assert data['acquired_iso'].endswith('Z')
    assert oct(os.stat(ds.lock_path).st_mode & 0o777) == oct(0o600)
    assert [n for n in os.listdir(ds.dir) if n.startswith('.')] == []  # no temp file left


def test_given_lock_held_by_same_run_when_locked_then_unchanged_but_expiry_refreshed(ds):
    lock(ds, ttl=60)
    first = load(ds.lock_path)
    res = lock(ds, ttl=3600)
    assert res['changed'] is False
    second = load(ds.lock_path)
    assert second['acquired'] == first['acquired']
    assert second['expires'] > first['expires'] + 3000


def test_given_lock_held_by_same_run_with_most_of_its_ttl_left_when_locked_again_then_the_file_is_untouched(ds):
    lock(ds, ttl=3600)
    before = os.stat(ds.lock_path)
    content = load(ds.lock_path)
    res = lock(ds, ttl=3600)
    assert res['changed'] is False and res['lock'] == content
    assert load(ds.lock_path) == content
    assert os.stat(ds.lock_path).st_ino == before.st_ino  # not even rewritten with the same content


@pytest.mark.parametrize('change', ['half_life_passed', 'other_pid', 'other_ttl'])
def test_given_lock_held_by_same_run_when_locked_again_past_half_life_or_by_another_process_then_renewed(ds, change):
    lock(ds, ttl=3600)
    if change == 'half_life_passed':
        data = load(ds.lock_path)
        data['expires'] = data['acquired'] + 1000  # less than half of 3600 s left
        with open(ds.lock_path, 'w') as f:
            json.dump(data, f)
    first = load(ds.lock_path)
    kw = {'ttl': 7200 if change == 'other_ttl' else 3600}
    if change == 'other_pid':
        res = ensure_locked(ds, 'run-1', owner='alice@ctl', controller='ctl', pid=5353, **kw)
    else:
        res = lock(ds, **kw)
    assert res['changed'] is False
    second = load(ds.lock_path)
    assert second['acquired'] == first['acquired']
    assert second['expires'] > first['expires']
    assert second['pid'] == (5353 if change == 'other_pid' else 4242)


def test_given_lock_held_by_another_run_when_locked_then_fails_fast_naming_holder(ds):
    lock(ds, 'run-1')
    with pytest.raises(JournalError) as exc:
        lock(ds, 'run-2', owner='bob@other')
    msg = exc.value.msg
    assert re.match(r"deploy lock for 'app' is held by alice@ctl \(controller ctl, pid 4242, run run-1\) since "
                    r"\S+Z, expires \S+Z$", msg), msg
    assert exc.value.details['holder']['run_id'] == 'run-1'
    assert load(ds.lock_path)['run_id'] == 'run-1'


def test_given_expired_lock_when_locked_then_taken_over_with_warning(ds):
    lock(ds, 'dead-run')
    expire_lock(ds)
    warnings = Warnings()
    res = lock(ds, 'run-2', owner='bob@other', warn=warnings)
    assert res['changed'] is True and res['stale_takeover'] is True
    assert res['previous_holder']['run_id'] == 'dead-run'
    assert len(warnings) == 1 and 'expired' in warnings[0] and 'dead-run' in warnings[0]
    assert load(ds.lock_path)['run_id'] == 'run-2'


def test_given_live_lock_when_locked_with_force_then_broken_with_warning(ds):
    lock(ds, 'run-1')
    warnings = Warnings()
    res = lock(ds, 'run-2', force=True, warn=warnings)
    assert res['changed'] and not res['stale_takeover']
    assert 'force=true' in warnings[0]
    assert load(ds.lock_path)['run_id'] == 'run-2'


def test_given_lock_taken_between_read_and_create_then_the_racer_wins(ds, monkeypatch):
    real_create = DeployState.create_lock

    def racing_create(self, new):
        real_create(self, dict(new, run_id='racer', owner='racer@x'))  # the other run got there first
        return real_create(self, new)

    monkeypatch.setattr(DeployState, 'create_lock', racing_create)
    with pytest.raises(JournalError, match='held by racer@x'):
        lock(ds, 'run-1')
    assert load(ds.lock_path)['run_id'] == 'racer'


@pytest.mark.parametrize('holder, run_id, force, expect_changed', [
    pytest.param('run-1', 'run-1', False, True, id='own-lock'),
    pytest.param(None, 'run-1', False, False, id='no-lock'),
    pytest.param('run-1', 'run-2', True, True, id='force'),
])
def test_unlock(ds, holder, run_id, force, expect_changed):
    if holder:
        lock(ds, holder)
    res = ensure_unlocked(ds, run_id, force=force, warn=Warnings())
    assert res['changed'] is expect_changed
    assert not os.path.exists(ds.lock_path)


def test_given_another_runs_live_lock_when_unlocked_then_refused(ds):
    lock(ds, 'run-1')
    with pytest.raises(JournalError, match='not releasing it'):
        ensure_unlocked(ds, 'run-2')
    assert os.path.exists(ds.lock_path)


@pytest.mark.parametrize('ttl', [0, -5])
def test_given_bad_ttl_then_refused(ds, ttl):
    with pytest.raises(JournalError, match='ttl'):
        lock(ds, ttl=ttl)


def test_given_check_mode_then_lock_operations_write_nothing(ds, state_dir):
    res = lock(ds, check_mode=True)
    assert res['changed'] and not os.path.exists(state_dir)
    lock(ds, 'run-1')
    expire_lock(ds)
    before = files(state_dir)
    assert lock(ds, 'run-2', check_mode=True, warn=Warnings())['stale_takeover'] is True
    assert ensure_unlocked(ds, 'run-1', check_mode=True)['changed'] is True
    assert files(state_dir) == before


# --- journal ---------------------------------------------------------------------------------------------------------

def open_tx(ds, run_id='run-1', release='1.4.2', **kw):
    return ensure_open(ds, run_id, release=release, previous_release='1.4.1', app_root='/srv/app',
                       snapshots={'files': 'snap-1'}, owner='alice@ctl', **kw)


def test_given_a_build_when_opened_then_the_journal_and_failsafe_transaction_record_it(ds):
    build = {'archive_sha256': 'ab' * 32, 'collection_version': '0.1.0', 'playbook_commit': 'c' * 40,
             'playbook_dirty': False}
    res = open_tx(ds, build=build)
    assert res['failsafe_transaction']['build'] == build
    assert load(ds.journal_path)['build'] == build


def test_given_no_journal_when_opened_then_open_transaction_and_failsafe_transaction(ds, state_dir):
    res = open_tx(ds)
    tx = res['failsafe_transaction']
    assert res['changed'] is True
    assert set(tx) == {'txid', 'run_id', 'name', 'state_dir', 'release', 'previous_release', 'app_root', 'status',
                       'build', 'forced', 'rca'}
    assert tx['build'] is None and tx['forced'] is None and tx['rca'] is None   # none given: none recorded
    assert tx['status'] == 'open' and tx['run_id'] == 'run-1' and tx['name'] == 'app'
    assert tx['state_dir'] == state_dir and tx['release'] == '1.4.2' and tx['previous_release'] == '1.4.1'
    assert re.match(r'^\d{8}T\d{6}Z-[0-9a-f]{8}$', tx['txid'])
    journal = load(ds.journal_path)
    assert journal['status'] == 'open' and journal['txid'] == tx['txid'] and journal['steps'] == []
    assert journal['snapshots'] == {'files': 'snap-1'} and journal['owner'] == 'alice@ctl'
    assert journal['app_root'] == '/srv/app' and journal['opened_iso'].endswith('Z')


def test_given_open_transaction_of_same_run_and_release_when_opened_again_then_unchanged(ds):
    first = open_tx(ds)
    before = load(ds.journal_path)
    res = open_tx(ds)
    assert res['changed'] is False
    assert res['failsafe_transaction']['txid'] == first['failsafe_transaction']['txid']
    assert load(ds.journal_path) == before


def test_given_open_transaction_of_another_run_when_opened_then_refused(ds):
    first = open_tx(ds, 'dead-run')
    with pytest.raises(JournalError) as exc:
        open_tx(ds, 'run-2', release='1.4.3')
    assert 'still open' in exc.value.msg and 'recovered' in exc.value.msg
    assert first['failsafe_transaction']['txid'] in exc.value.msg
    assert exc.value.details['open_transaction']['run_id'] == 'dead-run'
    assert load(ds.journal_path)['run_id'] == 'dead-run'


def test_given_open_transaction_of_another_run_when_opened_with_force_then_abandoned_in_history(ds):
    open_tx(ds, 'dead-run')
    warnings = Warnings()
    res = open_tx(ds, 'run-2', force=True, warn=warnings)
    assert res['failsafe_transaction']['run_id'] == 'run-2'
    assert [(h['run_id'], h['status']) for h in history(ds)] == [('dead-run', 'abandoned')]
    assert warnings


def test_given_open_transaction_of_same_run_other_release_when_opened_then_refused(ds):
    open_tx(ds, release='a')
    with pytest.raises(JournalError, match='already open for release a'):
        open_tx(ds, release='b')


def test_journal_lifecycle_open_steps_commit_history_and_lock_release(ds):
    lock(ds, 'run-1')
    txid = open_tx(ds)['failsafe_transaction']['txid']
    res = ensure_step(ds, 'run-1', 'snapshot', snapshots={'db': 'snap-db'}, data={'entries': 3})
    assert res['failsafe_transaction']['status'] == 'open'
    ensure_step(ds, 'run-1', 'activate', status='ok')
    journal = load(ds.journal_path)
    assert [s['step'] for s in journal['steps']] == ['snapshot', 'activate']
    assert journal['steps'][0]['data'] == {'entries': 3}
    assert journal['snapshots'] == {'files': 'snap-1', 'db': 'snap-db'}
    res = ensure_closed(ds, 'committed', 'run-1')
    assert res['changed'] and res['lock_released'] is True
    assert res['failsafe_transaction']['status'] == 'committed' and res['failsafe_transaction']['txid'] == txid
    assert not os.path.exists(ds.lock_path)
    journal = load(ds.journal_path)
    assert journal['status'] == 'committed' and journal['closed'] >= journal['opened']
    assert [s['status'] for s in journal['status_history']] == ['open', 'committed']
    hist = history(ds)
    assert len(hist) == 1 and hist[0]['txid'] == txid and hist[0]['status'] == 'committed'
    assert [s['step'] for s in hist[0]['steps']] == ['snapshot', 'activate']
    # the same close again changes nothing and adds no history
    again = ensure_closed(ds, 'committed', 'run-1')
    assert again['changed'] is False and len(history(ds)) == 1
    q = ensure_query(ds)
    assert q['open'] is False and q['lock'] is None and q['journal']['txid'] == txid
    assert [h['txid'] for h in q['history_tail']] == [txid]


@pytest.mark.parametrize('first, second', [
    pytest.param('committed', 'rolled_back', id='failure-after-commit'),
    pytest.param('rollback_failed', 'rolled_back', id='rollback-retried'),
    pytest.param('open', 'rollback_failed', id='rollback-failed'),
])
def test_rollback_outcomes_close_and_reclose(ds, first, second):
    open_tx(ds)
    if first != 'open':
        ensure_closed(ds, first, 'run-1')
    res = ensure_closed(ds, second, 'run-1', data={'target': '1.4.1', 'restored': ['/etc/app.conf']})
    assert res['changed'] and res['failsafe_transaction']['status'] == second
    journal = load(ds.journal_path)
    assert journal['status'] == second and journal['outcome']['target'] == '1.4.1'
    assert [h['status'] for h in history(ds)] == ([first] if first != 'open' else []) + [second]


def test_given_rolled_back_when_committed_then_refused(ds):
    open_tx(ds)
    ensure_closed(ds, 'rolled_back', 'run-1')
    with pytest.raises(JournalError, match='cannot be committed'):
        ensure_closed(ds, 'committed', 'run-1')


def test_given_a_step_recorded_when_recorded_again_with_the_same_data_then_nothing_changes(ds):
    lock(ds, 'run-1')
    open_tx(ds)
    first = ensure_step(ds, 'run-1', 'snapshot', snapshots={'files': 'snap-1'}, data={'entries': 3})
    assert first['changed'] is True
    written = os.stat(ds.journal_path)
    journal = load(ds.journal_path)
    again = ensure_step(ds, 'run-1', 'snapshot', snapshots={'files': 'snap-1'}, data={'entries': 3})
    assert again['changed'] is False and again['step'] == first['step']
    assert again['failsafe_transaction']['status'] == 'open'
    assert load(ds.journal_path) == journal and os.stat(ds.journal_path).st_ino == written.st_ino
    # a step recorded after others is still found: the latest record of that step counts
    ensure_step(ds, 'run-1', 'release')
    assert ensure_step(ds, 'run-1', 'snapshot', snapshots={'files': 'snap-1'}, data={'entries': 3})['changed'] is False
    assert [s['step'] for s in load(ds.journal_path)['steps']] == ['snapshot', 'release']


@pytest.mark.parametrize('differs', [
    {'data': {'entries': 4}},
    {'status': 'failed'},
    {'snapshots': {'files': 'snap-2'}},
    {'snapshots': {'db': 'snap-db'}},
])
def test_given_a_step_recorded_when_recorded_again_with_other_data_then_a_new_record_is_appended(ds, differs):
    lock(ds, 'run-1')
    open_tx(ds)
    ensure_step(ds, 'run-1', 'snapshot', snapshots={'files': 'snap-1'}, data={'entries': 3})
    kw = dict(snapshots={'files': 'snap-1'}, data={'entries': 3})
    kw.update(differs)
    res = ensure_step(ds, 'run-1', 'snapshot', **kw)
    assert res['changed'] is True
    journal = load(ds.journal_path)
    assert len(journal['steps']) == 2 and journal['steps'][-1]['status'] == kw.get('status', 'ok')
    assert journal['snapshots'] == dict({'files': 'snap-1'}, **kw['snapshots'])


def test_given_another_runs_open_transaction_when_stepped_or_closed_then_refused(ds):
    open_tx(ds, 'run-1')
    with pytest.raises(JournalError, match='belongs to run run-1'):
        ensure_step(ds, 'run-2', 'x')
    with pytest.raises(JournalError, match='belongs to run run-1'):
        ensure_closed(ds, 'committed', 'run-2')
    assert ensure_closed(ds, 'rolled_back', 'run-2', force=True)['changed']


@pytest.mark.parametrize('state', ['step', 'committed'])
def test_given_no_open_transaction_when_stepped_or_committed_then_refused(ds, state):
    with pytest.raises(JournalError, match='no (open )?transaction'):
        if state == 'step':
            ensure_step(ds, 'run-1', 'x')
        else:
            ensure_closed(ds, state, 'run-1')


def test_closing_releases_a_lock_held_by_the_transactions_run_but_not_another(ds):
    open_tx(ds, 'run-1')
    lock(ds, 'run-2', owner='someone@else')
    res = ensure_closed(ds, 'rolled_back', 'run-1')
    assert res['lock_released'] is False and load(ds.lock_path)['run_id'] == 'run-2'


def test_given_check_mode_then_journal_states_write_nothing_and_report_planned(ds, state_dir):
    res = open_tx(ds, check_mode=True)
    assert res['changed'] and res['failsafe_transaction']['status'] == 'planned'
    res = ensure_step(ds, 'run-1', 'x', check_mode=True)
    assert res['changed'] and res['failsafe_transaction']['status'] == 'planned'
    res = ensure_closed(ds, 'committed', 'run-1', check_mode=True)
    assert res['changed'] and res['failsafe_transaction']['status'] == 'planned'
    assert not os.path.exists(state_dir)
    lock(ds, 'run-1')
    open_tx(ds)
    before = files(state_dir)
    ensure_step(ds, 'run-1', 'x', check_mode=True)
    res = ensure_closed(ds, 'committed', 'run-1', check_mode=True)
    assert res['diff']['after']['journal']['status'] == 'committed' and res['diff']['after']['lock'] is None
    assert files(state_dir) == before


def test_given_check_mode_and_nothing_open_then_steps_and_close_show_the_release_of_the_transaction_to_open(
        ds, state_dir):
    open_tx(ds, 'run-0')
    ensure_closed(ds, 'committed', 'run-0')  # a committed transaction of an earlier run, as after a deploy
    before = files(state_dir)
    for res in (ensure_step(ds, 'run-1', 'release', check_mode=True, release='2.0.0'),
                ensure_closed(ds, 'committed', 'run-1', check_mode=True, release='2.0.0')):
        after = res['diff']['after']['journal']
        assert after['release'] == '2.0.0' and after['run_id'] == 'run-1'
        assert after['would_open'] == 'a new transaction of run run-1 for release 2.0.0'
        assert res['failsafe_transaction']['release'] == '2.0.0'
        assert res['failsafe_transaction']['status'] == 'planned'
        assert res['diff']['before']['journal']['release'] == '1.4.2'
    assert files(state_dir) == before


def test_history_survives_a_torn_last_line(ds):
    open_tx(ds, 'run-1')
    ensure_closed(ds, 'committed', 'run-1')
    with open(ds.history_path, 'a') as f:
        f.write('{"txid": "torn')  # a writer died mid-line
    open_tx(ds, 'run-2')
    ensure_closed(ds, 'committed', 'run-2')
    tail = ds.history_tail()
    assert [h['run_id'] for h in tail] == ['run-1', 'run-2']


def test_history_tail_keeps_the_last_five(ds):
    for i in range(7):
        open_tx(ds, 'run-%d' % i)
        ensure_closed(ds, 'committed', 'run-%d' % i)
    assert [h['run_id'] for h in ensure_query(ds)['history_tail']] == ['run-%d' % i for i in range(2, 7)]
    assert len(history(ds)) == 7


def test_given_closed_journal_and_history_already_appended_when_closed_again_then_no_duplicate(ds, monkeypatch):
    """A crash after the history append and before the journal update: the retry must not log twice."""
    open_tx(ds)
    monkeypatch.setattr(DeployState, 'write_journal', lambda self, j: None)
    ensure_closed(ds, 'committed', 'run-1')
    monkeypatch.undo()
    assert load(ds.journal_path)['status'] == 'open'
    ensure_closed(ds, 'committed', 'run-1')
    assert [h['status'] for h in history(ds)] == ['committed']
    assert load(ds.journal_path)['status'] == 'committed'


def test_query_reports_expired_lock_and_open_transaction(ds):
    lock(ds, 'run-1')
    expire_lock(ds)
    open_tx(ds)
    q = ensure_query(ds)
    assert q['lock_expired'] is True and q['open'] is True and q['journal']['status'] == 'open'


@pytest.mark.parametrize('name', ['', '.', '..', 'a/b', '../x'])
def test_given_bad_name_then_refused(state_dir, name):
    with pytest.raises(JournalError, match='invalid deployment name'):
        DeployState(state_dir, name)


def test_default_owner_is_user_at_host():
    assert re.match(r'^[^@]+@[^@]+$', jr.default_owner())
