# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Mitogen's own mitogen_linear strategy, which also appends a line to $FAILSAFE_TEST_STRATEGY_WITNESS each time a
playbook runs under it (its pid, its playbooks, whether it is the auto_rollback callback's rollback child), so that
tests/behaviour/test_mitogen.py sees that the rollback child ran under Mitogen as well as the deploy. Found first on
ANSIBLE_STRATEGY_PLUGINS, before ansible_mitogen's strategy plugins."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import json
import os

import ansible_mitogen

# ansible_mitogen's plugin file, loaded under a name of its own (its folder on sys.path would shadow the mitogen
# package with its mitogen.py strategy)
_SPEC = importlib.util.spec_from_file_location('failsafe_witnessed_mitogen_linear', os.path.join(
    os.path.dirname(ansible_mitogen.__file__), 'plugins', 'strategy', 'mitogen_linear.py'))
_mitogen_linear = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_mitogen_linear)


class StrategyModule(_mitogen_linear.StrategyModule):

    def run(self, iterator, play_context):
        from ansible import context
        path = os.environ.get('FAILSAFE_TEST_STRATEGY_WITNESS')
        if path:
            with open(path, 'a') as handle:
                handle.write(json.dumps({'pid': os.getpid(), 'playbooks': list(context.CLIARGS.get('args') or []),
                                         'rollback_child': os.environ.get('FAILSAFE_ROLLBACK_CHILD') == '1',
                                         'base': _mitogen_linear.StrategyModule.__module__}) + '\n')
        return super(StrategyModule, self).run(iterator, play_context)
