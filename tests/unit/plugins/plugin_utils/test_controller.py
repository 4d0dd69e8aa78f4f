# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Controller rollback trigger against a real HTTP server on 127.0.0.1 that answers like AWX / Automation
Controller: it records every request (method, path, Authorization header, JSON body), answers a launch with 201 and
a job id, then reports the job's status pending -> running -> <final> on successive polls.

What this cannot prove without a real Controller: that a real job template accepts the extra vars and limit (it
needs "prompt on launch" for both, and may answer 400 or list them in ``ignored_fields``), that a real token has
the permission to launch and read the job, the exact job and host-summary payloads of every AWX version, TLS
against a real certificate, and the gateway's routing of ``/api/controller/v2/``. The fake follows the documented
API v2 shapes for the fields the trigger reads.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _controller

TOKEN = 'Tok3n-s3cret-0123456789abcdef'


class FakeController:
    """``prefix`` is the API root that exists (the other one answers 404); ``statuses`` is what successive polls
    of the job return (the last repeats); ``delay`` makes every answer slow."""

    def __init__(self, prefix='/api/v2/', statuses=('pending', 'running', 'successful'), job_id=42,
                 host_summaries=None, launch_status=201, delay=0.0):
        self.requests = []
        self.prefix = prefix
        self.statuses = list(statuses)
        self.polls = 0
        self.job_id = job_id
        self.host_summaries = host_summaries
        self.launch_status = launch_status
        self.delay = delay
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status, body):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method):
                length = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(length) if length else b''
                fake.requests.append({'method': method, 'path': self.path,
                                      'auth': self.headers.get('Authorization'),
                                      'content_type': self.headers.get('Content-Type'),
                                      'body': json.loads(body) if body else None})
                if fake.delay:
                    threading.Event().wait(fake.delay)
                if not self.path.startswith(fake.prefix):
                    return self._answer(404, {'detail': 'Not found.'})
                if self.headers.get('Authorization') != 'Bearer %s' % TOKEN:
                    return self._answer(401, {'detail': 'Authentication credentials were not provided.'})
                tail = self.path[len(fake.prefix):]
                if method == 'GET' and tail.startswith('job_templates/?name='):
                    name = tail.split('=', 1)[1]
                    results = [{'id': 7, 'name': 'rollback'}] if name == 'app%20rollback' else []
                    return self._answer(200, {'count': len(results), 'results': results})
                if method == 'POST' and tail == 'job_templates/7/launch/':
                    if fake.launch_status != 201:
                        return self._answer(fake.launch_status, {'detail': 'nope'})
                    return self._answer(201, {'job': fake.job_id, 'id': fake.job_id, 'type': 'job',
                                              'url': '%sjobs/%d/' % (fake.prefix, fake.job_id),
                                              'ignored_fields': {}})
                if method == 'GET' and tail == 'jobs/%d/' % fake.job_id:
                    status = fake.statuses[min(fake.polls, len(fake.statuses) - 1)]
                    fake.polls += 1
                    return self._answer(200, {'id': fake.job_id, 'status': status,
                                              'failed': status in ('failed', 'error')})
                if method == 'GET' and tail.startswith('jobs/%d/job_host_summaries/' % fake.job_id):
                    rows = fake.host_summaries or []
                    return self._answer(200, {'count': len(rows), 'results': rows})
                if method == 'POST' and tail == 'jobs/%d/cancel/' % fake.job_id:
                    return self._answer(202, {})
                return self._answer(404, {'detail': 'Not found.'})

            def do_GET(self):  # noqa: N802
                self._handle('GET')

            def do_POST(self):  # noqa: N802
                self._handle('POST')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def make_fake():
    fakes = []

    def make(**kwargs):
        fake = FakeController(**kwargs)
        fakes.append(fake)
        return fake
    yield make
    for fake in fakes:
        fake.close()


def client_for(fake, **kwargs):
    kwargs.setdefault('poll_interval', 0.01)
    return _controller.ControllerClient(fake.url, TOKEN, **kwargs)


ROLLBACK_VARS = {'failsafe_rollback_run_id': 'run-1', 'failsafe_rollback_incident': 'inc-1',
                 'failsafe_rollback_hosts': {'web1': {'state_dir': '/var/lib/x', 'name': 'app'}}}


def test_launch_sends_bearer_token_extra_vars_and_limit_then_polls_to_success(make_fake):
    fake = make_fake(host_summaries=[{'host_name': 'web1', 'failed': False, 'dark': 0},
                                     {'host_name': 'web2', 'failed': False, 'dark': 0}])
    lines = []
    launch, hosts, reason, job = _controller.run_rollback(client_for(fake, api_path='v2'), '7', ['web1', 'web2'],
                                                          ROLLBACK_VARS, timeout=10, echo=lines.append)
    assert reason is None and launch.rc == 0 and launch.error is None and not launch.timed_out
    assert job['job_id'] == 42 and job['status'] == 'successful' and job['api'] == '/api/v2/'
    assert hosts['web1']['status'] == 'ok' and hosts['web2']['status'] == 'ok'
    first = fake.requests[0]
    assert (first['method'], first['path']) == ('POST', '/api/v2/job_templates/7/launch/')
    assert first['auth'] == 'Bearer %s' % TOKEN and first['content_type'] == 'application/json'
    assert first['body'] == {'extra_vars': ROLLBACK_VARS, 'limit': 'web1,web2'}
    polls = [r for r in fake.requests if r['path'] == '/api/v2/jobs/42/']
    assert len(polls) == 3 and all(r['method'] == 'GET' and r['auth'] == first['auth'] for r in polls)
    assert [line for line in lines if line.startswith('controller job 42:')] == [
        'controller job 42: pending', 'controller job 42: running', 'controller job 42: successful']
    assert not any(TOKEN in line for line in lines)


def test_auto_falls_back_to_the_gateway_path_on_404_and_keeps_it(make_fake):
    fake = make_fake(prefix='/api/controller/v2/')
    client = client_for(fake)
    launch, hosts, reason, job = _controller.run_rollback(client, 'app rollback', ['web1'], ROLLBACK_VARS, 10)
    assert reason is None and job['api'] == '/api/controller/v2/' and hosts['web1']['status'] == 'ok'
    paths = [(r['method'], r['path']) for r in fake.requests]
    assert paths[:3] == [('GET', '/api/v2/job_templates/?name=app%20rollback'),
                         ('GET', '/api/controller/v2/job_templates/?name=app%20rollback'),
                         ('POST', '/api/controller/v2/job_templates/7/launch/')]
    assert not any(p.startswith('/api/v2/') for _method, p in paths[2:])   # the answering root is kept


def test_explicit_v2_path_does_not_fall_back(make_fake):
    fake = make_fake(prefix='/api/controller/v2/')
    launch, hosts, reason, job = _controller.run_rollback(client_for(fake, api_path='v2'), 7, ['web1'],
                                                          ROLLBACK_VARS, 10)
    assert launch.rc == 1 and 'HTTP 404' in reason and hosts['web1']['status'] == 'no_result'
    assert [r['path'] for r in fake.requests] == ['/api/v2/job_templates/7/launch/']


@pytest.mark.parametrize('final', ['failed', 'error', 'canceled'])
def test_a_job_that_ends_badly_is_a_failed_rollback(make_fake, final):
    fake = make_fake(statuses=('pending', 'running', final),
                     host_summaries=[{'host_name': 'web1', 'failed': True, 'dark': 0},
                                     {'host_name': 'web2', 'failed': False, 'dark': 1}])
    launch, hosts, reason, job = _controller.run_rollback(client_for(fake), 7, ['web1', 'web2', 'web3'],
                                                          ROLLBACK_VARS, 10)
    assert launch.rc == 1 and job['status'] == final
    assert reason.startswith('controller job 42 ended %s' % final)
    assert hosts['web1']['status'] == 'failed' and hosts['web2']['status'] == 'unreachable'
    assert hosts['web3']['status'] == 'no_result'   # never assumed ok


def test_a_job_that_never_finishes_times_out_and_is_cancelled(make_fake):
    fake = make_fake(statuses=('pending', 'running'))
    launch, hosts, reason, job = _controller.run_rollback(client_for(fake, poll_interval=0.05), 7, ['web1'],
                                                          ROLLBACK_VARS, timeout=0.5)
    assert launch.timed_out and launch.rc == 1 and launch.duration < 5
    assert 'did not finish within 0 s (last status running); cancel requested' in reason
    assert ('POST', '/api/v2/jobs/42/cancel/') in [(r['method'], r['path']) for r in fake.requests]
    assert hosts['web1']['status'] == 'no_result'


def test_a_controller_that_does_not_answer_in_time_fails_with_the_request_timeout(make_fake):
    fake = make_fake(delay=2.0)
    client = _controller.ControllerClient(fake.url, TOKEN, api_path='v2', request_timeout=0.3)
    launch, hosts, reason, job = _controller.run_rollback(client, 7, ['web1'], ROLLBACK_VARS, timeout=10)
    assert launch.rc == 1 and launch.duration < 2 and 'timed out' in reason
    assert job['job_id'] is None


def test_rejected_launch_and_wrong_token_never_show_the_token(make_fake):
    fake = make_fake(launch_status=400)
    reason = _controller.run_rollback(client_for(fake), 7, ['web1'], ROLLBACK_VARS, 10)[2]
    assert 'HTTP 400' in reason and TOKEN not in reason
    wrong = _controller.ControllerClient(fake.url, 'wrong-' + TOKEN, api_path='v2')
    reason = _controller.run_rollback(wrong, 7, ['web1'], ROLLBACK_VARS, 10)[2]
    assert 'HTTP 401' in reason and TOKEN not in reason and 'wrong-' not in reason
    assert TOKEN not in repr(wrong)


def test_missing_settings_are_refused():
    with pytest.raises(_controller.ControllerError, match='FAILSAFE_CONTROLLER_HOST'):
        _controller.ControllerClient('', TOKEN)
    with pytest.raises(_controller.ControllerError, match='FAILSAFE_CONTROLLER_TOKEN'):
        _controller.ControllerClient('https://awx.example.com', '')
    with pytest.raises(_controller.ControllerError, match='auto, v2 or controller'):
        _controller.ControllerClient('https://awx.example.com', TOKEN, api_path='v3')
    assert _controller.ControllerClient('awx.example.com/', TOKEN).host == 'https://awx.example.com'
