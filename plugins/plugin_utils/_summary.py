# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What an incident report says in words, shared by its Markdown (``_incident``) and HTML (``_html``) renderings:
the outcome labels, the reason, the likely cause and the failures a metric gate decided; and the lines the
auto_rollback callback prints when a run ends (``summary_lines()``, ``failed_banner()``)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.plugins.module_utils._undone import layer_words

OUTCOME_LABELS = {
    'rolled_back': 'ROLLED BACK',
    'rollback_failed': 'ROLLBACK FAILED',
    'deferred': 'ROLLBACK DEFERRED TO WORKFLOW',
    'skipped_check_mode': 'ROLLBACK SKIPPED (CHECK MODE)',
    'not_started': 'ROLLBACK NOT STARTED',
    'self_reverted': 'HOST REVERTED ITSELF',
    'mitigated': 'MITIGATED BY THE ESCALATION LADDER (NO ROLLBACK)',
    'refused': 'REFUSED BEFORE ANY CHANGE',
}


# What each cause class most likely means, for a report whose run named no more specific cause.
CAUSE_HINTS = {
    'network': 'a host could not be reached or its connection broke (SSH, DNS, firewall, a host gone): look at the '
               'network before the release.',
    'input': 'what the deploy was given was refused (a missing or wrong variable, archive or option): fix the '
             'input; nothing was shown about the release itself.',
    'missing_configuration': 'the release needs configuration the hosts do not have (a setting, file or secret it '
                             'requires).',
    'infrastructure': 'the hosts\' infrastructure failed (disk, permissions, the service manager, a package): not the '
                      'release\'s code.',
    'config_error': 'the service refused its configuration when it started (a syntax error, a setting it does not '
                    'know): fix the configuration the deploy wrote; its log says where.',
    'start_failure': 'the service of the release did not start (it crashed or exited at start): see the end of its '
                     'log in the evidence.',
    'health': 'the release was activated and then failed its health checks or metric gates: the release is bad, or '
              'the check is wrong.',
    'script_error': 'a command or script of the deploy failed (non-zero exit, traceback): see the evidence of the '
                    'failed task.',
    'unknown': 'the failure matched no known cause class: see the evidence of the failed task.',
}


def clip(text, limit=240):
    """``text`` on one line, cut to ``limit`` characters."""
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3].rstrip() + '...'


def incident_reason(incident):
    """Why the report was written, in one line: the run's own reason, else the first counted failure."""
    summary = incident.get('summary') or {}
    if summary.get('reason'):
        return summary['reason']
    failures = [f for f in incident.get('failures') or [] if isinstance(f, dict)]
    if not failures:
        return None
    first = failures[0]
    text = "task '%s' failed on %s" % (first.get('task') or '?', first.get('host') or '?')
    others = sorted(set(f.get('host') for f in failures if f.get('host') != first.get('host')))
    if others:
        text += ' (and on %s)' % ', '.join(others)
    message = first.get('message') or first.get('evidence')
    return '%s: %s' % (text, clip(message)) if message else text


def incident_likely_cause(incident):
    """The likely cause: a specific one found by the run (a broken check), else what the first counted failure's
    cause class means."""
    summary = incident.get('summary') or {}
    if summary.get('likely_cause'):
        return summary['likely_cause']
    failures = [f for f in incident.get('failures') or [] if isinstance(f, dict)]
    cause = failures[0].get('cause') if failures else None
    if not cause:
        return None
    return '%s: %s' % (cause, CAUSE_HINTS.get(cause, CAUSE_HINTS['unknown']))


def metric_gate_rows(incident):
    """(host, task, gate summary) of every failure that a metric gate decided."""
    out = []
    for failure in incident.get('failures') or []:
        if isinstance(failure.get('metric_gate'), dict):
            out.append((failure.get('host'), failure.get('task'), failure['metric_gate']))
    return out


def running_release(restored):
    """The release a host runs after its rollback, as its rollback result says (read from its ``current`` link
    there; None where it runs none), or None; results of older versions named only the release the rollback
    switched to."""
    if not isinstance(restored, dict):
        return None
    if 'running_release' in restored:
        return restored['running_release']
    return restored.get('target_release')


def undone_words(restored):
    """What a host's rollback undid, one phrase per layer, every stage of a staged rollback included (the layers of
    a host's stages add up in its result)."""
    if not isinstance(restored, dict):
        return []
    words = []
    for layer in restored.get('layers') or []:
        if isinstance(layer, dict) and layer.get('undone'):
            name = layer.get('key') or layer.get('kind') or 'a layer'
            words.append(str(layer.get('undid') or '%s %s' % (name, layer.get('action') or 'undone')))
    for kind in ('removed_partial', 'removed_release'):
        if restored.get(kind):
            words.append(layer_words({'kind': kind, 'release': restored[kind]}))
    if restored.get('service_started'):
        words.append('service started (it was not running)')
    return words


def host_outcome(restored):
    """One host's rollback in words: the release it runs now and what was undone."""
    running = running_release(restored)
    if restored.get('unfinished'):
        # its rollback failed with stages still to undo: the release it runs is not known from its result
        head = 'not rolled back: it failed with the %s stage(s) still to undo' % ', '.join(
            str(stage) for stage in restored.get('pending') or ())
    elif running is not None:
        head = 'runs release %s' % running
        failed = restored.get('failed_release')
        if failed and failed != running:
            head += ' (%s rolled back)' % failed
    elif restored.get('failed_release'):
        head = 'runs no release (nothing deployed before %s)' % restored['failed_release']
    else:
        head = 'layers only'
    return '%s; undone: %s' % (head, ', '.join(undone_words(restored)) or 'nothing')


def rollback_host_lines(hosts, indent='  '):
    """The lines under a rollback's banner: for every host whose rollback finished, the release it runs now and
    what each layer undid."""
    lines = []
    for host in sorted(hosts or {}):
        info = hosts[host] if isinstance(hosts[host], dict) else {}
        restored = info.get('restored')
        if info.get('status') == 'ok' and isinstance(restored, dict) and restored:
            lines.append('%s%s: %s' % (indent, host, host_outcome(restored)))
    return lines


def hosts_of(failures):
    """The hosts of these failures, each once, in order."""
    hosts = []
    for failure in failures:
        if failure['host'] not in hosts:
            hosts.append(failure['host'])
    return hosts


def summary_lines(outcome, incident_id, failures, rollback_hosts=None, reports=(), rollback_log=None,
                  spool_path=None):
    """The lines the callback prints when a run ends with an incident: the outcome, the failed hosts and causes,
    what each host's rollback undid, and where the reports, the rollback's log and the alert spool are.
    ``reports``: the (JSON, Markdown, HTML) paths written, any of them None."""
    label = OUTCOME_LABELS.get(outcome, 'FAILURE RESCUED' if outcome == 'rescued' else outcome)
    lines = ['failsafe auto_rollback: %s (incident %s; failed: %s; cause: %s)' % (
        label, incident_id, ', '.join(hosts_of(failures)) or 'none',
        ', '.join(sorted({f['cause'] for f in failures})) or 'none')]
    if outcome == 'refused':
        lines.append('  nothing was changed: no lock taken, no transaction opened, no rollback needed')
    # each host whose rollback finished: the release it runs now and what each layer (every stage) undid
    lines += rollback_host_lines(rollback_hosts)
    report_json, report_md, report_html = (tuple(reports) + (None, None, None))[:3]
    if report_json:
        lines.append('  incident report: %s' % report_json)
        lines.append('  incident report (Markdown): %s' % report_md)
        if report_html:
            lines.append('  incident report (HTML): %s' % report_html)
    if rollback_log:
        lines.append('  rollback log: %s' % rollback_log)
    lines.append('  alert spool: %s' % spool_path)
    return lines


def failed_banner(incident_id, reason, way_out=None):
    """The banner of a failed rollback (``reason`` and ``way_out`` already redacted)."""
    rule = '!' * 78
    text = ('%s\n!!! ROLLBACK FAILED: incident %s\n!!! %s\n!!! Hosts may be broken or on mixed releases. '
            'Act now.\n' % (rule, incident_id, reason))
    if way_out:
        text += '!!! Way out, once the cause is fixed: %s\n' % way_out
    return text + rule


def self_revert_warning(host, facts):
    """The warning for a host that reverted a transaction by itself (commit confirmed): ``facts`` it kept."""
    alert = facts.get('alert') or {}
    if alert.get('status') == 'delivered':
        heard = '; the host alerted it itself as incident %s at %s (not paged again)' % (
            alert.get('incident_id'), alert.get('sent_iso'))
    elif alert.get('incident_id'):
        heard = '; the host\'s own alert (incident %s) was NOT delivered: %s' % (
            alert.get('incident_id'), alert.get('error'))
    else:
        heard = ''
    return '%s reverted transaction %s (release %s, run %s) by itself at %s: %s; %s%s' % (
        host, facts.get('txid'), facts.get('release'), facts.get('run_id'), facts.get('finished_iso'),
        facts.get('cause'), 'restore proven' if facts.get('outcome') == 'rolled_back'
        else 'ITS ROLLBACK FAILED: %s' % facts.get('error'), heard)
