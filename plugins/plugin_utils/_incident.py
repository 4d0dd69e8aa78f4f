# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Incident model of the auto_rollback callback: run tracking, timeline, and the JSON/Markdown report.

``DeployRun`` follows the transactions hosts open and close in this run (``failsafe_transaction`` results) and the
failures of hosts whose transaction is open; it decides whether a rollback is needed and for which hosts.
``Timeline`` keeps a bounded, compact record of the run. ``build_incident()`` puts what a run saw and how its
rollback went together into the incident dict; ``render_markdown()`` and ``write_report()`` turn the
incident dict into ``<report_dir>/<incident_id>.json``, ``.md`` and ``.html`` (``_html.render_html()``), written
atomically.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import getpass
import json
import os
import re
import socket
import time
import uuid

from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import atomic_write_bytes
from ansible_collections.failsafe.deploy.plugins.plugin_utils._build import describe as describe_build
from ansible_collections.failsafe.deploy.plugins.plugin_utils._classify import classify, first_line
from ansible_collections.failsafe.deploy.plugins.plugin_utils._evidence import details_lines, failure_details
from ansible_collections.failsafe.deploy.plugins.plugin_utils._summary import (
    OUTCOME_LABELS, clip, host_outcome, hosts_of, incident_likely_cause, incident_reason, metric_gate_rows,
    running_release)

SCHEMA_VERSION = 1
# A failed task of these roles, with no transaction opened anywhere in the run, refused the deploy before any change:
# the preflight checks what the deploy was given, then opens the transaction (or refuses, giving the lock back).
_REFUSING_ROLES = ('preflight',)
# The feature flags' and the migrate step's database checks, which the preflight includes (their tasks belong to the
# flags and migrate roles).
_REFUSING_TASK_FILE = re.compile(r'/roles/(?:flags|migrate)/tasks/check\.yml:\d+$')
SCOPES = ('opened', 'failed')
_OPEN = 'open'
_CLOSED = frozenset(('committed', 'rolled_back', 'rollback_failed', 'closed'))


def utc_iso(timestamp=None):
    """ISO-8601 UTC with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    if timestamp is None:
        timestamp = time.time()
    dt = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return dt.strftime('%Y-%m-%dT%H:%M:%S.') + '%03dZ' % (dt.microsecond // 1000)


def new_incident_id(timestamp=None):
    """``inc-<UTC yyyymmddTHHMMSSZ>-<8 hex>``: sortable by time, unique, safe as a file name."""
    if timestamp is None:
        timestamp = time.time()
    stamp = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    return 'inc-%s-%s' % (stamp, uuid.uuid4().hex[:8])


def write_text_atomic(path, text, mode=0o600):
    """Write ``text`` to ``path`` atomically: temp file beside it, fsync, os.replace, fsync the directory."""
    atomic_write_bytes(os.path.abspath(path), text.encode('utf-8'), mode=mode, controller=True)
    return path


def write_json_atomic(path, data, mode=0o600):
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + '\n', mode=mode)


class Timeline:
    """A bounded list of run events. Past ``limit`` entries, routine per-host results are counted, not kept."""

    ROUTINE = frozenset(('ok', 'changed', 'skipped', 'ignored'))

    def __init__(self, limit=5000, clock=time.time):
        self.entries = []
        self.dropped = 0
        self._limit = limit
        self._clock = clock

    def add(self, event, host=None, task=None, **detail):
        now = self._clock()
        entry = {'t': round(now, 3), 'at': utc_iso(now), 'event': event}
        if host is not None:
            entry['host'] = host
        if task is not None:
            entry['task'] = task
        for key, value in detail.items():
            if value is not None:
                entry[key] = value
        if len(self.entries) >= self._limit and event == 'result' and detail.get('status') in self.ROUTINE:
            self.dropped += 1
            return entry
        self.entries.append(entry)
        return entry

    def to_list(self):
        return list(self.entries)


# Causes of a failure that are the infrastructure's, not the release's: they do not quarantine the release.
INFRASTRUCTURE_CAUSES = ('network', 'infrastructure')


class DeployRun:
    """What this run did to which host: transactions opened/closed and failures while a transaction was open."""

    def __init__(self, redactor, timeline=None, clock=time.time):
        self._redactor = redactor
        self._clock = clock
        self.timeline = timeline if timeline is not None else Timeline(clock=clock)
        self.started = clock()
        self.transactions = {}     # host -> last seen failsafe_transaction (plus opened/closed times)
        self.opened_order = []     # hosts in the order they opened a transaction in this run
        self.failures = []         # every recorded failure (in scope or not), in order
        self.task_started = {}     # task uuid -> time its start was announced

    # transactions -----------------------------------------------------------------------------------------
    def observe_transaction(self, host, txn):
        """Take note of a ``failsafe_transaction`` result. Returns 'opened', 'closed', 'updated' or None."""
        if not isinstance(txn, dict):
            return None
        status = str(txn.get('status') or _OPEN)
        known = self.transactions.get(host)
        record = dict(known or {})
        record.update({k: v for k, v in txn.items() if v is not None})
        record['status'] = status
        now = self._clock()
        change = 'updated'
        if status == _OPEN:
            if known is None or known.get('status') != _OPEN or known.get('txid') != txn.get('txid'):
                record['opened_at'] = now
                record.pop('closed_at', None)
                change = 'opened'
            if host not in self.opened_order:
                self.opened_order.append(host)
        elif status in _CLOSED:
            record['closed_at'] = now
            change = 'closed'
        self.transactions[host] = record
        if change != 'updated':
            self.timeline.add('transaction_%s' % change, host=host, txid=txn.get('txid'), status=status,
                              release=txn.get('release'))
        return change

    def has_open_transaction(self, host):
        return (self.transactions.get(host) or {}).get('status') == _OPEN

    @property
    def run_id(self):
        for host in self.opened_order:
            run_id = self.transactions.get(host, {}).get('run_id')
            if run_id:
                return run_id
        return None

    def _unique(self, key):
        values = []
        for host in self.opened_order:
            value = self.transactions.get(host, {}).get(key)
            if value and value not in values:
                values.append(value)
        return values

    @property
    def releases(self):
        return self._unique('release')

    @property
    def previous_releases(self):
        return self._unique('previous_release')

    @property
    def builds(self):
        """The builds this run's transactions deploy (as the hosts' journals recorded them), each once."""
        return self._unique('build')

    @property
    def forced_words(self):
        """Who forced this run's deploy and why (as the journals recorded it), or None when it was not forced."""
        words = []
        for forced in self._unique('forced'):
            text = 'by %s: %s' % (forced.get('by') or 'unknown', forced.get('reason') or 'no reason given')
            if forced.get('overrode'):
                text += ' (overrode %s)' % '; '.join(forced['overrode'])
            if text not in words:
                words.append(text)
        return '; '.join(words) or None

    @property
    def build_words(self):
        """The builds in words, or None when no transaction recorded one."""
        return '; '.join(w for w in (describe_build(b) for b in self.builds) if w) or None

    # failures ---------------------------------------------------------------------------------------------
    def note_task_start(self, task_uuid):
        if task_uuid:
            self.task_started[task_uuid] = self._clock()

    def record_failure(self, host, task_info, result, unreachable=False, guards=None, blocks=None,
                       censored=False, open_failed=False):
        """Record a failed or unreachable result. Returns the failure dict (``in_scope`` tells if it counts).

        ``guards`` are the uuids of the enclosing blocks whose rescue section will run for this failure
        (``_classify.guarding_blocks``): such a failure is rescued, not a deploy failure. An unreachable host is
        never rescued. ``open_failed``: the failure is the call that opens a transaction (refused, or died before
        it opened); it counts as soon as any other host opened a transaction in this run, so that those hosts are
        rolled back rather than left open.
        """
        now = self._clock()
        guards = [] if unreachable else list(guards or [])
        rescuable = bool(guards)
        task_info = dict(task_info or {})
        if censored:
            # Classify a no_log failure by what may be known about it (task, action, rc), never by its output.
            result = dict((k, result[k]) for k in ('rc', 'changed', 'attempts', 'unreachable')
                          if isinstance(result, dict) and k in result)
        cls = classify(result, action=task_info.get('action'), task_name=task_info.get('name'),
                       tags=task_info.get('tags'), role=task_info.get('role'), unreachable=unreachable)
        started = self.task_started.get(task_info.get('uuid'))
        if censored:
            shown = {'censored': "the output has been hidden due to the fact that 'no_log: true' was specified "
                                 "for this result"}
            for key in ('rc', 'changed', 'attempts'):
                if isinstance(result, dict) and key in result:
                    shown[key] = result[key]
            message = 'output hidden (no_log)'
        else:
            shown = self._redactor.data(_compact_result(result))
            message = self._redactor.text(first_line(result))
        details = {} if censored else self._redactor.data(failure_details(result))
        in_scope = self.has_open_transaction(host)
        first = in_scope and not rescuable and not any(
            f['host'] == host and f['in_scope'] and not f['rescued'] for f in self.failures)
        failure = {
            'host': host,
            'task': self._redactor.text(task_info.get('name') or ''),
            'role': task_info.get('role'),
            'path': task_info.get('path'),
            'action': task_info.get('action'),
            'cause': cls.cause,
            'evidence': self._redactor.text(cls.evidence),
            'message': message,
            'details': details,
            'result': shown,
            'unreachable': bool(unreachable),
            'time': round(now, 3),
            'at': utc_iso(now),
            'since_task_start': round(now - started, 3) if started else None,
            'since_run_start': round(now - self.started, 3),
            'in_scope': in_scope,
            'rescued': rescuable,
            'guards': guards,
            'blocks': [b for b in (blocks or []) if b is not None],
            'first_for_host': first,
            'txid': (self.transactions.get(host) or {}).get('txid'),
            'open_failed': bool(open_failed),
        }
        gate = result.get('failsafe_metric_gate') if isinstance(result, dict) and not censored else None
        if isinstance(gate, dict):
            failure['metric_gate'] = self._redactor.data(metric_gate_summary(gate))
        self.failures.append(failure)
        self.timeline.add('unreachable' if unreachable else 'failure', host=host, task=failure['task'],
                          cause=cls.cause, in_scope=in_scope, rescued=True if rescuable else None,
                          message=message)
        return failure

    def mark_rescued(self, host, reason, block_uuid=None):
        """Failures of ``host`` turn out to be rescued: the rescue section of block ``block_uuid`` ran for it
        (only failures inside that block), or the recap says so (``block_uuid`` None: every failure)."""
        changed = []
        for failure in self.failures:
            if failure['host'] != host or failure['rescued'] or failure['unreachable']:
                continue
            if block_uuid is None or block_uuid in (failure.get('blocks') or ()):
                failure['rescued'] = True
                changed.append(failure)
        if changed:
            self.timeline.add('failure_rescued', host=host, reason=reason)
        return changed

    def reconcile(self, failures, dark, rescued):
        """Apply the play recap: a host with neither failures nor unreachable results in the recap but with
        rescued ones was rescued, whatever the events suggested. ``failures``/``dark``/``rescued`` are the
        per-host counters of ansible's AggregateStats."""
        for host in sorted({f['host'] for f in self.failures}):
            if not (failures or {}).get(host) and not (dark or {}).get(host) and (rescued or {}).get(host):
                self.mark_rescued(host, 'play recap counts the failure as rescued')

    @property
    def counted_failures(self):
        return [f for f in self.failures if not f['rescued'] and (
            f['in_scope'] or (f.get('open_failed') and self.opened_order))]

    @property
    def failed_hosts(self):
        hosts = []
        for failure in self.counted_failures:
            if failure['host'] not in hosts:
                hosts.append(failure['host'])
        return hosts

    def needs_rollback(self):
        return bool(self.counted_failures)

    def refusals(self):
        """The failures that refused the deploy before any change: no host opened a transaction in this run, and
        the task that failed is one of the preflight's checks or the call that opens the transaction (refused, the
        lock given back). An unreachable host is not a refusal: what ran on it is unknown."""
        if self.opened_order:
            return []
        return [f for f in self.failures if not f['rescued'] and not f['unreachable'] and any((
            f.get('open_failed'), str(f.get('role') or '').rsplit('.', 1)[-1] in _REFUSING_ROLES,
            _REFUSING_TASK_FILE.search(str(f.get('path') or ''))))]

    def scope(self, mode='opened'):
        """Hosts to roll back: every host that opened a transaction in this run (``opened``) or only the hosts
        that failed with an open transaction (``failed``). Failed hosts always come first."""
        if mode not in SCOPES:
            raise ValueError('rollback_scope must be one of %s, not %r' % (', '.join(SCOPES), mode))
        failed = self.failed_hosts
        if mode == 'failed':
            return list(failed)
        return failed + [h for h in self.opened_order if h not in failed]

    def rollback_hosts(self, hosts):
        """The ``failsafe_rollback_hosts`` extra var: {host: {state_dir, name, txid, release, previous_release,
        run_id, app_root}}."""
        out = {}
        for host in hosts:
            txn = self.transactions.get(host) or {}
            # A host whose open was refused or cut short has no transaction on record: its entry stays empty, and
            # the rollback falls back to the play's own state_dir and name for it.
            keys = ('state_dir', 'name', 'txid', 'release', 'previous_release', 'run_id', 'app_root')
            out[host] = dict((key, txn.get(key)) for key in keys if txn.get(key) is not None)
            causes = [f for f in self.failures if f.get('host') == host and f.get('in_scope', True) and not
                      f.get('rescued')]
            if causes and all(f.get('unreachable') or f.get('cause') in INFRASTRUCTURE_CAUSES for f in causes):
                # the host or its network failed, not the release: quarantined only if a check showed it bad
                out[host]['quarantine'] = 'shown_bad'
        return out


def _values(values, limit=30):
    """A bounded list of a gate's values for the report (None is no data)."""
    values = list(values or [])
    shown = [round(v, 6) if isinstance(v, float) else v for v in values[:limit]]
    if len(values) > limit:
        shown.append('... %d more' % (len(values) - limit))
    return shown


def metric_gate_summary(gate):
    """What decided a failsafe.deploy.metric_gate result, for the report: the verdict, the server, the instances and
    one row per metric with its query or queries, its values, its thresholds, its verdict and why."""
    rows = []
    for analysis in gate.get('analyses') or []:
        if not isinstance(analysis, dict):
            continue
        if analysis.get('kind') == 'threshold':
            rows.append({'metric': analysis.get('name'), 'kind': 'threshold', 'query': analysis.get('query'),
                         'values': _values(analysis.get('values')), 'thresholds': analysis.get('thresholds'),
                         'no_data_policy': analysis.get('no_data_policy'), 'verdict': analysis.get('verdict'),
                         'reason': analysis.get('reason'), 'errors': analysis.get('errors')})
            continue
        for metric in analysis.get('metrics') or []:
            canary = metric.get('canary') or {}
            baseline = metric.get('baseline') or {}
            thresholds = dict(metric.get('thresholds') or {})
            thresholds.update(direction=metric.get('direction'), critical=metric.get('critical'),
                              weight=metric.get('weight'))
            rows.append({'metric': metric.get('name'), 'kind': 'canary vs baseline',
                         'query': 'canary: %s; baseline: %s' % (metric.get('canary_query'), metric.get('baseline_query')),
                         'values': {'canary': _values(canary.get('values')), 'baseline': _values(baseline.get('values')),
                                    'canary_median': canary.get('median'), 'baseline_median': baseline.get('median'),
                                    'p_value': metric.get('p_value'), 'relative_shift': metric.get('relative_shift')},
                         'thresholds': thresholds, 'no_data_policy': metric.get('no_data_policy'),
                         'verdict': metric.get('status'), 'reason': metric.get('reason'), 'errors': metric.get('errors')})
        if analysis.get('kind') == 'canary':
            rows.append({'metric': 'canary score', 'kind': 'canary vs baseline', 'query': None,
                         'values': {'score': analysis.get('score')}, 'thresholds': analysis.get('thresholds'),
                         'verdict': analysis.get('verdict'), 'reason': analysis.get('reason')})
    return {'verdict': gate.get('verdict'), 'reason': gate.get('reason'), 'prometheus_url': gate.get('prometheus_url'),
            'canary_instances': gate.get('canary_instances'), 'baseline_instances': gate.get('baseline_instances'),
            'wave': gate.get('wave'), 'decision': gate.get('decision'), 'rows': rows}


_CHECK_FAILED_RE = re.compile(r"check '(?P<name>[^']*)' failed after \d+ attempt\(s\): (?P<error>.*?) \(expected ")


def failed_checks(message):
    """{check name: error} of every failed health check a failure message names (the engine's wording)."""
    return dict((m.group('name'), m.group('error')) for m in _CHECK_FAILED_RE.finditer(message or ''))


def broken_check_hint(failures, hosts):
    """When a health check failed on the new release and then failed the same way on the restored one (which was
    verified before), the likely cause is the check itself (a wrong port, path or query), not the release and not
    the rollback. Returns that sentence, or None."""
    same = []
    for failure in failures or []:
        deploy = failed_checks(failure.get('message'))
        if not deploy:
            continue
        info = (hosts or {}).get(failure.get('host')) or {}
        for task in info.get('failed_tasks') or []:
            for name, error in failed_checks(task.get('message')).items():
                if deploy.get(name) == error and (name, error) not in same:
                    same.append((name, error))
    if not same:
        return None
    return ('Likely cause: the health check%s %s itself. It failed the same way on the new release and on the '
            'restored release, which was verified before (%s): the check is probably wrong (port, path, query), '
            'not the release. Fix the check; the hosts may well be healthy on the restored release.'
            % ('s' if len(same) > 1 else '', ', '.join("'%s'" % n for n, dummy in same),
               '; '.join('%s: %s' % (n, e) for n, e in same)))


def restored_to(info):
    """The release a host's rollback result says it runs after the rollback, or None."""
    restored = (info or {}).get('restored') if isinstance(info, dict) else None
    return running_release(restored)


def rolled_back_summary(what, scope, hosts):
    """The summary of the ``rolled_back`` alert: what failed, and the release each host of the scope went back to
    (hosts that went back to one release are named together)."""
    by_release = {}
    for host in scope:
        by_release.setdefault(restored_to((hosts or {}).get(host)), []).append(host)
    parts = []
    for release in sorted(by_release, key=lambda r: (r is None, str(r))):
        names = ', '.join(by_release[release])
        parts.append('%s to release %s' % (names, release) if release is not None
                     else '%s (no release to go back to recorded)' % names)
    return '%s; rolled back %s' % (what, '; '.join(parts) if parts else 'no host')


def _compact_result(result, limit=4000):
    """A bounded copy of a failed result for the report: long strings cut, noisy keys dropped."""
    if not isinstance(result, dict):
        return {}
    out = {}
    for key, value in result.items():
        if key in ('invocation', '_ansible_no_log', 'stdout_lines', 'stderr_lines', '_ansible_verbose_always',
                   'ansible_facts', 'diff'):
            continue
        out[key] = _truncate(value, limit)
    return out


def _truncate(value, limit, depth=0):
    if isinstance(value, str) and len(value) > limit:
        return value[:limit // 2] + '\n... [%d characters cut] ...\n' % (len(value) - limit) + value[-limit // 2:]
    if depth > 4:
        return value if not isinstance(value, (dict, list)) else '...'
    if isinstance(value, dict):
        return dict((k, _truncate(v, limit, depth + 1)) for k, v in value.items())
    if isinstance(value, list):
        items = [_truncate(v, limit, depth + 1) for v in value[:50]]
        if len(value) > 50:
            items.append('... %d more' % (len(value) - 50))
        return items
    return value


# ---------------------------------------------------------------------------------------------------------------
# Report rendering

def _md(value):
    """Escape a value for a Markdown table cell."""
    if value is None or value == '':
        return '-'
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = text.replace('\\', '\\\\').replace('|', '\\|').replace('\r', ' ').replace('\n', ' ')
    return text.replace('<', '&lt;').replace('>', '&gt;')


def _seconds(value):
    return '-' if value is None else '%.2f s' % value


def self_alert_words(alert):
    """What a host's own revert alert did, in words: 'incident X, delivered (webhook) at T', or why not."""
    if not isinstance(alert, dict) or not alert.get('incident_id'):
        return 'no (no alert channel armed)'
    channels = ', '.join(alert.get('channels') or []) or 'no channel'
    if alert.get('status') == 'delivered':
        return 'incident %s, delivered (%s) at %s' % (alert['incident_id'], channels, alert.get('sent_iso'))
    if alert.get('status') == 'failed':
        return 'incident %s, NOT delivered (%s): %s' % (alert['incident_id'], channels, alert.get('error'))
    return 'incident %s, %s (%s)' % (alert['incident_id'], alert.get('status'), channels)


def render_markdown(incident):
    """Render the incident dict as a Markdown report, outcome first."""
    summary = incident.get('summary') or {}
    rollback = incident.get('rollback') or {}
    outcome = incident.get('outcome')
    label = OUTCOME_LABELS.get(outcome, str(outcome).upper())
    lines = ['# Incident %s: %s' % (incident.get('incident_id'), label), '']
    if outcome == 'rollback_failed':
        lines += ['> **ROLLBACK FAILED.** The hosts below may be left in a broken or mixed state. '
                  'Act now: see the rollback log and the per-host results.', '']
    elif outcome == 'rolled_back':
        lines += ['> The deploy failed and was rolled back; the run is a failure, not a success.', '']
    elif outcome == 'refused':
        lines += ['> The deploy was refused before any change: no lock taken, no transaction opened, nothing to roll '
                  'back. The run is a failure, not a success.', '']
    lines += ['## Summary', '', '| | |', '|---|---|']
    rows = [
        ('Outcome', label),
        ('Reason', incident_reason(incident)),
        ('Release', ', '.join(summary.get('releases') or []) or None),
        ('Previous release', ', '.join(summary.get('previous_releases') or []) or None),
        ('Build', summary.get('build')),
        ('Forced', summary.get('forced')),
        ('Root-cause note', summary.get('rca')),
        ('Run id', summary.get('run_id')),
        ('Playbook', summary.get('playbook')),
        ('Controller', summary.get('controller')),
        ('Cause', summary.get('cause')),
        ('Likely cause', incident_likely_cause(incident)),
        ('Failed hosts', ', '.join(summary.get('failed_hosts') or []) or None),
        ('Rollback scope', '%s: %s' % (summary.get('rollback_scope'), ', '.join(summary.get('scope_hosts') or []))),
        ('MIXED RELEASES: left on the new release by the scope', ', '.join(summary.get('left_by_scope') or []) or None),
        ('Run started', summary.get('run_started_at')),
        ('Failure detected', summary.get('detected_at')),
        ('Detection time', _seconds(summary.get('detection_seconds')) + ' after the failing task started'),
        ('Time from detection to rollback start', _seconds(summary.get('seconds_to_rollback'))),
        ('Rollback duration', _seconds(rollback.get('duration'))),
        ('Verification', summary.get('verification')),
    ]
    for key, value in rows:
        if key.startswith('MIXED') and not value:
            continue  # only when the scope left hosts out
        lines.append('| %s | %s |' % (key, _md(value)))
    lines.append('')

    lines += ['## Failed tasks', '', '| Host | Task | Role | File:line | Cause | Evidence | Message |',
              '|---|---|---|---|---|---|---|']
    for failure in incident.get('failures') or []:
        lines.append('| %s | %s | %s | %s | %s | %s | %s |' % tuple(_md(failure.get(k)) for k in (
            'host', 'task', 'role', 'path', 'cause', 'evidence', 'message')))
    evidence = [f for f in incident.get('failures') or [] if f.get('details')]
    if evidence:
        lines += ['', '### Evidence', '']
        for failure in evidence:
            lines += ['%s, task %s:' % (_md(failure.get('host')), _md(failure.get('task'))), '', '```']
            lines += [line.replace('```', "'''") for line in details_lines(failure['details'])]
            lines += ['```', '']
    ignored = incident.get('ignored_failures') or []
    if ignored:
        lines += ['', 'Not counted (rescued, or no open transaction): %s.' % ', '.join(
            '%s on %s' % (f.get('task'), f.get('host')) for f in ignored)]
    lines.append('')

    gates = metric_gate_rows(incident)
    if gates:
        lines += ['## Metric gates', '']
        for host, task, gate in gates:
            lines += ['Gate **%s** (task %s on %s): %s. Prometheus %s; canary %s; baseline %s.' % (
                _md(gate.get('verdict')), _md(task), _md(host), _md(gate.get('reason')), _md(gate.get('prometheus_url')),
                _md(', '.join(gate.get('canary_instances') or []) or None),
                _md(', '.join(gate.get('baseline_instances') or []) or None)), '',
                '| Metric | Kind | Query | Values | Thresholds | Verdict | Reason |', '|---|---|---|---|---|---|---|']
            for row in gate.get('rows') or []:
                # a code span shows backslashes as they are: only the table's pipes need escaping there
                query = '`%s`' % str(row['query']).replace('`', "'").replace('|', '\\|').replace('\n', ' ') \
                    if row.get('query') else '-'
                lines.append('| %s | %s | %s | %s | %s | %s | %s |' % (
                    _md(row.get('metric')), _md(row.get('kind')), query, _md(row.get('values')),
                    _md(row.get('thresholds')), _md(row.get('verdict')), _md(row.get('reason'))))
            lines.append('')

    lines += _dependency_markdown(incident)

    lines += ['## Rollback', '']
    if rollback.get('started_at'):
        lines += ['| | |', '|---|---|']
        for key, value in (('Playbook', rollback.get('playbook')), ('Started', rollback.get('started_at')),
                           ('Ended', rollback.get('ended_at')), ('Exit code', rollback.get('rc')),
                           ('Timed out', rollback.get('timed_out')), ('Error', rollback.get('error')),
                           ('Log', rollback.get('log')), ('Result file', rollback.get('result_file'))):
            lines.append('| %s | %s |' % (key, _md(value)))
        lines.append('')
    else:
        lines += ['Not started: %s' % _md(summary.get('reason')), '']
    lines += ['### Per host', '', '| Host | Result | Back to release | Failed release | Layers undone | Paths restored '
              '| Verified | Failed tasks |', '|---|---|---|---|---|---|---|---|']
    for host, info in sorted((rollback.get('hosts') or {}).items()):
        info = info if isinstance(info, dict) else {}
        restored = info.get('restored') if isinstance(info.get('restored'), dict) else {}
        paths = restored.get('restored')
        layers = [layer.get('kind') for layer in restored.get('layers') or []
                  if isinstance(layer, dict) and layer.get('undone')]
        lines.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
            _md(host), _md(info.get('status')), _md(running_release(restored)),
            _md(restored.get('failed_release')), _md(', '.join(str(k) for k in layers) or None),
            len(paths) if isinstance(paths, list) else '-', _yes_no(info.get('verified')),
            _md(', '.join(t.get('task', '') for t in info.get('failed_tasks') or []) or None)))
    lines.append('')
    # what each host's rollback undid, layer by layer and stage by stage, and the release it runs now
    hosts = rollback.get('hosts') or {}
    for host in sorted(hosts):
        restored = hosts[host].get('restored') if isinstance(hosts[host], dict) else None
        if isinstance(restored, dict) and restored:
            lines.append('- **%s** %s' % (_md(host), _md(host_outcome(restored))))
    if lines[-1] != '':
        lines.append('')

    reverted = incident.get('self_reverted') or {}
    if reverted:
        lines += ['## Hosts that reverted by themselves', '',
                  'Commit confirmed: nobody confirmed these transactions by their deadline, so each host rolled its '
                  'own back.', '',
                  '| Host | Transaction | Release | Run | Cause | Deadline | Reverted at | Outcome | Restore proven '
                  '| Alerted by the host |',
                  '|---|---|---|---|---|---|---|---|---|---|']
        for host, facts in sorted(reverted.items()):
            lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
                _md(host), _md(facts.get('txid')), _md(facts.get('release')), _md(facts.get('run_id')),
                _md(facts.get('cause')), _md(facts.get('deadline_iso')), _md(facts.get('finished_iso')),
                _md(facts.get('outcome')), _md((facts.get('rollback') or {}).get('verified')),
                _md(self_alert_words(facts.get('alert')))))
        lines.append('')

    lines += ['## Alerts', '', '| Event | Sent at | Spool | Webhook |', '|---|---|---|---|']
    for alert in incident.get('alerts') or []:
        lines.append('| %s | %s | %s | %s |' % (
            _md(alert.get('event')), _md(alert.get('at')), _md(alert.get('spool')), _md(alert.get('webhook'))))
    lines.append('')

    ladder = incident.get('ladder') or {}
    if ladder:
        lines += ['## Escalation ladder', '', '| Host | Step | Outcome | Detail |', '|---|---|---|---|']
        for host in sorted(ladder):
            for step in ladder[host]:
                cells = (_md(host), _md(step.get('step')), _md(step.get('outcome')), _md(step.get('msg')))
                lines.append('| %s | %s | %s | %s |' % cells)
        lines.append('')

    lines += _timeline_markdown(incident)

    files = incident.get('files') or {}
    if files:
        lines += ['## Files', '']
        for key, value in sorted(files.items()):
            lines.append('- %s: `%s`' % (key, value))
        lines.append('')
    return '\n'.join(lines)


def _yes_no(value):
    return {True: 'yes', False: 'NO'}.get(value, '-')


def _fold_timeline(timeline):
    """The timeline as the report lists it: a task's start is left out when a result or failure of that task
    follows (the result row names the task), and each host's run of skipped results is folded into one row that
    counts them. A host's run is the skipped results it had with nothing else of its own between them: the events
    of other hosts, which interleave with its own on a fleet, do not cut it; an event of no host (a play's start)
    does. Returns (rows, folded): rows are timeline entries, a folded run is ``{'event': 'skipped', 'count': n,
    'tasks': [...]}`` at the time of its first step; ``folded`` counts the entries left out."""
    answered = set(e.get('task') for e in timeline if e.get('event') in ('result', 'failure') and e.get('task'))
    rows, folded, runs = [], 0, {}
    for entry in timeline:
        event, host = entry.get('event'), entry.get('host')
        if event == 'task_start' and entry.get('task') in answered:
            folded += 1
            continue
        if event == 'result' and entry.get('status') == 'skipped':
            run = runs.get(host)
            if run is not None:
                run['count'] += 1
                run['tasks'].append(entry.get('task'))
            else:
                runs[host] = {'event': 'skipped', 'at': entry.get('at'), 't': entry.get('t'), 'host': host,
                              'count': 1, 'tasks': [entry.get('task')]}
                rows.append(runs[host])
            folded += 1
            continue
        if host is None:
            runs.clear()
        else:
            runs.pop(host, None)
        rows.append(entry)
    return rows, folded


def _timeline_markdown(incident):
    timeline = [e for e in incident.get('timeline') or [] if isinstance(e, dict)]
    start = timeline[0].get('t', 0) if timeline else 0
    rows, folded = _fold_timeline(timeline)
    lines = ['## Timeline', '', '| Time (UTC) | +s | Event | Host | Task | Detail |', '|---|---|---|---|---|---|']
    for entry in rows:
        if entry.get('event') == 'skipped':
            count = entry['count']
            task = '%d step%s skipped' % (count, '' if count == 1 else 's')
            detail = clip('; '.join(str(t) for t in entry['tasks']), 300)
        else:
            task = entry.get('task')
            extra = dict((k, v) for k, v in entry.items() if k not in ('t', 'at', 'event', 'host', 'task'))
            detail = ' '.join('%s=%s' % (k, v) for k, v in sorted(extra.items())) or None
        lines.append('| %s | %.2f | %s | %s | %s | %s |' % (
            _md(entry.get('at')), (entry.get('t') if entry.get('t') is not None else start) - start,
            _md(entry.get('event')), _md(entry.get('host')), _md(task), _md(detail)))
    notes = []
    if folded:
        notes.append('%d of %d events are folded (task starts that a result follows, skipped steps counted in one '
                     'row); the JSON report holds every event.' % (folded, len(timeline)))
    if incident.get('timeline_dropped'):
        notes.append('%d routine per-host results are not listed.' % incident['timeline_dropped'])
    if notes:
        lines += [''] + notes
    lines.append('')
    return lines


def _dependency_markdown(incident):
    """The "was it us or a dependency?" section: the verdict, then one row per probe."""
    answer = (incident.get('summary') or {}).get('was_it_us')
    probes = incident.get('dependency_probes') or []
    if not answer and not probes:
        return []
    lines = ['## Was it us or a dependency?', '']
    if answer:
        lines += ['**%s**' % _md(answer.get('text')), '']
    if probes:
        lines += ['| Dependency | Kind | Target | Status | Detail | Seconds |', '|---|---|---|---|---|---|']
        for probe in probes:
            lines.append('| %s | %s | %s | %s | %s | %s |' % tuple(_md(probe.get(k)) for k in (
                'name', 'kind', 'target', 'status', 'detail', 'seconds')))
        lines.append('')
    return lines


def report_paths(report_dir, incident_id):
    base = os.path.join(report_dir, incident_id)
    return base + '.json', base + '.md'


def html_report_path(report_dir, incident_id):
    return os.path.join(report_dir, incident_id) + '.html'


def write_report(incident, report_dir):
    """Write ``<report_dir>/<incident_id>.json``, ``.md`` and ``.html`` atomically; returns the JSON and Markdown
    paths (``incident['files']['report_html']`` names the HTML one).

    The HTML report is written last, so that a fault in drawing it can never cost the JSON and Markdown reports;
    such a fault leaves an HTML page that says so instead of the picture.
    """
    # imported here: only a run that writes a report loads the renderer (looked up at each call)
    from ansible_collections.failsafe.deploy.plugins.plugin_utils._html import render_html, render_html_error
    json_path, md_path = report_paths(report_dir, incident['incident_id'])
    html_path = html_report_path(report_dir, incident['incident_id'])
    files = dict(incident.get('files') or {})
    files.update({'report_json': json_path, 'report_markdown': md_path, 'report_html': html_path})
    incident['files'] = files
    write_json_atomic(json_path, incident)
    write_text_atomic(md_path, render_markdown(incident))
    try:
        page = render_html(incident)
    except Exception as exc:  # pylint: disable=broad-except
        page = render_html_error(incident, exc)
    write_text_atomic(html_path, page)
    return json_path, md_path


def controller_identity():
    """``user@host`` of the controller running the deploy (the host alone when the user is unknown)."""
    try:
        user = getpass.getuser()
    except Exception:  # pylint: disable=broad-except
        user = None
    host = socket.gethostname()
    return '%s@%s' % (user, host) if user else host


def verification_words(hosts):
    """The rollback's verification in words, from its per-host outcome."""
    verified = [info.get('verified') for info in (hosts or {}).values()]
    if not verified:
        return 'not run'
    if all(v is True for v in verified):
        return 'passed on every host'
    if any(v is False for v in verified):
        return 'FAILED on %s' % ', '.join(h for h, i in hosts.items() if i.get('verified') is False)
    return 'not reported by the rollback playbook'


def build_incident(run, timeline, incident_id, outcome, scope, scope_mode, launch=None, reason=None, hosts=None,
                   failures=None, launched=None, left_by_scope=(), playbook=None, was_it_us=None,
                   dependency_probes=None, self_reverted=None, alerts=(), ladder=None, spool_path=None, timeout=None):
    """The incident dict (schema 1) of a run, not yet redacted. ``failures``: those the report counts (the run's
    counted failures when None); ``launch`` (``_launcher.LaunchResult``) and ``launched`` ({playbook, command,
    files}) describe the rollback when one ran; ``hosts`` is its per-host outcome."""
    failures = run.counted_failures if failures is None else failures
    ignored = [f for f in run.failures if f not in failures]
    first = failures[0] if failures else (run.failures[0] if run.failures else None)
    causes = []
    for failure in failures:
        if failure['cause'] not in causes:
            causes.append(failure['cause'])
    launched = launched or {}
    rollback = {'scope_mode': scope_mode, 'hosts': hosts or {}}
    if launch is not None:
        rollback.update({
            'playbook': launched.get('playbook'),
            'command': launched.get('command'),
            'rc': launch.rc, 'timed_out': launch.timed_out, 'interrupted': launch.interrupted,
            'error': launch.error, 'started': round(launch.started, 3), 'started_at': utc_iso(launch.started),
            'ended': round(launch.ended, 3), 'ended_at': utc_iso(launch.ended), 'duration': launch.duration,
            'log': launch.log_path, 'result_file': (launched.get('files') or {}).get('rollback_result'),
            'timeout': timeout,
        })
    detected = first['time'] if first else None
    summary = {
        'outcome': outcome,
        'outcome_label': OUTCOME_LABELS.get(outcome, str(outcome).upper()),
        'reason': reason,
        'releases': run.releases,
        'previous_releases': run.previous_releases,
        'build': run.build_words,
        'builds': run.builds,
        'forced': run.forced_words,
        'rca': ', '.join(run._unique('rca')) or None,
        'run_id': run.run_id,
        'playbook': playbook,
        'controller': controller_identity(),
        'cause': ', '.join(causes) or None,
        'causes': causes,
        'failed_hosts': hosts_of(failures),
        'rollback_scope': scope_mode,
        'scope_hosts': scope,
        'left_by_scope': left_by_scope,
        'run_started_at': utc_iso(run.started),
        'detected_at': first['at'] if first else None,
        'detection_seconds': first['since_task_start'] if first else None,
        'seconds_since_run_start': first['since_run_start'] if first else None,
        'seconds_to_rollback': round(launch.started - detected, 3) if launch and detected else None,
        'rollback_duration': launch.duration if launch else None,
        'verification': verification_words(hosts),
        'likely_cause': broken_check_hint(failures, hosts),
        'was_it_us': was_it_us,
        'self_reverted_hosts': sorted(self_reverted or {}),
    }
    files = dict(launched.get('files') or {})
    files['alert_spool'] = spool_path
    return {
        'schema': 1,
        'incident_id': incident_id,
        'outcome': outcome,
        'summary': summary,
        'failures': failures,
        'ignored_failures': ignored,
        'transactions': run.transactions,
        'rollback': rollback,
        'dependency_probes': dependency_probes,
        'self_reverted': self_reverted,
        'alerts': list(alerts or ()),
        'ladder': ladder,
        'timeline': timeline.to_list(),
        'timeline_dropped': timeline.dropped,
        'files': files,
        'written': round(time.time(), 3),
        'written_at': utc_iso(),
    }
