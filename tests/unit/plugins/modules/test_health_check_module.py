# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _health
from ansible_collections.failsafe.deploy.plugins.modules import health_check
from ansible_collections.failsafe.deploy.tests.requires import needs, require
from ansible_collections.failsafe.deploy.tests.unit.plugins.modules.utils import (
    AnsibleExitJson, AnsibleFailJson, run_module)


def run_check(args, expect_fail=False):
    return run_module(health_check, args, expect=AnsibleFailJson if expect_fail else AnsibleExitJson)


class _Server(ThreadingHTTPServer):
    request_queue_size = 64
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits += 1
        if self.path == '/health':
            code, body = 200, json.dumps({'status': 'ok', 'version': '2.0.0'})
        elif self.path == '/sick':
            code, body = 503, json.dumps({'status': 'unhealthy'})
        elif self.path == '/recovering':
            ok = self.server.hits > 2
            code, body = (200 if ok else 503), json.dumps({'status': 'ok' if ok else 'starting'})
        elif self.path == '/slow':
            time.sleep(0.3)
            code, body = 200, json.dumps({'status': 'ok'})
        else:
            code, body = 404, 'nope'
        data = body.encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = _Server(('127.0.0.1', 0), _Handler)
    srv.hits = 0
    thread = threading.Thread(target=srv.serve_forever, kwargs={'poll_interval': 0.05})
    thread.daemon = True
    thread.start()
    srv.url = 'http://127.0.0.1:%d' % srv.server_address[1]
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def closed_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


FAST = {'sleep': 0.05, 'use_proxy': False}
# ansible-test units installs only what tests/unit/requirements.txt lists; jmespath is optional for the module.
needs_jmespath = needs(_health.HAS_JMESPATH, 'jmespath is not installed (tests/unit/requirements.txt)')


@needs_jmespath
def test_given_healthy_app_when_checked_then_ok_unchanged_with_json_and_one_attempt(server):
    # The latency bound is one a loaded machine keeps too: a slow answer here is the machine, not the app.
    result = run_check(dict(FAST, url=server.url + '/health', json_query="status == 'ok'", max_latency=30))
    assert result['changed'] is False
    assert result['type'] == 'http'
    assert result['status'] == 200
    assert result['json'] == {'status': 'ok', 'version': '2.0.0'}
    assert json.loads(result['body']) == result['json']
    assert len(result['attempts']) == 1
    assert result['attempts'][0]['ok'] is True and result['attempts'][0]['status'] == 200
    assert result['elapsed'] >= result['attempts'][0]['latency'] > 0
    assert server.hits == 1


def test_given_sick_app_when_checked_then_fails_after_all_attempts_with_keys(server):
    result = run_check(dict(FAST, url=server.url + '/sick', retries=2), expect_fail=True)
    assert result['msg'] == 'health check failed after 3 attempts: status 503 not in status_code [200]'
    assert result['changed'] is False
    assert server.hits == 3
    assert [a['status'] for a in result['attempts']] == [503, 503, 503]
    assert result['status'] == 503
    assert result['json'] == {'status': 'unhealthy'}
    assert result['elapsed'] >= 0.1  # two sleeps of 0.05


def test_given_recovering_app_when_checked_then_passes_on_third_attempt(server):
    result = run_check(dict(FAST, url=server.url + '/recovering', retries=5))
    assert [a['ok'] for a in result['attempts']] == [False, False, True]
    assert result['json'] == {'status': 'ok'}


@needs_jmespath
def test_given_wrong_json_when_query_then_fails_naming_query(server):
    result = run_check(dict(FAST, url=server.url + '/health', json_query="version == '3.0.0'", retries=0),
                       expect_fail=True)
    assert result['msg'].startswith('health check failed after 1 attempts: json_query')
    assert 'not truthy' in result['msg']


def test_given_slow_app_when_max_latency_exceeded_then_fails(server):
    result = run_check(dict(FAST, url=server.url + '/slow', max_latency=0.1, retries=0), expect_fail=True)
    assert 'exceeds max_latency' in result['msg']
    assert result['attempts'][0]['latency'] >= 0.3


def test_given_slow_app_when_timeout_short_then_fails_with_timeout(server):
    result = run_check(dict(FAST, url=server.url + '/slow', timeout=0.1, retries=0), expect_fail=True)
    assert 'timed out' in result['msg'].lower()
    assert result['status'] is None


def test_given_check_mode_when_checked_then_probe_still_runs(server):
    result = run_check(dict(FAST, url=server.url + '/health', _ansible_check_mode=True))
    assert result['changed'] is False
    assert server.hits == 1
    result = run_check(dict(FAST, url=server.url + '/sick', retries=0, _ansible_check_mode=True),
                       expect_fail=True)
    assert server.hits == 2


def test_given_delay_when_checked_then_elapsed_includes_it(server):
    result = run_check(dict(FAST, url=server.url + '/health', delay=0.3))
    assert result['elapsed'] >= 0.3
    assert result['attempts'][0]['elapsed'] >= 0.3


def test_given_port_when_open_then_tcp_ok(server):
    result = run_check(dict(FAST, port=server.server_address[1]))
    assert result['type'] == 'tcp'
    assert result['attempts'][0]['ok'] is True
    assert result['status'] is None and result['body'] is None


def test_given_closed_port_when_tcp_then_fails_refused(closed_port):
    result = run_check(dict(FAST, port=closed_port, retries=1), expect_fail=True)
    assert result['msg'].startswith('health check failed after 2 attempts: connect to 127.0.0.1:%d' % closed_port)
    assert len(result['attempts']) == 2


@pytest.mark.parametrize('cmd, expect_rc, ok', [
    (['true'], 0, True),
    ('false', 0, False),
    (['false'], 1, True),
])
def test_given_command_when_checked_then_rc_decides(cmd, expect_rc, ok):
    result = run_check(dict(FAST, cmd=cmd, expect_rc=expect_rc, retries=0), expect_fail=not ok)
    assert result['type'] == 'command'
    assert result['rc'] == (0 if cmd == ['true'] else 1)
    assert result['attempts'][0]['rc'] == result['rc']


@needs_jmespath
def test_given_command_with_json_stdout_when_queried_then_json_returned():
    cmd = [sys.executable, '-c', 'print(\'{"queue": 0, "state": "RUNNING"}\')']
    result = run_check(dict(FAST, cmd=cmd, body_regex='RUNNING', json_query="state == 'RUNNING'"))
    assert result['json'] == {'queue': 0, 'state': 'RUNNING'}


@pytest.mark.parametrize('args, msg', [
    ({}, 'one of the following is required: url, port, cmd'),
    ({'url': 'http://127.0.0.1/', 'port': 80}, 'parameters are mutually exclusive: url|port|cmd'),
    ({'type': 'tcp', 'url': 'http://127.0.0.1/'}, 'type is tcp but all of the following are missing: port'),
    ({'url': 'http://127.0.0.1/', 'body_regex': '('}, 'body_regex is not a valid regular expression'),
    ({'url': 'http://127.0.0.1/', 'json_query': 'a[?'}, 'json_query is not a valid JMESPath expression'),
    ({'port': 1, 'body_regex': 'x'}, 'body_regex does not apply to a tcp probe'),
    ({'port': 1, 'timeout': 0}, 'timeout must be greater than 0'),
    ({'port': 1, 'retries': -1}, 'retries must not be negative'),
    ({'cmd': []}, 'cmd is empty'),
    ({'cmd': {'a': 1}}, 'cmd must be a list of arguments or a string'),
])
def test_given_bad_arguments_when_run_then_fails_naming_the_option(args, msg):
    if 'json_query' in args:
        require(_health.HAS_JMESPATH, 'jmespath is not installed (tests/unit/requirements.txt)')
    result = run_check(args, expect_fail=True)
    assert msg in result['msg']
    assert 'attempts' not in result


def test_given_no_jmespath_when_json_query_then_missing_required_lib(monkeypatch, server):
    monkeypatch.setattr(health_check, 'HAS_JMESPATH', False)
    monkeypatch.setattr(health_check, 'JMESPATH_IMPORT_ERROR', ImportError('No module named jmespath'))
    result = run_check(dict(FAST, url=server.url + '/health', json_query='status'), expect_fail=True)
    assert 'Failed to import the required Python library (jmespath)' in result['msg']
    assert 'for json_query' in result['msg']
    assert server.hits == 0
    # Without json_query the module needs no jmespath at all.
    monkeypatch.setattr(_health, 'HAS_JMESPATH', False)
    assert run_check(dict(FAST, url=server.url + '/health'))['status'] == 200
