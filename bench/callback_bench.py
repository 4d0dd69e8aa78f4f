# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Callback overhead: a generated playbook of N localhost tasks, auto_rollback enabled vs disabled, interleaved."""

import os
import sys

from common import ratio, run, stats, write_cfg

KINDS = (
    '    - name: debug {i}\n      ansible.builtin.debug:\n        msg: "task {i}"\n',
    '    - name: set_fact {i}\n      ansible.builtin.set_fact:\n        fact_{i}: "{i}"\n',
    '    - name: command {i}\n      ansible.builtin.command: "true"\n      changed_when: false\n',
)


class CallbackBench(object):
    def __init__(self, ctx):
        self.ctx = ctx
        self.work = os.path.join(ctx.work, 'callback')
        os.makedirs(self.work, exist_ok=True)
        self.playbook = os.path.join(self.work, 'tasks.yml')
        with open(self.playbook, 'w') as handle:
            handle.write('---\n- name: Many small tasks\n  hosts: localhost\n  gather_facts: false\n  tasks:\n')
            for i in range(ctx.callback_tasks):
                handle.write(KINDS[i % 3].format(i=i))
        self.cfg_on = write_cfg(os.path.join(self.work, 'on.cfg'), ['failsafe.deploy.auto_rollback'])
        self.cfg_off = write_cfg(os.path.join(self.work, 'off.cfg'), [])

    def once(self, cfg):
        cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
               '-e', 'ansible_python_interpreter=%s' % sys.executable, self.playbook]
        env = {'ANSIBLE_CONFIG': cfg, 'ANSIBLE_COLLECTIONS_PATH': self.ctx.collections,
               'FAILSAFE_REPORT_DIR': os.path.join(self.work, 'incidents'),
               'FAILSAFE_SPOOL_PATH': os.path.join(self.work, 'incidents', 'alerts.jsonl')}
        res = run(cmd, env=env, log=os.path.join(self.work, 'ansible.log'))
        if res['rc'] != 0:
            raise RuntimeError('callback benchmark playbook failed, see %s' % os.path.join(self.work, 'ansible.log'))
        return res

    def run(self):
        on, off, peak_on, peak_off = [], [], [], []
        for rep in range(self.ctx.callback_reps):
            for which in (('on', 'off') if rep % 2 == 0 else ('off', 'on')):
                res = self.once(self.cfg_on if which == 'on' else self.cfg_off)
                (on if which == 'on' else off).append(res['seconds'])
                (peak_on if which == 'on' else peak_off).append(res['peak_rss_kb'] / 1024.0)
        out = {'tasks': self.ctx.callback_tasks, 'repeats': len(on), 'enabled': stats(on), 'disabled': stats(off),
               'controller_peak_rss_mb': {'enabled': stats(peak_on), 'disabled': stats(peak_off)}}
        out['ratio'] = ratio(out['enabled'], out['disabled'])
        out['per_task_ms'] = round((out['enabled']['median'] - out['disabled']['median']) * 1000.0
                                   / self.ctx.callback_tasks, 2)
        out['target'] = 1.03
        out['met'] = out['ratio'] <= 1.03
        return out
