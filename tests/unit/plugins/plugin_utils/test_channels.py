# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Alert channels against real HTTP receivers on 127.0.0.1.

The receivers stand in for the real services (PagerDuty Events API v2, a Slack incoming webhook, a Microsoft Teams
Workflows webhook): they check each provider's documented payload rules and limits and answer as the service does
(PagerDuty 202 or 400, Slack 200 ``ok``, Teams 202), or with scripted statuses, or not at all.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import http.server
import json
import os
import socket
import threading
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils._alerts import AlertDispatcher, SpoolSender
from ansible_collections.failsafe.deploy.plugins.plugin_utils._channels import (
    PagerDutyChannel, SlackChannel, TeamsChannel, build_channels)
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor

ROUTING_KEY = 'R0UTINGKEY0123456789abcdefghijklm'
SLACK_TOKEN = 'XoXbSlackT0kenSecret'
TEAMS_SIG = 'TeamsSigSecret9876'


def pagerduty_problems(path, body):
    """The Events API v2 rules (developer.pagerduty.com, Events API v2 overview and change events)."""
    problems = []
    if body.get('routing_key') != ROUTING_KEY:
        problems.append('routing_key')
    if path == '/v2/enqueue':
        action = body.get('event_action')
        if action not in ('trigger', 'acknowledge', 'resolve'):
            problems.append('event_action')
        dedup = body.get('dedup_key')
        if action != 'trigger' and not dedup:
            problems.append('dedup_key required for %s' % action)
        if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
            problems.append('dedup_key > 255')
        if action == 'trigger':
            payload = body.get('payload') or {}
            if any(value is None for value in payload.values()):
                problems.append('null field in payload')
            if not payload.get('summary') or len(payload['summary']) > 1024:
                problems.append('payload.summary')
            if not payload.get('source'):
                problems.append('payload.source')
            if payload.get('severity') not in ('critical', 'error', 'warning', 'info'):
                problems.append('payload.severity')
    elif path == '/v2/change/enqueue':
        payload = body.get('payload') or {}
        if not payload.get('summary') or len(payload['summary']) > 1024:
            problems.append('payload.summary')
    else:
        problems.append('path %s' % path)
    return problems


def slack_problems(body):
    """Slack: at most 50 blocks; section text at most 3,000 characters, fields at most 10 of 2,000; header
    plain_text at most 150."""
    problems = []
    blocks = body.get('blocks') or []
    if len(blocks) > 50:
        problems.append('%d blocks' % len(blocks))
    if not body.get('text'):
        problems.append('no fallback text')
    for block in blocks:
        text = (block.get('text') or {}).get('text')
        if block['type'] == 'section':
            if text is not None and len(text) > 3000:
                problems.append('section text %d' % len(text))
            fields = block.get('fields') or []
            if len(fields) > 10 or any(len(f['text']) > 2000 for f in fields):
                problems.append('fields')
            if text is None and not fields:
                problems.append('empty section')
        elif block['type'] == 'header' and len(text) > 150:
            problems.append('header %d' % len(text))
    return problems


def teams_problems(raw, body):
    """Teams Workflows: a message with one Adaptive Card attachment, card version 1.4 (1.5 is rejected), < 28 KB."""
    problems = []
    if len(raw) >= 28 * 1024:
        problems.append('%d bytes' % len(raw))
    if body.get('type') != 'message':
        problems.append('type')
    attachments = body.get('attachments') or []
    if len(attachments) != 1 or attachments[0].get('contentType') != 'application/vnd.microsoft.card.adaptive':
        problems.append('attachments')
    else:
        card = attachments[0].get('content') or {}
        if card.get('type') != 'AdaptiveCard' or card.get('version') != '1.4' or not card.get('body'):
            problems.append('card')
    return problems


class Receiver:
    """A real HTTP server standing in for one provider. ``kind`` picks the rules it checks; ``statuses`` scripts
    answers (then the provider's normal one); ``hang`` accepts connections and never answers."""

    def __init__(self, kind, statuses=(), hang=False):
        self.kind = kind
        self.received = []
        self.rejected = []
        self.statuses = list(statuses)
        self.lock = threading.Lock()
        self.hang = hang
        self.stop = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                if receiver.hang:
                    receiver.stop.wait(30)
                    return
                raw = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                body = json.loads(raw.decode('utf-8'))
                path = self.path.split('?')[0]
                if receiver.kind == 'pagerduty':
                    problems = pagerduty_problems(path, body)
                elif receiver.kind == 'slack':
                    problems = slack_problems(body) + ([] if SLACK_TOKEN in self.path else ['token'])
                else:
                    problems = teams_problems(raw, body) + ([] if TEAMS_SIG in self.path else ['sig'])
                with receiver.lock:
                    scripted = receiver.statuses.pop(0) if receiver.statuses else None
                    if problems:
                        receiver.rejected.append(problems)
                    else:
                        receiver.received.append({'path': path, 'json': body, 'size': len(raw)})
                if problems:
                    status, answer = 400, {'status': 'invalid event', 'errors': problems}
                elif scripted:
                    status, answer = scripted, {'status': 'scripted'}
                elif receiver.kind == 'pagerduty':
                    status, answer = 202, {'status': 'success', 'dedup_key': body.get('dedup_key')}
                elif receiver.kind == 'slack':
                    status, answer = 200, 'ok'
                else:
                    status, answer = 202, ''
                data = (answer if isinstance(answer, str) else json.dumps(answer)).encode('utf-8')
                self.send_response(status)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.base = 'http://127.0.0.1:%d' % port
        if kind == 'slack':
            self.url = self.base + '/services/T000/B000/' + SLACK_TOKEN
        elif kind == 'teams':
            self.url = self.base + '/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=' + TEAMS_SIG
        else:
            self.url = self.base
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made = []

    def make(kind, **kwargs):
        receiver = Receiver(kind, **kwargs)
        made.append(receiver)
        return receiver
    yield make
    for receiver in made:
        receiver.close()


def alert(event, severity, **extra):
    payload = {'event': event, 'severity': severity, 'at': '2026-11-28T23:30:00Z', 'time': 1.0,
               'incident_id': 'inc-1', 'run_id': 'run-42', 'releases': ['3.0.0'], 'previous_releases': ['1.0.0'],
               'playbook': '/play/deploy.yml', 'controller': 'ops@ctl', 'source': 'failsafe.deploy.auto_rollback'}
    payload.update(extra)
    return payload


FAILED = alert('deploy_failed', 'error', host='web1', task='health check', cause='health',
               message='health check failed: HTTP 500', summary="deploy failed on web1 at task 'health check'")
ROLLED_BACK = alert('rolled_back', 'warning', hosts=['web1'], outcome='rolled_back', per_host={'web1': 'ok'},
                    summary='deploy failed on web1; rolled back web1', duration=2.5)
ROLLBACK_FAILED = alert('rollback_failed', 'critical', hosts=['web1'], outcome='rollback_failed',
                        reason='verification failed on web1', summary='ROLLBACK FAILED on web1')


def fast(**kwargs):
    options = {'timeout': 1.0, 'retries': 2, 'time_limit': 3.0, 'backoff': 0.05}
    options.update(kwargs)
    return options


# PagerDuty ---------------------------------------------------------------------------------------------------

def test_pagerduty_trigger_then_resolve_with_one_dedup_key(receivers):
    """Given a failed deploy that rolled back, PagerDuty gets trigger (error), then resolve with the same key, and
    a change event for the deploy."""
    pd = receivers('pagerduty')
    channel = PagerDutyChannel(ROUTING_KEY, url=pd.base, **fast())
    assert channel.send(FAILED).ok
    assert channel.send(ROLLED_BACK).ok
    assert pd.rejected == []
    paths = [r['path'] for r in pd.received]
    assert paths == ['/v2/enqueue', '/v2/enqueue', '/v2/change/enqueue']
    trigger, resolve = pd.received[0]['json'], pd.received[1]['json']
    assert trigger['event_action'] == 'trigger' and trigger['payload']['severity'] == 'error'
    assert resolve['event_action'] == 'resolve'
    assert trigger['dedup_key'] == resolve['dedup_key']
    assert 'deploy' in trigger['dedup_key'] and '3.0.0' in trigger['dedup_key'] and 'run-42' in trigger['dedup_key']


def test_pagerduty_resolve_sent_later_by_a_new_channel_resolves_the_incident_of_the_run(receivers):
    """Given the trigger sent during the run, when the resolve is sent later by another channel object (a replay
    of the spool, a recovery run), then it carries the trigger's dedup_key: one incident, resolved, not two."""
    pd = receivers('pagerduty')
    during = PagerDutyChannel(ROUTING_KEY, url=pd.base, **fast())
    later = PagerDutyChannel(ROUTING_KEY, url=pd.base, **fast())     # both alive: two senders, as in two processes
    assert during.send(FAILED).ok
    assert later.send(dict(ROLLED_BACK, at='2026-11-29T00:10:00Z', alert_id='a-2')).ok
    assert pd.rejected == []
    events = [r['json'] for r in pd.received if r['path'] == '/v2/enqueue']
    assert [e['event_action'] for e in events] == ['trigger', 'resolve']
    assert events[0]['dedup_key'] == events[1]['dedup_key']


def test_pagerduty_critical_retrigger_when_the_rollback_fails(receivers):
    pd = receivers('pagerduty')
    channel = PagerDutyChannel(ROUTING_KEY, url=pd.base, **fast())
    channel.send(FAILED)
    channel.send(ROLLBACK_FAILED)
    events = [r['json'] for r in pd.received if r['path'] == '/v2/enqueue']
    assert [(e['event_action'], e['payload']['severity']) for e in events] == [('trigger', 'error'),
                                                                               ('trigger', 'critical')]
    assert len({e['dedup_key'] for e in events}) == 1
    assert pd.received[-1]['path'] == '/v2/change/enqueue'


def test_pagerduty_limits_hold_for_long_values(receivers):
    pd = receivers('pagerduty')
    channel = PagerDutyChannel(ROUTING_KEY, url=pd.base, **fast())
    long_alert = dict(FAILED, playbook='/p/' + 'd' * 400 + '.yml', releases=['r' * 300],
                      summary='x' * 5000, run_id='run-' + 'z' * 300)
    assert channel.send(long_alert).ok, pd.rejected
    body = pd.received[0]['json']
    assert len(body['dedup_key']) <= 255 and len(body['payload']['summary']) <= 1024
    assert channel.send(dict(ROLLED_BACK, playbook=long_alert['playbook'], releases=long_alert['releases'],
                             run_id=long_alert['run_id'])).ok
    assert pd.received[1]['json']['dedup_key'] == body['dedup_key']


def test_pagerduty_sends_no_null_fields_when_the_run_knows_little(receivers):
    pd = receivers('pagerduty')
    channel = PagerDutyChannel(ROUTING_KEY, url=pd.base, **fast())
    sparse = {'event': 'deploy_failed', 'severity': 'error', 'releases': [], 'run_id': None, 'incident_id': 'inc-2'}
    assert channel.send(sparse).ok, pd.rejected
    assert pd.received[0]['json']['dedup_key']


def test_pagerduty_committed_deploy_is_a_change_event_only(receivers):
    pd = receivers('pagerduty')
    channel = PagerDutyChannel(ROUTING_KEY, url=pd.base, **fast())
    assert channel.send(alert('deploy_committed', 'info', summary='deploy 1.0.0 committed')).ok
    assert [r['path'] for r in pd.received] == ['/v2/change/enqueue']


def test_pagerduty_400_is_not_retried(receivers):
    pd = receivers('pagerduty')
    channel = PagerDutyChannel('wrong-key-0000', url=pd.base, **fast())
    result = channel.send(FAILED)
    assert not result.ok and result.status == 400 and result.attempts == 1
    assert len(pd.rejected) == 1


@pytest.mark.parametrize('status', [429, 500, 503])
def test_pagerduty_429_and_5xx_are_retried(receivers, status):
    pd = receivers('pagerduty', statuses=[status, status])
    channel = PagerDutyChannel(ROUTING_KEY, url=pd.base, **fast())
    result = channel.send(FAILED)
    assert result.ok and result.attempts == 3
    assert len(pd.received) == 3


def test_retries_give_up_and_the_error_names_no_key(receivers):
    pd = receivers('pagerduty', statuses=[500] * 10)
    channel = PagerDutyChannel(ROUTING_KEY, url=pd.base, **fast(retries=1))
    result = channel.send(FAILED)
    assert not result.ok and result.attempts == 2 and result.status == 500
    assert ROUTING_KEY not in (result.error or '')


# Slack -------------------------------------------------------------------------------------------------------

def many_hosts(count=300):
    return ['web%03d.example.internal' % i for i in range(count)]


def test_slack_block_kit_within_limits_for_300_hosts_with_long_errors(receivers):
    slack = receivers('slack')
    channel = SlackChannel(slack.url, **fast())
    hosts = many_hosts()
    huge = 'Traceback (most recent call last):\n' + 'E' * 20000
    assert channel.send(dict(FAILED, message=huge, evidence={'stderr': huge})).ok, slack.rejected
    done = dict(ROLLBACK_FAILED, hosts=hosts, per_host=dict((h, 'failed: ' + 'x' * 200) for h in hosts),
                reason=huge, summary='ROLLBACK FAILED on ' + ', '.join(hosts))
    assert channel.send(done).ok, slack.rejected
    assert slack.rejected == []
    text = json.dumps(slack.received[1]['json'])
    assert 'more hosts' in text and 'web000' in text
    assert all(len(r['json']['blocks']) <= 50 for r in slack.received)


def test_slack_escapes_markup(receivers):
    slack = receivers('slack')
    SlackChannel(slack.url, **fast()).send(dict(FAILED, message='<!channel> a & b'))
    assert '<!channel>' not in json.dumps(slack.received[0]['json'])


# Teams -------------------------------------------------------------------------------------------------------

def test_teams_adaptive_card_under_28_kb_for_300_hosts_with_long_errors(receivers):
    teams = receivers('teams')
    channel = TeamsChannel(teams.url, **fast())
    hosts = many_hosts()
    huge = 'E' * 60000
    done = dict(ROLLBACK_FAILED, hosts=hosts, per_host=dict((h, 'failed: ' + 'x' * 200) for h in hosts),
                reason=huge, summary='ROLLBACK FAILED on ' + ', '.join(hosts))
    assert channel.send(done).ok, teams.rejected
    assert channel.send(dict(FAILED, message=huge)).ok, teams.rejected
    assert teams.rejected == [] and all(r['size'] < 28 * 1024 for r in teams.received)
    card = teams.received[0]['json']['attachments'][0]['content']
    assert card['version'] == '1.4' and 'more hosts' in json.dumps(card)


def test_teams_card_is_shrunk_under_28_kb_when_the_error_text_is_not_ascii(receivers):
    """Given an error in Cyrillic (six bytes a character once escaped in JSON) from 300 hosts, the card is shrunk
    (the details, then the hosts) until Teams takes it, and still starts with the error's first words."""
    teams = receivers('teams')
    channel = TeamsChannel(teams.url, **fast())
    error = '\u041e\u0448\u0438\u0431\u043a\u0430: \u0444\u0430\u0439\u043b config.json \u043d\u0435 ' \
            '\u043d\u0430\u0439\u0434\u0435\u043d; '
    hosts = many_hosts()
    done = dict(ROLLBACK_FAILED, hosts=hosts, per_host=dict((h, 'failed: ' + error * 3) for h in hosts),
                reason=error * 2000)
    assert channel.send(done).ok, teams.rejected
    assert channel.send(dict(FAILED, message=error * 2000)).ok, teams.rejected
    assert teams.rejected == [] and all(r['size'] < 28 * 1024 for r in teams.received)
    first, second = [r['json']['attachments'][0]['content']['body'] for r in teams.received]
    assert 'web000' in json.dumps(first) and 'more hosts' in json.dumps(first)
    details = [block['text'] for block in second if block.get('fontType') == 'Monospace']
    assert len(details) == 1 and details[0].startswith(error * 3)
    assert details[0].endswith('... (cut)')


# Every channel -----------------------------------------------------------------------------------------------

def test_a_receiver_that_never_answers_costs_at_most_the_time_limit(receivers):
    """Given three channels at an address that accepts and never answers, each gives up within its total time
    limit, the spool still holds every alert, and the warnings name the channel, never its URL or key."""
    hangs = [receivers(kind, hang=True) for kind in ('pagerduty', 'slack', 'teams')]
    redactor = Redactor()
    channels = build_channels(pagerduty_routing_key=ROUTING_KEY, pagerduty_url=hangs[0].base,
                              slack_webhook_url=hangs[1].url, teams_webhook_url=hangs[2].url, redactor=redactor,
                              timeout=0.4, retries=5, time_limit=1.0, backoff=0.05)
    spool_path = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'failsafe-test-spool-%d.jsonl' % os.getpid())
    try:
        dispatcher = AlertDispatcher(spool=SpoolSender(spool_path), channels=channels)
        start = time.monotonic()
        for payload in (FAILED, ROLLED_BACK):
            dispatcher.send(payload)
        assert time.monotonic() - start < 0.3          # sending never waits for a channel
        assert dispatcher.flush()
        elapsed = time.monotonic() - start
        assert elapsed < 2.0, elapsed                   # channels run side by side, each within 1 s
        with open(spool_path) as f:
            assert [json.loads(line)['event'] for line in f] == ['deploy_failed', 'rolled_back']
    finally:
        if os.path.exists(spool_path):
            os.unlink(spool_path)
    problems = dispatcher.problems()
    assert sorted({p[0] for p in problems}) == ['pagerduty', 'slack', 'teams']
    everything = json.dumps([list(p[:2]) + [p[2].error] for p in problems] + dispatcher.records)
    for secret in (ROUTING_KEY, SLACK_TOKEN, TEAMS_SIG, hangs[1].url, hangs[2].url):
        assert secret not in everything
    assert 'time limit' in everything or 'timed out' in everything


def test_unreachable_port_fails_fast_and_quietly():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    channel = SlackChannel('http://127.0.0.1:%d/services/%s' % (port, SLACK_TOKEN), **fast(time_limit=1.0))
    start = time.monotonic()
    result = channel.send(FAILED)
    assert not result.ok and time.monotonic() - start < 1.5
    assert SLACK_TOKEN not in result.error and 'connection failed' in result.error


def test_time_limit_is_shared_by_every_alert_of_the_run(receivers):
    hang = receivers('slack', hang=True)
    # the first alert's second attempt waits for all that is left of the limit (0.4 + a pause + the rest): the
    # second alert finds none, however slow the machine
    channel = SlackChannel(hang.url, **fast(timeout=0.4, time_limit=0.8))
    start = time.monotonic()
    first = channel.send(FAILED)
    second = channel.send(ROLLED_BACK)
    assert not first.ok and not second.ok and second.attempts == 0
    assert time.monotonic() - start < 1.3
    assert 'time limit' in second.error
