# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The failed task's own evidence, for the alerts and the incident report.

``failure_details(result)`` picks from a failed task result what a person needs to see first, each part bounded:
the exit code and the tail of stderr (or of stdout when stderr is empty) of a command, the HTTP status, URL and an
excerpt of the body of an HTTP call or probe, and the checks that failed (the verify phase of
``failsafe.deploy.transaction``, ``failsafe.deploy.health_check``) with what each expected and what came back. For a
loop, the first failed item. ``details_lines()`` renders them as short text lines.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

TAIL_LINES = 15
TAIL_CHARS = 2000
BODY_CHARS = 500
MAX_CHECKS = 10


def tail(text, lines=TAIL_LINES, chars=TAIL_CHARS):
    """The last ``lines`` non-empty lines of ``text``, at most ``chars`` characters."""
    if isinstance(text, (list, tuple)):
        text = '\n'.join(str(t) for t in text)
    kept = [line.rstrip() for line in str(text or '').splitlines() if line.strip()][-lines:]
    out = '\n'.join(kept)
    if len(out) > chars:
        out = '...' + out[-(chars - 3):]
    return out


def excerpt(value, chars=BODY_CHARS):
    if value is None or value == '':
        return None
    if not isinstance(value, str):
        value = json.dumps(value, sort_keys=True, default=str)
    value = value.strip()
    return value if len(value) <= chars else value[:chars - 3] + '...'


def _first_failed_item(result):
    for item in result.get('results') or ():
        if isinstance(item, dict) and (item.get('failed') or item.get('unreachable')):
            return item
    return None


def _checks(result):
    out = []
    for check in result.get('checks') or ():
        if not isinstance(check, dict) or check.get('ok') is not False:
            continue
        entry = dict((k, check.get(k)) for k in ('name', 'expected', 'observed', 'error', 'status', 'rc')
                     if check.get(k) not in (None, '', [], {}))
        body = excerpt(check.get('body'))
        if body:
            entry['body'] = body
        out.append(entry)
        if len(out) >= MAX_CHECKS:
            break
    return out


def failure_details(result):
    """{'rc', 'stderr_tail', 'stdout_tail', 'http_status', 'url', 'body_excerpt', 'failed_checks'} (only those
    that are known) of a failed task result; {} when there is nothing beyond its message."""
    if not isinstance(result, dict):
        return {}
    item = _first_failed_item(result)
    if item is not None:
        details = failure_details(item)
        if details:
            if item.get('item') is not None:
                details['item'] = excerpt(item.get('item'), 200)
            return details
    details = {}
    if isinstance(result.get('rc'), int) and not isinstance(result.get('rc'), bool):
        details['rc'] = result['rc']
    stderr = tail(result.get('stderr') or result.get('module_stderr'))
    if stderr:
        details['stderr_tail'] = stderr
    else:
        stdout = tail(result.get('stdout') or result.get('module_stdout'), lines=10)
        if stdout and ('rc' in details or result.get('cmd')):
            details['stdout_tail'] = stdout
    status = result.get('status')
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        details['http_status'] = status
    if isinstance(result.get('url'), str):
        details['url'] = result['url']
    body = result.get('body')
    if body in (None, ''):
        body = result.get('content')
    if body in (None, '') and isinstance(result.get('json'), (dict, list)):
        body = result.get('json')
    body = excerpt(body)
    if body:
        details['body_excerpt'] = body
    checks = _checks(result)
    if checks:
        details['failed_checks'] = checks
    attempts = result.get('attempts')
    if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict) and attempts[-1].get('error'):
        details['last_attempt_error'] = excerpt(attempts[-1]['error'], 300)
    return details


def details_lines(details):
    """The details as short lines of text (alerts, Markdown)."""
    if not details:
        return []
    lines = []
    for check in details.get('failed_checks') or ():
        parts = ['check %s failed' % (check.get('name') or '?')]
        for key in ('error', 'expected', 'observed'):
            if check.get(key) not in (None, ''):
                parts.append('%s: %s' % (key, excerpt(check[key], 200)))
        if check.get('status') is not None:
            parts.append('HTTP %s' % check['status'])
        if check.get('body'):
            parts.append('body: %s' % excerpt(check['body'], 200))
        lines.append('; '.join(parts))
    if details.get('http_status') is not None:
        lines.append('HTTP %s%s' % (details['http_status'], (' from %s' % details['url']) if details.get('url')
                                    else ''))
    if details.get('body_excerpt'):
        lines.append('body: %s' % details['body_excerpt'])
    if details.get('last_attempt_error'):
        lines.append('last attempt: %s' % details['last_attempt_error'])
    if details.get('rc') is not None:
        lines.append('exit code %s' % details['rc'])
    if details.get('stderr_tail'):
        lines.append('stderr (last lines):\n%s' % details['stderr_tail'])
    if details.get('stdout_tail'):
        lines.append('stdout (last lines):\n%s' % details['stdout_tail'])
    if details.get('item'):
        lines.append('loop item: %s' % details['item'])
    return lines
