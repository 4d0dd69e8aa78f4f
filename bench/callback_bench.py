# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Callback overhead: a generated playbook of N localhost tasks, auto_rollback enabled vs disabled, interleaved.

Three measures: wall time (the target's ratio), CPU time of the whole process tree (less noisy on a shared
machine), and the callback's own time inside the controller, from one more enabled run under cProfile."""

import os
import pstats
import sys

from common import ratio, run, stats, write_cfg

KINDS = (
    '    - name: debug {i}\n      ansible.builtin.debug:\n        msg: "task {i}"\n',
    '    - name: set_fact {i}\n      ansible.builtin.set_fact:\n        fact_{i}: "{i}"\n',
    '    - name: command {i}\n      ansible.builtin.command: "true"\n      changed_when: false\n',
)
# the callback's entry points: every event handler, plus loading, options and the exit hook
ENTRY_POINTS = ('<module>', '__init__', 'set_options', '_at_exit')
CALLBACK_FILE = os.path.join('plugins', 'callback', 'auto_rollback.py')


def noise(*sides):
    """The larger run-to-run spread (max - min over median) of the two sides: a wall-time ratio closer to 1 than
    this cannot be told from chance."""
    spreads = [(st['max'] - st['min']) / st['median'] for st in sides if st and st['median']]
    return round(max(spreads), 4) if spreads else None


def callback_seconds(profile):
    """Seconds spent inside auto_rollback (cumulative time of its entry points) and the profiled total."""
    st = pstats.Stats(profile)
    own, calls = 0.0, 0
    for (filename, dummy, func), (dummy_cc, ncalls, dummy_tt, cumtime, dummy_callers) in st.stats.items():
        if filename.endswith(CALLBACK_FILE) and (func.startswith('v2_') or func in ENTRY_POINTS):
            own += cumtime
            calls += ncalls
    return own, calls, st.total_tt


def write_tasks_playbook(path, tasks):
    """A playbook of ``tasks`` localhost tasks, the KINDS in turn, at ``path``; returns ``path``."""
    with open(path, 'w') as handle:
        handle.write('---\n- name: Many small tasks\n  hosts: localhost\n  gather_facts: false\n  tasks:\n')
        for i in range(tasks):
            handle.write(KINDS[i % 3].format(i=i))
    return path


class CallbackBench(object):
    def __init__(self, ctx):
        self.ctx = ctx
        self.work = os.path.join(ctx.work, 'callback')
        os.makedirs(self.work, exist_ok=True)
        self.playbook = write_tasks_playbook(os.path.join(self.work, 'tasks.yml'), ctx.callback_tasks)
        self.cfg_on = write_cfg(os.path.join(self.work, 'on.cfg'), ['failsafe.deploy.auto_rollback'])
        self.cfg_off = write_cfg(os.path.join(self.work, 'off.cfg'), [])
        self.ansible_playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')

    def once(self, cfg, profile=None):
        cmd = [self.ansible_playbook, '-i', 'localhost,', '-c', 'local',
               '-e', 'ansible_python_interpreter=%s' % sys.executable, self.playbook]
        if profile:
            cmd = [sys.executable, '-m', 'cProfile', '-o', profile] + cmd
        # the callback's own cost per event, without its gc_freeze and payload_cache (which save more than that: parts
        # gc_freeze and payload_cache)
        env = {'ANSIBLE_CONFIG': cfg, 'ANSIBLE_COLLECTIONS_PATH': self.ctx.collections, 'FAILSAFE_GC_FREEZE': 'false',
               'FAILSAFE_PAYLOAD_CACHE': 'false',
               'FAILSAFE_REPORT_DIR': os.path.join(self.work, 'incidents'),
               'FAILSAFE_SPOOL_PATH': os.path.join(self.work, 'incidents', 'alerts.jsonl')}
        res = run(cmd, env=env, log=os.path.join(self.work, 'ansible.log'))
        if res['rc'] != 0:
            raise RuntimeError('callback benchmark playbook failed, see %s' % os.path.join(self.work, 'ansible.log'))
        return res

    def run(self):
        runs = {'on': [], 'off': []}
        for rep in range(self.ctx.callback_reps):
            for which in (('on', 'off') if rep % 2 == 0 else ('off', 'on')):
                runs[which].append(self.once(self.cfg_on if which == 'on' else self.cfg_off))
        profile = os.path.join(self.work, 'enabled.prof')
        profiled = self.once(self.cfg_on, profile=profile)
        own, calls, profiled_total = callback_seconds(profile)
        wall = dict((k, stats([r['seconds'] for r in v])) for k, v in runs.items())
        cpu = dict((k, stats([r['cpu_seconds'] for r in v])) for k, v in runs.items())
        peak = dict((k, stats([r['peak_rss_kb'] / 1024.0 for r in v])) for k, v in runs.items())
        out = {'tasks': self.ctx.callback_tasks, 'repeats': len(runs['on']), 'enabled': wall['on'],
               'disabled': wall['off'], 'cpu_enabled': cpu['on'], 'cpu_disabled': cpu['off'],
               'controller_peak_rss_mb': {'enabled': peak['on'], 'disabled': peak['off']},
               'profile': {'callback_seconds': round(own, 4), 'callback_calls': calls,
                           'controller_seconds': round(profiled_total, 4), 'wall_seconds': round(
                               profiled['seconds'], 4),
                           'share': round(own / profiled['seconds'], 5) if profiled['seconds'] else None,
                           'per_task_ms': round(own * 1000.0 / self.ctx.callback_tasks, 3)}}
        out['ratio'] = ratio(out['enabled'], out['disabled'])
        out['cpu_ratio'] = ratio(out['cpu_enabled'], out['cpu_disabled'])
        out['per_task_ms'] = round((out['enabled']['median'] - out['disabled']['median']) * 1000.0
                                   / self.ctx.callback_tasks, 2)
        out['noise'] = noise(out['enabled'], out['disabled'])
        out['target'] = 1.03
        out['met'] = out['ratio'] <= 1.03
        return out
