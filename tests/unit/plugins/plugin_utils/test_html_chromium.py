# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Given an HTML incident report written by write_report, when a real headless Chromium opens it, then it renders
with no console error, no exception and no blocked load, one timeline lane per host plus the controller's, and the
failure marker; a screenshot is kept in tests/output/incident-report.png.

Chromium is Debian's ``/usr/bin/chromium`` (``scripts/browser-prereqs.sh`` installs it), driven over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: JSON messages ended by a NUL byte on fds 3 and 4), so the test needs
no Python package and no browser download. Under CI and as root a missing browser fails the test, never skips it.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import base64
import fcntl
import json
import os
import pathlib
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import write_report
from ansible_collections.failsafe.deploy.tests import process_shared
from ansible_collections.failsafe.deploy.tests.requires import cannot_run
from tests.unit.plugins.plugin_utils.test_html import incident as make_incident

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
CHROMIUM = os.environ.get('FAILSAFE_CHROMIUM', '/usr/bin/chromium')
PREREQS = os.path.join(ROOT, 'scripts', 'browser-prereqs.sh')
OUTPUT = os.path.join(ROOT, 'tests', 'output')


class DevToolsError(Exception):
    pass


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe, with one page attached (flat session)."""

    def __init__(self, executable, profile, timeout=30.0):
        self.timeout = timeout
        self.events = []
        self._next_id = 0
        self._buffer = b''
        cmd_read, self._cmd_write = os.pipe()
        self._out_read, out_write = os.pipe()

        def to_fds_3_and_4():
            # fds 3 (commands in) and 4 (answers out) are what --remote-debugging-pipe expects.
            high_in = fcntl.fcntl(cmd_read, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(out_write, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)
        args = [executable, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--hide-scrollbars',
                '--mute-audio', '--remote-debugging-pipe', '--user-data-dir=%s' % profile, 'about:blank']
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, pass_fds=(3, 4), preexec_fn=to_fds_3_and_4)
        os.close(cmd_read)
        os.close(out_write)
        self.session = None

    def _read_message(self, deadline):
        while b'\0' not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DevToolsError('no answer from chromium within %.0f s' % self.timeout)
            ready, dummy, dummy = select.select([self._out_read], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._out_read, 1 << 20)
            if not chunk:
                raise DevToolsError('chromium closed the DevTools pipe (rc=%s): %s' % (
                    self.proc.poll(), self.proc.stderr.read().decode('utf-8', 'replace')[-2000:]))
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b'\0', 1)
        return json.loads(raw.decode('utf-8'))

    def send(self, method, params=None, session=True):
        self._next_id += 1
        message = {'id': self._next_id, 'method': method, 'params': params or {}}
        if session and self.session:
            message['sessionId'] = self.session
        os.write(self._cmd_write, json.dumps(message).encode('utf-8') + b'\0')
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get('id') == self._next_id:
                if 'error' in answer:
                    raise DevToolsError('%s: %s' % (method, answer['error']))
                return answer.get('result') or {}
            if 'method' in answer:
                self.events.append(answer)

    def wait_for(self, method):
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event.get('method') == method:
                return event
        while True:
            event = self._read_message(deadline)
            if 'method' in event:
                self.events.append(event)
                if event['method'] == method:
                    return event

    def open_page(self, width=1280, height=900):
        target = self.send('Target.createTarget', {'url': 'about:blank'}, session=False)['targetId']
        self.session = self.send('Target.attachToTarget', {'targetId': target, 'flatten': True},
                                 session=False)['sessionId']
        for domain in ('Page', 'Runtime', 'Log'):
            self.send('%s.enable' % domain)
        self.send('Emulation.setDeviceMetricsOverride', {'width': width, 'height': height, 'deviceScaleFactor': 1,
                                                         'mobile': False})

    def load(self, url):
        self.events = []
        answer = self.send('Page.navigate', {'url': url})
        if answer.get('errorText'):
            raise DevToolsError('navigating to %s: %s' % (url, answer['errorText']))
        self.wait_for('Page.loadEventFired')

    def evaluate(self, expression):
        answer = self.send('Runtime.evaluate', {'expression': expression, 'returnByValue': True})
        if answer.get('exceptionDetails'):
            raise DevToolsError('evaluating %s: %s' % (expression, answer['exceptionDetails']))
        return answer['result'].get('value')

    def screenshot(self, path):
        """A PNG of the whole page (the viewport grown to the page's height)."""
        size = self.send('Page.getLayoutMetrics')['cssContentSize']
        self.send('Emulation.setDeviceMetricsOverride', {'width': int(size['width']),
                                                         'height': min(int(size['height']) + 1, 16000),
                                                         'deviceScaleFactor': 1, 'mobile': False})
        data = self.send('Page.captureScreenshot', {'format': 'png'})['data']
        with open(path, 'wb') as handle:
            handle.write(base64.b64decode(data))
        return path

    def problems(self):
        """Console errors, uncaught exceptions and error log entries (blocked loads, CSP violations) seen so far."""
        found = []
        for event in self.events:
            method, params = event.get('method'), event.get('params') or {}
            if method == 'Runtime.exceptionThrown':
                details = params.get('exceptionDetails') or {}
                found.append('exception: %s' % ((details.get('exception') or {}).get('description')
                                                or details.get('text')))
            elif method == 'Runtime.consoleAPICalled' and params.get('type') in ('error', 'assert'):
                found.append('console.%s: %s' % (params['type'], json.dumps(params.get('args'))[:500]))
            elif method == 'Log.entryAdded' and (params.get('entry') or {}).get('level') == 'error':
                entry = params['entry']
                found.append('log (%s): %s %s' % (entry.get('source'), entry.get('text'), entry.get('url') or ''))
        return found

    def close(self):
        try:
            self.send('Browser.close', session=False)
        except (DevToolsError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_write, self._out_read):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc.stderr.close()


def _have_chromium():
    return os.access(CHROMIUM, os.X_OK)


@pytest.fixture(name='workdir')
def fixture_workdir():
    """A scratch directory outside pytest's own temporary tree: Chromium's helper processes may still write into
    their profile for a moment after the browser closed, which must not disturb pytest's cleanup (or that of the
    parallel workers ansible-test units runs)."""
    path = tempfile.mkdtemp(prefix='failsafe-html-')
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='module')
def chromium():
    if not _have_chromium() and os.geteuid() == 0 and CHROMIUM == '/usr/bin/chromium':
        subprocess.run(['bash', PREREQS], check=True, stdin=subprocess.DEVNULL)
    if not _have_chromium():
        cannot_run('%s is missing: run scripts/browser-prereqs.sh as root (Debian package chromium)' % CHROMIUM)
    # in the test process's shared directory (tests/process_shared.py), removed when the session ends: under
    # ansible-test units each test runs in a fork of its own, which ends without the teardown of module fixtures
    profile = tempfile.mkdtemp(prefix='failsafe-chromium-', dir=process_shared.directory())
    browser = Chromium(CHROMIUM, profile)
    try:
        browser.open_page()
        yield browser
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


DOM_FACTS = '''JSON.stringify({
  lanes: Array.from(document.querySelectorAll('svg .lane')).map(function (g) { return g.dataset.lane; }),
  laneBoxes: Array.from(document.querySelectorAll('svg .lane .lane-bg')).map(function (r) {
    var b = r.getBoundingClientRect(); return [b.width, b.height]; }),
  failures: Array.from(document.querySelectorAll('svg .failure-marker')).map(function (g) {
    var b = g.getBoundingClientRect();
    return {id: g.id, host: g.dataset.host, title: g.querySelector('title').textContent, w: b.width, h: b.height}; }),
  band: !!document.querySelector('svg #rollback-band'),
  alerts: document.querySelectorAll('svg .alert-marker').length,
  banner: document.querySelector('#outcome').textContent,
  scripts: document.scripts.length,
  external: Array.from(document.querySelectorAll('[src],link[href]')).length,
  layers: document.querySelectorAll('table.layers tr').length
})'''


def test_the_html_report_renders_in_headless_chromium(chromium, workdir):
    # Given a ROLLBACK FAILED incident on three hosts (one failed) with alerts, written by write_report
    incident = make_incident(outcome='rollback_failed')
    write_report(incident, str(workdir))
    page = incident['files']['report_html']
    # When Chromium opens the file
    chromium.load('file://' + page)
    facts = json.loads(chromium.evaluate(DOM_FACTS))
    os.makedirs(OUTPUT, exist_ok=True)
    shot = chromium.screenshot(os.path.join(OUTPUT, 'incident-report.png'))
    shutil.copy(page, os.path.join(OUTPUT, 'incident-report.html'))
    # Then nothing went wrong in the browser, and the picture has its lanes and failure marker, drawn with a size
    assert chromium.problems() == []
    assert facts['lanes'] == ['web1', 'web2', 'web3', 'controller']
    assert all(w > 100 and h > 10 for w, h in facts['laneBoxes'])
    assert len(facts['failures']) == 1
    marker = facts['failures'][0]
    assert marker['id'] == 'failure-marker-1' and marker['host'] == 'web2'
    assert 'Restart | app' in marker['title'] and 'exit 1 <boom>' in marker['title']
    assert marker['w'] > 4 and marker['h'] > 4
    assert facts['band'] and facts['alerts'] == 2
    assert 'ROLLBACK FAILED' in facts['banner']
    assert facts['scripts'] == 0 and facts['external'] == 0
    assert facts['layers'] > 1
    with open(shot, 'rb') as handle:
        assert handle.read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.path.getsize(shot) > 10000


def test_the_harness_sees_console_errors_and_exceptions(chromium, workdir):
    # Given a page that logs a console error and throws (no CSP, unlike the report)
    page = workdir / 'broken.html'
    page.write_text('<!DOCTYPE html><html><head><title>x</title></head><body><p>x</p>'
                    '<script>console.error("deliberate error"); throw new Error("deliberate exception");</script>'
                    '</body></html>')
    # When Chromium opens it
    chromium.load('file://%s' % page)
    problems = chromium.problems()
    # Then the test harness reports both (so a clean report above is a real finding)
    assert any('deliberate error' in p for p in problems), problems
    assert any('deliberate exception' in p for p in problems), problems


# A fixture that fails makes an error of its test: a failed run all the same.
@pytest.mark.parametrize('ci, euid, outcome', [('true', 1000, 'error'), ('', 0, 'error'), ('', 1000, 'skipped')])
def test_a_missing_browser_fails_under_ci_and_as_root_and_skips_elsewhere(workdir, ci, euid, outcome):
    # Given no browser where FAILSAFE_CHROMIUM points, and a run under CI, as root, or neither (euid simulated)
    env = dict(os.environ, FAILSAFE_CHROMIUM=str(workdir / 'no-chromium'), CI=ci, PYTHONDONTWRITEBYTECODE='1')
    # The inner run gets a temporary directory of its own: under the default one it would rotate (and remove) the
    # numbered directories the outer run's parallel workers are using.
    code = ('import os, sys, pytest; os.geteuid = lambda: %d; '
            'sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", "--basetemp", %r, "-k", '
            '"renders_in_headless", %r]))' % (euid, str(workdir / 'inner'), os.path.abspath(__file__)))
    # When the report test runs
    run = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    # Then it fails under CI or as root (with the reason), and only skips elsewhere
    tail = run.stdout.strip().splitlines()[-1]
    assert re.search(r'\b1 %s\b' % outcome, tail), run.stdout[-3000:]
    assert 'no-chromium is missing: run scripts/browser-prereqs.sh' in run.stdout
    assert run.returncode == (1 if outcome == 'error' else 0)
