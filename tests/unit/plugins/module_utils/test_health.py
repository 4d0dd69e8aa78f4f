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
from ansible_collections.failsafe.deploy.plugins.module_utils._health import (
    Matchers, Outcome, command_argv, is_truthy, probe_command, probe_http, probe_tcp, run_probe, summarize,
)
from ansible_collections.failsafe.deploy.tests.requires import needs


# ansible-test units installs only what tests/unit/requirements.txt lists; jmespath is optional for the module.
needs_jmespath = needs(_health.HAS_JMESPATH, 'jmespath is not installed (tests/unit/requirements.txt)')


class _Server(ThreadingHTTPServer):
    request_queue_size = 64
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    """Routes of the probe target: each one is a kind of healthy or sick service."""

    def log_message(self, *args):
        pass

    def _send(self, code, body, ctype='text/plain'):
        data = body.encode('utf-8')
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path
        server = self.server
        server.hits.append((self.command, path, dict(self.headers)))
        if path == '/ok':
            self._send(200, json.dumps({'status': 'ok', 'version': '2.0.0', 'checks': {'db': True}}),
                       'application/json')
        elif path == '/down':
            self._send(503, json.dumps({'status': 'down'}), 'application/json')
        elif path == '/wrong':
            self._send(200, json.dumps({'status': 'degraded', 'errors': 0, 'items': []}), 'application/json')
        elif path == '/text':
            self._send(200, 'service is ready\nversion 2.0.0\n')
        elif path == '/created':
            self._send(201, 'made')
        elif path.startswith('/slow'):
            time.sleep(float(path.split('=')[1]))
            self._send(200, 'late')
        elif path == '/flaky':
            server.flaky_count += 1
            if server.flaky_count <= server.flaky_failures:
                self._send(500, 'not yet')
            else:
                self._send(200, json.dumps({'status': 'ok'}), 'application/json')
        elif path == '/redirect':
            self.send_response(302)
            self.send_header('Location', '/ok')
            self.send_header('Content-Length', '0')
            self.end_headers()
        elif path == '/big':
            self._send(200, 'x' * 10000 + 'END')
        elif path == '/headers':
            self._send(200, json.dumps({'token': self.headers.get('X-Token')}), 'application/json')
        else:
            self._send(404, 'no such page')

    def do_POST(self):
        self.do_GET()


@pytest.fixture
def http_server():
    server = _Server(('127.0.0.1', 0), _Handler)
    server.hits = []
    server.flaky_count = 0
    server.flaky_failures = 2
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05})
    thread.daemon = True
    thread.start()
    server.base = 'http://127.0.0.1:%d' % server.server_address[1]
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port():
    """A port on loopback that nobody listens on: bound then closed, so the kernel refuses connections."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def listening_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def _http(server, path, matchers=None, **kwargs):
    kwargs.setdefault('use_proxy', False)
    return probe_http(server.base + path, matchers or Matchers(), **kwargs)


# HTTP ---------------------------------------------------------------------------------------------------------

def test_given_healthy_endpoint_when_probed_then_ok_with_status_body_and_json(http_server):
    out = _http(http_server, '/ok')
    assert out.ok and out.error is None
    assert out.status == 200
    assert out.data == {'status': 'ok', 'version': '2.0.0', 'checks': {'db': True}}
    assert out.has_json
    assert 0 <= out.latency < 2


def test_given_503_when_probed_then_fails_naming_status_and_keeps_body(http_server):
    out = _http(http_server, '/down')
    assert not out.ok
    assert out.status == 503
    assert out.error == 'status 503 not in status_code [200]'
    assert out.data == {'status': 'down'}


@pytest.mark.parametrize('codes, ok', [([200], False), ([200, 201], True), ([201], True)])
def test_given_status_code_list_when_201_then_only_listed_codes_pass(http_server, codes, ok):
    out = _http(http_server, '/created', status_code=codes)
    assert out.ok is ok
    assert out.status == 201


def test_given_missing_page_when_404_expected_then_ok(http_server):
    assert _http(http_server, '/nothing', status_code=[404]).ok
    assert not _http(http_server, '/nothing').ok


@pytest.mark.parametrize('regex, ok', [
    (r'^version 2\.0\.0$', True),   # multi-line mode: ^ and $ match at line ends
    (r'ready', True),
    (r'version 3', False),
])
def test_given_body_regex_when_probed_then_matches_body(http_server, regex, ok):
    out = _http(http_server, '/text', Matchers(body_regex=regex))
    assert out.ok is ok
    if not ok:
        assert 'body_regex' in out.error and 'did not match' in out.error


@pytest.mark.parametrize('query, path, ok', [
    ("status == 'ok'", '/ok', True),
    ("checks.db", '/ok', True),
    ("status == 'ok'", '/wrong', False),
    ("items", '/wrong', False),          # empty list is false
    ("errors", '/wrong', True),          # JMESPath: 0 is true
    ("errors == `0`", '/wrong', True),
    ("missing.key", '/ok', False),       # null is false
])
@needs_jmespath
def test_given_json_query_when_probed_then_truthiness_decides(http_server, query, path, ok):
    out = _http(http_server, path, Matchers(json_query=query))
    assert out.ok is ok, out.error
    if not ok:
        assert 'not truthy' in out.error and query in out.error


@needs_jmespath
def test_given_json_query_when_body_not_json_then_fails_saying_so(http_server):
    out = _http(http_server, '/text', Matchers(json_query='status'))
    assert not out.ok
    assert 'needs a JSON response body' in out.error
    assert out.data is None and not out.has_json


def test_given_slow_response_when_max_latency_lower_then_fails_on_latency(http_server):
    out = _http(http_server, '/slow?d=0.3', Matchers(max_latency=0.1))
    assert not out.ok
    assert out.status == 200
    assert out.latency >= 0.3
    assert 'exceeds max_latency' in out.error


def test_given_slow_response_when_max_latency_higher_then_ok(http_server):
    out = _http(http_server, '/slow?d=0.1', Matchers(max_latency=5))
    assert out.ok


def test_given_slow_response_when_timeout_shorter_then_fails_fast(http_server):
    # the answer would take 10 s: a probe that gave up after its 0.3 s did not wait for it (the bound leaves room
    # for a loaded machine)
    start = time.monotonic()
    out = _http(http_server, '/slow?d=10', timeout=0.3)
    assert time.monotonic() - start < 5
    assert not out.ok
    assert out.status is None
    assert 'timed out' in out.error.lower()


def test_given_closed_port_when_http_probed_then_connection_refused(closed_port):
    out = probe_http('http://127.0.0.1:%d/health' % closed_port, Matchers(), use_proxy=False, timeout=2)
    assert not out.ok
    assert out.status is None
    assert 'refused' in out.error.lower()
    assert str(closed_port) in out.error


def test_given_credentials_in_the_url_when_the_probe_fails_then_the_error_does_not_show_them(closed_port):
    url = 'http://probe:s3cretPw@127.0.0.1:%d/health?token=t0kenValue&region=eu' % closed_port
    out = probe_http(url, Matchers(), use_proxy=False, timeout=2)
    assert not out.ok and 'refused' in out.error.lower()
    assert 's3cretPw' not in out.error and 't0kenValue' not in out.error and 'probe' not in out.error
    assert 'http://********@127.0.0.1:%d/health?token=********&region=eu' % closed_port in out.error


@pytest.mark.parametrize('url, shown', [
    ('http://127.0.0.1:8080/health', 'http://127.0.0.1:8080/health'),
    ('https://user:pw@example.test/ready', 'https://********@example.test/ready'),
    ('https://example.test/h?api_key=abc;x=1&Signature=zz#frag', 'https://example.test/h?api_key=********;x=1&Signature=********#frag'),
    ('http://example.test/h?monkey=banana', 'http://example.test/h?monkey=banana'),
])
def test_display_url_masks_userinfo_and_secret_query_values(url, shown):
    assert _health.display_url(url) == shown


def test_given_redirect_when_get_then_followed_to_target(http_server):
    out = _http(http_server, '/redirect')
    assert out.ok and out.status == 200
    assert [h[1] for h in http_server.hits] == ['/redirect', '/ok']


def test_given_method_and_headers_when_probed_then_sent(http_server):
    out = _http(http_server, '/headers', method='POST', headers={'X-Token': 'abc'})
    assert out.ok
    assert out.data == {'token': 'abc'}
    assert http_server.hits[-1][0] == 'POST'


def test_given_big_body_when_summarized_then_cut_to_4k_but_regex_saw_all(http_server):
    out = _http(http_server, '/big', Matchers(body_regex='END$'))
    assert out.ok
    summary = summarize(out)
    assert len(summary['body']) == 4096
    assert summary['status'] == 200
    assert summary['json'] is None


def test_given_head_when_probed_then_empty_body_ok(http_server):
    out = _http(http_server, '/ok', method='HEAD')
    assert out.ok and out.body == ''


# TCP ----------------------------------------------------------------------------------------------------------

def test_given_listening_port_when_tcp_probed_then_ok(listening_port):
    out = probe_tcp('127.0.0.1', listening_port, Matchers(), timeout=2)
    assert out.ok and out.error is None


def test_given_closed_port_when_tcp_probed_then_refused(closed_port):
    out = probe_tcp('127.0.0.1', closed_port, Matchers(), timeout=2)
    assert not out.ok
    assert 'connect to 127.0.0.1:%d' % closed_port in out.error
    assert 'refused' in out.error.lower()


def test_given_listening_port_when_latency_ceiling_impossible_then_fails(listening_port):
    out = probe_tcp('127.0.0.1', listening_port, Matchers(max_latency=0.0), timeout=2)
    assert not out.ok
    assert 'exceeds max_latency' in out.error


# Command ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('argv, expect_rc, ok', [
    (['true'], 0, True),
    (['false'], 0, False),
    (['false'], 1, True),
    (['true'], 1, False),
])
def test_given_true_false_when_run_then_rc_decides(argv, expect_rc, ok):
    out = probe_command(argv, Matchers(), expect_rc=expect_rc, timeout=5)
    assert out.ok is ok
    assert out.rc == (0 if argv == ['true'] else 1)
    if not ok:
        assert 'returned rc=' in out.error


@needs_jmespath
def test_given_stdout_when_regex_and_query_then_checked_on_stdout():
    argv = [sys.executable, '-c', 'import json; print(json.dumps({"status": "ok", "n": 3}))']
    assert probe_command(argv, Matchers(body_regex='"status"', json_query='n > `2`')).ok
    out = probe_command(argv, Matchers(json_query='n > `5`'))
    assert not out.ok and 'command stdout' in out.error
    out = probe_command(argv, Matchers(body_regex='degraded'))
    assert not out.ok and 'did not match the command stdout' in out.error


def test_given_failing_command_when_run_then_error_carries_stderr_tail():
    argv = [sys.executable, '-c', 'import sys; sys.stderr.write("db unreachable\\n"); sys.exit(4)']
    out = probe_command(argv, Matchers())
    assert out.rc == 4
    assert out.error == 'command %s returned rc=4, expected 0: db unreachable' % sys.executable


def test_given_shell_syntax_when_run_then_no_shell_interprets_it():
    out = probe_command(command_argv('echo $HOME; false'), Matchers(body_regex=r'^\$HOME; false$'))
    assert out.ok, out.error


def test_given_missing_program_when_run_then_fails_without_raising():
    out = probe_command(['/nonexistent/probe'], Matchers())
    assert not out.ok and out.rc is None
    assert out.error.startswith('cannot run /nonexistent/probe')


def test_given_hanging_command_when_timeout_then_killed_with_children(tmp_path):
    marker = tmp_path / 'child-survived'
    script = ('import subprocess, sys, time\n'
              'subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5); open(%r, \\"w\\").close()"])\n'
              'time.sleep(30)\n' % str(marker))
    start = time.monotonic()
    out = probe_command([sys.executable, '-c', script], Matchers(), timeout=0.5)
    assert time.monotonic() - start < 3
    assert not out.ok and 'timed out' in out.error
    time.sleep(1.6)
    assert not marker.exists()


@pytest.mark.parametrize('cmd, argv', [
    ('curl -sf "http://x/a b"', ['curl', '-sf', 'http://x/a b']),
    (['a', 'b c'], ['a', 'b c']),
    (['n', 5], ['n', '5']),
])
def test_given_cmd_forms_when_split_then_argv(cmd, argv):
    assert command_argv(cmd) == argv


# Retry loop ---------------------------------------------------------------------------------------------------

class _FakeClock(object):
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def _scripted(results, clock, cost=0.25):
    results = list(results)

    def probe():
        clock.now += cost
        ok = results.pop(0)
        return Outcome(ok, cost, error=None if ok else 'boom', status=200 if ok else 500)
    return probe


def test_given_two_failures_when_run_then_third_attempt_wins_with_delay_and_sleeps():
    fake = _FakeClock()
    run = run_probe(_scripted([False, False, True], fake), retries=5, delay=2, sleep=1,
                    clock=fake.clock, sleeper=fake.sleep)
    assert run['ok']
    assert fake.sleeps == [2, 1, 1]
    assert [a['n'] for a in run['attempts']] == [1, 2, 3]
    assert [a['ok'] for a in run['attempts']] == [False, False, True]
    assert [a['status'] for a in run['attempts']] == [500, 500, 200]
    assert [a['elapsed'] for a in run['attempts']] == [2.25, 3.5, 4.75]
    assert run['elapsed'] == 4.75
    assert run['last'].ok


def test_given_always_failing_when_retries_2_then_three_attempts_and_no_trailing_sleep():
    fake = _FakeClock()
    run = run_probe(_scripted([False] * 3, fake), retries=2, delay=0, sleep=0.5,
                    clock=fake.clock, sleeper=fake.sleep)
    assert not run['ok']
    assert len(run['attempts']) == 3
    assert fake.sleeps == [0.5, 0.5]
    assert run['last'].error == 'boom'


def test_given_retries_zero_when_run_then_single_attempt():
    fake = _FakeClock()
    run = run_probe(_scripted([False], fake), retries=0, sleep=5, clock=fake.clock, sleeper=fake.sleep)
    assert len(run['attempts']) == 1 and fake.sleeps == []


def test_given_flaky_server_when_run_for_real_then_passes_on_third(http_server):
    run = run_probe(lambda: _http(http_server, '/flaky'), retries=5, sleep=0.05)
    assert run['ok']
    assert [a['status'] for a in run['attempts']] == [500, 500, 200]
    assert run['elapsed'] >= 0.1


@pytest.mark.parametrize('value, truthy', [
    (None, False), (False, False), ('', False), ([], False), ({}, False),
    (0, True), (0.0, True), (True, True), ('x', True), ([0], True), ({'a': None}, True),
])
def test_jmespath_truthiness(value, truthy):
    assert is_truthy(value) is truthy


def test_given_no_jmespath_when_matchers_need_it_then_refuses(monkeypatch):
    monkeypatch.setattr(_health, 'HAS_JMESPATH', False)
    with pytest.raises(RuntimeError):
        Matchers(json_query='a')
    assert Matchers(body_regex='a').json_query is None
