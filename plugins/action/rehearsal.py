# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""failsafe.deploy.rehearsal runs entirely on the controller: it runs the deploy playbook on the staging hosts in
steps (deploy, drill, redeploy), each an ansible-playbook of its own, and writes the rehearsal record
(plugin_utils/_rehearsal). Nothing runs on a managed host from this task itself."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

# The argument spec lives beside the documentation, in the module file.
from ansible_collections.failsafe.deploy.plugins.modules.rehearsal import ARGUMENT_SPEC
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _launcher, _rehearsal
from ansible_collections.failsafe.deploy.plugins.plugin_utils._build import build_of, playbook_directory


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
            raise AnsibleActionFail('A rehearsal deploys to the staging hosts: it does not run under check mode. Nothing was run.')
        try:
            archive = self._find_needle('files', args['archive'])
        except AnsibleError as e:
            raise AnsibleActionFail('release archive %s is not on the controller: %s (failsafe_release_archive)'
                                    % (args['archive'], e))
        build = build_of(archive=archive, playbook_dir=playbook_directory(task_vars.get('playbook_dir')))
        if not build.get('archive_sha256'):
            raise AnsibleActionFail('cannot read the release archive %s' % archive)
        staging = _rehearsal.staging_hosts(task_vars, args['hosts'])
        if not staging:
            raise AnsibleActionFail('no staging host matches %r (failsafe_rehearsal_hosts): nothing was rehearsed'
                                    % args['hosts'])
        from ansible import context
        record = _rehearsal.rehearse(
            args['release'], archive, args['hosts'], args['store'], args['playbook'], dict(context.CLIARGS or {}),
            dict(os.environ), build, staging, timeout=args['step_timeout'], defaults=_launcher.config_defaults())
        words = ', '.join('%s %s (%.1f s)' % (s['name'], s['outcome'], s['duration']) for s in record['steps'])
        result.update(changed=True, record=record, passed=record['passed'], failed=not record['passed'])
        result['msg'] = ('Rehearsal of release %s (archive sha256 %s) on %s %s: %s. Record: %s'
                         % (args['release'], build['archive_sha256'], ', '.join(staging),
                            'PASSED' if record['passed'] else 'FAILED', words, record['record']))
        return result
