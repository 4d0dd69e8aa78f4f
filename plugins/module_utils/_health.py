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

import importlib.util
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

from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError

# jmespath is looked for here and imported only by a check that has a json_query (_jmespath): most calls have none,
# and its import is a good part of a call's own start-up on a host.
try:
    HAS_JMESPATH = importlib.util.find_spec('jmespath') is not None
except (ImportError, ValueError):  # pragma: no cover - depends on the target
    HAS_JMESPATH = False
JMESPATH_IMPORT_ERROR = None if HAS_JMESPATH else ImportError('No module named jmespath')


def _jmespath():
    import jmespath  # pylint: disable=import-outside-toplevel
    return jmespath


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
            self.json_query = _jmespath().compile(json_query)
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
    jmespath = _jmespath()
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
    # imported here, not at the top: ansible.module_utils.urls brings ssl, http.client and the cryptography
    # package, a tenth of a second of every transaction call on a host, and only HTTP probes need it
    from ansible.module_utils.urls import Request  # pylint: disable=import-outside-toplevel
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


# --- check lists: one definition for verify, preflight and rollback -----------------------------------------------

class CheckError(FailsafeError):
    """A check list that is not well formed (raised before any probe runs)."""


# Every option a check takes, with the default used when neither the check nor the call's defaults set it.
CHECK_OPTIONS = {
    'name': None, 'type': None, 'url': None, 'method': 'GET', 'status_code': [200], 'body_regex': None,
    'json_query': None, 'max_latency': None, 'host': '127.0.0.1', 'port': None, 'cmd': None, 'expect_rc': 0,
    'timeout': 5.0, 'retries': 10, 'delay': 0.0, 'sleep': 1.0, 'validate_certs': True, 'use_proxy': True,
    'headers': None,
}
_FLOATS = ('timeout', 'delay', 'sleep', 'max_latency')
_INTS = ('retries', 'port', 'expect_rc')
_BOOLS = ('validate_certs', 'use_proxy')


def _to_bool(value, key, label):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes', 'on', 'y'):
        return True
    if text in ('0', 'false', 'no', 'off', 'n'):
        return False
    raise CheckError('check %s: %s must be a boolean, got %r' % (label, key, value))


def check_label(spec):
    """How a check is named in messages: its name, else its URL (credentials masked), port or command."""
    if spec.get('name'):
        return str(spec['name'])
    if spec.get('url'):
        return display_url(str(spec['url']))
    if spec.get('port') is not None:
        return '%s:%s' % (spec.get('host') or '127.0.0.1', spec['port'])
    if spec.get('cmd'):
        return ' '.join(command_argv(spec['cmd']))
    return 'check'


def normalize_check(raw, defaults=None, index=0):
    """One check as a complete dict of CHECK_OPTIONS: the check's own keys, then ``defaults``, then the built-in
    defaults. Types are coerced and every rule the health_check module enforces is checked here, so the same list
    behaves the same wherever it runs. Raises CheckError naming the check."""
    if not isinstance(raw, dict):
        raise CheckError('check #%d must be a dict of options, got %s' % (index + 1, type(raw).__name__))
    unknown = sorted(set(raw) - set(CHECK_OPTIONS))
    spec = dict(CHECK_OPTIONS)
    for key, value in (defaults or {}).items():
        if key in CHECK_OPTIONS and value is not None:
            spec[key] = value
    for key, value in raw.items():
        if key in CHECK_OPTIONS and value is not None:
            spec[key] = value
    label = '#%d (%s)' % (index + 1, check_label(spec))
    if unknown:
        raise CheckError('check %s: unknown option(s) %s; a check takes %s'
                         % (label, ', '.join(unknown), ', '.join(sorted(CHECK_OPTIONS))))
    try:
        for key in _FLOATS:
            if spec[key] is not None:
                spec[key] = float(spec[key])
        for key in _INTS:
            if spec[key] is not None:
                spec[key] = int(spec[key])
    except (TypeError, ValueError) as exc:
        raise CheckError('check %s: %s' % (label, to_native(exc)))
    for key in _BOOLS:
        spec[key] = _to_bool(spec[key], key, label)
    codes = spec['status_code']
    if not isinstance(codes, (list, tuple)):
        codes = [codes]
    try:
        spec['status_code'] = [int(c) for c in codes]
    except (TypeError, ValueError):
        raise CheckError('check %s: status_code must be a list of integers, got %r' % (label, spec['status_code']))
    targets = [k for k in ('url', 'port', 'cmd') if raw.get(k) is not None]
    if len(targets) != 1:
        raise CheckError('check %s: give exactly one of url, port or cmd (got %s)'
                         % (label, ', '.join(targets) or 'none'))
    inferred = {'url': 'http', 'port': 'tcp', 'cmd': 'command'}[targets[0]]
    if spec['type'] is None:
        spec['type'] = inferred
    if spec['type'] not in ('http', 'tcp', 'command'):
        raise CheckError('check %s: type must be http, tcp or command, got %r' % (label, spec['type']))
    if spec['type'] != inferred:
        needs = {'http': 'url', 'tcp': 'port', 'command': 'cmd'}[spec['type']]
        raise CheckError('check %s: type %s needs %s' % (label, spec['type'], needs))
    for key in _FLOATS:
        if spec[key] is not None and spec[key] < 0:
            raise CheckError('check %s: %s must not be negative, got %s' % (label, key, spec[key]))
    if spec['timeout'] == 0:
        raise CheckError('check %s: timeout must be greater than 0' % label)
    if spec['retries'] < 0:
        raise CheckError('check %s: retries must not be negative, got %s' % (label, spec['retries']))
    for key in ('body_regex', 'json_query'):
        if spec['type'] == 'tcp' and spec[key] is not None:
            raise CheckError('check %s: %s does not apply to a tcp probe' % (label, key))
    if spec['body_regex'] is not None:
        error = compile_regex_error(spec['body_regex'])
        if error:
            raise CheckError('check %s: body_regex is not a valid regular expression: %s' % (label, error))
    if spec['json_query'] is not None:
        if not HAS_JMESPATH:
            raise CheckError('check %s: json_query needs the jmespath library on the host' % label)
        error = compile_query_error(spec['json_query'])
        if error:
            raise CheckError('check %s: json_query is not a valid JMESPath expression: %s' % (label, error))
    if spec['type'] == 'command':
        if not isinstance(spec['cmd'], (list, str)):
            raise CheckError('check %s: cmd must be a list of arguments or a string, got %s'
                             % (label, type(spec['cmd']).__name__))
        if not command_argv(spec['cmd']):
            raise CheckError('check %s: cmd is empty' % label)
    if spec['headers'] is not None and not isinstance(spec['headers'], dict):
        raise CheckError('check %s: headers must be a dict' % label)
    spec['method'] = str(spec['method']).upper()
    spec['label'] = check_label(spec)
    return spec


def normalize_checks(checks, defaults=None):
    """Every check of a list, normalized; the whole list is refused before anything runs if one is malformed."""
    if checks is None:
        return []
    if not isinstance(checks, (list, tuple)):
        raise CheckError('checks must be a list of dicts, got %s' % type(checks).__name__)
    return [normalize_check(c, defaults, i) for i, c in enumerate(checks)]


def probe_for(spec):
    """The one-attempt probe of a normalized check."""
    matchers = Matchers(body_regex=spec['body_regex'], json_query=spec['json_query'], max_latency=spec['max_latency'])
    if spec['type'] == 'http':
        return lambda: probe_http(spec['url'], matchers, method=spec['method'], status_code=spec['status_code'],
                                  headers=spec['headers'], timeout=spec['timeout'],
                                  validate_certs=spec['validate_certs'], use_proxy=spec['use_proxy'])
    if spec['type'] == 'tcp':
        return lambda: probe_tcp(spec['host'], spec['port'], matchers, timeout=spec['timeout'])
    return lambda: probe_command(command_argv(spec['cmd']), matchers, expect_rc=spec['expect_rc'],
                                 timeout=spec['timeout'])


def expected_of(spec):
    """What a check expects, in words, for a failure message."""
    parts = []
    if spec['type'] == 'http':
        parts.append('%s %s answering %s' % (spec['method'], display_url(spec['url']),
                                             '/'.join(str(c) for c in spec['status_code'])))
    elif spec['type'] == 'tcp':
        parts.append('a TCP connection to %s:%s' % (spec['host'], spec['port']))
    else:
        parts.append('exit code %s' % spec['expect_rc'])
    if spec['body_regex']:
        parts.append('body matching %r' % spec['body_regex'])
    if spec['json_query']:
        parts.append('json_query %r truthy' % spec['json_query'])
    if spec['max_latency'] is not None:
        parts.append('latency <= %ss' % spec['max_latency'])
    return ', '.join(parts)


def observed_of(outcome):
    """What came back on the last attempt: status or exit code, a body excerpt, the latency."""
    parts = []
    if outcome.status is not None:
        parts.append('status %s' % outcome.status)
    if outcome.rc is not None:
        parts.append('rc %s' % outcome.rc)
    if outcome.body:
        excerpt = ' '.join(outcome.body.split())[:BODY_EXCERPT]
        parts.append('body %r' % excerpt)
    parts.append('latency %.3fs' % outcome.latency)
    return ', '.join(parts)


BODY_EXCERPT = 200


def run_checks(specs, retries=None, delay=None, sleeper=time.sleep):
    """Run normalized checks in order; every check runs even after one fails, so the report names all of them.

    ``retries``/``delay`` override every check's own (the preflight probe of the running release makes one quick
    attempt and a retry; the new release gets the full budget). Returns (ok, results, msg): results are one dict
    per check (name, ok, attempts, elapsed, expected, observed, error, status/rc/body/json), msg names each failed
    check with what was expected and what came back, or is None when all passed.
    """
    results = []
    failed = []
    for spec in specs:
        run = run_probe(probe_for(spec),
                        retries=spec['retries'] if retries is None else retries,
                        delay=spec['delay'] if delay is None else delay,
                        sleep=spec['sleep'], sleeper=sleeper)
        last = run['last']
        entry = dict(name=spec['label'], type=spec['type'], ok=run['ok'], attempts=len(run['attempts']),
                     elapsed=run['elapsed'], expected=expected_of(spec), observed=observed_of(last),
                     error=last.error)
        entry.update(summarize(last))
        results.append(entry)
        if not run['ok']:
            failed.append("check '%s' failed after %d attempt(s): %s (expected %s; got %s)"
                          % (spec['label'], len(run['attempts']), last.error, entry['expected'], entry['observed']))
    return not failed, results, ('; '.join(failed) if failed else None)
