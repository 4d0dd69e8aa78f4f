# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Notices for stakeholders: plain words, per audience.

The on-call engineers get the alerts (every detail: hosts, tasks, errors, evidence). Stakeholders get these
notices instead, written from a few facts only (the service, the release, times and durations), never from a
task's output, so that no error text, stack trace, host name or secret can reach them:

- ``started``: a release of the service is being deployed;
- ``failed``: the release had a problem, users may notice, the previous version is being put back;
- ``restored``: service is restored on the previous version, at what time, and how long the impact lasted;
- ``not_restored``: putting back the previous version did not work, engineers are on it;
- ``completed``: the release is live.

Each notice is a ``string.Template`` (``$service``, ``$release``, ``$previous``, ``$started_at``,
``$failed_at``, ``$restored_at``, ``$impact``, ``$expected``, ``$incident``); the first line is the subject.
``$expected`` is the time to restore this deployment can expect: the median, from the detection of the failure to
the end of the rollback, of its last rollbacks in the incident reports (``restore_estimate``), with how many it is
based on, or a default when there is none; the ``failed`` notice gives it and ``restored`` gives it beside the
actual time. A directory given by
the callback option ``stakeholder_templates`` may hold ``<kind>.txt`` files that replace the built-in ones.
``run_facts()`` takes the facts from the run, ``notice_payload()`` makes the notice that the channels send.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import glob
import json
import os
import string
import time

from ansible_collections.failsafe.deploy.plugins.plugin_utils._channels import deployment_name
from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import utc_iso

KINDS = ('started', 'failed', 'restored', 'not_restored', 'completed')

TEMPLATES = {
    'started': '''$service: release $release is being deployed
Hello,

We started to deploy release $release of $service at $started_at.
You do not need to do anything. We will write again if something goes wrong.
''',
    'failed': '''$service: a problem with release $release, we are putting back the previous version
Hello,

The deployment of release $release of $service ran into a problem at $failed_at.
Some users may notice errors or a slower service for a short time.
We are putting back the previous version ($previous) now, automatically. We will write again when service is restored.
We expect service to be restored in $expected.

Reference: $incident
''',
    'restored': '''$service: service restored
Hello,

Service is restored. At $restored_at, $service was running its previous version ($previous) again.

What happened: the deployment of release $release ran into a problem at $failed_at,
and the previous version was put back automatically.
How long the impact lasted: $impact. We had expected $expected.

Release $release is on hold until the team has fixed it. You do not need to do anything.

Reference: $incident
''',
    'not_restored': '''$service: service not yet restored, engineers are working on it
Hello,

The deployment of release $release of $service ran into a problem at $failed_at,
and putting back the previous version did not work on its own.
The on-call engineers have been called and are working on it.
Some users may still see errors. We will write again when service is restored.

Reference: $incident
''',
    'completed': '''$service: release $release is live
Hello,

Release $release of $service was deployed successfully at $restored_at. You do not need to do anything.
''',
}


def clock_time(timestamp):
    """'14:03 UTC on 29 November 2026' (no seconds: plain words)."""
    if timestamp is None:
        return 'an unknown time'
    moment = time.gmtime(timestamp)
    return '%s UTC on %d %s' % (time.strftime('%H:%M', moment), moment.tm_mday, time.strftime('%B %Y', moment))


def plain_duration(seconds):
    """'about 3 minutes', 'less than a minute', 'about 1 hour and 5 minutes'."""
    if seconds is None:
        return 'unknown'
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return 'less than a minute'
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return 'about %d minute%s' % (minutes, '' if minutes == 1 else 's')
    hours, minutes = divmod(minutes, 60)
    text = 'about %d hour%s' % (hours, '' if hours == 1 else 's')
    return text + (' and %d minute%s' % (minutes, '' if minutes == 1 else 's') if minutes else '')


# The time to restore a notice gives when the deployment has no rollback of its own to go by, and how many of its
# last rollbacks the estimate is the median of.
DEFAULT_RESTORE_SECONDS = 300
ESTIMATE_FROM = 5


def past_restores(report_dir, name, last=ESTIMATE_FROM):
    """Seconds from the detection of the failure to the end of the rollback, of the last ``last`` incidents of the
    deployment ``name`` that were rolled back, newest first: read from the incident reports (``inc-*.json``) in
    ``report_dir``. A report that cannot be read, or lacks those times, is left out."""
    rows = []
    for path in glob.glob(os.path.join(report_dir or '', 'inc-*.json')):
        try:
            with open(path, encoding='utf-8') as handle:
                incident = json.load(handle)
        except (OSError, ValueError):
            continue
        if not isinstance(incident, dict) or incident.get('outcome') != 'rolled_back':
            continue
        if name not in [t.get('name') for t in (incident.get('transactions') or {}).values() if isinstance(t, dict)]:
            continue
        summary = incident.get('summary') or {}
        waited, took = summary.get('seconds_to_rollback'), summary.get('rollback_duration')
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in (waited, took)):
            rows.append((summary.get('detected_at') or '', waited + took))
    rows.sort(key=lambda row: row[0], reverse=True)
    return [seconds for dummy, seconds in rows[:last]]


def restore_estimate(past, default=DEFAULT_RESTORE_SECONDS):
    """(seconds, how many rollbacks it is based on): the median of ``past``, or ``default`` and 0 when empty."""
    if not past:
        return default, 0
    ordered = sorted(past)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2.0
    return median, len(ordered)


def expected_words(estimate):
    """The estimate in plain words: 'about 2 minutes (the median of the last 4 rollbacks of this service)'."""
    seconds, count = estimate
    if not count:
        return '%s (no earlier rollback of this service to go by)' % plain_duration(seconds)
    return '%s (%s)' % (plain_duration(seconds), 'its only earlier rollback' if count == 1
                        else 'the median of its last %d rollbacks' % count)


def _plain(value, default):
    """A fact as plain text on one line: only letters, digits and a few signs (nothing a template could run)."""
    if isinstance(value, (list, tuple)):
        value = ', '.join(str(v) for v in value if v)
    text = ' '.join(str(value or '').split())
    text = ''.join(c for c in text if c.isalnum() or c in ' .,:_+-/()@')
    return text[:120] or default


def load_templates(directory=None):
    """The built-in templates, each replaced by ``<directory>/<kind>.txt`` when that file exists."""
    templates = dict(TEMPLATES)
    if directory:
        for kind in KINDS:
            path = os.path.join(directory, '%s.txt' % kind)
            if os.path.isfile(path):
                with open(path, encoding='utf-8') as handle:
                    templates[kind] = handle.read()
    return templates


def render(kind, facts, templates=None):
    """(subject, text) of the ``kind`` notice from ``facts`` (service, releases, previous_releases, started,
    failed, restored (epoch seconds), expected ((seconds, count) from ``restore_estimate``), incident_id)."""
    templates = templates or TEMPLATES
    failed, restored = facts.get('failed'), facts.get('restored')
    values = {
        'service': _plain(facts.get('service'), 'the service'),
        'release': _plain(facts.get('releases'), 'a new release'),
        'previous': _plain(facts.get('previous_releases'), 'the version that ran before'),
        'started_at': clock_time(facts.get('started')),
        'failed_at': clock_time(failed),
        'restored_at': clock_time(restored),
        'impact': plain_duration(restored - failed) if failed is not None and restored is not None else 'unknown',
        'expected': expected_words(facts.get('expected') or restore_estimate([])),
        'incident': _plain(facts.get('incident_id'), '-'),
    }
    text = string.Template(templates[kind]).safe_substitute(values)
    lines = text.splitlines()
    subject = ' '.join((lines[0] if lines else kind).split())[:200]
    body = '\n'.join(lines[1:]).strip('\n') + '\n'
    return subject, body


def run_facts(run, service=None, playbook=None, restored=None, incident_id=None, report_dir=None):
    """The facts a notice is written from (see ``render``), taken from a ``_incident.DeployRun``: the service (the
    ``service`` option, else the first transaction's name, else the playbook's name), the releases, when the run
    started (its first transaction) and failed (its first counted failure), and the time to restore to expect from
    the deployment's earlier rollbacks in ``report_dir`` (this run's own report is written after its notices)."""
    first = run.counted_failures[0] if run.counted_failures else None
    opened = [t.get('opened_at') for t in run.transactions.values() if t.get('opened_at')]
    names = [t.get('name') for t in run.transactions.values() if t.get('name')]
    return {'service': service or (names[0] if names else deployment_name({'playbook': playbook})),
            'releases': run.releases, 'previous_releases': run.previous_releases,
            'started': min(opened) if opened else run.started, 'failed': first['time'] if first else None,
            'restored': restored, 'incident_id': incident_id,
            'expected': restore_estimate(past_restores(report_dir, names[0]) if report_dir and names else [])}


def notice_payload(kind, facts, templates=None):
    """The ``stakeholder_notice`` payload of the ``kind`` notice written from ``facts`` (not yet redacted)."""
    subject, text = render(kind, facts, templates)
    now = time.time()
    return {'event': 'stakeholder_notice', 'notice': kind, 'notice_subject': subject, 'notice_text': text,
            'time': round(now, 3), 'at': utc_iso(now), 'incident_id': facts.get('incident_id')}
