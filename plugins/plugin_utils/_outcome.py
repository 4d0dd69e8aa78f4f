# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How a run of the auto_rollback callback ends: its rollback scope and its outcome.

One job: from what the run saw (``_incident.DeployRun``, the escalation ladder, hosts that reverted by themselves)
and how the rollback went, decide the outcome (refused, mitigated, rescued, self_reverted, a plain commit, skipped in
check mode, deferred to a workflow, rolled_back, rollback_failed), which hosts the rollback covers and which it
leaves on the new release, and what the outcome's alert says. The callback sends, launches and writes.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import broken_check_hint, rolled_back_summary
from ansible_collections.failsafe.deploy.plugins.plugin_utils._summary import hosts_of


def quiet_end(run, ladder, alerted, self_reverted):
    """The end of a run that needs no rollback, as a dict: ``outcome`` (refused, mitigated, rescued, self_reverted,
    or None when there is nothing to write up), ``reason`` of its incident report, ``failures`` the report lists
    (refusals; None: the counted failures), ``alert`` ((severity, fields) of its failure_rescued alert, or None) and
    ``committed`` (hosts opened a transaction and no failure was alerted or mitigated: a plain commit). A run whose
    only news is hosts that reverted by themselves: ``linked``, the incident a host's own alert opened (the report
    is that incident's), and ``unheard`` ((severity, fields) of a self_reverted alert for the hosts whose own alert
    reached nobody, or None). ``alerted``: an incident was opened by an alert on the way."""
    refused = run.refusals()
    if refused:
        # The preflight refused the deploy before any host opened a transaction: nothing changed, nothing to roll
        # back, no alert; the incident report says so (scripts/deploy_outcome.py: REFUSED).
        return {'outcome': 'refused', 'failures': refused, 'alert': None, 'committed': False, 'linked': None,
                'unheard': None,
                'reason': 'refused before any change on %s: %s' % (', '.join(hosts_of(refused)),
                                                                   refused[0]['message'])}
    fixed = dict((host, steps[-1]['step']) for host, steps in ladder.items()
                 if steps and steps[-1].get('outcome') == 'fixed')
    # a failure was alerted (or mitigated) on the way: the run is not reported as a plain commit
    end = {'outcome': None, 'reason': None, 'failures': None, 'alert': None, 'linked': None, 'unheard': None,
           'committed': not (alerted or bool(fixed)) and bool(run.opened_order)}
    if fixed:
        # A health check failed and a step of the escalation ladder (the kill switch, the traffic back) brought it
        # back: no rollback, but an incident that says which step did it.
        summary = 'health check failed; the escalation ladder fixed it (%s); no rollback' % ', '.join(
            '%s: %s' % (host, step) for host, step in sorted(fixed.items()))
        end.update(outcome='mitigated', reason=summary,
                   alert=('warning', {'summary': summary, 'outcome': 'mitigated', 'ladder': ladder}))
    elif alerted:
        # An alert went out, then the recap showed every failure rescued: say so, and write it up.
        end.update(outcome='rescued', reason='every failure was rescued',
                   alert=('info', {'summary': 'the failure was rescued; no rollback needed'}))
    elif self_reverted:
        # Nothing failed in this run, but hosts had reverted an earlier run's transaction by themselves.
        end.update(outcome='self_reverted', reason='%s reverted an unconfirmed transaction by itself' % ', '.join(
            sorted(self_reverted)), linked=linked_incident(self_reverted))
        unheard = unheard_reverts(self_reverted)
        if unheard:
            # nobody heard of these reverts yet (the host had no channel, or its alert was not delivered)
            end['unheard'] = ('error', {'hosts': unheard, 'outcome': 'self_reverted', 'summary': (
                '%s reverted an unconfirmed transaction by itself; its own alert reached nobody' % ', '.join(unheard))})
    return end


def linked_incident(self_reverted):
    """The incident a host's own revert already alerted (``self_reverted``: {host: the facts it kept}), that the
    run reporting it names instead of a new one: the earliest delivered one, else None (then nobody was paged)."""
    alerts = [facts.get('alert') or {} for facts in (self_reverted or {}).values()]
    alerted = sorted(a['incident_id'] for a in alerts if a.get('status') == 'delivered' and a.get('incident_id'))
    return alerted[0] if alerted else None


def unheard_reverts(self_reverted):
    """The hosts whose own revert nobody heard of (no alert channel armed, or its alert not delivered): the run
    that reports them alerts them."""
    return sorted(host for host, facts in (self_reverted or {}).items()
                  if ((facts or {}).get('alert') or {}).get('status') != 'delivered')


def rollback_scope(run, mode, interrupted=None):
    """(scope, what): the hosts to roll back under ``rollback_scope`` ``mode`` and what happened, in words. A run
    ``interrupted`` (why, in words) also rolls back every host whose transaction is still open."""
    scope = run.scope(mode)
    what = 'deploy failed on %s' % ', '.join(run.failed_hosts)
    if interrupted:
        scope += [h for h in run.opened_order if run.has_open_transaction(h) and h not in scope]
        what = 'deploy interrupted (%s)' % interrupted if not run.failed_hosts else what
    return scope, what


def not_launched(check_mode, defer_to_workflow, controller_job):
    """(outcome, reason) when the rollback is not launched: check mode changed nothing, or a controller job defers
    it to its workflow (``controller_job``: this run is one); (None, None) when it is launched."""
    if check_mode:
        return 'skipped_check_mode', 'check mode: nothing was changed, so nothing is rolled back'
    if defer_to_workflow and controller_job:
        return 'deferred', 'defer_to_workflow is set and this is a controller job: the workflow runs the rollback'
    return None, None


def launched(reason):
    """The outcome of a launched rollback: anything but a clean one (``reason`` says what was not) failed."""
    return 'rolled_back' if reason is None else 'rollback_failed'


def left_by_scope(run, scope, mode, what):
    """(hosts, what): the hosts that opened (or even committed) this run and stay on its release because
    ``rollback_scope`` ``mode`` leaves them out, and ``what`` saying so when there are any."""
    left = [h for h in run.opened_order if h not in scope]
    if left:
        what += '; MIXED RELEASES: %s left on release %s by rollback_scope=%s' % (
            ', '.join(left), ', '.join(run.releases) or '?', mode)
    return left, what


def outcome_alert(outcome, what, scope, hosts, reason, launch, failures, report):
    """(event, severity, fields, likely cause) of the alert that says how the rollback ended. ``report``: the
    (JSON, Markdown) paths of the incident report."""
    json_path, md_path = report
    duration = launch.duration if launch else None
    per_host = dict((host, info.get('status')) for host, info in (hosts or {}).items())
    if outcome == 'rolled_back':
        return 'rolled_back', 'warning', dict(
            hosts=scope, outcome='rolled_back', summary=rolled_back_summary(what, scope, hosts), duration=duration,
            report=json_path, report_markdown=md_path, per_host=per_host), None
    if outcome == 'rollback_failed':
        likely = broken_check_hint(failures, hosts)
        return 'rollback_failed', 'critical', dict(
            hosts=scope, outcome='rollback_failed', reason=reason,
            summary='ROLLBACK FAILED on %s: %s%s' % (', '.join(scope), reason, ('. ' + likely) if likely else ''),
            likely_cause=likely, duration=duration, report=json_path, report_markdown=md_path,
            per_host=per_host), likely
    return 'rollback_%s' % ('deferred' if outcome == 'deferred' else 'skipped'), 'warning', dict(
        hosts=scope, outcome=outcome, reason=reason, report=json_path, report_markdown=md_path), None


NOT_STARTED = 'the run ended before the rollback could start (interrupted?); transactions are left open'


def not_started_alert(scope, report):
    """The fields of the critical alert of a run that ended before its rollback could start (``report``: the
    (JSON, Markdown) paths of the incident report)."""
    return dict(hosts=scope, outcome='not_started', reason=NOT_STARTED, report=report[0], report_markdown=report[1],
                summary='ROLLBACK NOT STARTED: %s' % NOT_STARTED)
