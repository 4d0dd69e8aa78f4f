"""Given stakeholders listed for notices, when a deploy is started, fails and is rolled back, then a real SMTP server
receives three plain-words notices for them, in order (started, problem, service restored), and none of them
carries an error text, a host name, a task name or a secret; the on-call mailbox still gets every detail. The
stakeholders' Slack channel gets the same notices (a local receiver that stands in for Slack and checks its payload
rules, tests/unit/plugins/plugin_utils/test_channels.py), and the on-call Slack channel none of them.

Real ansible-playbook runs of the examples/demo setup (1.0.0 deploys, 3.0.0 fails its health check and is rolled
back); the mail goes to a real SMTP server on 127.0.0.1 (aiosmtpd requiring STARTTLS and AUTH,
tests/unit/plugins/plugin_utils/smtp_server.py).
"""
import json
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'unit', 'plugins', 'plugin_utils'))

from smtp_server import SMTP_PASSWORD, SMTP_USER, SmtpServer  # noqa: E402 pylint: disable=wrong-import-position
from test_channels import SLACK_TOKEN, Receiver as ProviderReceiver  # noqa: E402 pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow

STAKEHOLDERS = 'stakeholders@example.org'
ONCALL = 'oncall@example.org'
EXTRA_SECRET = 'Xtr4VarS3cretValue'


def mails_to(smtp, address, start=0):
    return [m for m in smtp.messages[start:] if address in m['rcpt_tos']]


def test_given_stakeholders_when_a_deploy_fails_and_is_restored_then_they_get_three_plain_notices_in_order(
        local_deploy, tmp_path):
    d = local_deploy
    smtp = SmtpServer(str(tmp_path))
    stakeholder_slack, oncall_slack = ProviderReceiver('slack'), ProviderReceiver('slack')
    try:
        d.env.update({'FAILSAFE_EMAIL_HOST': '127.0.0.1', 'FAILSAFE_EMAIL_PORT': str(smtp.port),
                      'FAILSAFE_EMAIL_FROM': 'deploy@example.org', 'FAILSAFE_EMAIL_TO': ONCALL,
                      'FAILSAFE_EMAIL_USERNAME': SMTP_USER, 'FAILSAFE_EMAIL_PASSWORD': SMTP_PASSWORD,
                      'FAILSAFE_EMAIL_CA_FILE': smtp.cert, 'FAILSAFE_EMAIL_TIMEOUT': '5',
                      'FAILSAFE_STAKEHOLDER_EMAIL_TO': STAKEHOLDERS, 'FAILSAFE_SERVICE_NAME': 'Demo shop',
                      'FAILSAFE_STAKEHOLDER_SLACK_WEBHOOK_URL': stakeholder_slack.url,
                      'FAILSAFE_SLACK_WEBHOOK_URL': oncall_slack.url})
        good = d.deploy('1.0.0')
        assert good.returncode == 0, good.stdout[-6000:]
        first = len(smtp.messages)
        bad = d.deploy('3.0.0', '-e', 'demo_api_token=%s' % EXTRA_SECRET)
    finally:
        for server in (smtp, stakeholder_slack, oncall_slack):
            server.close()
    assert bad.returncode != 0 and 'ROLLED BACK' in bad.stdout, bad.stdout[-6000:]
    assert d.current() == 'releases/1.0.0'

    # a deploy that works: started, then live
    calm = mails_to(smtp, STAKEHOLDERS)[:2]
    assert [m['message']['X-Failsafe-Notice'] for m in calm] == ['started', 'completed']
    assert calm[1]['message']['Subject'] == 'Demo shop: release 1.0.0 is live'

    notices = mails_to(smtp, STAKEHOLDERS, first)
    assert [m['message']['X-Failsafe-Notice'] for m in notices] == ['started', 'failed', 'restored']
    assert all(m['tls'] and m['user'] == SMTP_USER and m['rcpt_tos'] == [STAKEHOLDERS] for m in notices)
    subjects = [m['message']['Subject'] for m in notices]
    assert subjects == ['Demo shop: release 3.0.0 is being deployed',
                        'Demo shop: a problem with release 3.0.0, we are putting back the previous version',
                        'Demo shop: service restored']
    bodies = [m['message'].get_body(('plain',)).get_content() for m in notices]
    assert all(not m['message'].is_multipart() for m in notices)       # plain text, no HTML alternative
    started, failed, restored = bodies
    assert 'deploy release 3.0.0 of Demo shop at ' in started
    assert 'ran into a problem at ' in failed and 'previous version (1.0.0)' in failed
    # the time to restore to expect, from this deployment's earlier rollbacks in the report folder (or a default)
    assert re.search(r'We expect service to be restored in (less than a minute|about \d+ minutes?) \((no earlier '
                     r'rollback of this service to go by|its only earlier rollback|the median of its last \d+ '
                     r'rollbacks)\)\.', failed), failed
    assert 'Service is restored.' in restored and 'previous version (1.0.0)' in restored
    assert re.search(r'At \d\d:\d\d UTC on \d+ \w+ \d{4}, Demo shop was running', restored), restored
    assert re.search(r'How long the impact lasted: (less than a minute|about \d+ minutes?)\.', restored), restored

    # plain words only: nothing of the failure's technical detail, no host, no secret
    on_call = mails_to(smtp, ONCALL, first)
    assert [m['message']['X-Failsafe-Event'] for m in on_call] == ['deploy_failed', 'rolled_back']
    technical = on_call[0]['message'].get_body(('plain',)).get_content()
    assert '503' in technical and 'unhealthy' in technical                # the on-call mail has the detail
    for text in bodies + subjects:
        for word in ('503', 'unhealthy', 'status_code', 'Traceback', 'localhost', '127.0.0.1', 'health',
                     'failsafe.deploy', 'verify', 'task', EXTRA_SECRET, SMTP_PASSWORD, d.dir):
            assert word not in text, (word, text)
    assert EXTRA_SECRET not in ''.join(m['raw'].decode('utf-8', 'replace') for m in smtp.messages)

    # the stakeholders' Slack channel: the same notices, in order; the on-call channel: the alerts only
    assert stakeholder_slack.rejected == [] and oncall_slack.rejected == []
    assert [r['json']['text'] for r in stakeholder_slack.received] == [
        m['message']['Subject'] for m in mails_to(smtp, STAKEHOLDERS)]
    assert 'How long the impact lasted' in stakeholder_slack.received[-1]['json']['blocks'][0]['text']['text']
    slack_notices = json.dumps([r['json'] for r in stakeholder_slack.received])
    assert not [w for w in ('503', 'unhealthy', 'localhost', EXTRA_SECRET, SLACK_TOKEN) if w in slack_notices]
    assert [r['json']['text'].split(':')[0] for r in oncall_slack.received] == ['Deploy failed', 'Rolled back']
    assert SLACK_TOKEN not in bad.stdout
