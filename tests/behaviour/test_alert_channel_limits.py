"""Given the PagerDuty, Slack and Teams channels, when real deploys fail, then each receiver gets its messages in order
and within the provider's limits: a 300-task run whose failing task prints a long error still gives Slack at most 50
blocks of at most 3,000 characters a section and Teams an Adaptive Card 1.4 under 28 KB, with the error's tail in
it; a rollback that fails re-triggers the PagerDuty incident as critical under the same dedup key.

Real ansible-playbook runs of the examples/demo setup. The 300 tasks are the activate step's before-tasks hook
(failsafe_activate_before_tasks) of a generated task file: debug tasks, failures that are ignored, each with a long
message, and a real command that writes a long stderr and exits 1 while the transaction is open. The failed
rollback is a real rollback killed by its time limit (rollback_timeout=1). The receivers stand in for the real
services and check each provider's documented payload rules and limits
(tests/unit/plugins/plugin_utils/test_channels.py).
"""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'unit', 'plugins', 'plugin_utils'))

from test_channels import ROUTING_KEY, Receiver as ProviderReceiver  # noqa: E402 pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow

TEAMS_MAX_BYTES = 28 * 1024
LONG = 'x' * 1500


def hook_with_300_tasks(path):
    """A task file of 300 tasks: 270 debug tasks, 29 ignored failures with long messages, then a command that writes
    40 KB to stderr and exits 1."""
    tasks = []
    for index in range(270):
        tasks.append({'name': 'Step %03d of the long release hook' % index,
                      'ansible.builtin.debug': {'msg': 'step %d %s' % (index, LONG[:200])}})
    for index in range(29):
        tasks.append({'name': 'Optional check %02d' % index, 'ignore_errors': True,
                      'ansible.builtin.fail': {'msg': 'optional check %d failed: %s' % (index, LONG)}})
    script = ('for i in $(seq 1 400); do echo "migration error line $i: constraint violated on table orders '
              '(key $i) while applying release 2.0.0, see the schema log for the full statement"; done >&2; '
              'echo "END-OF-ERROR: migration 0042 aborted" >&2; exit 1')
    tasks.append({'name': 'Run the database migration', 'ansible.builtin.command': {'argv': ['/bin/sh', '-c', script]}})
    with open(path, 'w') as handle:
        json.dump(tasks, handle)     # JSON is YAML
    return len(tasks)


def provider_env(pd, slack, teams):
    return {'FAILSAFE_PAGERDUTY_ROUTING_KEY': ROUTING_KEY, 'FAILSAFE_PAGERDUTY_URL': pd.base,
            'FAILSAFE_SLACK_WEBHOOK_URL': slack.url, 'FAILSAFE_TEAMS_WEBHOOK_URL': teams.url,
            'FAILSAFE_CHANNEL_TIMEOUT': '5'}


def slack_text(message):
    parts = [message.get('text') or '']
    for block in message.get('blocks') or []:
        parts.append((block.get('text') or {}).get('text') or '')
        parts.extend(f.get('text') or '' for f in block.get('fields') or [])
        parts.extend(e.get('text') or '' for e in block.get('elements') or [] if isinstance(e, dict))
    return '\n'.join(parts)


def test_given_a_300_task_run_with_a_long_error_when_it_fails_then_slack_and_teams_stay_within_their_limits(
        local_deploy, tmp_path):
    d = local_deploy
    hook = str(tmp_path / 'hook-300.yml')
    assert hook_with_300_tasks(hook) == 300
    pd, slack, teams = (ProviderReceiver(kind) for kind in ('pagerduty', 'slack', 'teams'))
    try:
        d.env.update(provider_env(pd, slack, teams))
        good = d.deploy('1.0.0')
        assert good.returncode == 0, good.stdout[-6000:]
        bad = d.deploy('2.0.0', '-e', 'failsafe_activate_before_tasks=%s' % hook)
    finally:
        for receiver in (pd, slack, teams):
            receiver.close()
    assert bad.returncode != 0 and 'ROLLED BACK' in bad.stdout, bad.stdout[-6000:]
    assert bad.stdout.count('TASK [') >= 300
    assert d.current() == 'releases/1.0.0'

    # every message passed the provider's rules (the receivers reject anything over a limit)
    assert pd.rejected == [] and slack.rejected == [] and teams.rejected == []
    assert [slack_text(r['json']).split(':', maxsplit=1)[0] for r in slack.received] == ['Deploy failed', 'Rolled back']
    for message in (r['json'] for r in slack.received):
        assert len(message['blocks']) <= 50
        assert all(len((b.get('text') or {}).get('text') or '') <= 3000 for b in message['blocks'])
    failed_text = slack_text(slack.received[0]['json'])
    assert 'Run the database migration' in failed_text
    assert 'END-OF-ERROR: migration 0042 aborted' in failed_text        # the stderr's tail reached the channel
    assert len(teams.received) == 2
    for record in teams.received:
        assert record['size'] < TEAMS_MAX_BYTES
        card = record['json']['attachments'][0]['content']
        assert card['type'] == 'AdaptiveCard' and card['version'] == '1.4'
    assert 'END-OF-ERROR' in json.dumps(teams.received[0]['json'])
    trigger = [r['json'] for r in pd.received if r['json'].get('event_action') == 'trigger']
    assert len(trigger) == 1 and len(json.dumps(trigger[0])) < 512 * 1024


def test_given_a_rollback_that_fails_then_pagerduty_gets_trigger_then_critical_trigger_with_one_dedup_key(
        local_deploy):
    d = local_deploy
    pd, slack, teams = (ProviderReceiver(kind) for kind in ('pagerduty', 'slack', 'teams'))
    try:
        d.env.update(provider_env(pd, slack, teams))
        good = d.deploy('1.0.0')
        assert good.returncode == 0, good.stdout[-6000:]
        d.env['FAILSAFE_ROLLBACK_TIMEOUT'] = '1'
        bad = d.deploy('3.0.0')
    finally:
        for receiver in (pd, slack, teams):
            receiver.close()
    assert bad.returncode != 0 and 'ROLLBACK FAILED' in bad.stdout, bad.stdout[-6000:]
    assert pd.rejected == [] and slack.rejected == [] and teams.rejected == []
    sent = [(r['path'], r['json'].get('event_action'), (r['json'].get('payload') or {}).get('severity'))
            for r in pd.received]
    assert sent == [('/v2/change/enqueue', None, None),            # 1.0.0 committed
                    ('/v2/enqueue', 'trigger', 'error'),            # 3.0.0 failed
                    ('/v2/enqueue', 'trigger', 'critical'),         # its rollback failed: same incident, critical
                    ('/v2/change/enqueue', None, None)]
    first, critical = pd.received[1]['json'], pd.received[2]['json']
    assert first['dedup_key'] == critical['dedup_key'] and '3.0.0' in first['dedup_key']
    assert critical['payload']['summary'].startswith('ROLLBACK FAILED')
    assert not [r for r in pd.received if r['json'].get('event_action') == 'resolve']
    assert [slack_text(r['json']).split(':', maxsplit=1)[0] for r in slack.received] == ['Deploy failed', 'ROLLBACK FAILED']
    assert len(teams.received) == 2
    report = json.load(open(d.incident_reports()[-1]))
    assert report['outcome'] == 'rollback_failed' and report['rollback']['timed_out'] is True
