# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Health probes (HTTP, TCP, command) and the retry loop around them.

Each probe makes one attempt and returns an ``Outcome``; ``run_probe`` repeats a probe in the ``wait_for``/``until``
vocabulary (``delay`` before the first attempt, ``sleep`` between attempts, ``retries`` further attempts after the
first) and records every attempt. Nothing here writes anything: a health check is read-only.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time

from urllib.error import HTTPError, URLError

from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.urls import Request

try:
    import jmespath
    HAS_JMESPATH = True
    JMESPATH_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the target
    jmespath = None
    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = exc

# Bytes read from a response or a command's stdout for matching; what is returned is cut to BODY_RETURN_LIMIT.
BODY_READ_LIMIT = 1024 * 1024
BODY_RETURN_LIMIT = 4096

# What a probe's messages never show of its URL: the userinfo (``user:password@``) and secret-looking query values.
URL_MASK = '********'
_URL_USERINFO_RE = re.compile(r'^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@]*@')
_URL_SECRET_QUERY_RE = re.compile(
    r'(?P<key>[?&;](?:access_token|token|password|passwd|secret|api_key|apikey|key|sig|signature|auth)=)[^&;#]*',
    re.IGNORECASE)


def display_url(url):
    """``url`` as messages and results may show it: credentials in the userinfo and secret query values masked.

    Errors travel from the host into ansible's output, job events and the deploy journal, where no controller-side
    redaction reaches.
    """
    url = to_text(url, errors='surrogate_or_replace')
    url = _URL_USERINFO_RE.sub(lambda m: m.group('scheme') + URL_MASK + '@', url)
    return _URL_SECRET_QUERY_RE.sub(lambda m: m.group('key') + URL_MASK, url)


class Outcome(object):
    """The result of one attempt."""

    def __init__(self, ok, latency, error=None, status=None, rc=None, body=None, data=None, has_json=False):
        self.ok = ok
        self.latency = latency
        self.error = error
        self.status = status
        self.rc = rc
        self.body = body
        self.data = data
        self.has_json = has_json


class Matchers(object):
    """Assertions shared by the probes: body regex, jmespath expression, latency ceiling."""

    def __init__(self, body_regex=None, json_query=None, max_latency=None):
        self.body_regex = re.compile(body_regex, re.MULTILINE) if body_regex else None
        self.json_query_text = json_query
        self.json_query = None
        if json_query:
            if not HAS_JMESPATH:
                raise RuntimeError('jmespath is required for json_query')
            self.json_query = jmespath.compile(json_query)
        self.max_latency = max_latency

    def check_latency(self, latency):
        if self.max_latency is not None and latency > self.max_latency:
            return 'latency %.3fs exceeds max_latency %.3fs' % (latency, self.max_latency)
        return None

    def check_text(self, text, what):
        """Return (error, data, has_json) for a response body or stdout."""
        data = None
        has_json = False
        if text:
            try:
                data = json.loads(text)
                has_json = True
            except ValueError:
                data = None
        if self.body_regex is not None and not self.body_regex.search(text):
            return 'body_regex %r did not match the %s' % (self.body_regex.pattern, what), data, has_json
        if self.json_query is not None:
            if not has_json:
                return 'json_query %r needs a JSON %s, got none' % (self.json_query_text, what), data, has_json
            value = self.json_query.search(data)
            if not is_truthy(value):
                return ('json_query %r evaluated to %s (not truthy) on the %s'
                        % (self.json_query_text, json.dumps(value), what)), data, has_json
        return None, data, has_json


def is_truthy(value):
    """JMESPath truthiness: false, null, empty string, empty list and empty object are false; numbers are true."""
    if value is None or value is False:
        return False
    if isinstance(value, (str, list, dict)) and len(value) == 0:
        return False
    return True


def compile_regex_error(pattern):
    """Return a message when the pattern does not compile, else None."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return to_native(exc)
    return None


def compile_query_error(expression):
    """Return a message when the jmespath expression does not compile, else None (jmespath must be present)."""
    try:
        jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        return to_native(exc)
    return None


def _read_limited(fileobj):
    data = fileobj.read(BODY_READ_LIMIT) if fileobj is not None else b''
    return data or b''


def probe_http(url, matchers, method='GET', status_code=(200,), headers=None, timeout=5.0, validate_certs=True,
               use_proxy=True):
    """One HTTP request. A status outside status_code, a failed matcher or a transport error fails the attempt."""
    request = Request(headers=headers or {}, timeout=timeout, validate_certs=validate_certs, use_proxy=use_proxy,
                      follow_redirects='safe')
    start = time.monotonic()
    status = None
    try:
        response = request.open(method, url)
        try:
            status = response.getcode()
            raw = _read_limited(response)
        finally:
            response.close()
    except HTTPError as exc:
        status = exc.code
        try:
            raw = _read_limited(exc)
        except Exception:  # the error body is best effort; the status is what matters
            raw = b''
    except (URLError, socket.timeout, OSError, ValueError) as exc:
        latency = time.monotonic() - start
        reason = getattr(exc, 'reason', None) or exc
        return Outcome(False, latency, error='%s %s: %s' % (method, display_url(url), to_native(reason)))
    except Exception as exc:  # http.client raises its own family (RemoteDisconnected, BadStatusLine, ...)
        latency = time.monotonic() - start
        shown = display_url(url)
        return Outcome(False, latency, error='%s %s: %s: %s' % (method, shown, type(exc).__name__, to_native(exc)))
    latency = time.monotonic() - start
    body = to_text(raw, errors='surrogate_or_replace')
    error = None
    if status not in status_code:
        error = 'status %s not in status_code %s' % (status, list(status_code))
    check_error, data, has_json = matchers.check_text(body, 'response body')
    error = error or check_error or matchers.check_latency(latency)
    return Outcome(error is None, latency, error=error, status=status, body=body, data=data, has_json=has_json)


def probe_tcp(host, port, matchers, timeout=5.0):
    """One TCP connect: the attempt passes when the connection is accepted."""
    start = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except (socket.timeout, OSError) as exc:
        latency = time.monotonic() - start
        return Outcome(False, latency, error='connect to %s:%s: %s' % (host, port, to_native(exc)))
    latency = time.monotonic() - start
    try:
        sock.close()
    except OSError:
        pass
    error = matchers.check_latency(latency)
    return Outcome(error is None, latency, error=error)


def command_argv(cmd):
    """A command given as a string is split like a shell would split words; no shell ever runs it."""
    if isinstance(cmd, (list, tuple)):
        return [to_native(part) for part in cmd]
    return shlex.split(to_native(cmd))


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass


def probe_command(argv, matchers, expect_rc=0, timeout=5.0, cwd=None):
    """Run argv (no shell) with stdin closed; the attempt passes when rc == expect_rc and the matchers pass on stdout.

    The command runs in its own session so that a timeout kills it and everything it started.
    """
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=cwd, start_new_session=True, close_fds=True)
    except OSError as exc:
        latency = time.monotonic() - start
        program = argv[0] if argv else '(empty cmd)'
        return Outcome(False, latency, error='cannot run %s: %s' % (program, to_native(exc)))
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            proc.communicate(timeout=1)
        except subprocess.TimeoutExpired:  # a grandchild outside the group still holds a pipe
            pass
        latency = time.monotonic() - start
        return Outcome(False, latency, error='command %s timed out after %ss' % (argv[0], timeout))
    latency = time.monotonic() - start
    rc = proc.returncode
    text = to_text(stdout[:BODY_READ_LIMIT], errors='surrogate_or_replace')
    error = None
    if rc != expect_rc:
        err_tail = to_text(stderr[-512:], errors='surrogate_or_replace').strip()
        error = 'command %s returned rc=%s, expected %s%s' % (argv[0], rc, expect_rc,
                                                              (': ' + err_tail) if err_tail else '')
    check_error, data, has_json = matchers.check_text(text, 'command stdout')
    error = error or check_error or matchers.check_latency(latency)
    return Outcome(error is None, latency, error=error, rc=rc, body=text, data=data, has_json=has_json)


def run_probe(probe, retries=10, delay=0.0, sleep=1.0, clock=time.monotonic, sleeper=time.sleep):
    """Call probe() until it passes, at most 1 + retries times.

    Returns a dict: ok, elapsed (seconds since the start, delay included), attempts (list of dicts) and last
    (the last Outcome).
    """
    start = clock()
    if delay and delay > 0:
        sleeper(delay)
    attempts = []
    last = None
    total = 1 + max(0, int(retries))
    for n in range(1, total + 1):
        last = probe()
        entry = {
            'n': n,
            'ok': last.ok,
            'elapsed': round(clock() - start, 6),
            'latency': round(last.latency, 6),
            'error': last.error,
        }
        if last.status is not None:
            entry['status'] = last.status
        if last.rc is not None:
            entry['rc'] = last.rc
        attempts.append(entry)
        if last.ok:
            break
        if n < total and sleep and sleep > 0:
            sleeper(sleep)
    return {'ok': last.ok, 'elapsed': round(clock() - start, 6), 'attempts': attempts, 'last': last}


def summarize(outcome):
    """The status/rc/body/json keys the module returns for the last attempt."""
    body = outcome.body
    result = {
        'status': outcome.status,
        'body': body[:BODY_RETURN_LIMIT] if body is not None else None,
        'json': outcome.data if outcome.has_json else None,
    }
    if outcome.rc is not None:
        result['rc'] = outcome.rc
    return result
