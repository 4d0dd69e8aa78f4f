# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""failsafe.deploy.watch runs entirely on the controller: it opens the watch window of a committed deploy, or acts
on an Alertmanager alert inside it (plugin_utils/_watch decides; the rollback is an ansible-playbook of its own)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import time

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

# The argument spec lives beside the documentation, in the module file.
from ansible_collections.failsafe.deploy.plugins.modules.watch import ARGUMENT_SPEC, REQUIRED_IF
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _alerts, _incident, _launcher, _watch


def _notify(payload):
    """POST ``payload`` to the deploy's webhook (FAILSAFE_WEBHOOK_URL) when one is set; the outcome in words."""
    url = os.environ.get('FAILSAFE_WEBHOOK_URL')
    if not url:
        return 'no webhook set (FAILSAFE_WEBHOOK_URL): logged only'
    sent = _alerts.WebhookSender(url, timeout=5.0, retries=2).send(payload)
    return 'notified (webhook)' if sent.ok else 'the webhook notification failed: %s' % sent.error


def _alert_payload(event, severity, decision, **extra):
    window = decision.get('window') or {}
    data = {'event': event, 'severity': severity, 'source': 'failsafe.deploy.watch', 'summary': decision['message'],
            'service': decision.get('service'), 'alert': decision.get('alert'), 'release': window.get('release'),
            'run_id': window.get('run_id'), 'hosts': sorted(window.get('hosts') or {}),
            'incident_id': decision.get('incident_id'), 'at': _watch.utc_iso(time.time())}
    data.update(extra)
    return data


def _inventory(window, task_vars):
    """The deploy's inventory sources when they are still there, else this run's."""
    recorded = [s for s in window.get('inventory') or [] if s and os.path.exists(s)]
    if recorded:
        return recorded
    sources = task_vars.get('ansible_inventory_sources') or []
    return [sources] if isinstance(sources, str) else list(sources)


def _rollback(decision, directory, report_dir, playbook, timeout, task_vars):
    """Run the rollback playbook for the claimed deploy of ``decision``; its per-host outcome and the report."""
    window = decision['window']
    hosts = sorted(window['hosts'])
    incident_id = decision['incident_id']
    os.makedirs(report_dir, mode=0o700, exist_ok=True)
    files = _launcher.rollback_files(report_dir, incident_id)
    request = _launcher.rollback_request(window['run_id'], window['hosts'], incident_id)
    request['failsafe_rollback_reason'] = 'rolled back by the watch window (incident %s): alert %s fired before %s' \
        % (incident_id, decision['alert'], window.get('until_iso'))
    _launcher.write_request(files['rollback_vars'], request)
    cmd = [_launcher.default_ansible_playbook()]
    for source in _inventory(window, task_vars):
        cmd += ['-i', source]
    cmd += [_launcher.resolve_playbook(playbook), '--limit', _launcher.limit_pattern(hosts),
            '-e', '@' + files['rollback_vars']]
    env = _launcher.build_env(os.environ, files['rollback_result'], _launcher.enabled_callbacks())
    launch = _launcher.run(cmd, env, files['rollback_log'], timeout, cwd=os.getcwd(),
                           header='# the watch rolls back %s (incident %s)' % (window['service'], incident_id))
    child = _launcher.read_child_result(files['rollback_result'])
    per_host = _launcher.merge_child_hosts(hosts, child)
    reason = _launcher.rollback_reason(launch, child, per_host)
    rollback = {'rc': launch.rc, 'hosts': per_host, 'reason': reason, 'log': files['rollback_log'],
                'duration': launch.duration}
    report = _watch.write_incident(report_dir, _watch.incident_report(decision, rollback))
    return rollback, report


class ActionModule(ActionBase):

    # under --check it refuses loudly rather than being skipped in silence
    _supports_check_mode = True
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        validated = ArgumentSpecValidator(ARGUMENT_SPEC, required_if=REQUIRED_IF).validate(dict(self._task.args))
        if validated.error_messages:
            raise AnsibleActionFail('; '.join(validated.error_messages))
        args = validated.validated_parameters
        if self._task.check_mode:
            raise AnsibleActionFail('failsafe.deploy.watch records a window or rolls back: it does not run under '
                                    'check mode. Nothing was done.')
        directory = _watch.watch_dir(args['dir'])
        if args['state'] == 'open':
            return self._open(result, directory, args)
        return self._alert(result, directory, args, task_vars)

    def _open(self, result, directory, args):
        try:
            window = _watch.open_window(directory, args['service'], args['run_id'], args['release'], args['hosts'],
                                        args['duration'], alerts=args['alerts'], queries=args['queries'],
                                        inventory=[os.path.abspath(s) if os.path.exists(s) else s
                                                   for s in args['inventory']])
        except (OSError, ValueError) as exc:
            raise AnsibleActionFail('cannot open the watch window of %s in %s: %s (failsafe_watch)'
                                    % (args['service'], directory, exc))
        result.update(changed=True, window=window, msg=(
            'watching %s release %s on %s until %s (%d s): an alert %s inside the window rolls it back'
            % (window['service'], window['release'], ', '.join(sorted(window['hosts'])), window['until_iso'],
               window['duration'], ('named ' + ', '.join(window['alerts'] + window['queries']))
               if window['alerts'] or window['queries'] else 'of the service')))
        return result

    def _alert(self, result, directory, args, task_vars):
        report_dir = os.path.abspath(os.path.expanduser(
            args['report_dir'] or os.environ.get('FAILSAFE_REPORT_DIR') or os.path.join(directory, 'incidents')))
        try:
            decisions = _watch.decide(directory, args['payload'], _incident.new_incident_id)
        except _watch.Refused as exc:
            message = 'REFUSED: %s; nothing was rolled back' % exc
            _watch.log_decision(directory, {'at': _watch.utc_iso(time.time()), 'decision': 'refused',
                                            'message': message})
            result.update(failed=True, changed=False, decisions=[{'decision': 'refused', 'message': message}],
                          msg=message)
            return result
        failed = False
        for decision in decisions:
            kind = decision['decision']
            if kind == 'rollback':
                rollback, report = _rollback(decision, directory, report_dir, args['rollback_playbook'],
                                             args['step_timeout'], task_vars)
                decision.update(rollback=rollback, report=report)
                if rollback['reason']:
                    failed = True
                    decision['message'] += '; ROLLBACK FAILED: %s (report %s)' % (rollback['reason'], report)
                else:
                    decision['message'] += '; rolled back (report %s)' % report
                decision['notified'] = _notify(_alert_payload(
                    'rollback_failed' if rollback['reason'] else 'watch_rolled_back',
                    'critical' if rollback['reason'] else 'error', decision, report=report))
            elif kind == 'after_window':
                decision['notified'] = _notify(_alert_payload('watch_alert_after_window', 'warning', decision))
                decision['message'] += ' (%s)' % decision['notified']
            elif kind == 'refused':
                failed = True
            entry = dict((k, v) for k, v in decision.items() if k not in ('window', 'labels'))
            entry['at'] = _watch.utc_iso(time.time())
            entry['run_id'] = (decision.get('window') or {}).get('run_id')
            _watch.log_decision(directory, json.loads(json.dumps(entry, default=str)))
        for decision in decisions:
            decision.pop('window', None)
        result.update(changed=any(d['decision'] == 'rollback' for d in decisions), failed=failed,
                      decisions=decisions, msg='; '.join(d['message'] for d in decisions))
        return result
