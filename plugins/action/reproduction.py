# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""failsafe.deploy.reproduction runs entirely on the controller: it re-runs an incident's release on the staging
hosts and appends whether the failure reproduced to the incident's report (plugin_utils/_reproduce)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

# The argument spec lives beside the documentation, in the module file.
from ansible_collections.failsafe.deploy.plugins.modules.reproduction import ARGUMENT_SPEC
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _launcher, _rehearsal, _reproduce


class ActionModule(ActionBase):

    # under --check it refuses loudly rather than being skipped in silence
    _supports_check_mode = True
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        validated = ArgumentSpecValidator(ARGUMENT_SPEC).validate(dict(self._task.args))
        if validated.error_messages:
            raise AnsibleActionFail('; '.join(validated.error_messages))
        args = validated.validated_parameters
        if self._task.check_mode:
            raise AnsibleActionFail('A reproduction deploys to the staging hosts: it does not run under check mode. Nothing was run.')
        staging = _rehearsal.staging_hosts(task_vars, args['hosts'])
        if not staging:
            raise AnsibleActionFail('no staging host matches %r (failsafe_rehearsal_hosts): nothing was re-run'
                                    % args['hosts'])
        from ansible import context
        try:
            found = _reproduce.reproduce(args['incident'], args['hosts'], staging, args['playbook'],
                                         dict(context.CLIARGS or {}), dict(os.environ),
                                         timeout=args['step_timeout'], defaults=_launcher.config_defaults())
        except (IOError, OSError, ValueError) as e:
            raise AnsibleActionFail('cannot reproduce incident %s: %s (failsafe_incident)' % (args['incident'], e))
        result.update(changed=True, reproduction=found, reproduced=found['reproduced'], msg=found['words'])
        return result
