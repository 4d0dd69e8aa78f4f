# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The stakeholder channels: the notices of ``_notices.py`` by email (a real SMTP server with STARTTLS and AUTH,
``smtp_server.py``) and to a Slack webhook of their own (a local receiver that checks Slack's payload rules,
``test_channels.py``); the on-call channels never get a notice, and the stakeholder channels never get an alert."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _notices
from ansible_collections.failsafe.deploy.plugins.plugin_utils._alerts import AlertDispatcher, SpoolSender
from ansible_collections.failsafe.deploy.plugins.plugin_utils._channels import build_channels
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor

from ansible_collections.failsafe.deploy.tests.unit.plugins.plugin_utils.smtp_server import (
    SMTP_PASSWORD, SMTP_USER, SmtpServer)
from ansible_collections.failsafe.deploy.tests.unit.plugins.plugin_utils.test_channels import (
    FAILED, Receiver, fast)

ONCALL = 'oncall@example.org'
STAKEHOLDERS = ['stakeholders@example.org', 'board@example.org']
FACTS = {'service': 'Web shop', 'releases': ['2.4.1'], 'previous_releases': ['2.4.0'], 'started': 1795960980,
         'failed': 1795961100, 'restored': 1795961540, 'incident_id': 'inc-1'}


def notice(kind):
    subject, text = _notices.render(kind, FACTS)
    return {'event': 'stakeholder_notice', 'notice': kind, 'notice_subject': subject, 'notice_text': text,
            'time': 1795961540.0, 'at': '2026-11-29T14:12:20Z', 'incident_id': 'inc-1'}


@pytest.fixture
def parts(tmp_path):
    """A real SMTP server, the on-call Slack receiver and the stakeholders' one, and every channel built from
    them as the callback builds them."""
    smtp = SmtpServer(str(tmp_path))
    oncall_slack, stakeholder_slack = Receiver('slack'), Receiver('slack')
    email = {'host': '127.0.0.1', 'port': smtp.port, 'sender': 'deploy@example.org', 'recipients': [ONCALL],
             'username': SMTP_USER, 'password': SMTP_PASSWORD, 'ca_file': smtp.cert}
    channels = build_channels(slack_webhook_url=oncall_slack.url, email=email, stakeholder_email_to=STAKEHOLDERS,
                              stakeholder_slack_webhook_url=stakeholder_slack.url, redactor=Redactor(),
                              **fast(timeout=3.0, time_limit=8.0))
    try:
        yield smtp, oncall_slack, stakeholder_slack, channels
    finally:
        for server in (smtp, oncall_slack, stakeholder_slack):
            server.close()


def test_given_a_notice_when_sent_to_the_stakeholder_email_channel_then_the_server_gets_it_in_plain_text(parts):
    smtp, dummy, dummy, channels = parts
    channel = [c for c in channels if c.name == 'stakeholders'][0]
    result = channel.send(notice('restored'))
    assert result is not None and result.ok, result
    assert len(smtp.messages) == 1
    got = smtp.messages[0]
    msg = got['message']
    assert got['rcpt_tos'] == STAKEHOLDERS and msg['To'] == ', '.join(STAKEHOLDERS)
    assert got['tls'] and got['user'] == SMTP_USER            # the same STARTTLS and AUTH as the on-call mail
    assert msg['Subject'] == 'Web shop: service restored' and msg['X-Failsafe-Notice'] == 'restored'
    assert not msg.is_multipart()                            # plain words, no HTML alternative
    body = msg.get_content()
    assert 'Service is restored.' in body and 'previous version (2.4.0)' in body
    assert 'How long the impact lasted: about 7 minutes. We had expected ' in body
    # an alert is not for stakeholders: nothing more reaches the server
    assert channel.send(FAILED) is None
    assert len(smtp.messages) == 1


def test_given_a_notice_when_sent_to_the_stakeholder_slack_channel_then_its_webhook_gets_subject_and_text(parts):
    dummy, oncall_slack, stakeholder_slack, channels = parts
    channel = [c for c in channels if c.name == 'stakeholders_slack'][0]
    result = channel.send(notice('failed'))
    assert result is not None and result.ok, result
    assert stakeholder_slack.rejected == [] and len(stakeholder_slack.received) == 1
    body = stakeholder_slack.received[0]['json']
    subject = 'Web shop: a problem with release 2.4.1, we are putting back the previous version'
    assert body['text'] == subject
    text = body['blocks'][0]['text']['text']
    assert text.startswith('*%s*\n' % subject) and 'putting back the previous version (2.4.0) now' in text
    assert channel.send(FAILED) is None
    assert len(stakeholder_slack.received) == 1 and oncall_slack.received == []


def test_notices_reach_the_stakeholders_only_and_alerts_the_on_call_channels_only(parts, tmp_path):
    smtp, oncall_slack, stakeholder_slack, channels = parts
    spool_path = str(tmp_path / 'alerts.jsonl')
    dispatcher = AlertDispatcher(spool=SpoolSender(spool_path), channels=channels)
    assert sorted(c.name for c in channels) == ['email', 'slack', 'stakeholders', 'stakeholders_slack']
    dispatcher.notify(notice('started'), only=['stakeholders', 'stakeholders_slack'])
    dispatcher.send(FAILED)
    assert dispatcher.flush()
    assert dispatcher.problems() == []

    stakeholder_mail = [m for m in smtp.messages if m['rcpt_tos'] == STAKEHOLDERS]
    oncall_mail = [m for m in smtp.messages if m['rcpt_tos'] == [ONCALL]]
    assert len(smtp.messages) == 2
    assert [m['message']['X-Failsafe-Notice'] for m in stakeholder_mail] == ['started']
    assert [m['message']['X-Failsafe-Event'] for m in oncall_mail] == ['deploy_failed']
    assert [r['json']['text'] for r in stakeholder_slack.received] == ['Web shop: release 2.4.1 is being deployed']
    assert [r['json']['text'].split(':')[0] for r in oncall_slack.received] == ['Deploy failed']
    assert oncall_slack.rejected == [] and stakeholder_slack.rejected == []
    # the spool is the record of alerts: it names the on-call channels only, and holds no notice
    with open(spool_path) as handle:
        spooled = [json.loads(line) for line in handle]
    assert [(a['event'], sorted(a['channels'])) for a in spooled] == [('deploy_failed', ['email', 'slack'])]
