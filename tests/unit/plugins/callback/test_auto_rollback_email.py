# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The callback wires the email and Apprise channels from its options and FAILSAFE_* environment variables.

Driven with the fake objects and the stand-in rollback child of test_auto_rollback.py; the email goes to a real SMTP
server on 127.0.0.1 (aiosmtpd with STARTTLS and AUTH, standing in for the operator's mail server).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

import pytest

from ansible_collections.failsafe.deploy.plugins.callback import auto_rollback
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _channels
from ansible_collections.failsafe.deploy.tests.unit.plugins.callback.test_auto_rollback import (  # pylint: disable=unused-import
    FakeStats, env, make_callback, open_and_fail, reports, spool,
)
from ansible_collections.failsafe.deploy.tests.unit.plugins.plugin_utils.smtp_server import (
    SMTP_PASSWORD, SMTP_USER, SmtpServer)


@pytest.fixture
def smtp(tmp_path):
    server = SmtpServer(str(tmp_path))
    yield server
    server.close()


def test_given_email_settings_in_the_environment_when_a_deploy_fails_and_rolls_back_then_two_mails_and_no_password(
        env, smtp, monkeypatch):
    # pylint: disable=redefined-outer-name
    for name, value in (('HOST', '127.0.0.1'), ('PORT', str(smtp.port)), ('FROM', 'failsafe@example.org'),
                        ('TO', 'ops@example.org,oncall@example.org'), ('USERNAME', SMTP_USER),
                        ('PASSWORD', SMTP_PASSWORD), ('CA_FILE', smtp.cert)):
        monkeypatch.setenv('FAILSAFE_EMAIL_' + name, value)
    cb, display = make_callback(env)
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))

    assert [m['message']['X-Failsafe-Event'] for m in smtp.messages] == ['deploy_failed', 'rolled_back']
    assert all(m['tls'] and m['user'] == SMTP_USER for m in smtp.messages)
    assert smtp.messages[0]['rcpt_tos'] == ['ops@example.org', 'oncall@example.org']
    assert 'web1' in smtp.messages[0]['message']['Subject']
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert [a['email'] for a in data['alerts']] == ['delivered', 'delivered']
    ledger = [json.loads(line) for line in (env / 'reports' / 'alerts.delivery.jsonl').read_text().splitlines()]
    assert sorted((r['event'], r['status']) for r in ledger) == [('deploy_failed', 'delivered'),
                                                                 ('rolled_back', 'delivered')]
    written = display.text() + '\n'.join(display.warnings)
    for path in (env / 'reports').iterdir():
        written += path.read_text(errors='replace')
    assert SMTP_PASSWORD not in written


def test_given_apprise_urls_without_apprise_then_one_warning_and_the_run_goes_on(env, monkeypatch):
    # pylint: disable=redefined-outer-name
    monkeypatch.setattr(_channels, 'apprise_module', lambda: None)
    monkeypatch.setattr(auto_rollback, '_WARNED_ONCE', set())
    monkeypatch.setenv('FAILSAFE_APPRISE_URLS', 'json://127.0.0.1:1/SecretAppriseT0ken')
    cb, display = make_callback(env)
    cb.set_options(direct={'report_dir': str(env / 'reports'),   # options set again: still one warning
                           'ansible_playbook': str(env / 'bin' / 'ansible-playbook')})
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    said = [w for w in display.warnings if 'apprise' in w]
    assert len(said) == 1 and 'pip install apprise' in said[0]
    assert [a['event'] for a in spool(env)] == ['deploy_failed', 'rolled_back']
    assert 'SecretAppriseT0ken' not in display.text() + '\n'.join(display.warnings)
