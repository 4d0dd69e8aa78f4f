# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How a run ends (_outcome), what the callback reads from ansible's objects (_events), why a local rollback failed
(_launcher.rollback_reason) and which setting a failed delivery names (_settings.problem_warning): the logic the
auto_rollback callback delegates, driven alone."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _events, _outcome, _settings
from ansible_collections.failsafe.deploy.plugins.plugin_utils._alerts import SendResult
from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import DeployRun
from ansible_collections.failsafe.deploy.plugins.plugin_utils._launcher import LaunchResult, rollback_reason
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor


def run_with(opened=(), failed=()):
    run = DeployRun(Redactor())
    for host in opened:
        run.observe_transaction(host, {'status': 'open', 'txid': 'tx-' + host, 'release': '2.0'})
    for host in failed:
        run.record_failure(host, {'name': 'Verify', 'role': 'verify', 'path': '/roles/verify/tasks/main.yml:3'},
                           {'msg': 'health check failed'})
    return run


def test_given_a_plain_deploy_when_it_ends_then_it_is_a_commit_with_nothing_to_write_up():
    end = _outcome.quiet_end(run_with(opened=['web1']), {}, False, {})
    assert end == {'outcome': None, 'reason': None, 'failures': None, 'alert': None, 'committed': True,
                   'linked': None, 'unheard': None}


def test_given_a_ladder_step_that_fixed_it_then_the_run_is_mitigated_and_not_a_commit():
    ladder = {'web1': [{'step': 'kill_switch', 'outcome': 'fixed'}]}
    end = _outcome.quiet_end(run_with(opened=['web1']), ladder, False, {})
    assert end['outcome'] == 'mitigated' and not end['committed']
    assert end['alert'][0] == 'warning' and end['alert'][1]['ladder'] is ladder
    assert 'web1: kill_switch' in end['reason']


@pytest.mark.parametrize('alerted, self_reverted, outcome, committed', [
    (True, {}, 'rescued', False),
    (False, {'web2': {}}, 'self_reverted', True),
    (True, {'web2': {}}, 'rescued', False),
])
def test_rescued_and_self_reverted_runs(alerted, self_reverted, outcome, committed):
    end = _outcome.quiet_end(run_with(opened=['web1']), {}, alerted, self_reverted)
    assert (end['outcome'], end['committed']) == (outcome, committed)


def test_a_revert_the_host_alerted_links_its_incident_and_one_nobody_heard_is_alerted():
    heard = {'alert': {'incident_id': 'inc-20261206T140000Z-0000beef', 'status': 'delivered'}}
    failed = {'alert': {'incident_id': 'inc-20261206T140100Z-0000dead', 'status': 'failed', 'error': 'HTTP 500'}}
    end = _outcome.quiet_end(run_with(opened=['web1']), {}, False, {'web2': heard})
    assert (end['outcome'], end['linked'], end['unheard']) == ('self_reverted', heard['alert']['incident_id'], None)
    end = _outcome.quiet_end(run_with(opened=['web1']), {}, False, {'web2': heard, 'web3': failed, 'web4': {}})
    assert end['linked'] == heard['alert']['incident_id']
    severity, fields = end['unheard'][0], end['unheard'][1]
    assert severity == 'error' and fields['hosts'] == ['web3', 'web4'] and fields['outcome'] == 'self_reverted'
    assert 'web3, web4 reverted an unconfirmed transaction by itself; its own alert reached nobody' == fields['summary']
    # another failure of the run is what it alerts: the reverts are in its report
    end = _outcome.quiet_end(run_with(opened=['web1']), {}, True, {'web3': failed})
    assert (end['outcome'], end['linked'], end['unheard']) == ('rescued', None, None)


def test_a_refusal_before_any_transaction_is_refused_and_lists_the_refusals():
    run = DeployRun(Redactor())
    run.record_failure('web1', {'name': 'Check', 'role': 'preflight', 'path': '/roles/preflight/tasks/main.yml:1'},
                       {'msg': 'release is quarantined'})
    end = _outcome.quiet_end(run, {}, False, {})
    assert end['outcome'] == 'refused' and end['failures'][0]['host'] == 'web1'
    assert end['reason'].startswith('refused before any change on web1: ')


def test_scope_of_an_interrupted_run_adds_every_open_transaction():
    run = run_with(opened=['web1', 'web2'], failed=['web1'])
    assert _outcome.rollback_scope(run, 'failed') == (['web1'], 'deploy failed on web1')
    assert _outcome.rollback_scope(run, 'failed', interrupted='SIGINT') == (['web1', 'web2'], 'deploy failed on web1')
    quiet = run_with(opened=['web1'])
    assert _outcome.rollback_scope(quiet, 'opened', interrupted='SIGTERM') == (['web1'],
                                                                               'deploy interrupted (SIGTERM)')


def test_left_by_scope_names_the_mixed_releases():
    run = run_with(opened=['web1', 'web2'], failed=['web1'])
    left, what = _outcome.left_by_scope(run, ['web1'], 'failed', 'deploy failed on web1')
    assert left == ['web2']
    assert what == 'deploy failed on web1; MIXED RELEASES: web2 left on release 2.0 by rollback_scope=failed'
    assert _outcome.left_by_scope(run, ['web1', 'web2'], 'opened', 'x') == ([], 'x')


@pytest.mark.parametrize('check, defer, job, outcome', [
    (True, True, '42', 'skipped_check_mode'),
    (False, True, '42', 'deferred'),
    (False, True, None, None),
    (False, False, '42', None),
])
def test_not_launched(check, defer, job, outcome):
    assert _outcome.not_launched(check, defer, job)[0] == outcome


def test_anything_but_a_clean_launch_failed():
    assert _outcome.launched(None) == 'rolled_back'
    assert _outcome.launched('verification failed on web1') == 'rollback_failed'


@pytest.mark.parametrize('rc, error, child, hosts, reason', [
    (0, None, {}, {'web1': {'status': 'ok', 'verified': True}}, None),
    (2, None, {}, {'web1': {'status': 'ok'}}, 'rollback playbook exited 2'),
    (0, None, None, {'web1': {'status': 'ok'}},
     'the rollback playbook left no result file (is the callback enabled for it?)'),
    (0, None, {}, {'web1': {'status': 'ok', 'verified': False}}, 'verification failed on web1'),
    (None, 'killed', {}, {'web1': {'status': 'no_result'}}, 'killed; not rolled back: web1 (no_result)'),
])
def test_rollback_reason(rc, error, child, hosts, reason):
    launch = LaunchResult(rc, False, False, 0.0, 1.0, 1.0, None, error)
    assert rollback_reason(launch, child, hosts) == reason


def test_events_read_delegated_transactions_stages_and_the_ladder():
    data = {'failsafe_transaction': {'inventory_host': 'lb1', 'status': 'open'},
            'results': [{'failsafe_layer_stages': ['traffic', 'code'], 'failsafe_transaction': {'status': 'open'}},
                        'not a dict'],
            'ansible_facts': {'failsafe_ladder': [{'step': 'kill_switch', 'outcome': 'failed'}, 'x',
                                                  {'step': 'traffic_back', 'outcome': 'fixed', 'msg': 'ok'}]}}
    assert _events.owner(data['failsafe_transaction'], 'web1') == 'lb1'
    assert _events.owner({'status': 'open'}, 'web1') == 'web1'
    assert _events.transactions(data) == [data['failsafe_transaction'], data['results'][0]['failsafe_transaction']]
    assert _events.layer_stages(data, 'web1') == {'web1': ['traffic', 'code']}
    steps = _events.ladder_steps(data)
    assert [s['step'] for s in steps] == ['kill_switch', 'traffic_back']
    assert _events.ladder_event(steps[-1], str.upper) == {'step': 'TRAFFIC_BACK', 'outcome': 'FIXED', 'detail': 'OK'}
    assert _events.ladder_steps({'ansible_facts': {'failsafe_ladder': ['x']}}) is None


def test_problem_warning_names_the_setting():
    failed = SendResult(False, 3, None, 'timed out', 1.0)
    assert 'FAILSAFE_WEBHOOK_URL' in _settings.problem_warning('webhook', 'deploy_failed', failed, '/s')
    assert 'FAILSAFE_SLACK_WEBHOOK_URL' in _settings.problem_warning('slack', 'deploy_failed', failed, '/s')
    assert 'notices are not spooled' in _settings.problem_warning('stakeholders', None, failed, '/s')
    assert 'spool /s' in _settings.problem_warning('spool', 'deploy_failed', failed, '/s')
