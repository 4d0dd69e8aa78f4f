# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The example app, run as a real process from the archives build.py makes, as a deploy would run it."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import importlib.util
import json
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request

import pytest

from ansible_collections.failsafe.deploy.tests import process_shared

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
APP_DIR = os.path.join(ROOT, 'examples', 'app')
BUILD = os.path.join(APP_DIR, 'build.py')
EXPECTED = {'1.0.0': 'good', '2.0.0': 'good', '3.0.0': 'unhealthy', '4.0.0': 'crash', '5.0.0': 'errors',
            '6.0.0': 'flaky', '7.0.0': 'slow'}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _build(out, *extra, **env):
    environ = dict(os.environ)
    environ.update(env)
    proc = subprocess.run([sys.executable, BUILD, '--out', str(out)] + list(extra), env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


# Both built once per test process (tests/process_shared.py): under ansible-test units each test runs in a fork of
# its own, where a module fixture would build and extract the seven archives again for every test. Tests only read
# them.
@pytest.fixture(scope='module')
def dist():
    return pathlib.Path(process_shared.once('example-app-dist', lambda path: _build(path, '--files', '3')))


def _extract_releases(dist, base):
    os.makedirs(base)
    for version in EXPECTED:
        target = os.path.join(base, version)
        os.mkdir(target)
        with tarfile.open(str(dist / ('app-%s.tar.gz' % version))) as tar:
            if hasattr(tarfile, 'data_filter'):
                tar.extractall(target, filter='data')
            else:
                tar.extractall(target)


@pytest.fixture(scope='module')
def releases(dist):
    """Each archive extracted into its own release directory, as the release module stages them."""
    base = pathlib.Path(process_shared.once('example-app-releases', lambda path: _extract_releases(dist, path)))
    return dict((version, base / version) for version in EXPECTED)


def _sha(path):
    with open(str(path), 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


class App(object):
    def __init__(self, proc, url, log):
        self.proc = proc
        self.url = url
        self.log = log

    def get(self, path):
        """(status, headers, body text) of a GET, for any status."""
        try:
            with NO_PROXY.open(self.url + path, timeout=5) as response:
                return response.status, response.headers, response.read().decode('utf-8')
        except urllib.error.HTTPError as exc:
            body = exc.read().decode('utf-8')
            exc.close()
            return exc.code, exc.headers, body


def _start(release_dir, tmp_path, args=None, env=None, wait_listen=True):
    log = tmp_path / 'app.stderr'
    environ = dict(os.environ)
    environ.pop('APP_CONFIG', None)
    environ.update(env or {})
    cmd = [sys.executable, str(release_dir / 'app.py')] + list(args if args is not None else ['--port', '0'])
    with open(str(log), 'wb') as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=environ)
    if not wait_listen:
        return App(proc, None, log)
    ready = select.select([proc.stdout], [], [], 10)[0]
    line = proc.stdout.readline().decode('utf-8') if ready else ''
    match = re.search(r'listening on (http://[\d.]+:\d+)', line)
    if not match:
        proc.kill()
        proc.wait()
        raise AssertionError('app did not start: %r, stderr %r' % (line, log.read_text()))
    return App(proc, match.group(1), log)


@pytest.fixture
def run_app(tmp_path):
    started = []

    def start(release_dir, **kwargs):
        app = _start(release_dir, tmp_path, **kwargs)
        started.append(app)
        return app
    yield start
    for app in started:
        if app.proc.poll() is None:
            app.proc.kill()
        app.proc.wait()
        app.proc.stdout.close()


def _metric(text, name):
    match = re.search(r'^%s (\d+(?:\.\d+)?)$' % re.escape(name), text, re.MULTILINE)
    assert match, 'metric %s missing from:\n%s' % (name, text)
    return float(match.group(1))


# Archives --------------------------------------------------------------------------------------------------------

def test_given_same_sources_when_built_twice_then_archives_are_byte_identical(dist, tmp_path):
    again = _build(tmp_path / 'again', '--files', '3')
    assert [os.path.basename(p) for p in again] == ['app-%s.tar.gz' % v for v in EXPECTED]
    for path in again:
        assert _sha(path) == _sha(dist / os.path.basename(path)), path


def test_given_build_when_files_differ_then_archive_differs(dist, tmp_path):
    other = _build(tmp_path / 'other', '--files', '4', '--release', '2.0.0=good')
    assert other == [str(tmp_path / 'other' / 'app-2.0.0.tar.gz')]
    assert _sha(other[0]) != _sha(dist / 'app-2.0.0.tar.gz')


def test_given_source_date_epoch_when_built_then_mtimes_follow_it(tmp_path):
    path = _build(tmp_path / 'sde', '--release', '1.0.0=good', SOURCE_DATE_EPOCH='1600000000')[0]
    with tarfile.open(path) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1600000000}


@pytest.mark.parametrize('version', sorted(EXPECTED))
def test_given_archive_when_listed_then_flat_sorted_root_owned_fixed_mtime(dist, version):
    with tarfile.open(str(dist / ('app-%s.tar.gz' % version))) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        release = json.loads(tar.extractfile('release.json').read().decode('utf-8'))
    assert names == sorted(names)
    assert names == ['app.py', 'release.json', 'static', 'static/filler', 'static/filler/asset-00001.txt',
                     'static/filler/asset-00002.txt', 'static/filler/asset-00003.txt', 'static/style.css']
    assert {(m.uid, m.gid) for m in members} == {(0, 0)}
    assert len({m.mtime for m in members}) == 1
    assert all(m.mode == 0o755 for m in members if m.isdir() or m.name == 'app.py')
    assert all(m.mode == 0o644 for m in members if m.isfile() and m.name != 'app.py')
    assert release == {'version': version, 'mode': EXPECTED[version]}


def test_given_gzip_when_read_then_header_has_no_name_or_time(dist):
    with open(str(dist / 'app-1.0.0.tar.gz'), 'rb') as handle:
        header = handle.read(10)
    assert header[:3] == b'\x1f\x8b\x08'
    assert header[3] == 0  # no FNAME flag
    assert header[4:8] == b'\x00\x00\x00\x00'  # MTIME 0


def test_given_bad_release_spec_when_built_then_refused(tmp_path):
    proc = subprocess.run([sys.executable, BUILD, '--out', str(tmp_path), '--release', '9.0.0=wobbly'],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert proc.returncode == 2 and 'VERSION=MODE' in proc.stderr
    assert os.listdir(str(tmp_path)) == []


# Modes -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('version', ['1.0.0', '2.0.0'])
def test_given_good_release_when_running_then_every_route_answers(releases, run_app, version):
    app = run_app(releases[version])
    status, headers, body = app.get('/health')
    assert status == 200 and headers['Content-Type'] == 'application/json'
    assert json.loads(body) == {'status': 'ok', 'version': version}
    assert app.get('/version')[::2] == (200, version + '\n')
    status, dummy, body = app.get('/')
    assert status == 200 and version in body and '<html' in body
    status, headers, body = app.get('/static/style.css')
    assert status == 200 and headers['Content-Type'].startswith('text/css') and 'font-family' in body
    assert app.get('/static/filler/asset-00002.txt')[0] == 200
    assert app.get('/nothing')[0] == 404
    status, headers, metrics = app.get('/metrics')
    assert status == 200 and headers['Content-Type'].startswith('text/plain')
    assert 'app_build_info{version="%s"} 1' % version in metrics
    assert _metric(metrics, 'app_requests_total{code="200"}') == 5
    assert _metric(metrics, 'app_requests_total{code="404"}') == 1
    assert _metric(metrics, 'app_errors_total') == 0
    assert '# TYPE app_requests_total counter' in metrics


def test_given_unhealthy_release_when_running_then_health_503_rest_fine(releases, run_app):
    app = run_app(releases['3.0.0'])
    status, dummy, body = app.get('/health')
    assert status == 503
    assert json.loads(body) == {'status': 'unhealthy', 'version': '3.0.0'}
    assert app.get('/')[0] == 200
    assert app.get('/version')[::2] == (200, '3.0.0\n')
    assert _metric(app.get('/metrics')[2], 'app_errors_total') == 1


def test_given_crash_release_when_started_then_exits_non_zero_with_error(releases, tmp_path):
    app = _start(releases['4.0.0'], tmp_path, wait_listen=False)
    try:
        rc = app.proc.wait(timeout=10)
        out = app.proc.stdout.read()
    finally:
        app.proc.stdout.close()
    assert rc == 3
    assert out == b''
    assert 'error: release 4.0.0 cannot start' in app.log.read_text()


def test_given_errors_release_when_running_then_most_pages_fail_and_counter_climbs(releases, run_app):
    app = run_app(releases['5.0.0'])
    assert json.loads(app.get('/health')[2])['status'] == 'ok'
    codes = [app.get('/')[0] for dummy in range(20)]
    assert codes.count(500) == 16 and codes.count(200) == 4
    metrics = app.get('/metrics')[2]
    assert _metric(metrics, 'app_errors_total') == 16
    assert _metric(metrics, 'app_requests_total{code="500"}') == 16
    assert _metric(metrics, 'app_requests_total{code="200"}') == 5
    assert 'app_build_info{version="5.0.0"} 1' in metrics
    codes = [app.get('/')[0] for dummy in range(10)]
    assert _metric(app.get('/metrics')[2], 'app_errors_total') == 16 + codes.count(500) == 24


def test_given_flaky_release_when_running_then_one_page_in_four_fails_and_health_stays_ok(releases, run_app):
    app = run_app(releases['6.0.0'])
    assert json.loads(app.get('/health')[2])['status'] == 'ok'
    codes = [app.get('/')[0] for dummy in range(20)]
    assert codes.count(500) == 5 and codes.count(200) == 15
    metrics = app.get('/metrics')[2]
    assert _metric(metrics, 'app_errors_total') == 5
    assert _metric(metrics, 'app_request_duration_seconds_count') == 20


def test_given_slow_release_when_running_then_pages_land_in_the_slow_buckets(releases, run_app):
    fast = run_app(releases['2.0.0'])
    for dummy in range(3):
        assert fast.get('/')[0] == 200
    fast_metrics = fast.get('/metrics')[2]
    assert _metric(fast_metrics, 'app_request_duration_seconds_bucket{le="0.1"}') == 3
    slow = run_app(releases['7.0.0'])
    codes = [slow.get('/')[0] for dummy in range(3)]
    assert codes == [200, 200, 200]
    metrics = slow.get('/metrics')[2]
    # every answer took at least SLOW_SECONDS (0.25 s): none in the buckets below it, all counted
    assert _metric(metrics, 'app_request_duration_seconds_bucket{le="0.1"}') == 0
    assert _metric(metrics, 'app_request_duration_seconds_bucket{le="+Inf"}') == 3
    assert _metric(metrics, 'app_request_duration_seconds_sum') >= 0.75
    assert _metric(metrics, 'app_errors_total') == 0


def test_given_running_app_when_sigterm_then_exits_zero_promptly(releases, run_app):
    app = run_app(releases['2.0.0'])
    assert app.get('/health')[0] == 200
    start = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(timeout=5) == 0
    assert time.monotonic() - start < 2


def test_given_many_parallel_connections_when_served_then_none_dropped(releases, run_app):
    import socket
    app = run_app(releases['2.0.0'])
    host, port = app.url[len('http://'):].split(':')
    socks = [socket.create_connection((host, int(port)), timeout=5) for dummy in range(60)]
    try:
        for sock in socks:
            sock.sendall(b'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        answers = []
        for sock in socks:
            data = b''
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            answers.append(data.split(b'\r\n', 1)[0])
    finally:
        for sock in socks:
            sock.close()
    assert answers == [b'HTTP/1.1 200 OK'] * 60


# Configuration ---------------------------------------------------------------------------------------------------

def test_given_ini_config_when_started_with_config_flag_then_listens_there(releases, run_app, tmp_path):
    cfg = tmp_path / 'app.ini'
    cfg.write_text('[app]\nbind = 127.0.0.1\nport = 0\naccess_log = false\n')
    app = run_app(releases['2.0.0'], args=['--config', str(cfg)])
    assert app.url.startswith('http://127.0.0.1:')
    assert app.get('/health')[0] == 200
    app.proc.send_signal(signal.SIGTERM)
    app.proc.wait(timeout=5)
    assert app.log.read_text() == ''  # access_log = false


def test_given_json_config_in_env_when_started_then_used_and_logged(releases, run_app, tmp_path):
    cfg = tmp_path / 'app.json'
    cfg.write_text(json.dumps({'bind': '127.0.0.1', 'port': 0}))
    app = run_app(releases['1.0.0'], args=[], env={'APP_CONFIG': str(cfg)})
    assert app.get('/version')[2] == '1.0.0\n'
    app.proc.send_signal(signal.SIGTERM)
    app.proc.wait(timeout=5)
    assert '"GET /version HTTP/1.1" 200' in app.log.read_text()


def test_given_a_labelled_config_when_started_then_the_label_is_in_the_start_up_line(releases, tmp_path):
    cfg = tmp_path / 'app.json'
    cfg.write_text(json.dumps({'bind': '127.0.0.1', 'port': 0, 'label': 'release 2.0.0'}))
    app = _start(releases['2.0.0'], tmp_path, args=['--config', str(cfg)], wait_listen=False)
    try:
        line = app.proc.stdout.readline().decode('utf-8')
        assert 'listening on http://127.0.0.1:' in line and line.endswith(' (config: release 2.0.0)\n'), line
    finally:
        app.proc.kill()
        app.proc.wait()
        app.proc.stdout.close()


@pytest.mark.parametrize('content, msg', [
    ('[app]\nport = eighty\n', 'port must be an integer'),
    ('[server]\nport = 1\n', 'no [app] section'),
    ('{"port": 1, "color": "red"}', 'unknown setting(s): color'),
    ('{"port": 70000}', 'out of range'),
])
def test_given_bad_config_when_started_then_exits_2_naming_problem(releases, tmp_path, content, msg):
    cfg = tmp_path / 'bad.conf'
    cfg.write_text(content)
    app = _start(releases['2.0.0'], tmp_path, args=['--config', str(cfg)], wait_listen=False)
    try:
        assert app.proc.wait(timeout=10) == 2
    finally:
        app.proc.stdout.close()
    assert msg in app.log.read_text()


def _import_app(path):
    spec = importlib.util.spec_from_file_location('example_app_under_test', str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_given_no_config_when_loaded_then_default_listen_address(releases):
    module = _import_app(releases['2.0.0'] / 'app.py')
    assert module.load_config(None) == {'bind': '127.0.0.1', 'port': 8080, 'access_log': True, 'label': '',
                                        'flags_file': ''}
    assert module.load_release(str(releases['2.0.0'])) == {'version': '2.0.0', 'mode': 'good'}
    assert module.AppServer.request_queue_size == 128


def test_given_source_checkout_without_release_json_when_loaded_then_dev_good():
    module = _import_app(os.path.join(APP_DIR, 'src', 'app.py'))
    assert module.load_release(os.path.join(APP_DIR, 'src')) == {'version': '0.0.0-dev', 'mode': 'good'}


def test_a_flag_is_on_only_when_enabled_with_a_true_default_variant_and_the_embedded_default_is_off(releases, tmp_path):
    module = _import_app(releases['2.0.0'] / 'app.py')
    path = tmp_path / 'flags.json'
    flag = {'state': 'ENABLED', 'variants': {'on': True, 'off': False}, 'defaultVariant': 'on'}
    path.write_text(json.dumps({'flags': {'new-checkout': flag}}))
    assert module.flag_on(str(path), 'new-checkout') is True
    path.write_text(json.dumps({'flags': {'new-checkout': dict(flag, defaultVariant='off')}}))
    assert module.flag_on(str(path), 'new-checkout') is False
    path.write_text(json.dumps({'flags': {'new-checkout': dict(flag, state='DISABLED')}}))
    assert module.flag_on(str(path), 'new-checkout') is False
    path.write_text('{broken')
    assert module.flag_on(str(path), 'new-checkout') is False
    assert module.flag_on('', 'new-checkout') is False
    assert module.flag_on(str(tmp_path / 'none.json'), 'new-checkout') is False
