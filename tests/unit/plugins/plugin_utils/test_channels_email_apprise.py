# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The email channel against a real SMTP server (aiosmtpd with STARTTLS and AUTH, ``smtp_server.py``), the Apprise
channel against a local HTTP receiver (Apprise's ``json://`` URL; it stands in for the services Apprise reaches),
and the replay of what a channel never received."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import io
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _channels, _replay
from ansible_collections.failsafe.deploy.plugins.plugin_utils._alerts import (
    AlertDispatcher, SpoolSender, delivery_path)
from ansible_collections.failsafe.deploy.plugins.plugin_utils._channels import (
    AppriseChannel, EmailChannel, build_channels)
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor

# a local HTTP server standing in for a service reached through Apprise (``json://`` posts JSON to it)
from ansible_collections.failsafe.deploy.tests.helpers import Receiver as JsonReceiver
from ansible_collections.failsafe.deploy.tests.requires import require_module
from ansible_collections.failsafe.deploy.tests.unit.plugins.plugin_utils.smtp_server import (
    SMTP_PASSWORD, SMTP_USER, SmtpServer, free_port)
from ansible_collections.failsafe.deploy.tests.unit.plugins.plugin_utils.test_channels import (
    FAILED, ROLLBACK_FAILED, ROLLED_BACK, SLACK_TOKEN, Receiver, fast)

try:
    # Imported once, with its service plugins loaded (on first use of a URL), when the module is collected:
    # ansible-test units runs every test in a forked process, where the channel's own import and the loading of
    # the plugins (about half a second of CPU) would be made again by each test.
    import apprise as _apprise
    _apprise.Apprise().add('json://127.0.0.1:1/')
except ImportError:
    pass  # the Apprise tests end with the reason (require_module)


@pytest.fixture
def smtp(tmp_path):
    server = SmtpServer(str(tmp_path))
    yield server
    server.close()


def email_channel(server, **kwargs):
    options = dict(host='127.0.0.1', port=server.port, sender='failsafe@example.org',
                   recipients=['ops@example.org', 'oncall@example.org'], username=SMTP_USER, password=SMTP_PASSWORD,
                   ca_file=server.cert, redactor=Redactor())
    options.update(fast(timeout=3.0, time_limit=6.0))
    options.update(kwargs)
    return EmailChannel(**options)


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def everything_written(directory):
    text = ''
    for root, dummy, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), errors='replace') as handle:
                text += handle.read()
    return text


# Email -------------------------------------------------------------------------------------------------------

def test_given_starttls_and_auth_when_a_deploy_fails_then_the_server_gets_the_incident_and_no_file_holds_the_password(
        smtp, tmp_path):
    spool_path = str(tmp_path / 'incidents' / 'alerts.jsonl')
    dispatcher = AlertDispatcher(spool=SpoolSender(spool_path), channels=[email_channel(smtp)])
    failed = dict(FAILED, evidence={'stderr': '<b>500</b> & more'})
    dispatcher.send(failed)
    dispatcher.send(ROLLBACK_FAILED)
    assert dispatcher.flush()

    assert len(smtp.messages) == 2
    first, second = smtp.messages
    msg = first['message']
    assert msg['Subject'] == '[failsafe.deploy] Deploy failed: deploy 3.0.0 on web1'
    assert second['message']['Subject'] == '[failsafe.deploy] ROLLBACK FAILED: deploy 3.0.0 on web1'
    assert msg['From'] == 'failsafe@example.org' and msg['To'] == 'ops@example.org, oncall@example.org'
    assert first['rcpt_tos'] == ['ops@example.org', 'oncall@example.org']
    assert msg['X-Failsafe-Event'] == 'deploy_failed' and msg['X-Failsafe-Incident'] == 'inc-1'
    assert msg['Message-ID'] == '<%s@failsafe.deploy>' % dispatcher.records[0]['alert_id']
    text = msg.get_body(('plain',)).get_content()
    for expected in ("deploy failed on web1 at task 'health check'", 'Release:', '3.0.0', 'Previous release:',
                     'Cause:', 'health', 'health check failed: HTTP 500'):
        assert expected in text
    page = msg.get_body(('html',)).get_content()
    assert '&lt;b&gt;500&lt;/b&gt; &amp; more' in page and '<b>500</b>' not in page   # escaped
    # AUTH was used, over TLS, and the messages arrived over TLS
    assert smtp.logins and all(ok and tls and login == SMTP_USER for dummy, login, ok, tls in smtp.logins)
    assert all(m['tls'] and m['user'] == SMTP_USER for m in smtp.messages)

    ledger = read_jsonl(delivery_path(spool_path))
    assert [(r['event'], r['channel'], r['status']) for r in ledger] == [
        ('deploy_failed', 'email', 'delivered'), ('rollback_failed', 'email', 'delivered')]
    assert [a['channels'] for a in read_jsonl(spool_path)] == [['email'], ['email']]
    assert [r['email'] for r in dispatcher.records] == ['delivered', 'delivered']
    assert SMTP_PASSWORD not in everything_written(str(tmp_path / 'incidents'))
    assert SMTP_PASSWORD not in json.dumps(dispatcher.records)


def test_given_a_wrong_password_then_nothing_is_retried_and_the_error_never_holds_it(smtp):
    channel = email_channel(smtp, password='WrongPassw0rd!!')
    result = channel.send(FAILED)
    assert not result.ok and result.attempts == 1 and result.status == 535
    assert 'authentication failed' in result.error and 'WrongPassw0rd' not in result.error
    assert smtp.messages == []


def test_given_an_untrusted_certificate_then_no_password_and_no_message_is_sent(smtp):
    channel = email_channel(smtp, ca_file=None)        # the system's CAs do not know the test certificate
    result = channel.send(FAILED)
    assert not result.ok and 'TLS' in result.error and result.attempts == 1
    assert smtp.logins == [] and smtp.messages == []


@pytest.mark.filterwarnings('ignore:Requiring AUTH while not requiring TLS')
def test_given_no_starttls_and_a_remote_server_then_the_password_is_never_sent_in_clear_text(tmp_path):
    """Given email_starttls off and a server that is not this machine (another loopback address stands in for it)
    that would take AUTH in clear text, then the channel refuses before AUTH: no login, no message."""
    server = SmtpServer(str(tmp_path), hostname='127.0.0.2', tls=False)
    try:
        channel = email_channel(server, host='127.0.0.2', starttls=False, ca_file=None)
        result = channel.send(FAILED)
    finally:
        server.close()
    assert not result.ok and result.attempts == 1
    assert 'without TLS' in result.error and 'email_starttls' in result.error
    assert server.logins == [] and server.messages == []


def test_committed_deploys_send_no_email(smtp):
    assert email_channel(smtp).send(dict(FAILED, event='deploy_committed')) is None
    assert smtp.messages == []


def test_subject_names_at_most_three_hosts_on_one_line():
    hosts = ['web%d' % i for i in range(7)]
    subject = _channels.email_subject(dict(ROLLED_BACK, hosts=hosts, per_host=None, releases=['3.0.0\nX: y']))
    assert subject == '[failsafe.deploy] Rolled back: deploy 3.0.0 X: y on web0, web1, web2 and 4 more'


@pytest.fixture
def silent_smtp():
    """A port that accepts connections and never says a word: a server that hangs."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def test_given_an_smtp_server_that_never_answers_then_it_costs_at_most_the_time_limit_and_the_ledger_says_failed(
        silent_smtp, tmp_path):
    spool_path = str(tmp_path / 'alerts.jsonl')
    channel = EmailChannel('127.0.0.1', 'failsafe@example.org', ['ops@example.org'], port=silent_smtp,
                           username=SMTP_USER, password=SMTP_PASSWORD, timeout=0.4, retries=10, backoff=0.05,
                           time_limit=1.2)
    dispatcher = AlertDispatcher(spool=SpoolSender(spool_path), channels=[channel])
    start = time.monotonic()
    for payload in (FAILED, ROLLED_BACK):
        dispatcher.send(payload)
    assert dispatcher.flush()
    elapsed = time.monotonic() - start
    assert elapsed < 1.2 + 0.6, elapsed
    assert [e['event'] for e in read_jsonl(spool_path)] == ['deploy_failed', 'rolled_back']
    ledger = read_jsonl(delivery_path(spool_path))
    assert [(r['channel'], r['status']) for r in ledger] == [('email', 'failed'), ('email', 'failed')]
    assert all('time' in r['error'] for r in ledger)
    problems = dispatcher.problems()
    assert [p[0] for p in problems] == ['email', 'email']
    assert SMTP_PASSWORD not in everything_written(str(tmp_path)) + repr(problems)


def test_a_refused_connection_fails_fast():
    channel = EmailChannel('127.0.0.1', 'a@example.org', ['b@example.org'], port=free_port(), **fast(time_limit=2))
    start = time.monotonic()
    result = channel.send(FAILED)
    assert not result.ok and 'connection failed' in result.error and time.monotonic() - start < 2.5


def test_email_needs_a_sender_and_recipients_and_says_which_setting_is_missing():
    said = []
    channels = build_channels(email={'host': 'smtp.example.org', 'sender': None, 'recipients': []}, warn=said.append)
    assert channels == [] and said == ['email_host is set but email_from and email_to is not: the email channel '
                                       'is off']


# Apprise -----------------------------------------------------------------------------------------------------

APPRISE_TOKEN = 'ApPr1seT0kenInThePath'


def test_given_apprise_urls_then_every_url_gets_the_alert(tmp_path):
    require_module('apprise', 'apprise is missing (requirements-dev.txt)')
    first, second = JsonReceiver(), JsonReceiver()
    try:
        urls = 'json://127.0.0.1:%d/hook/%s\njson://127.0.0.1:%d/other' % (first.port, APPRISE_TOKEN, second.port)
        redactor = Redactor()
        channels = build_channels(apprise_urls=urls, redactor=redactor, **fast())
        assert [c.name for c in channels] == ['apprise']
        assert channels[0].send(FAILED).ok
    finally:
        first.close()
        second.close()
    for receiver in (first, second):
        assert len(receiver.received) == 1
        body = receiver.received[0]['json']
        assert body['title'] == 'Deploy failed: deploy 3.0.0'
        assert "deploy failed on web1 at task 'health check'" in body['message']
    assert APPRISE_TOKEN not in redactor.text('error at json://127.0.0.1:%d/hook/%s' % (first.port, APPRISE_TOKEN))
    assert APPRISE_TOKEN not in repr(channels[0])


def test_given_apprise_cannot_reach_its_url_then_the_failure_is_bounded_and_names_no_url():
    apprise = require_module('apprise', 'apprise is missing (requirements-dev.txt)')
    # Apprise loads its service plugins on first use, which takes seconds on a busy machine: done before the clock
    # starts, so that the time measured is the channel's attempts
    apprise.Apprise().add('json://127.0.0.1:1/')
    channel = AppriseChannel('json://127.0.0.1:%d/hook/%s' % (free_port(), APPRISE_TOKEN),
                             redactor=Redactor(), **fast(retries=1, time_limit=3))
    start = time.monotonic()
    result = channel.send(FAILED)
    assert not result.ok and result.attempts == 2 and time.monotonic() - start < 3.5
    assert APPRISE_TOKEN not in result.error


SENDING_CHILD = """
import sys, threading
from ansible_collections.failsafe.deploy.plugins.plugin_utils._channels import AppriseChannel
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor
channel = AppriseChannel(sys.argv[1], redactor=Redactor(), timeout=20.0, retries=0, time_limit=30.0)
threading.Thread(target=channel.send, args=({'event': 'deploy_failed', 'at': 'now'},), daemon=True).start()
sys.stdin.readline()  # the parent has seen the connection: the send is in flight
"""


def test_given_apprise_is_sending_when_the_run_ends_then_the_interpreter_does_not_wait_for_it():
    """Apprise 2 sends from a pool thread the interpreter joins at its exit (for a service time limit, on by
    default, or its parallel mode): a send in flight would hold the run past alert_wait_limit, up to the channel's
    timeout. The channel makes it send from the calling thread, the channel's daemon thread."""
    require_module('apprise', 'apprise is missing (requirements-dev.txt)')
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(4)
    listener.settimeout(60)
    url = 'json://127.0.0.1:%d/hook' % listener.getsockname()[1]
    child = subprocess.Popen([sys.executable, '-c', SENDING_CHILD, url], stdin=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        conn, dummy = listener.accept()  # connected, waiting for an answer that never comes (20 s per attempt)
        try:
            child.stdin.write('exit\n')
            child.stdin.flush()
            start = time.monotonic()
            child.wait(timeout=60)
            waited = time.monotonic() - start
        finally:
            conn.close()
    finally:
        listener.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    assert waited < 10.0, waited  # far from the 20 s the send could still take


def test_given_a_malformed_apprise_url_then_the_channel_fails_without_raising():
    require_module('apprise', 'apprise is missing (requirements-dev.txt)')
    result = AppriseChannel('no-such-scheme://x', redactor=Redactor(), **fast()).send(FAILED)
    assert not result.ok and 'not understood' in result.error and result.attempts == 1


def test_given_apprise_is_not_installed_then_one_clear_warning_and_no_channel(monkeypatch):
    monkeypatch.setattr(_channels, 'apprise_module', lambda: None)
    said = []
    channels = build_channels(apprise_urls='json://127.0.0.1:1/' + APPRISE_TOKEN, warn=said.append)
    assert channels == [] and said == [_channels.APPRISE_MISSING]
    assert 'pip install apprise' in said[0] and APPRISE_TOKEN not in said[0]


# Replay ------------------------------------------------------------------------------------------------------

def test_given_the_smtp_server_down_at_alert_time_when_it_is_up_then_replay_delivers_once_and_a_second_replay_nothing(
        tmp_path):
    spool_path = str(tmp_path / 'incidents' / 'alerts.jsonl')
    slack = Receiver('slack')
    port = free_port()                       # nothing listens there yet: the mail server is down
    env = {'FAILSAFE_EMAIL_HOST': '127.0.0.1', 'FAILSAFE_EMAIL_PORT': str(port),
           'FAILSAFE_EMAIL_FROM': 'failsafe@example.org', 'FAILSAFE_EMAIL_TO': 'ops@example.org',
           'FAILSAFE_EMAIL_USERNAME': SMTP_USER, 'FAILSAFE_EMAIL_PASSWORD': SMTP_PASSWORD,
           'FAILSAFE_SLACK_WEBHOOK_URL': slack.url, 'FAILSAFE_CHANNEL_TIMEOUT': '1'}
    server = None
    try:
        redactor = Redactor()
        channels = _replay.channels_from(_replay.env_getter(env), redactor, time_limit=2.0)
        assert sorted(channels) == ['email', 'slack']
        dispatcher = AlertDispatcher(spool=SpoolSender(spool_path), channels=list(channels.values()))
        dispatcher.send(FAILED)
        dispatcher.send(ROLLED_BACK)
        assert dispatcher.flush()
        assert [(r['slack'], r['email']) for r in dispatcher.records] == [('delivered', 'failed')] * 2
        assert len(slack.received) == 2

        # Given the mail server up again, with the certificate the operator's CA file trusts
        server = SmtpServer(str(tmp_path), port=port)
        env['FAILSAFE_EMAIL_CA_FILE'] = server.cert
        out = io.StringIO()
        assert _replay.main([spool_path], environ=env, out=out) == 0
        assert [m['message']['X-Failsafe-Event'] for m in server.messages] == ['deploy_failed', 'rolled_back']
        assert all(m['tls'] and m['user'] == SMTP_USER for m in server.messages)
        assert len(slack.received) == 2                  # Slack had them: not sent again
        assert 'failsafe replay: 2 delivered, 0 failed' in out.getvalue()
        # the replayed message keeps the alert's Message-ID, so a mailbox can tell it from a new alert
        assert server.messages[0]['message']['Message-ID'] == '<%s@failsafe.deploy>' % dispatcher.records[0][
            'alert_id']

        again = io.StringIO()
        assert _replay.main([spool_path], environ=env, out=again) == 0
        assert len(server.messages) == 2 and len(slack.received) == 2
        assert 'failsafe replay: 0 delivered, 0 failed, 0 pending' in again.getvalue()
        ledger = read_jsonl(delivery_path(spool_path))
        assert [(r['channel'], r['status'], r['replayed']) for r in ledger if r['channel'] == 'email'] == [
            ('email', 'failed', False), ('email', 'failed', False),
            ('email', 'delivered', True), ('email', 'delivered', True)]
        written = everything_written(str(tmp_path / 'incidents')) + out.getvalue() + again.getvalue()
        assert SMTP_PASSWORD not in written and SLACK_TOKEN not in written
    finally:
        slack.close()
        if server is not None:
            server.close()


def test_replay_is_a_command_the_operator_can_run(tmp_path):
    spool_path = str(tmp_path / 'alerts.jsonl')
    receiver = JsonReceiver()
    try:
        url = 'http://127.0.0.1:%d/hook/%s' % (receiver.port, APPRISE_TOKEN)
        # the webhook was down when the alert was spooled: no ledger line says it arrived
        SpoolSender(spool_path).send(dict(FAILED, alert_id='a1', channels=['webhook']))
        env = dict(os.environ, FAILSAFE_WEBHOOK_URL=url, PYTHONPATH=os.pathsep.join(sys.path))
        command = [sys.executable, '-m', 'ansible_collections.failsafe.deploy.plugins.plugin_utils._replay', spool_path]
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    finally:
        receiver.close()
    assert first.returncode == 0, first.stdout + first.stderr
    assert 'delivered  webhook    deploy_failed a1' in first.stdout
    assert [r['json']['alert_id'] for r in receiver.received] == ['a1']
    assert 'channels' not in receiver.received[0]['json']
    assert second.returncode == 0 and '0 delivered' in second.stdout
    assert APPRISE_TOKEN not in first.stdout + first.stderr + second.stdout + second.stderr


def test_replay_lists_without_sending_and_names_channels_not_configured(tmp_path):
    spool_path = str(tmp_path / 'alerts.jsonl')
    SpoolSender(spool_path).send(dict(FAILED, alert_id='a1', channels=['pagerduty']))
    SpoolSender(spool_path).send({'event': 'deploy_failed'})     # spooled before alerts had ids: left alone
    out = io.StringIO()
    assert _replay.main([spool_path], environ={}, out=out) == 0
    assert 'skipped    pagerduty  deploy_failed a1: the channel is not configured here' in out.getvalue()
    assert _replay.main([str(tmp_path / 'none.jsonl')], environ={}, out=io.StringIO()) == 2
