# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""FAILSAFE_CRASH_SCOPE=controller: a crash point kills the ansible-playbook above the module, as local runs nest.

The process tree is built the way ansible-playbook runs a module on a local connection: a controller (its own
session here, as the auto_rollback callback starts its rollback child), a worker that leads a session of its own
(ansible's WorkerProcess calls setsid), and the module below the worker.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import subprocess
import sys
import textwrap

from ansible_collections.failsafe.deploy.tests.requires import needs

CONTROLLER = textwrap.dedent('''
    import os, subprocess, sys, time
    pid = os.fork()
    if pid == 0:
        os.setsid()   # the worker
        subprocess.call([sys.executable, '-c',
                         'from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import _crash_point; '
                         '_crash_point("restore.entry-restored")'])
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(30)   # still alive: the crash point did not reach the controller
    sys.exit(3)
''')


def run_controller(scope, linger):
    """Exit status of the controller: -9 when killed, 3 when it outlived the module."""
    env = dict(os.environ, FAILSAFE_CRASH_AT='restore.entry-restored',
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop('FAILSAFE_CRASH_SCOPE', None)
    if scope:
        env['FAILSAFE_CRASH_SCOPE'] = scope
    code = CONTROLLER.replace('time.sleep(30)', 'time.sleep(%d)' % linger)
    proc = subprocess.Popen([sys.executable, '-c', code], env=env, start_new_session=True)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


@needs(os.path.exists('/proc/self/stat'), 'needs /proc')
def test_given_controller_scope_when_the_point_is_reached_then_the_controller_is_killed():
    assert run_controller('controller', linger=30) == -9


def test_given_no_scope_when_the_point_is_reached_then_only_the_module_dies():
    assert run_controller(None, linger=0) == 3
