# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A deploy's outcome as JUnit XML, for the test views of CI systems (GitLab ``reports: junit``, Azure
``PublishTestResults``, a GitHub job summary): one test case per host and phase (the deploy's roles: preflight,
release, migrate, activate, flags, verify, commit; ``play`` for tasks outside them) and one per host for its
rollback. It reads the facts of the incident report (``_incident.build_incident``) or, for a deploy that ended
without an incident, the run's timeline: it decides nothing of its own. A failed case's text holds the failure's
cause, evidence, task, file:line and message."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
from xml.sax.saxutils import escape, quoteattr

from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import write_text_atomic

# The phases of failsafe.deploy.deploy in their order; other roles keep their own name, after these.
PHASES = ('preflight', 'snapshot', 'release', 'migrate', 'traffic', 'activate', 'flags', 'verify', 'commit')
_CONTROL = re.compile(u'[\x00-\x08\x0b\x0c\x0e-\x1f]')


def phase_of(role):
    """The phase a task belongs to: its role's short name, or ``play`` for a task of the play itself."""
    if not role:
        return 'play'
    return str(role).rsplit('.', 1)[-1]


def _text(value):
    return _CONTROL.sub(u'?', u'' if value is None else u'%s' % (value,))


def host_phases(timeline):
    """{host: {phase: [statuses]}} from a timeline's task starts (which name the role) and the per-host results
    that follow each of them, in the order the phases were first seen per host."""
    phases = {}
    role = None
    for entry in timeline or ():
        kind = entry.get('kind') or entry.get('event')
        if kind in ('task_start', 'handler_start'):
            role = entry.get('role')
        elif kind == 'result' and entry.get('host'):
            phases.setdefault(entry['host'], {}).setdefault(phase_of(role), []).append(entry.get('status'))
        elif kind == 'play_start':
            role = None
    return phases


def _order(phase):
    return (PHASES.index(phase), phase) if phase in PHASES else (len(PHASES), phase)


def failure_text(failure):
    """The text of a failed case: what failed, where, the classified cause and its evidence, the message."""
    lines = [
        u'host: %s' % _text(failure.get('host')),
        u'task: %s' % _text(failure.get('task')),
        u'phase: %s' % phase_of(failure.get('role')),
        u'cause: %s' % _text(failure.get('cause')),
        u'evidence: %s' % _text(failure.get('evidence')),
    ]
    if failure.get('path'):
        lines.append(u'at: %s' % _text(failure['path']))
    if failure.get('unreachable'):
        lines.append(u'unreachable: yes')
    if failure.get('message'):
        lines.append(u'message: %s' % _text(failure['message']))
    return u'\n'.join(lines)


def _case(classname, name, failure=None, failure_type=None, message=None, skipped=None, output=None):
    head = u'    <testcase classname=%s name=%s time="0">' % (quoteattr(_text(classname)), quoteattr(_text(name)))
    body = []
    if failure is not None:
        body.append(u'      <failure type=%s message=%s>%s</failure>' % (
            quoteattr(_text(failure_type)), quoteattr(_text(message)), escape(failure)))
    if skipped is not None:
        body.append(u'      <skipped message=%s/>' % quoteattr(_text(skipped)))
    if output:
        body.append(u'      <system-out>%s</system-out>' % escape(_text(output)))
    return u'\n'.join([head] + body + [u'    </testcase>'])


def render_junit(incident):
    """The JUnit XML (a str) of an incident dict (schema 1), or of a run without one: ``incident`` then needs only
    ``outcome`` (``committed``), ``timeline`` and ``summary.releases``."""
    outcome = incident.get('outcome') or 'committed'
    summary = incident.get('summary') or {}
    failures = [f for f in incident.get('failures') or () if not f.get('rescued')]
    rollback_hosts = (incident.get('rollback') or {}).get('hosts') or {}
    phases = host_phases(incident.get('timeline'))
    for failure in failures:
        phases.setdefault(failure.get('host'), {}).setdefault(phase_of(failure.get('role')), [])
    releases = ', '.join(summary.get('releases') or ()) or 'a release'
    label = summary.get('outcome_label') or ('DEPLOYED' if outcome == 'committed' else str(outcome).upper())
    cases = []
    failed = 0
    for host in sorted(phases):
        for phase in sorted(phases[host], key=_order):
            statuses = phases[host][phase]
            here = [f for f in failures if f.get('host') == host and phase_of(f.get('role')) == phase]
            if here:
                failed += 1
                first = here[0]
                message = u'%s: %s failed (%s, %s)' % (host, phase, _text(first.get('cause')),
                                                       _text(first.get('evidence')))
                cases.append(_case(host, phase, failure=u'\n\n'.join(failure_text(f) for f in here),
                                   failure_type=first.get('cause'), message=message))
            else:
                counts = dict((s, statuses.count(s)) for s in sorted(set(s for s in statuses if s)))
                cases.append(_case(host, phase, output=u'%s: %s' % (phase, ', '.join(
                    u'%d %s' % (n, s) for s, n in counts.items()) or 'no task results')))
    for host in sorted(rollback_hosts):
        info = rollback_hosts[host] or {}
        status = info.get('status')
        verified = info.get('verified')
        words = u'rollback of %s: %s' % (host, _text(status))
        if verified is not None:
            words += u'; verified: %s' % _text(verified)
        undone = [layer.get('undid') for layer in ((info.get('restored') or {}).get('layers') or ())
                  if isinstance(layer, dict) and layer.get('undid')]
        if undone:
            words += u'; undone: %s' % u', '.join(_text(u) for u in undone)
        if status == 'ok':
            cases.append(_case(host, 'rollback', output=words))
        else:
            failed += 1
            detail = [words] + [u'%s: %s' % (k, _text(v)) for k, v in sorted(info.items())
                                if k not in ('status',) and v not in (None, '', [], {})]
            cases.append(_case(host, 'rollback', failure=u'\n'.join(detail), failure_type='rollback_failed',
                               message=u'%s: rollback %s' % (host, _text(status))))
    if not cases:
        cases.append(_case('deploy', 'deploy', skipped=u'no host ran a task of the deploy'))
    properties = [('outcome', outcome), ('outcome_label', label), ('incident_id', incident.get('incident_id')),
                  ('releases', releases), ('cause', summary.get('cause')), ('reason', summary.get('reason')),
                  ('report_json', (incident.get('files') or {}).get('report_json')),
                  ('report_markdown', (incident.get('files') or {}).get('report_markdown'))]
    props = u'\n'.join(u'      <property name=%s value=%s/>' % (quoteattr(k), quoteattr(_text(v)))
                       for k, v in properties if v not in (None, ''))
    name = u'failsafe.deploy %s: %s' % (releases, label)
    skipped = sum(1 for c in cases if u'<skipped' in c)
    return u'\n'.join([
        u'<?xml version="1.0" encoding="UTF-8"?>',
        u'<testsuites name=%s tests="%d" failures="%d" errors="0">' % (quoteattr(_text(name)), len(cases), failed),
        u'  <testsuite name=%s tests="%d" failures="%d" errors="0" skipped="%d">' % (
            quoteattr(_text(name)), len(cases), failed, skipped),
        u'    <properties>', props, u'    </properties>',
    ] + cases + [u'  </testsuite>', u'</testsuites>', u''])


def write_junit(path, incident):
    """Write the JUnit XML of ``incident`` to ``path`` atomically (its directory is made); returns the path."""
    path = os.path.abspath(os.path.expanduser(path))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory)
    return write_text_atomic(path, render_junit(incident), mode=0o644)


def write_or_warn(path, incident, warn):
    """The outcome as JUnit XML at ``path`` when it is set (the callback's junit_file), from the incident's facts; a
    problem is a warning through ``warn``, never an error of the run."""
    if not path:
        return
    try:
        write_junit(path, incident)
    except (OSError, ValueError, TypeError) as exc:
        warn('could not write the JUnit file %s: %s (setting junit_file)' % (path, exc))
