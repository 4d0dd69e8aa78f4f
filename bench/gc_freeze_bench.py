# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto_rollback callback's gc_freeze: the same playbook with the option on (the default) and off, interleaved.

ansible-playbook forks a worker per task and host; with gc_freeze the callback collects garbage and freezes the
collector's objects before each fork, so the workers' collections skip what they inherited. This part runs the
callback benchmark's generated playbook (debug, set_fact and command tasks) on several local hosts, so that every
task forks several workers, with ``FAILSAFE_GC_FREEZE`` true and false in turn, and compares the CPU time (user +
system of the whole process tree), the wall time and the peak memory of the process tree."""

import os
import sys

from common import ratio, run, stats, write_cfg

from callback_bench import write_tasks_playbook

SIDES = (('on', 'true'), ('off', 'false'))


class GcFreezeBench(object):
    def __init__(self, ctx):
        self.ctx = ctx
        self.work = os.path.join(ctx.work, 'gc_freeze')
        os.makedirs(self.work, exist_ok=True)
        self.playbook = write_tasks_playbook(os.path.join(self.work, 'tasks.yml'), ctx.gc_tasks, hosts='all')
        self.cfg = write_cfg(os.path.join(self.work, 'ansible.cfg'), ['failsafe.deploy.auto_rollback'])
        self.inventory = os.path.join(self.work, 'hosts.ini')
        with open(self.inventory, 'w') as handle:
            for index in range(ctx.gc_hosts):
                handle.write('local%d ansible_connection=local ansible_python_interpreter=%s\n'
                             % (index + 1, sys.executable))
        self.ansible_playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')

    def once(self, setting):
        env = {'ANSIBLE_CONFIG': self.cfg, 'ANSIBLE_COLLECTIONS_PATH': self.ctx.collections,
               'FAILSAFE_GC_FREEZE': setting, 'FAILSAFE_REPORT_DIR': os.path.join(self.work, 'incidents'),
               'FAILSAFE_SPOOL_PATH': os.path.join(self.work, 'incidents', 'alerts.jsonl')}
        log = os.path.join(self.work, 'ansible.log')
        res = run([self.ansible_playbook, '-i', self.inventory, self.playbook], env=env, log=log)
        if res['rc'] != 0:
            raise RuntimeError('gc_freeze benchmark playbook failed with FAILSAFE_GC_FREEZE=%s, see %s' % (setting, log))
        return res

    def run(self):
        runs = dict((label, []) for label, dummy in SIDES)
        for rep in range(self.ctx.gc_reps):
            for label, setting in (SIDES if rep % 2 == 0 else tuple(reversed(SIDES))):
                runs[label].append(self.once(setting))
        rows = []
        for label, setting in SIDES:
            rows.append({'side': label, 'setting': setting,
                         'wall': stats([r['seconds'] for r in runs[label]]),
                         'cpu': stats([r['cpu_seconds'] for r in runs[label]]),
                         'peak_rss_kb': stats([r['peak_rss_kb'] for r in runs[label]])})
        on, off = rows[0], rows[1]
        return {'tasks': self.ctx.gc_tasks, 'hosts': self.ctx.gc_hosts, 'repeats': self.ctx.gc_reps, 'rows': rows,
                'cpu_ratio_on_to_off': ratio(on['cpu'], off['cpu']),
                'wall_ratio_on_to_off': ratio(on['wall'], off['wall']),
                'peak_rss_ratio_on_to_off': ratio(on['peak_rss_kb'], off['peak_rss_kb'])}
