# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Alert senders against a real HTTP server on 127.0.0.1 and a real spool file."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import socket
import stat
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils._alerts import (
    AlertDispatcher, SpoolSender, WebhookSender)
from ansible_collections.failsafe.deploy.tests.helpers import Receiver, free_port


@pytest.fixture
def receiver():
    servers = []

    def make(statuses=()):
        server = Receiver('/hook/SECRETPATH?token=t0k3n', statuses)
        servers.append(server)
        return server
    yield make
    for server in servers:
        server.close()


@pytest.fixture
def silent_server():
    """Accepts TCP connections (kernel backlog) but never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(('127.0.0.1', 0))
    sock.listen(16)
    yield 'http://127.0.0.1:%d/never' % sock.getsockname()[1]
    sock.close()


def free_port_url():
    return 'http://127.0.0.1:%d/hook?token=t0k3n' % free_port()


def test_webhook_posts_json(receiver):
    server = receiver()
    result = WebhookSender(server.url, timeout=2, retries=0).send({'event': 'deploy_failed', 'host': 'web1'})
    assert result.ok and result.attempts == 1 and result.status == 200
    assert server.received == [{'path': '/hook/SECRETPATH?token=t0k3n', 'type': 'application/json',
                                'json': {'event': 'deploy_failed', 'host': 'web1'}}]


def test_webhook_retries_on_500_then_succeeds(receiver):
    server = receiver([500, 503])
    sleeps = []
    sender = WebhookSender(server.url, timeout=2, retries=2, backoff=0.1, sleep=sleeps.append)
    result = sender.send({'event': 'rolled_back'})
    assert result.ok
    assert result.attempts == 3
    assert server.kinds() == ['rolled_back'] * 3
    assert sleeps == [0.1, 0.2]   # exponential backoff


def test_webhook_gives_up_after_retries_and_keeps_the_url_out_of_the_error(receiver):
    server = receiver([500, 500, 500, 500])
    result = WebhookSender(server.url, timeout=2, retries=1, backoff=0.01).send({'event': 'x'})
    assert not result.ok
    assert result.attempts == 2
    assert result.status == 500
    assert 'SECRETPATH' not in result.error and 't0k3n' not in result.error
    assert len(server.received) == 2


def test_webhook_does_not_retry_a_client_error(receiver):
    server = receiver([404])
    result = WebhookSender(server.url, timeout=2, retries=3, backoff=0.01).send({'event': 'x'})
    assert not result.ok and result.attempts == 1 and result.status == 404


def test_webhook_times_out_on_a_server_that_never_answers(silent_server):
    sender = WebhookSender(silent_server, timeout=0.4, retries=1, backoff=0.05)
    start = time.time()
    result = sender.send({'event': 'deploy_failed'})
    elapsed = time.time() - start
    assert not result.ok
    assert result.attempts == 2
    assert 'timed out' in result.error
    assert elapsed < sender.max_duration() + 1
    assert elapsed >= 0.8


def test_webhook_connection_refused_never_raises_nor_leaks():
    url = free_port_url()
    result = WebhookSender(url, timeout=1, retries=1, backoff=0.01).send({'event': 'x'})
    assert not result.ok and result.attempts == 2
    assert 't0k3n' not in result.error and url not in result.error
    assert 'WebhookSender' in repr(WebhookSender(url)) and url not in repr(WebhookSender(url))


def test_webhook_rejects_unserialisable_payload_without_raising(receiver):
    server = receiver()
    payload = {'event': 'x'}
    payload['self'] = payload   # circular: not JSON
    result = WebhookSender(server.url).send(payload)
    assert not result.ok and result.attempts == 0
    assert server.received == []


def test_spool_appends_fsynced_json_lines_with_private_mode(tmp_path):
    path = str(tmp_path / 'deep' / 'alerts.jsonl')
    spool = SpoolSender(path)
    assert spool.send({'event': 'deploy_failed', 'n': 1}).ok
    assert spool.send({'event': 'rolled_back', 'n': 2}).ok
    with open(path) as handle:
        lines = [json.loads(line) for line in handle]
    assert [line['event'] for line in lines] == ['deploy_failed', 'rolled_back']
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_spool_failure_is_reported_not_raised(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    result = SpoolSender(str(blocker / 'alerts.jsonl')).send({'event': 'x'})
    assert not result.ok and 'Error' in result.error


def test_dispatcher_delivers_in_order_and_spools_at_once(receiver, tmp_path):
    server = receiver([500])   # the first POST is retried: order must still hold
    spool_path = str(tmp_path / 'alerts.jsonl')
    dispatcher = AlertDispatcher(spool=SpoolSender(spool_path),
                                 webhook=WebhookSender(server.url, timeout=2, retries=2, backoff=0.05))
    for event in ('deploy_failed', 'deploy_failed_2', 'rolled_back'):
        dispatcher.send({'event': event})
        # the spool has the line before the webhook is done
        with open(spool_path) as handle:
            assert json.loads(handle.readlines()[-1])['event'] == event
    assert dispatcher.flush(timeout=10)
    assert server.kinds() == ['deploy_failed', 'deploy_failed', 'deploy_failed_2', 'rolled_back']
    assert [r['webhook'] for r in dispatcher.records] == ['delivered'] * 3
    assert dispatcher.problems() == []


def test_dispatcher_reports_a_dead_webhook_and_flush_is_bounded(tmp_path, silent_server):
    dispatcher = AlertDispatcher(spool=SpoolSender(str(tmp_path / 'a.jsonl')),
                                 webhook=WebhookSender(silent_server, timeout=0.3, retries=0))
    record = dispatcher.send({'event': 'deploy_failed'})
    start = time.time()
    assert dispatcher.flush(timeout=5)
    assert time.time() - start < 5
    assert record['spool'] == 'written' and record['webhook'] == 'failed'
    problems = dispatcher.problems()
    assert [(p[0], p[1]) for p in problems] == [('webhook', 'deploy_failed')]
    assert dispatcher.problems() == []   # handed out once


def test_dispatcher_flush_returns_false_when_time_is_up(silent_server):
    dispatcher = AlertDispatcher(webhook=WebhookSender(silent_server, timeout=2, retries=0))
    dispatcher.send({'event': 'slow'})
    start = time.time()
    assert dispatcher.flush(timeout=0.3) is False
    assert time.time() - start < 1.5


def test_webhook_time_limit_bounds_every_send_of_the_run(silent_server):
    sender = WebhookSender(silent_server, timeout=0.5, retries=5, backoff=0.05, time_limit=1.2)
    start = time.time()
    first = sender.send({'event': 'deploy_failed'})
    second = sender.send({'event': 'rolled_back'})
    elapsed = time.time() - start
    assert not first.ok and not second.ok
    assert 'total time limit of 1.2 s reached' in first.error + second.error
    assert second.attempts == 0       # nothing left of the run's budget: not even tried
    assert 1.0 <= elapsed < 2.5
    assert sender.remaining() == 0.0


def test_a_crumb_of_the_time_limit_is_not_tried_with_and_is_spent():
    # 5 ms left of the run's limit: too little to try, so the limit is reached, as the error says, and nothing is
    # left for a later send (before, the crumb stayed: a busy machine left the budget at a few ms, never 0)
    sender = WebhookSender('http://127.0.0.1:9/', timeout=0.5, retries=0, time_limit=1.0)
    sender._charge(0.995)  # pylint: disable=protected-access
    result = sender.send({'event': 'rolled_back'})
    assert not result.ok and result.attempts == 0 and 'total time limit of 1.0 s reached' in result.error
    assert sender.remaining() == 0.0


def test_dispatcher_flush_waits_for_all_senders_side_by_side_against_one_deadline(tmp_path, silent_server):
    class Hanging:
        """A channel that takes ``seconds`` per alert and reports each as failed."""

        def __init__(self, name, seconds):
            self.name, self.seconds = name, seconds

        def max_duration(self):
            return 30.0

        def send(self, payload):
            time.sleep(self.seconds)
            from ansible_collections.failsafe.deploy.plugins.plugin_utils._alerts import SendResult
            return SendResult(False, 1, None, 'timed out', self.seconds)

    channels = [Hanging('slack', 3.0), Hanging('teams', 3.0), Hanging('email', 3.0)]
    dispatcher = AlertDispatcher(spool=SpoolSender(str(tmp_path / 'a.jsonl')), channels=channels, wait_limit=1.0,
                                 webhook=WebhookSender(silent_server, timeout=5, retries=3, time_limit=30))
    start = time.time()
    record = dispatcher.send({'event': 'deploy_failed'})
    assert time.time() - start < 0.5                    # sending never waits on a receiver
    assert record['spool'] == 'written'
    assert dispatcher.flush() is False                  # the shared deadline (wait_limit), not 4 x 3 s in a row
    assert time.time() - start < 2.0
    assert sorted(dispatcher.pending()) == ['email', 'slack', 'teams', 'webhook']


def test_what_a_sender_has_not_finished_when_the_wait_ends_is_named_alert_by_alert_and_recorded_as_such(tmp_path):
    import threading
    from ansible_collections.failsafe.deploy.plugins.plugin_utils._alerts import SendResult
    from ansible_collections.failsafe.deploy.plugins.plugin_utils._settings import alert_warnings, unfinished_warning

    class Held:
        """A channel whose first send waits until released, then every send is delivered."""

        name = 'slack'

        def __init__(self):
            self.release = threading.Event()

        def max_duration(self):
            return 30.0

        def send(self, payload):
            self.release.wait(20)
            return SendResult(True, 1, 200, None, 0.0)

    class Quick(Held):
        name = 'teams'

        def send(self, payload):
            return SendResult(True, 1, 200, None, 0.0)

    held = Held()
    dispatcher = AlertDispatcher(spool=SpoolSender(str(tmp_path / 'a.jsonl')), channels=[held, Quick()],
                                 wait_limit=0.3)
    first = dispatcher.send({'event': 'deploy_failed'})
    second = dispatcher.send({'event': 'rolled_back'})
    dispatcher.notify({'event': 'deploy_committed'})
    assert dispatcher.flush() is False
    assert dispatcher.unfinished() == [('slack', [('deploy_failed', True), ('rolled_back', True),
                                                  ('deploy_committed', False)])]
    assert (first['slack'], second['slack']) == ('sending', 'queued')
    assert (first['teams'], second['teams']) == ('delivered', 'delivered')
    said = unfinished_warning('slack', dispatcher.unfinished()[0][1], dispatcher.wait_limit)
    assert said == ("slack alert(s) 'deploy_failed', 'rolled_back', 'deploy_committed' not delivered: queued or being "
                    "sent when the run stopped waiting for the channels (alert_wait_limit, 0.3 s); they are in the "
                    "spool for the replay; notices are not spooled (setting FAILSAFE_SLACK_WEBHOOK_URL)")
    assert alert_warnings(dispatcher, None) == []  # during the run: a sender still busy is no news
    assert alert_warnings(dispatcher, None, final=True) == [said]  # at its end it is
    assert "'deploy_failed' not delivered" in unfinished_warning('webhook', [('deploy_failed', True)], 10.0)
    assert 'it is in the spool' in unfinished_warning('webhook', [('deploy_failed', True)], 10.0)
    held.release.set()
    assert dispatcher.flush(timeout=10) is True
    assert dispatcher.unfinished() == []
    assert (first['slack'], second['slack']) == ('delivered', 'delivered')
