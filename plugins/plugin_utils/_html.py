# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTML incident report: one self-contained file (inline CSS, an inline SVG timeline, no script, nothing loaded
from anywhere) that an operator can open from a mail attachment or a CI artifact.

``render_html(incident)`` takes the same (already redacted) incident dict as ``render_markdown()``. Every value from
the incident is escaped; a Content-Security-Policy forbids any script or outside resource in case one slipped through.
The timeline has one lane per host and one for the controller: task bars, the failure marked, the rollback band,
each host's rollback result and the alerts.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import html
import json
import re

from ansible_collections.failsafe.deploy.plugins.plugin_utils._evidence import details_lines
from ansible_collections.failsafe.deploy.plugins.plugin_utils._summary import (
    OUTCOME_LABELS, incident_likely_cause, incident_reason, metric_gate_rows, running_release, undone_words)

CONTROLLER_LANE = 'controller'
_HOST_RESULTS = frozenset(('result', 'failure', 'unreachable'))
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

# timeline geometry (SVG user units)
_LABEL_W = 170
_PLOT_W = 900
_LANE_H = 30
_AXIS_H = 26
_TOP = 8

_CSS = """
:root { --fail: #c62828; --ok: #2e7d32; --warn: #ef6c00; --muted: #666; --line: #ddd; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1b1b1b;
       background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 20px; margin: 8px 0 4px; word-break: break-all; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; width: 100%; background: #fff; margin: 6px 0 10px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f0f0f0; font-weight: 600; white-space: nowrap; }
td { min-width: 4.5em; }
table.kv th { white-space: normal; }
table.kv th { width: 230px; }
code, pre { font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #fff; border: 1px solid var(--line); padding: 8px;
      margin: 4px 0; }
.banner { padding: 14px 18px; border-radius: 6px; color: #fff; font-size: 22px; font-weight: 700;
          letter-spacing: .02em; background: var(--warn); }
.banner small { display: block; font-size: 14px; font-weight: 400; margin-top: 4px; }
.banner.outcome-rolled_back { background: #8d6e00; }
.banner.outcome-rollback_failed, .banner.outcome-not_started { background: var(--fail); font-size: 30px;
          border: 4px solid #7f0000; }
.callout { border-left: 5px solid var(--warn); background: #fff8e1; padding: 8px 12px; margin: 8px 0; }
.yes, .status-ok { color: var(--ok); font-weight: 600; }
.no, .status-failed, .status-no_result, .status-unreachable { color: var(--fail); font-weight: 600; }
.muted { color: var(--muted); }
.timeline { background: #fff; border: 1px solid var(--line); padding: 6px; }
.timeline svg { display: block; width: 100%; height: auto; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; margin: 6px 0; font-size: 12px; color: var(--muted); }
.legend span::before { content: ""; display: inline-block; width: 12px; height: 12px; margin-right: 5px;
                       vertical-align: -2px; background: var(--c); }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg .lane-label { font-weight: 600; }
svg .lane-bg { fill: #fff; }
svg .lane:nth-of-type(even) .lane-bg { fill: #f6f6f6; }
svg .axis line { stroke: #ccc; }
svg .bar { fill: #90a4ae; }
svg .bar.status-changed { fill: #f9a825; }
svg .bar.status-skipped { fill: #cfd8dc; }
svg .bar.status-failed, svg .bar.status-unreachable { fill: var(--fail); }
svg .rollback-band { fill: #1565c0; fill-opacity: .10; stroke: #1565c0; stroke-opacity: .5; stroke-dasharray: 4 3; }
svg .rollback-edge { stroke: #1565c0; stroke-width: 1.5; }
svg .failure-marker path { fill: var(--fail); stroke: #fff; stroke-width: 1; }
svg .failure-marker line { stroke: var(--fail); stroke-width: 2; }
svg .alert-marker path { fill: var(--warn); stroke: #fff; stroke-width: 1; }
svg .txn-marker { stroke: #6a1b9a; stroke-width: 2; }
svg .rollback-host-marker circle { stroke: #fff; stroke-width: 1.5; fill: var(--ok); }
svg .rollback-host-marker.status-failed circle, svg .rollback-host-marker.status-no_result circle { fill: var(--fail); }
"""


def esc(value):
    """A value as escaped HTML text: None as '-', dicts and lists as compact JSON."""
    if value is None or value == '':
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, sort_keys=True, default=str)
    return html.escape(str(value), quote=True)


def _token(value):
    """A value reduced to a safe CSS class/id token."""
    return re.sub(r'[^a-z0-9_-]+', '-', str(value).lower()).strip('-') or 'x'


def _yes_no(value):
    if value is True:
        return '<span class="yes">yes</span>'
    if value is False:
        return '<span class="no">NO</span>'
    return '<span class="muted">not reported</span>'


def _kv_table(rows):
    out = ['<table class="kv">']
    for key, value in rows:
        out.append('<tr><th>%s</th><td>%s</td></tr>' % (esc(key), value if isinstance(value, _Raw) else esc(value)))
    out.append('</table>')
    return '\n'.join(out)


def _json(value):
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


class _Raw(str):
    """HTML already built (and escaped) by this module."""


def _table(headers, rows, cls=None):
    head = ''.join('<th>%s</th>' % esc(h) for h in headers)
    out = ['<table%s><tr>%s</tr>' % (' class="%s"' % cls if cls else '', head)]
    for row in rows:
        out.append('<tr>%s</tr>' % ''.join('<td>%s</td>' % (c if isinstance(c, _Raw) else esc(c)) for c in row))
    out.append('</table>')
    return '\n'.join(out)


def _seconds(value):
    return None if value is None else '%.2f s' % value


def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# The timeline picture

def lanes(incident):
    """The timeline's lanes: hosts in order of first appearance (timeline, failures, rollback), then the
    controller lane (run, rollback and alert events that belong to no single host)."""
    hosts = []

    def add(host):
        if host and host not in hosts and host != CONTROLLER_LANE:
            hosts.append(host)
    for entry in incident.get('timeline') or []:
        if entry.get('event') != 'alert':
            add(entry.get('host'))
    for failure in incident.get('failures') or []:
        add(failure.get('host'))
    for host in sorted(((incident.get('rollback') or {}).get('hosts') or {})):
        add(host)
    return [str(h) for h in hosts] + [CONTROLLER_LANE]


def _bars(timeline):
    """(host, start, end, task, status) of each task a host ran: from the task's start (or the host's previous
    event) to the host's result."""
    bars = []
    task_start = {}       # task name -> time of its last task_start
    last_seen = {}        # host -> time of its last event
    for entry in timeline:
        t = _num(entry.get('t'))
        if t is None:
            continue
        event = entry.get('event')
        host = entry.get('host')
        if event == 'task_start':
            task_start[entry.get('task')] = t
            if host:
                last_seen[host] = t
            continue
        if host and event in _HOST_RESULTS:
            start = task_start.get(entry.get('task'))
            if start is None or start > t:
                start = last_seen.get(host, t)
            status = entry.get('status') or ('failed' if event == 'failure' else event)
            bars.append((host, start, t, entry.get('task'), status))
        if host:
            last_seen[host] = t
    return bars


def _marker(cls, x, y, shape, title, extra=''):
    return ('<g class="%s"%s transform="translate(%.1f,%.1f)"><title>%s</title>%s</g>'
            % (cls, extra, x, y, esc(title), shape))


def render_timeline(incident):
    """The inline SVG timeline (a string of escaped SVG)."""
    timeline = [e for e in incident.get('timeline') or [] if _num(e.get('t')) is not None]
    lane_names = lanes(incident)
    rollback = incident.get('rollback') or {}
    times = [_num(e['t']) for e in timeline]
    for key in ('started', 'ended'):
        if _num(rollback.get(key)) is not None:
            times.append(_num(rollback[key]))
    t0 = min(times) if times else 0.0
    t1 = max(times) if times else 1.0
    span = max(t1 - t0, 0.001)
    height = _TOP + _LANE_H * len(lane_names) + _AXIS_H
    width = _LABEL_W + _PLOT_W + 20

    def x(t):
        return _LABEL_W + (float(t) - t0) / span * _PLOT_W

    def lane_y(name):
        return _TOP + _LANE_H * lane_names.index(name)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" '
           'aria-label="Timeline of the run: one lane per host and one for the controller">'
           % (width, height, width, height)]
    # lanes
    for name in lane_names:
        y = lane_y(name)
        cls = 'lane lane-controller' if name == CONTROLLER_LANE else 'lane lane-host'
        label = name if len(name) <= 24 else name[:23] + '\u2026'
        out.append('<g class="%s" data-lane="%s"><rect class="lane-bg" x="0" y="%d" width="%d" height="%d"/>'
                   '<text class="lane-label" x="6" y="%d"><title>%s</title>%s</text></g>'
                   % (cls, esc(name), y, width, _LANE_H, y + _LANE_H // 2 + 4, esc(name), esc(label)))
    # axis
    axis_y = _TOP + _LANE_H * len(lane_names)
    out.append('<g class="axis">')
    step = _nice_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        tx = _LABEL_W + tick / span * _PLOT_W
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/><text x="%.1f" y="%d" text-anchor="middle">'
                   '+%s s</text>' % (tx, _TOP, tx, axis_y + 4, tx, axis_y + 17, _fmt_tick(tick)))
        tick += step
    out.append('</g>')
    # rollback band (behind the markers, over the bars' lanes)
    r_start = _num(rollback.get('started'))
    r_end = _num(rollback.get('ended'))
    for entry in timeline:
        if entry.get('event') == 'rollback_start' and r_start is None:
            r_start = _num(entry['t'])
        elif entry.get('event') == 'rollback_end' and r_end is None:
            r_end = _num(entry['t'])
    if r_start is not None:
        end = r_end if r_end is not None else t1
        title = 'rollback %s \u2192 %s (%s)' % (
            rollback.get('started_at') or '+%.2f s' % (r_start - t0), rollback.get('ended_at') or 'no end recorded',
            _seconds(_num(rollback.get('duration'))) or 'duration unknown')
        out.append('<g class="rollback-phase" id="rollback-band"><title>%s</title>'
                   '<rect class="rollback-band" x="%.1f" y="%d" width="%.1f" height="%d"/>'
                   '<line class="rollback-edge" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>'
                   '<line class="rollback-edge" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/></g>'
                   % (esc(title), x(r_start), _TOP, max(x(end) - x(r_start), 2.0), axis_y - _TOP,
                      x(r_start), _TOP, x(r_start), axis_y, x(end), _TOP, x(end), axis_y))
    # task bars
    for host, start, end, task, status in _bars(timeline):
        if host not in lane_names:
            continue
        y = lane_y(host)
        out.append('<rect class="bar status-%s" x="%.1f" y="%d" width="%.1f" height="%d" rx="2"><title>%s</title>'
                   '</rect>' % (_token(status), x(start), y + 8, max(x(end) - x(start), 2.0), _LANE_H - 16,
                                esc('%s on %s: %s (%.2f s)' % (task or 'task', host, status, end - start))))
    # point events
    number = 0
    for entry in timeline:
        event = entry.get('event')
        t = _num(entry['t'])
        host = entry.get('host')
        lane = host if host in lane_names else CONTROLLER_LANE
        y = lane_y(lane)
        mid = y + _LANE_H / 2.0
        if event in ('failure', 'unreachable') and host:
            number += 1
            title = '%s on %s: %s \u2014 %s' % ('UNREACHABLE' if event == 'unreachable' else 'FAILED', host,
                                                entry.get('task') or '-', entry.get('message') or '-')
            if entry.get('in_scope') is False or entry.get('rescued'):
                title += ' (not counted: %s)' % ('rescued' if entry.get('rescued') else 'no open transaction')
            out.append(_marker('failure-marker', x(t), y, '<line x1="0" y1="2" x2="0" y2="%d"/>'
                               '<path d="M0,%d l7,-8 l-7,-8 l-7,8 z"/>' % (_LANE_H - 2, int(mid - y) + 8),
                               title, ' id="failure-marker-%d" data-host="%s" data-task="%s"'
                               % (number, esc(host), esc(entry.get('task')))))
        elif event == 'alert':
            y = lane_y(CONTROLLER_LANE)
            title = 'alert %s at %s (spool: %s, webhook: %s)' % (entry.get('alert') or '-', entry.get('at') or '-',
                                                                 entry.get('spool') or '-',
                                                                 entry.get('webhook') or '-')
            out.append(_marker('alert-marker', x(t), y + 4, '<path d="M0,0 l7,12 l-14,0 z"/>', title,
                               ' data-alert="%s"' % esc(entry.get('alert'))))
        elif event == 'rollback_host' and host:
            title = 'rollback of %s: %s, verified: %s' % (host, entry.get('status') or '-',
                                                          entry.get('verified'))
            out.append(_marker('rollback-host-marker status-%s' % _token(entry.get('status') or 'unknown'), x(t),
                               mid, '<circle r="6"/>', title, ' data-host="%s"' % esc(host)))
        elif event in ('transaction_opened', 'transaction_closed') and host:
            title = '%s on %s: txid %s, release %s, status %s' % (
                event.replace('_', ' '), host, entry.get('txid') or '-', entry.get('release') or '-',
                entry.get('status') or '-')
            out.append('<line class="txn-marker" x1="%.1f" y1="%d" x2="%.1f" y2="%d"><title>%s</title></line>'
                       % (x(t), y + 3, x(t), y + 9, esc(title)))
    out.append('</svg>')
    return '\n'.join(out)


def _nice_step(span):
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400):
        if span / step <= 10:
            return float(step)
    return span / 10.0


def _fmt_tick(value):
    return ('%.1f' % value) if value != int(value) else '%d' % value


# ---------------------------------------------------------------------------------------------------------------
# Sections

def _checks_table(checks):
    rows = []
    for check in checks or []:
        if not isinstance(check, dict):
            continue
        rows.append((check.get('name'), check.get('type'), _Raw(_yes_no(check.get('ok'))), check.get('expected'),
                     check.get('observed'), check.get('error'), check.get('attempts'),
                     _seconds(_num(check.get('elapsed')))))
    if not rows:
        return ''
    return _table(('Check', 'Type', 'OK', 'Expected', 'Observed', 'Error', 'Attempts', 'Elapsed'), rows,
                  cls='checks')


def _failures_section(incident):
    failures = incident.get('failures') or []
    out = ['<section id="failures"><h2>Failed tasks</h2>']
    if not failures:
        out.append('<p>No counted failure.</p>')
    else:
        out.append(_table(('Host', 'Task', 'Role', 'File:line', 'Cause', 'Evidence', 'Message', 'At'), [
            (f.get('host'), f.get('task'), f.get('role'), f.get('path'), f.get('cause'), f.get('evidence'),
             f.get('message'), f.get('at')) for f in failures], cls='failures'))
        for failure in failures:
            lines = details_lines(failure.get('details')) if isinstance(failure.get('details'), dict) else []
            if lines:
                out.append('<h3>Evidence of %s on %s</h3>' % (esc(failure.get('task')), esc(failure.get('host'))))
                out.append('<pre class="evidence">%s</pre>' % esc('\n'.join(lines)))
            result = failure.get('result') if isinstance(failure.get('result'), dict) else {}
            checks = _checks_table(result.get('checks'))
            if checks:
                out.append('<h3>Checks that failed %s on %s</h3>' % (esc(failure.get('task')), esc(failure.get('host'))))
                out.append(checks)
    for host, task, gate in metric_gate_rows(incident):
        out.append('<h3>Metric gate %s on %s: %s</h3>' % (esc(task), esc(host), esc(gate.get('verdict'))))
        out.append('<p>%s</p>' % esc(gate.get('reason')))
        out.append(_kv_table((('Prometheus', gate.get('prometheus_url')),
                              ('Canary instances', ', '.join(gate.get('canary_instances') or []) or None),
                              ('Baseline instances', ', '.join(gate.get('baseline_instances') or []) or None))))
        out.append(_table(('Metric', 'Kind', 'Query', 'Values', 'Thresholds', 'Verdict', 'Reason'), [
            (r.get('metric'), r.get('kind'), r.get('query'), _json(r.get('values')), _json(r.get('thresholds')),
             r.get('verdict'), r.get('reason')) for r in gate.get('rows') or []], cls='gate'))
    ignored = incident.get('ignored_failures') or []
    if ignored:
        out.append('<p class="muted">Not counted (rescued, or no open transaction): %s.</p>' % ', '.join(
            '%s on %s' % (esc(f.get('task')), esc(f.get('host'))) for f in ignored))
    out.append('</section>')
    return '\n'.join(out)


def _layers_table(layers):
    rows = []
    for layer in layers or []:
        if isinstance(layer, dict):
            extra = dict((k, v) for k, v in layer.items() if k not in ('kind', 'undone', 'action'))
            rows.append((layer.get('kind'), _Raw(_yes_no(layer.get('undone'))), layer.get('action'), extra or None))
    if not rows:
        return '<p class="muted">No layer reported.</p>'
    return _table(('Layer', 'Undone', 'Action', 'Detail'), rows, cls='layers')


def _rollback_section(incident):
    rollback = incident.get('rollback') or {}
    summary = incident.get('summary') or {}
    out = ['<section id="rollback"><h2>Rollback</h2>']
    if rollback.get('started_at'):
        out.append(_kv_table((
            ('Playbook', rollback.get('playbook')), ('Started', rollback.get('started_at')),
            ('Ended', rollback.get('ended_at')), ('Duration', _seconds(_num(rollback.get('duration')))),
            ('Exit code', rollback.get('rc')), ('Timed out', rollback.get('timed_out')),
            ('Error', rollback.get('error')), ('Log', rollback.get('log')),
            ('Result file', rollback.get('result_file')))))
    else:
        out.append('<p>Not started: %s</p>' % esc(summary.get('reason')))
    hosts = rollback.get('hosts') or {}
    for host in sorted(hosts):
        info = hosts[host] if isinstance(hosts[host], dict) else {}
        restored = info.get('restored') if isinstance(info.get('restored'), dict) else {}
        status = info.get('status')
        out.append('<div class="rollback-host" data-host="%s"><h3>%s: <span class="status-%s">%s</span></h3>'
                   % (esc(host), esc(host), _token(status or 'unknown'), esc(status)))
        out.append(_kv_table((
            ('Runs release', running_release(restored)),
            ('Failed release', restored.get('failed_release')),
            ('Undone', ', '.join(undone_words(restored)) or None),
            ('Quarantined', restored.get('quarantined')),
            ('Verified', _Raw(_yes_no(info.get('verified')))),
            ('Transaction', restored.get('txid')),
            ('Timings', ', '.join('%s %s' % (k, _seconds(_num(v))) for k, v in sorted(
                (restored.get('timings') or {}).items())) or None),
            ('Failed tasks', ', '.join('%s%s' % (t.get('task') or '-', (': ' + t['message']) if t.get('message')
                                                 else '') for t in info.get('failed_tasks') or []
                                       if isinstance(t, dict)) or None))))
        out.append('<h3>Layers undone</h3>')
        out.append(_layers_table(restored.get('layers')))
        paths = restored.get('restored')
        if isinstance(paths, list) and paths:
            out.append('<details><summary>%d paths restored</summary><ul>%s</ul></details>' % (
                len(paths), ''.join('<li><code>%s</code></li>' % esc(p) for p in paths)))
        checks = _checks_table(restored.get('checks'))
        if checks:
            out.append('<h3>Verification checks on the restored release</h3>')
            out.append(checks)
        rest = dict((k, v) for k, v in restored.items() if k not in (
            'target_release', 'running_release', 'failed_release', 'quarantined', 'txid', 'timings', 'layers',
            'restored', 'checks', 'verified', 'run_id'))
        if rest:
            out.append('<details><summary>Other values</summary><pre>%s</pre></details>'
                       % esc(json.dumps(rest, indent=2, sort_keys=True, default=str)))
        out.append('</div>')
    if not hosts:
        out.append('<p class="muted">No host was rolled back.</p>')
    out.append('</section>')
    return '\n'.join(out)


def _generic(value):
    """Any JSON value as HTML: a list of dicts as a table, a dict as a key/value table, else escaped text."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = []
        for item in value:
            for key in item:
                if key not in keys:
                    keys.append(key)
        return _table(keys, [[_Raw(_yes_no(i[k])) if isinstance(i.get(k), bool) else i.get(k) for k in keys]
                             for i in value], cls='probes')
    if isinstance(value, dict):
        return _kv_table([(k, _Raw(_generic(v)) if isinstance(v, (dict, list)) else v)
                          for k, v in value.items()])
    return esc(value)


def _section(anchor, title, parts, body, empty):
    """A report section: its heading, ``parts`` (HTML), then ``body`` (HTML) or, when there is none, ``empty`` in
    muted words."""
    closing = [body or '<p class="muted">%s</p>' % empty, '</section>']
    return '\n'.join(['<section id="%s"><h2>%s</h2>' % (anchor, title)] + parts + closing)


def _probes_section(incident):
    probes = incident.get('dependency_probes')
    answer = (incident.get('summary') or {}).get('was_it_us') or {}
    verdict = []
    if answer.get('text'):
        verdict.append('<p class="verdict verdict-%s"><strong>%s</strong></p>' % (
            esc(re.sub(r'[^a-z]', '', str(answer.get('verdict') or 'unknown'))), esc(answer['text'])))
    return _section('dependency-probes', 'Dependency probes: was it us or a dependency?', verdict,
                    _generic(probes) if probes else None, 'None configured.')


def _alerts_section(incident):
    alerts = incident.get('alerts') or []
    table = _table(('Event', 'Sent at', 'Spool', 'Webhook'), [
        (a.get('event'), a.get('at'), a.get('spool'), a.get('webhook')) for a in alerts if isinstance(a, dict)])
    return _section('alerts', 'Alerts', [], table if alerts else None, 'No alert was sent.')


def _events_section(incident):
    timeline = incident.get('timeline') or []
    start = _num(timeline[0].get('t')) if timeline else None
    rows = []
    for entry in timeline:
        t = _num(entry.get('t'))
        detail = ' '.join('%s=%s' % (k, v if isinstance(v, str) else json.dumps(v, default=str))
                          for k, v in sorted(entry.items()) if k not in ('t', 'at', 'event', 'host', 'task'))
        rows.append((entry.get('at'), '%.2f' % (t - start) if t is not None and start is not None else None,
                     entry.get('event'), entry.get('host'), entry.get('task'), detail or None))
    out = ['<section id="events"><details><summary>All %d timeline events</summary>' % len(timeline)]
    out.append(_table(('Time (UTC)', '+s', 'Event', 'Host', 'Task', 'Detail'), rows, cls='events'))
    if incident.get('timeline_dropped'):
        out.append('<p class="muted">%s routine per-host results are not listed.</p>'
                   % esc(incident['timeline_dropped']))
    out.append('</details></section>')
    return '\n'.join(out)


def _summary_rows(incident, label):
    summary = incident.get('summary') or {}
    rollback = incident.get('rollback') or {}
    rows = [
        ('Outcome', label), ('Reason', incident_reason(incident)),
        ('Release', ', '.join(summary.get('releases') or []) or None),
        ('Previous release', ', '.join(summary.get('previous_releases') or []) or None),
        ('Build', summary.get('build')),
        ('Forced', summary.get('forced')),
        ('Failed hosts', ', '.join(summary.get('failed_hosts') or []) or None),
        ('Rollback scope', '%s: %s' % (summary.get('rollback_scope') or '-',
                                       ', '.join(summary.get('scope_hosts') or []) or '-')),
    ]
    if summary.get('left_by_scope'):   # only when the scope left hosts out
        rows.append(('MIXED RELEASES: left on the new release by the scope', ', '.join(summary['left_by_scope'])))
    rows += [
        ('Run id', summary.get('run_id')), ('Playbook', summary.get('playbook')),
        ('Controller', summary.get('controller')), ('Run started', summary.get('run_started_at')),
        ('Failure detected', summary.get('detected_at')),
        ('Detection time', (_seconds(_num(summary.get('detection_seconds'))) or '-') + ' after the failing task started'),
        ('Time from detection to rollback start', _seconds(_num(summary.get('seconds_to_rollback')))),
        ('Rollback duration', _seconds(_num(rollback.get('duration')))),
        ('Verification', summary.get('verification')),
    ]
    return rows


def render_html(incident):
    """Render the incident dict as one self-contained HTML document, outcome first."""
    summary = incident.get('summary') or {}
    outcome = incident.get('outcome')
    label = OUTCOME_LABELS.get(outcome, str(outcome).upper())
    if outcome in ('rollback_failed', 'not_started'):
        tagline = 'The hosts may be left in a broken or mixed state. Act now: see the per-host results below.'
    elif outcome == 'rolled_back':
        tagline = 'The deploy failed and was rolled back; the run is a failure, not a success.'
    else:
        tagline = summary.get('reason') or ''
    parts = [
        '<!DOCTYPE html>',
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="%s">' % esc(_CSP),
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<title>Incident %s: %s</title>' % (esc(incident.get('incident_id')), esc(label)),
        '<style>%s</style></head><body><main>' % _CSS,
        '<div class="banner outcome-%s" id="outcome" role="alert">%s<small>%s</small></div>'
        % (_token(outcome), esc(label), esc(tagline) if tagline else ''),
        '<h1>Incident %s</h1>' % esc(incident.get('incident_id')),
        '<section id="summary"><h2>Summary</h2>',
        _kv_table(_summary_rows(incident, label)),
        '</section>',
        '<section id="cause"><h2>Cause</h2>',
        '<p>Classified cause: <strong>%s</strong></p>' % esc(summary.get('cause') or 'none recorded'),
    ]
    likely = incident_likely_cause(incident)
    if likely:
        parts.append('<div class="callout" id="likely-cause"><strong>Likely cause.</strong> %s</div>' % esc(likely))
    first = (incident.get('failures') or [None])[0]
    if isinstance(first, dict):
        parts.append('<p>First failure: <strong>%s</strong> on <strong>%s</strong>: %s</p>'
                     % (esc(first.get('task')), esc(first.get('host')), esc(first.get('message'))))
    parts += [
        '</section>',
        '<section id="timeline"><h2>Timeline</h2>',
        '<div class="legend"><span style="--c:#90a4ae">task ok</span><span style="--c:#f9a825">task changed</span>'
        '<span style="--c:#c62828">failure</span><span style="--c:rgba(21,101,192,.25)">rollback</span>'
        '<span style="--c:#2e7d32">host rolled back</span><span style="--c:#ef6c00">alert</span>'
        '<span style="--c:#6a1b9a">transaction opened/closed</span></div>',
        '<div class="timeline">%s</div>' % render_timeline(incident),
        '</section>',
        _failures_section(incident),
        _rollback_section(incident),
        _probes_section(incident),
        _alerts_section(incident),
        _events_section(incident),
    ]
    files = incident.get('files') or {}
    if files:
        parts.append('<section id="files"><h2>Files</h2>%s</section>' % _kv_table(sorted(files.items())))
    parts.append('<p class="muted">Written %s by failsafe.deploy.auto_rollback.</p>' % esc(incident.get('written_at')))
    parts.append('</main></body></html>\n')
    return '\n'.join(parts)


def render_html_error(incident, exc):
    """The page written when ``render_html`` fails: it names the fault and points at the JSON and Markdown reports,
    so that an operator who opens the HTML file is never left with nothing."""
    files = incident.get('files') or {}
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="Content-Security-Policy" content="%s"><title>Incident %s</title></head><body>'
            '<h1>Incident %s: %s</h1><p>The HTML report could not be drawn (%s: %s). The JSON and Markdown reports '
            'hold the whole incident:</p><ul><li>%s</li><li>%s</li></ul></body></html>\n'
            % (esc(_CSP), esc(incident.get('incident_id')), esc(incident.get('incident_id')),
               esc(OUTCOME_LABELS.get(incident.get('outcome'), str(incident.get('outcome')).upper())),
               esc(type(exc).__name__), esc(exc), esc(files.get('report_json')), esc(files.get('report_markdown'))))
