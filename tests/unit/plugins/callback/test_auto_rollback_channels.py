# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The callback wires the PagerDuty, Slack and Teams channels: every alert reaches each configured channel, in
order, and the secrets that configure them appear nowhere.

Driven with the fake objects and the stand-in rollback child of test_auto_rollback.py; the channels post to the
local receivers of test_channels.py, which stand in for the real services and check their payload rules.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import time

from ansible_collections.failsafe.deploy.tests.unit.plugins.callback.test_auto_rollback import (  # pylint: disable=unused-import
    FakeResult, FakeStats, FakeTask, env, make_callback, open_and_fail, reports, spool, txn,
)
from ansible_collections.failsafe.deploy.tests.unit.plugins.plugin_utils.test_channels import (  # pylint: disable=unused-import
    ROUTING_KEY, SLACK_TOKEN, TEAMS_SIG, receivers,
)


def everything_written(env, display):
    # pylint: disable=redefined-outer-name
    text = display.text() + '\n'.join(display.warnings)
    for path in (env / 'reports').iterdir():
        text += path.read_text()
    return text


def test_given_three_channels_when_a_deploy_fails_and_rolls_back_then_each_gets_its_messages_in_order(
        env, receivers, monkeypatch):
    # pylint: disable=redefined-outer-name
    pd, slack, teams = receivers('pagerduty'), receivers('slack'), receivers('teams')
    monkeypatch.setenv('FAILSAFE_PAGERDUTY_ROUTING_KEY', ROUTING_KEY)
    monkeypatch.setenv('FAILSAFE_SLACK_WEBHOOK_URL', slack.url)
    monkeypatch.setenv('FAILSAFE_TEAMS_WEBHOOK_URL', teams.url)
    cb, display = make_callback(env, pagerduty_url=pd.base)
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))

    assert pd.rejected == [] and slack.rejected == [] and teams.rejected == []
    sent = [(r['path'], r['json'].get('event_action'), (r['json'].get('payload') or {}).get('severity'))
            for r in pd.received]
    assert sent == [('/v2/enqueue', 'trigger', 'error'), ('/v2/enqueue', 'resolve', None),
                    ('/v2/change/enqueue', None, None)]
    assert len({r['json']['dedup_key'] for r in pd.received[:2]}) == 1
    assert ['Deploy failed' in r['json']['text'] for r in slack.received] == [True, False]
    assert 'Rolled back' in slack.received[1]['json']['text']
    titles = [r['json']['attachments'][0]['content']['body'][0]['text'] for r in teams.received]
    assert [t.split(':')[0] for t in titles] == ['Deploy failed', 'Rolled back']
    assert [a['event'] for a in spool(env)] == ['deploy_failed', 'rolled_back']
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert [(a['pagerduty'], a['slack'], a['teams']) for a in data['alerts']] == [('delivered',) * 3] * 2
    blob = everything_written(env, display)
    for secret in (ROUTING_KEY, SLACK_TOKEN, TEAMS_SIG):
        assert secret not in blob


def test_given_a_failed_rollback_then_pagerduty_is_re_triggered_as_critical(env, receivers, monkeypatch):
    # pylint: disable=redefined-outer-name
    pd = receivers('pagerduty')
    monkeypatch.setenv('FAILSAFE_PAGERDUTY_ROUTING_KEY', ROUTING_KEY)
    monkeypatch.setenv('FAKE_CHILD_MODE', 'fail:web1')
    cb, display = make_callback(env, pagerduty_url=pd.base)
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    assert cb.outcome == 'rollback_failed'
    events = [r['json'] for r in pd.received if r['path'] == '/v2/enqueue']
    assert [(e['event_action'], e['payload']['severity']) for e in events] == [('trigger', 'error'),
                                                                               ('trigger', 'critical')]
    assert events[0]['dedup_key'] == events[1]['dedup_key']
    assert ROUTING_KEY not in everything_written(env, display)


def test_given_a_committed_deploy_then_pagerduty_records_a_change_event_and_nothing_is_spooled(
        env, receivers, monkeypatch):
    # pylint: disable=redefined-outer-name
    pd, slack = receivers('pagerduty'), receivers('slack')
    monkeypatch.setenv('FAILSAFE_PAGERDUTY_ROUTING_KEY', ROUTING_KEY)
    monkeypatch.setenv('FAILSAFE_SLACK_WEBHOOK_URL', slack.url)
    cb, display = make_callback(env, pagerduty_url=pd.base)
    start = FakeTask('Open transaction', action='failsafe.deploy.deploy_state')
    cb.v2_runner_on_ok(FakeResult('web1', start, txn('web1')))
    cb.v2_runner_on_ok(FakeResult('web1', start, txn('web1', status='committed')))
    cb.v2_playbook_on_stats(FakeStats(['web1']))
    assert [r['path'] for r in pd.received] == ['/v2/change/enqueue']
    assert 'committed' in pd.received[0]['json']['payload']['summary']
    assert slack.received == [] and spool(env) == [] and display.warnings == []


def test_given_channels_that_never_answer_then_the_run_waits_at_most_the_time_limit_and_warns_by_name(
        env, receivers, monkeypatch):
    # pylint: disable=redefined-outer-name
    pd, slack, teams = (receivers(kind, hang=True) for kind in ('pagerduty', 'slack', 'teams'))
    monkeypatch.setenv('FAILSAFE_PAGERDUTY_ROUTING_KEY', ROUTING_KEY)
    monkeypatch.setenv('FAILSAFE_SLACK_WEBHOOK_URL', slack.url)
    monkeypatch.setenv('FAILSAFE_TEAMS_WEBHOOK_URL', teams.url)
    cb, display = make_callback(env, pagerduty_url=pd.base, channel_timeout=0.5, channel_time_limit=1)
    start = time.monotonic()
    open_and_fail(cb)
    assert time.monotonic() - start < 0.5     # the deploy_failed alert never waits for a channel
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    assert time.monotonic() - start < 6       # rollback child (~1-2 s) plus one shared 1 s limit, not 3 x retries
    assert cb.outcome == 'rolled_back'
    assert [a['event'] for a in spool(env)] == ['deploy_failed', 'rolled_back']
    warned = '\n'.join(display.warnings)
    for name, setting in (('pagerduty', 'FAILSAFE_PAGERDUTY_ROUTING_KEY'), ('slack', 'FAILSAFE_SLACK_WEBHOOK_URL'),
                          ('teams', 'FAILSAFE_TEAMS_WEBHOOK_URL')):
        assert '%s alert' % name in warned and setting in warned
    blob = everything_written(env, display)
    for secret in (ROUTING_KEY, SLACK_TOKEN, TEAMS_SIG, slack.url, teams.url):
        assert secret not in blob
