# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""failsafe.deploy.metric_gate runs entirely on the controller: it queries Prometheus, judges the answers and, on a
marginal result, pauses for a person's promote or abort. Nothing runs on the managed host."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template
from ansible.utils.display import Display

# The argument spec lives beside the documentation, in the module file.
from ansible_collections.failsafe.deploy.plugins.modules.metric_gate import ARGUMENT_SPEC
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _analysis, _metric_gate

display = Display()


def _waves(task_vars):
    """(hosts done so far, this wave, hosts not deployed yet) of the play: serial batches are consecutive slices of
    the play's ordered host list, so the earlier waves are the hosts before this batch."""
    everyone = list(task_vars.get('ansible_play_hosts_all') or [])
    batch = list(task_vars.get('ansible_play_batch') or [])
    if not everyone or not batch:
        return batch, batch, []
    last = max(everyone.index(h) for h in batch if h in everyone) if any(h in everyone for h in batch) else -1
    return everyone[:last + 1], batch, everyone[last + 1:]


class ActionModule(ActionBase):

    _supports_check_mode = True
    _requires_connection = False

    def _instances(self, hosts, fmt, task_vars):
        """The instance label of each host: ``fmt`` with its ansible_host (templated with its variables)."""
        templar = self._templar.copy_with_new_env(available_variables=task_vars)
        out = []
        for host in hosts:
            expression = trust_as_template("{{ hostvars[%r]['ansible_host'] | default(%r) if %r in hostvars else %r }}"
                                           % (host, host, host, host))
            address = templar.template(expression)
            try:
                out.append(fmt.format(host=address, name=host))
            except (KeyError, IndexError, ValueError) as exc:
                raise AnsibleActionFail('instance_format %r: %s (use {host} and {name})' % (fmt, exc))
        return out

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        validation, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        done, wave, rest = _waves(task_vars)
        canary_hosts = params['canary_hosts'] if params['canary_hosts'] is not None else done
        baseline_hosts = params['baseline_hosts'] if params['baseline_hosts'] is not None else rest
        canary = self._instances(canary_hosts, params['instance_format'], task_vars)
        baseline = self._instances(baseline_hosts, params['instance_format'], task_vars)
        result['changed'] = False
        if self._task.check_mode:
            result['skipped'] = False
            result['msg'] = 'check mode: the gate would query %s for %d threshold(s) and %d comparison(s)' % (
                params['prometheus_url'], len(params['thresholds']), len(params['comparisons']))
            return result
        host = task_vars.get('inventory_hostname')

        def log(message):
            display.vvv('metric_gate: %s' % message, host=host)

        try:
            gate = _metric_gate.run_gate(params, canary, baseline, log=log)
        except (_metric_gate.GateError, _analysis.AnalysisError) as exc:
            raise AnsibleActionFail('metric gate settings: %s' % exc)
        gate['wave'] = {'hosts': wave, 'done_so_far': done, 'not_yet': rest}
        result['failsafe_metric_gate'] = gate
        result['verdict'] = gate['verdict']
        if gate['verdict'] == _analysis.MARGINAL and params['on_marginal'] == 'pause':
            path = params['decision_file'] or os.path.join(
                os.getcwd(), 'failsafe-canary', '%s.decision' % (task_vars.get('failsafe_run_id') or 'canary'))
            display.warning(
                'metric gate PAUSED (%s). The canary does not proceed by itself. Promote: ansible-playbook '
                'failsafe.deploy.canary_decision -e failsafe_canary_decision=promote '
                '-e failsafe_canary_decision_file=%s   Abort (rolls back): the same with abort.%s'
                % (gate['reason'], path, ' Without a decision it aborts after %g s.' % params['pause_timeout']
                   if params['pause_timeout'] else ''))
            decision, waited, timed_out = _metric_gate.wait_for_decision(path, gate, timeout=params['pause_timeout'])
            gate['decision'] = {'decision': decision, 'waited': waited, 'timed_out': timed_out, 'file': path}
            if decision == 'promote':
                result['msg'] = 'metric gate marginal, promoted by a person after %.1f s: %s' % (waited, gate['reason'])
                return result
            result['failed'] = True
            result['msg'] = 'metric gate failed: %s after a marginal result (%s)' % (
                'no decision within %g s, aborted' % waited if timed_out else 'aborted by a person', gate['reason'])
            return result
        if gate['verdict'] == _analysis.PASS:
            result['msg'] = 'metric gate passed: %s' % gate['reason']
            return result
        result['failed'] = True
        result['msg'] = 'metric gate failed: %s' % gate['reason']
        return result
