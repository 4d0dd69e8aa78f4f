# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watch window after a commit: which deploy is inside its window, and what an alert does to it.

A committed deploy with ``failsafe_watch`` set opens a window on the controller: ``<watch dir>/<service>.json``
(``open_window``) names the deploy (its run id, release, hosts and where each host keeps its journal) and until when
it is watched, and which alerts (by name) or Prometheus queries (the rule's expression) count. A newer deploy of the
same service replaces the record.

An Alertmanager webhook body (``alerts_of`` refuses anything else, saying why) is decided alert by alert
(``decide``): an alert without a service label, or for a service no window was ever opened for, is refused; an alert
that the window does not watch is ignored; one that comes after the window only notifies; the first watched alert
inside the window claims the deploy (``claim``: ``<service>.<run id>.claim`` created with O_EXCL, so that of any
number of alerts arriving at once exactly one wins) and rolls it back; any later alert for the same deploy finds the
claim and does nothing. Every decision is appended to ``<watch dir>/watch.log`` (one JSON line each).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import re
import time
import urllib.parse

from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import (
    report_paths, write_json_atomic, write_text_atomic)

DEFAULT_DIR_ENV = 'FAILSAFE_WATCH_DIR'
DEFAULT_DIR = '~/.failsafe-deploy/watch'
# Labels that name the service (the deployment, failsafe_name by default) an alert is about, first found wins.
SERVICE_LABELS = ('service', 'failsafe_service', 'deployment')
_SAFE = re.compile(r'[^A-Za-z0-9_.-]')


class Refused(ValueError):
    """The webhook body cannot be acted on; the message says why."""


def watch_dir(path=None, environ=None):
    environ = os.environ if environ is None else environ
    return os.path.abspath(os.path.expanduser(path or environ.get(DEFAULT_DIR_ENV) or DEFAULT_DIR))


def utc_iso(timestamp):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(timestamp))


def safe_name(value):
    """A file name part for ``value`` (a service or run id): anything but letters, digits, ``_.-`` becomes ``_``."""
    text = _SAFE.sub('_', str(value))
    if not text.strip('.'):
        raise Refused('%r cannot name a file' % (value,))
    return text


def window_path(directory, service):
    return os.path.join(directory, '%s.json' % safe_name(service))


def claim_path(directory, service, run_id):
    return os.path.join(directory, '%s.%s.claim' % (safe_name(service), safe_name(run_id)))


def normalize_query(query):
    return ' '.join(str(query).split())


def open_window(directory, service, run_id, release, hosts, duration, alerts=None, queries=None, inventory=None,
                now=None):
    """Record that the deploy ``run_id`` of ``service`` is watched for ``duration`` seconds from ``now``; ``hosts``
    is {host: {state_dir, name}}. Returns the record."""
    if not run_id:
        raise Refused('the deploy has no run id: its window cannot name what to roll back')
    if duration <= 0:
        raise Refused('the watch duration must be more than 0 seconds, not %s' % duration)
    now = time.time() if now is None else now
    os.makedirs(directory, mode=0o700, exist_ok=True)
    record = {
        'service': str(service), 'run_id': str(run_id), 'release': str(release), 'hosts': hosts,
        'duration': duration, 'opened': round(now, 3), 'opened_iso': utc_iso(now),
        'until': round(now + duration, 3), 'until_iso': utc_iso(now + duration),
        'alerts': [str(a) for a in alerts or []], 'queries': [normalize_query(q) for q in queries or []],
        'inventory': [str(i) for i in inventory or []],
    }
    write_json_atomic(window_path(directory, service), record)
    return record


def read_window(directory, service):
    """The window record of ``service``, or None when no deploy of it was ever watched here."""
    try:
        with open(window_path(directory, service), encoding='utf-8') as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def alerts_of(payload):
    """The alerts of an Alertmanager webhook body (version 4), each a dict with ``labels``; raises ``Refused`` with
    the reason when ``payload`` is not one."""
    if not isinstance(payload, dict):
        raise Refused('the webhook body is not an Alertmanager notification: a JSON object was expected, got %s'
                      % type(payload).__name__)
    alerts = payload.get('alerts')
    if not isinstance(alerts, list) or not alerts:
        raise Refused('the webhook body is not an Alertmanager notification: it has no "alerts" list')
    for index, alert in enumerate(alerts):
        if not isinstance(alert, dict) or not isinstance(alert.get('labels'), dict):
            raise Refused('the webhook body is not an Alertmanager notification: alert %d has no "labels" object'
                          % index)
        if not isinstance(alert.get('labels').get('alertname', ''), str):
            raise Refused('the webhook body is not an Alertmanager notification: alert %d has a non-text alertname'
                          % index)
    return alerts


def alert_service(alert):
    labels = alert.get('labels') or {}
    for name in SERVICE_LABELS:
        value = labels.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def alert_expression(alert):
    """The PromQL expression of the rule that fired (Prometheus puts it in the generatorURL as ``g0.expr``)."""
    url = alert.get('generatorURL')
    if not isinstance(url, str) or not url:
        return None
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get('g0.expr')
    return normalize_query(values[0]) if values else None


def alert_words(alert):
    name = (alert.get('labels') or {}).get('alertname') or '(no alertname)'
    since = alert.get('startsAt')
    return '%s%s' % (name, ' (firing since %s)' % since if isinstance(since, str) and since else '')


def watches(window, alert):
    """Whether ``window`` counts ``alert``: its name is among the window's alerts, or its rule's expression among
    its queries; a window that names neither counts every alert of its service."""
    names = window.get('alerts') or []
    queries = window.get('queries') or []
    if not names and not queries:
        return True
    if (alert.get('labels') or {}).get('alertname') in names:
        return True
    expression = alert_expression(alert)
    return expression is not None and expression in queries


def claim(directory, window, alert, incident_id, now=None):
    """Claim the rollback of ``window``'s deploy for ``alert``: True for the one caller that created the claim file
    (O_CREAT | O_EXCL), False for every other; the claim names the alert and the incident."""
    now = time.time() if now is None else now
    path = claim_path(directory, window['service'], window['run_id'])
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, 'w', encoding='utf-8') as handle:
        json.dump({'service': window['service'], 'run_id': window['run_id'], 'release': window.get('release'),
                   'alert': alert_words(alert), 'labels': alert.get('labels'), 'incident_id': incident_id,
                   'claimed': round(now, 3), 'claimed_iso': utc_iso(now), 'pid': os.getpid()}, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def read_claim(directory, window):
    try:
        with open(claim_path(directory, window['service'], window['run_id']), encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def decide(directory, payload, new_incident_id, now=None):
    """What the Alertmanager body ``payload`` does: a list of decisions, one per service its firing alerts name
    (and one per refused alert), each {decision, message, service, alert, window, incident_id}. ``decision`` is
    ``rollback`` (this caller claimed the deploy: roll it back), ``duplicate`` (already claimed), ``after_window``
    (notify only), ``not_watched`` (an alert the window does not count), ``resolved`` (nothing firing) or
    ``refused`` (no service label, or a service never watched here). Raises ``Refused`` for a body that is not an
    Alertmanager notification."""
    now = time.time() if now is None else now
    alerts = alerts_of(payload)
    firing = [a for a in alerts if a.get('status', payload.get('status')) == 'firing']
    if not firing:
        return [{'decision': 'resolved', 'service': None, 'alert': None, 'window': None, 'incident_id': None,
                 'message': 'no firing alert in the notification (status %s): nothing to do'
                            % payload.get('status')}]
    decisions = []
    seen = {}
    for alert in firing:
        service = alert_service(alert)
        words = alert_words(alert)
        if service is None:
            decisions.append({'decision': 'refused', 'service': None, 'alert': words, 'window': None,
                              'incident_id': None,
                              'message': 'refused alert %s: it names no service (a label %s): nothing was rolled '
                                         'back' % (words, ' or '.join(SERVICE_LABELS))})
            continue
        if service in seen and seen[service] != 'not_watched':
            continue  # one decision per service and notification: the first watched alert stands for it
        window = read_window(directory, service)
        if window is None:
            seen[service] = 'refused'
            decisions.append({'decision': 'refused', 'service': service, 'alert': words, 'window': None,
                              'incident_id': None,
                              'message': 'refused alert %s: no deploy of service %r is watched here (no window in '
                                         '%s): nothing was rolled back' % (words, service, directory)})
            continue
        base = {'service': service, 'alert': words, 'labels': alert.get('labels'), 'window': window,
                'incident_id': None}
        if not watches(window, alert):
            if service not in seen:
                seen[service] = 'not_watched'
                decisions.append(dict(base, decision='not_watched', message=(
                    'alert %s of %s is not one its watch window counts (alerts: %s; queries: %s): nothing done'
                    % (words, service, ', '.join(window.get('alerts') or []) or 'none',
                       '; '.join(window.get('queries') or []) or 'none'))))
            continue
        if seen.get(service) == 'not_watched':
            decisions = [d for d in decisions if not (d['service'] == service and d['decision'] == 'not_watched')]
        seen[service] = 'decided'
        claimed = read_claim(directory, window)
        deploy = 'deploy %s of %s (release %s)' % (window['run_id'], service, window.get('release'))
        if claimed:
            decisions.append(dict(base, decision='duplicate', incident_id=claimed.get('incident_id'), message=(
                'alert %s: %s was already rolled back by the watch at %s (incident %s, alert %s): nothing more done'
                % (words, deploy, claimed.get('claimed_iso'), claimed.get('incident_id'), claimed.get('alert')))))
        elif now > float(window.get('until') or 0):
            decisions.append(dict(base, decision='after_window', message=(
                'alert %s came after the watch window of %s (it ended at %s): NOT rolled back, notify only'
                % (words, deploy, window.get('until_iso')))))
        else:
            incident_id = new_incident_id()
            if claim(directory, window, alert, incident_id, now=now):
                decisions.append(dict(base, decision='rollback', incident_id=incident_id, message=(
                    'alert %s fired inside the watch window of %s (until %s): rolling it back as incident %s'
                    % (words, deploy, window.get('until_iso'), incident_id))))
            else:
                claimed = read_claim(directory, window)
                decisions.append(dict(base, decision='duplicate', incident_id=claimed.get('incident_id'), message=(
                    'alert %s: %s is being rolled back by the watch already (incident %s): nothing more done'
                    % (words, deploy, claimed.get('incident_id')))))
    return decisions


def log_decision(directory, entry):
    """Append one JSON line to ``<directory>/watch.log`` (O_APPEND: lines of concurrent writers do not mix)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    line = (json.dumps(entry, sort_keys=True, default=str) + '\n').encode('utf-8')
    fd = os.open(os.path.join(directory, 'watch.log'), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def incident_report(decision, rollback, now=None):
    """The incident of a rollback the watch started: ``decision`` (a ``rollback`` decision) and ``rollback``
    ({rc, hosts, reason, log, duration})."""
    now = time.time() if now is None else now
    window = decision['window']
    failed = rollback.get('reason')
    return {
        'incident_id': decision['incident_id'], 'outcome': 'rollback_failed' if failed else 'rolled_back',
        'trigger': 'watch', 'source': 'failsafe.deploy.watch',
        'summary': 'the watch rolled back %s release %s: alert %s fired inside its window (until %s)%s'
                   % (window['service'], window.get('release'), decision['alert'], window.get('until_iso'),
                      '; ROLLBACK FAILED: %s' % failed if failed else ''),
        'watch': {'alert': decision['alert'], 'labels': decision.get('labels'), 'service': window['service'],
                  'run_id': window['run_id'], 'release': window.get('release'), 'opened': window.get('opened_iso'),
                  'until': window.get('until_iso'), 'alerts': window.get('alerts'),
                  'queries': window.get('queries')},
        'releases': [window.get('release')], 'hosts': rollback.get('hosts'),
        'rollback': {'rc': rollback.get('rc'), 'error': failed, 'log': rollback.get('log'),
                     'duration': rollback.get('duration')},
        'at': utc_iso(now),
    }


def render_markdown(incident):
    watch = incident['watch']
    lines = [
        '# Incident %s: %s' % (incident['incident_id'], 'ROLLBACK FAILED' if incident['outcome'] == 'rollback_failed'
                               else 'ROLLED BACK by the watch'),
        '',
        incident['summary'],
        '',
        '- Triggered by: the watch window of `%s` (opened %s, until %s)'
        % (watch['service'], watch['opened'], watch['until']),
        '- Alert: `%s`' % watch['alert'],
        '- Deploy: run `%s`, release `%s`' % (watch['run_id'], watch['release']),
        '',
        '| host | rollback | restore verified |',
        '| --- | --- | --- |',
    ]
    for host, info in sorted((incident.get('hosts') or {}).items()):
        verified = {True: 'yes', False: 'NO'}.get(info.get('verified'), 'unknown')
        lines.append('| %s | %s | %s |' % (host, info.get('status'), verified))
    if incident['rollback'].get('error'):
        lines += ['', 'Why the rollback did not succeed: %s' % incident['rollback']['error']]
    lines += ['', 'Rollback log: `%s`' % incident['rollback'].get('log'), '']
    return '\n'.join(lines)


def write_incident(report_dir, incident):
    """Write the incident's JSON and Markdown report; returns the JSON's path."""
    os.makedirs(report_dir, mode=0o700, exist_ok=True)
    path, md = report_paths(report_dir, incident['incident_id'])
    write_json_atomic(path, incident)
    write_text_atomic(md, render_markdown(incident))
    return path
