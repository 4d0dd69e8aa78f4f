"""Given PagerDuty, Slack, Teams and email configured, when a deploy fails and is rolled back, then each gets its
messages in order and no secret that configures them appears anywhere.

Real ansible-playbook runs of the examples/demo setup (1.0.0 deploys, 3.0.0 fails its health check and is rolled
back). The channels post to local receivers (tests/unit/plugins/plugin_utils/test_channels.py) that stand in for
the real services and check each provider's documented payload rules and limits; the email goes to a real SMTP
server on 127.0.0.1 (aiosmtpd requiring STARTTLS and AUTH, tests/unit/plugins/plugin_utils/smtp_server.py).
"""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'unit', 'plugins', 'plugin_utils'))

from test_channels import (  # noqa: E402 pylint: disable=wrong-import-position
    ROUTING_KEY, SLACK_TOKEN, TEAMS_SIG, Receiver as ProviderReceiver,
)
from smtp_server import SMTP_PASSWORD, SMTP_USER, SmtpServer  # noqa: E402 pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow


def test_given_four_channels_when_3_0_0_fails_and_rolls_back_then_each_receiver_got_its_messages_in_order(
        local_deploy, tmp_path):
    d = local_deploy
    pd, slack, teams = (ProviderReceiver(kind) for kind in ('pagerduty', 'slack', 'teams'))
    smtp = SmtpServer(str(tmp_path))
    try:
        d.env.update({'FAILSAFE_PAGERDUTY_ROUTING_KEY': ROUTING_KEY, 'FAILSAFE_PAGERDUTY_URL': pd.base,
                      'FAILSAFE_SLACK_WEBHOOK_URL': slack.url, 'FAILSAFE_TEAMS_WEBHOOK_URL': teams.url,
                      'FAILSAFE_EMAIL_HOST': '127.0.0.1', 'FAILSAFE_EMAIL_PORT': str(smtp.port),
                      'FAILSAFE_EMAIL_FROM': 'deploy@example.org', 'FAILSAFE_EMAIL_TO': 'ops@example.org',
                      'FAILSAFE_EMAIL_USERNAME': SMTP_USER, 'FAILSAFE_EMAIL_PASSWORD': SMTP_PASSWORD,
                      'FAILSAFE_EMAIL_CA_FILE': smtp.cert, 'FAILSAFE_EMAIL_TIMEOUT': '5'})
        good = d.deploy('1.0.0')
        assert good.returncode == 0, good.stdout[-6000:]
        assert [r['path'] for r in pd.received] == ['/v2/change/enqueue']        # a committed deploy: a change
        assert slack.received == [] and teams.received == []                      # not an alert
        bad = d.deploy('3.0.0')
    finally:
        for receiver in (pd, slack, teams, smtp):
            receiver.close()
    assert bad.returncode != 0 and 'ROLLED BACK' in bad.stdout, bad.stdout[-6000:]
    assert d.current() == 'releases/1.0.0'
    assert pd.rejected == [] and slack.rejected == [] and teams.rejected == []

    sent = [(r['path'], r['json'].get('event_action'), (r['json'].get('payload') or {}).get('severity'))
            for r in pd.received[1:]]
    assert sent == [('/v2/enqueue', 'trigger', 'error'), ('/v2/enqueue', 'resolve', None),
                    ('/v2/change/enqueue', None, None)]
    trigger, resolve = pd.received[1]['json'], pd.received[2]['json']
    assert trigger['dedup_key'] == resolve['dedup_key'] and '3.0.0' in trigger['dedup_key']
    assert 'health' in trigger['payload']['summary'].lower()
    assert [r['json']['text'].split(':')[0] for r in slack.received] == ['Deploy failed', 'Rolled back']
    assert [r['json']['attachments'][0]['content']['body'][0]['text'].split(':')[0]
            for r in teams.received] == ['Deploy failed', 'Rolled back']
    assert [a['event'] for a in d.spool_events()] == ['deploy_failed', 'rolled_back']
    assert d.receiver.kinds() == ['deploy_failed', 'rolled_back']               # the generic webhook too
    report = json.load(open(d.incident_reports()[-1]))
    assert [(a['pagerduty'], a['slack'], a['teams'], a['email']) for a in report['alerts']] == [('delivered',) * 4] * 2
    assert [m['message']['X-Failsafe-Event'] for m in smtp.messages] == ['deploy_failed', 'rolled_back']
    assert all(m['tls'] and m['user'] == SMTP_USER for m in smtp.messages)
    assert smtp.messages[0]['message']['Subject'].startswith('[failsafe.deploy] Deploy failed: ')
    assert '3.0.0' in smtp.messages[0]['message']['Subject']

    written = good.stdout + bad.stdout
    for root, dummy, files in os.walk(d.dir):
        for name in files:
            if name.endswith(('.json', '.jsonl', '.md', '.log')):
                try:
                    with open(os.path.join(root, name), errors='replace') as f:
                        written += f.read()
                except OSError:
                    pass
    for secret in (ROUTING_KEY, SLACK_TOKEN, TEAMS_SIG, SMTP_PASSWORD):
        assert secret not in written
