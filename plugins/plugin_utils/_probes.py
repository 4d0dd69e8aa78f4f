# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Dependency probes of the auto_rollback callback: "was it us or a dependency?".

The operator lists the deployment's dependencies (callback option ``dependencies``), one entry each, in the form
``[name=]kind:target``:

- ``tcp:HOST:PORT`` -- a TCP connection opens (a database, a cache, a message broker);
- ``http:URL`` (or the bare ``http://...`` / ``https://...`` URL) -- a GET answers with a status below 400;
- ``dns:NAME`` -- the name resolves;
- ``disk:PATH:MIN_FREE`` -- the file system of PATH has at least MIN_FREE free (bytes, or with K, M, G, T, or a
  percentage such as ``10%``);
- ``command:COMMAND`` -- the command (split like a shell would, run without a shell) exits 0.

``probe_all()`` probes them all side by side from the controller, each within ``timeout`` seconds, and never
raises; ``verdict()`` turns the results into the answer the report gives.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
import shlex
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.failsafe.deploy.plugins.plugin_utils._errors import ControllerSideError

KINDS = ('tcp', 'http', 'dns', 'disk', 'command')
DEFAULT_TIMEOUT = 2.0
BODY_EXCERPT = 300
_SIZE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$', re.I)
_NAME = re.compile(r'^([A-Za-z0-9_.-]+)=(.+)$')
_UNITS = {'': 1, 'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3, 'T': 1024 ** 4}


class DependencyError(ControllerSideError, ValueError):
    """An entry of the ``dependencies`` option that cannot be understood."""


def parse_size(text):
    """Bytes of '500M', '2G', '1048576'; ('percent', 10.0) of '10%'."""
    text = str(text).strip()
    if text.endswith('%'):
        try:
            value = float(text[:-1])
        except ValueError:
            raise DependencyError('%r is not a percentage' % text)
        if not 0 <= value <= 100:
            raise DependencyError('%r is not a percentage between 0 and 100' % text)
        return ('percent', value)
    match = _SIZE.match(text)
    if not match:
        raise DependencyError('%r is not a size (such as 500M, 2G or 10%%)' % text)
    return ('bytes', int(float(match.group(1)) * _UNITS[match.group(2).upper()]))


def parse(entry):
    """One ``dependencies`` entry -> {'name', 'kind', 'target', ...}. Raises DependencyError."""
    if isinstance(entry, dict):
        entry = dict(entry)
        kind = entry.get('kind') or entry.get('type')
        target = entry.get('target')
        if kind not in KINDS or not target:
            raise DependencyError('a dependency needs a kind (%s) and a target: %r' % (', '.join(KINDS), entry))
        text = '%s:%s' % (kind, target)
        if entry.get('min_free') is not None and kind == 'disk':
            text += ':%s' % entry['min_free']
        return parse('%s=%s' % (entry['name'], text) if entry.get('name') else text)
    text = str(entry or '').strip()
    if not text:
        raise DependencyError('an empty dependency entry')
    name = None
    match = _NAME.match(text)
    if match and not re.match(r'^(?:https?://|command:)', text):
        name, text = match.group(1), match.group(2).strip()
    if re.match(r'^https?://', text, re.I):
        kind, target = 'http', text
    elif ':' in text:
        kind, target = text.split(':', 1)
        kind = kind.strip().lower()
        target = target.strip()
    else:
        raise DependencyError('%r: expected kind:target with a kind among %s' % (text, ', '.join(KINDS)))
    if kind not in KINDS:
        raise DependencyError('%r: unknown kind %r (one of %s)' % (text, kind, ', '.join(KINDS)))
    dep = {'kind': kind, 'target': target}
    if kind == 'tcp':
        host, sep, port = target.rpartition(':')
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DependencyError('%r: a tcp dependency is tcp:HOST:PORT' % text)
        dep.update(host=host.strip('[]'), port=int(port))
    elif kind == 'http':
        parsed = urllib.parse.urlsplit(target)
        if parsed.scheme not in ('http', 'https') or not parsed.hostname:
            raise DependencyError('an http dependency is an http:// or https:// URL')
        dep['url'] = target
        # the shown target never carries credentials
        netloc = parsed.hostname + (':%d' % parsed.port if parsed.port else '')
        dep['target'] = urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, '', ''))
        dep['secrets'] = [s for s in (parsed.password, parsed.query) if s]
    elif kind == 'dns':
        if not re.match(r'^[A-Za-z0-9_.-]+$', target):
            raise DependencyError('%r: a dns dependency is dns:NAME' % text)
    elif kind == 'disk':
        path, sep, minimum = target.rpartition(':')
        if not sep or not path.startswith('/'):
            raise DependencyError('%r: a disk dependency is disk:/PATH:MIN_FREE (such as disk:/var:1G)' % text)
        dep.update(path=path, min_free=parse_size(minimum), min_free_text=minimum.strip())
    elif kind == 'command':
        try:
            argv = shlex.split(target)
        except ValueError as exc:
            raise DependencyError('%r: %s' % (text, exc))
        if not argv:
            raise DependencyError('%r: an empty command' % text)
        dep['argv'] = argv
    # without a name, the entry as written (an http URL without its credentials and query)
    dep['name'] = name or (dep['target'] if kind == 'http' else '%s:%s' % (kind, dep['target']))
    return dep


def parse_all(entries):
    """(dependencies, errors) of the option's list; entries that cannot be understood are left out."""
    deps, errors = [], []
    for entry in entries or ():
        try:
            deps.append(parse(entry))
        except DependencyError as exc:
            errors.append(str(exc))
    return deps, errors


def _probe_tcp(dep, timeout):
    with socket.create_connection((dep['host'], dep['port']), timeout=timeout):
        pass
    return True, 'connection opened'


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _probe_http(dep, timeout):
    opener = urllib.request.build_opener(_NoRedirect())
    request = urllib.request.Request(dep['url'], headers={'User-Agent': 'failsafe.deploy-probe'}, method='GET')
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.getcode()
            body = response.read(BODY_EXCERPT + 1)
    except urllib.error.HTTPError as exc:
        status = exc.code
        try:
            body = exc.read(BODY_EXCERPT + 1)
        except Exception:  # pylint: disable=broad-except
            body = b''
        finally:
            exc.close()
    excerpt = body.decode('utf-8', 'replace')[:BODY_EXCERPT].strip()
    detail = 'HTTP %s' % status + (': %s' % excerpt if excerpt and status >= 400 else '')
    return status < 400, detail, {'http_status': status}


def _probe_dns(dep, timeout):
    found = {}

    def resolve():
        try:
            found['addresses'] = sorted({a[4][0] for a in socket.getaddrinfo(dep['target'], None)})
        except Exception as exc:  # pylint: disable=broad-except
            found['error'] = exc

    worker = threading.Thread(target=resolve, name='failsafe-probe-dns', daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return False, 'no answer within %.1f s' % timeout
    if 'error' in found:
        return False, 'does not resolve: %s' % found['error']
    return True, 'resolves to %s' % ', '.join(found['addresses'][:4])


def _human(size):
    for unit in ('B', 'K', 'M', 'G', 'T'):
        if size < 1024 or unit == 'T':
            return ('%d%s' % (size, unit)) if unit == 'B' else ('%.1f%s' % (size, unit))
        size /= 1024.0
    return str(size)


def _probe_disk(dep, timeout):
    stat = os.statvfs(dep['path'])
    free = stat.f_bavail * stat.f_frsize
    total = stat.f_blocks * stat.f_frsize
    kind, minimum = dep['min_free']
    percent = (100.0 * free / total) if total else 0.0
    ok = percent >= minimum if kind == 'percent' else free >= minimum
    detail = '%s free (%.1f%%), at least %s wanted' % (_human(free), percent, dep['min_free_text'])
    return ok, detail, {'free_bytes': free}


def _probe_command(dep, timeout):
    try:
        proc = subprocess.run(dep['argv'], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, 'did not end within %.1f s' % timeout
    output = proc.stdout.decode('utf-8', 'replace').strip()
    tail = output.splitlines()[-1][:BODY_EXCERPT] if output else ''
    return proc.returncode == 0, 'exit %s%s' % (proc.returncode, (': %s' % tail) if tail else ''), {
        'rc': proc.returncode}


_PROBES = {'tcp': _probe_tcp, 'http': _probe_http, 'dns': _probe_dns, 'disk': _probe_disk,
           'command': _probe_command}


def probe(dep, timeout=DEFAULT_TIMEOUT, clock=time.monotonic):
    """The result of probing one parsed dependency: {'name', 'kind', 'target', 'ok', 'detail', 'seconds'}."""
    started = clock()
    extra = {}
    try:
        outcome = _PROBES[dep['kind']](dep, timeout)
        ok, detail = outcome[0], outcome[1]
        if len(outcome) > 2:
            extra = outcome[2]
    except (socket.timeout, TimeoutError):
        ok, detail = False, 'timed out after %.1f s' % timeout
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            ok, detail = False, 'timed out after %.1f s' % timeout
        else:
            ok, detail = False, 'connection failed: %s' % (getattr(reason, 'strerror', None) or reason)
    except OSError as exc:
        ok, detail = False, exc.strerror or '%s: %s' % (type(exc).__name__, exc)
    except Exception as exc:  # pylint: disable=broad-except
        ok, detail = False, '%s: %s' % (type(exc).__name__, exc)
    result = {'name': dep['name'], 'kind': dep['kind'], 'target': dep['target'], 'ok': bool(ok),
              'status': 'up' if ok else 'DOWN', 'detail': detail, 'seconds': round(clock() - started, 3)}
    result.update(extra)
    return result


def probe_all(deps, timeout=DEFAULT_TIMEOUT):
    """Probe every dependency side by side; returns the results in the order given, within ``timeout`` (+0.5 s)."""
    results = [None] * len(deps)

    def run(index, dep):
        results[index] = probe(dep, timeout)

    threads = [threading.Thread(target=run, args=(i, d), name='failsafe-probe', daemon=True)
               for i, d in enumerate(deps)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for index, dep in enumerate(deps):
        if results[index] is None:
            results[index] = {'name': dep['name'], 'kind': dep['kind'], 'target': dep['target'], 'ok': False,
                              'status': 'DOWN', 'detail': 'no answer within %.1f s' % timeout, 'seconds': timeout}
    return results


def probe_at_failure(deps, timeout, redactor, timeline):
    """Probe ``deps`` side by side at a deploy's first counted failure: (redacted results, their verdict); how long it
    took and what was down go to ``timeline``."""
    started = time.time()
    results = redactor.data(probe_all(deps, timeout))
    answer = verdict(results)
    timeline.add('dependency_probes', seconds=round(time.time() - started, 3), down=', '.join(answer['down']) or None)
    return results, answer


def verdict(results):
    """The report's answer to "was it us or a dependency?": {'verdict', 'down', 'text'}."""
    if not results:
        return {'verdict': 'unknown', 'down': [],
                'text': 'No dependencies are listed (callback option dependencies), so none was probed.'}
    down = [r for r in results if not r.get('ok')]
    if down:
        names = ', '.join('%s (%s %s: %s)' % (r['name'], r['kind'], r['target'], r['detail']) for r in down)
        return {'verdict': 'dependency', 'down': [r['name'] for r in down],
                'text': 'A dependency was down at the moment of failure: %s. The failure is likely caused by %s, '
                        'not by the release.' % (names, 'it' if len(down) == 1 else 'them')}
    return {'verdict': 'deploy', 'down': [],
            'text': 'Every listed dependency was up at the moment of failure (%s): the cause is likely in the '
                    'release or its configuration.' % ', '.join(r['name'] for r in results)}
