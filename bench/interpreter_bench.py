# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The interpreter the tooling runs on: the same ansible-playbook work under each Python of this version on the
machine, interleaved.

scripts/venv.sh makes the virtualenvs from the distribution's build when it has one of the same version as
``python3`` (/usr/bin/python3, built with profile-guided and link-time optimisation) and from ``python3`` otherwise.
This part runs the callback benchmark's generated playbook (debug, set_fact and command tasks on localhost, the
``auto_rollback`` callback enabled) with the virtualenv's packages under every such interpreter, the modules too
(``ansible_python_interpreter``), and compares the CPU time (user + system of the whole process tree) of each with
the virtualenv's own. Only the interpreter differs between the sides: the packages are the same files."""

import os
import shutil
import subprocess
import sys
import sysconfig

from common import ratio, run, stats, write_cfg

from callback_bench import write_tasks_playbook


def _identity(python):
    """(real path, 'major.minor', version line) of an interpreter, or None when it does not run."""
    try:
        out = subprocess.run([python, '-c', 'import os, sys; print(os.path.realpath(sys.executable)); '
                              'print("%d.%d" % sys.version_info[:2]); print(sys.version.replace("\\n", " "))'],
                             capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0], out[1], out[2]


def interpreters():
    """The virtualenv's interpreter first, then every other interpreter of the same version: python3 on PATH
    outside the virtualenv and /usr/bin/python3, each real path once."""
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get('PATH', '').split(os.pathsep)
                           if p and os.path.realpath(p) != os.path.realpath(venv_bin))
    own = _identity(sys.executable)
    found = [('virtualenv', sys.executable, own)]
    for label, python in (('python3 on PATH', shutil.which('python3', path=path)), ('/usr/bin/python3', '/usr/bin/python3')):
        if not python:
            continue
        ident = _identity(python)
        if ident and ident[1] == own[1] and ident[0] not in [f[2][0] for f in found]:
            found.append((label, python, ident))
    return found


class InterpreterBench(object):
    def __init__(self, ctx):
        self.ctx = ctx
        self.work = os.path.join(ctx.work, 'interpreter')
        os.makedirs(self.work, exist_ok=True)
        self.playbook = write_tasks_playbook(os.path.join(self.work, 'tasks.yml'), ctx.interpreter_tasks)
        self.cfg = write_cfg(os.path.join(self.work, 'ansible.cfg'), ['failsafe.deploy.auto_rollback'])
        self.ansible_playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
        self.site = sysconfig.get_paths()['purelib']

    def once(self, python):
        cmd = [python, self.ansible_playbook, '-i', 'localhost,', '-c', 'local',
               '-e', 'ansible_python_interpreter=%s' % python, self.playbook]
        env = {'ANSIBLE_CONFIG': self.cfg, 'ANSIBLE_COLLECTIONS_PATH': self.ctx.collections,
               'PYTHONPATH': self.site, 'FAILSAFE_REPORT_DIR': os.path.join(self.work, 'incidents'),
               'FAILSAFE_SPOOL_PATH': os.path.join(self.work, 'incidents', 'alerts.jsonl')}
        res = run(cmd, env=env, log=os.path.join(self.work, 'ansible.log'))
        if res['rc'] != 0:
            raise RuntimeError('interpreter benchmark playbook failed under %s, see %s'
                               % (python, os.path.join(self.work, 'ansible.log')))
        return res

    def run(self):
        sides = interpreters()
        runs = dict((label, []) for label, dummy, dummy_ident in sides)
        for rep in range(self.ctx.interpreter_reps):
            order = sides if rep % 2 == 0 else list(reversed(sides))
            for label, dummy, ident in order:
                runs[label].append(self.once(ident[0]))  # the interpreter itself, not a wrapper such as pyenv's shim
        rows = []
        own_cpu = stats([r['cpu_seconds'] for r in runs['virtualenv']])
        for label, python, ident in sides:
            cpu = stats([r['cpu_seconds'] for r in runs[label]])
            rows.append({'side': label, 'python': python, 'real_path': ident[0], 'version': ident[2],
                         'wall': stats([r['seconds'] for r in runs[label]]), 'cpu': cpu,
                         'cpu_ratio_to_virtualenv': ratio(cpu, own_cpu)})
        return {'tasks': self.ctx.interpreter_tasks, 'repeats': self.ctx.interpreter_reps, 'rows': rows}
