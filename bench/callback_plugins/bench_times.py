# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark-only callback: appends one JSON line per playbook/task/result event, with its wall-clock time, to
$BENCH_TIMES_FILE. Child ansible-playbook processes (the rollback launched by auto_rollback) inherit the
environment, so their events land in the same file, told apart by pid."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = '''
    name: bench_times
    type: aggregate
    short_description: timestamps of playbook, task and result events for the benchmarks
    description: Writes JSON lines to the file named by BENCH_TIMES_FILE.
'''

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_times'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._path = os.environ.get('BENCH_TIMES_FILE')
        self._playbook = None

    def _put(self, event, **data):
        if not self._path:
            return
        data.update(t=time.time(), event=event, pid=os.getpid(), playbook=self._playbook)
        with open(self._path, 'a') as handle:
            handle.write(json.dumps(data) + '\n')

    def v2_playbook_on_start(self, playbook):
        self._playbook = os.path.basename(getattr(playbook, '_file_name', '') or '')
        self._put('playbook_start')

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._put('task_start', task=task.get_name())

    def v2_playbook_on_handler_task_start(self, task):
        self._put('task_start', task=task.get_name())

    def _result(self, result, status, event='result'):
        self._put(event, status=status, host=result._host.get_name(), task=result._task.get_name(),
                  action=result._task.action)

    def v2_runner_on_ok(self, result):
        self._result(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, 'ignored' if ignore_errors else 'failed')

    def v2_runner_on_unreachable(self, result):
        self._result(result, 'unreachable')

    def v2_runner_on_skipped(self, result):
        self._result(result, 'skipped')

    # one event per loop item: each item is a module run on the host of its own
    def v2_runner_item_on_ok(self, result):
        self._result(result, 'ok', 'item')

    def v2_runner_item_on_failed(self, result):
        self._result(result, 'failed', 'item')

    def v2_runner_item_on_skipped(self, result):
        self._result(result, 'skipped', 'item')

    def v2_playbook_on_stats(self, stats):
        self._put('stats')
