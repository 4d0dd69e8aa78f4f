# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Less controller CPU per task: the garbage collector's objects frozen before ansible-playbook forks a worker.

One job. ansible-playbook forks a worker process for every task on every host. A worker inherits the controller's
objects (tens of megabytes of parsed playbooks, roles and variables), and its first garbage collections walk them:
each walk costs CPU and touches every page they live on, so the kernel copies those pages into the worker. Python's
answer (the ``gc.freeze()`` documentation) is to move the objects into the collector's permanent generation right
before the fork: the worker's collections then skip them. ``freeze_before_forks(True)`` registers a hook that runs
in the controller before each fork: a collection first (what is garbage now is freed, not kept forever), then the
freeze. ``freeze_before_forks(False)`` turns it off again; the hook is registered once per process. Objects that
become garbage after a freeze are freed as before when nothing refers to them, and only a reference cycle among
them stays until the process ends: ansible-playbook is a process per run.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import gc
import os

_STATE = {'registered': False, 'enabled': False}


def _before_fork():
    if _STATE['enabled']:
        gc.collect()
        gc.freeze()


def supported():
    """Whether this Python can freeze (3.7 and later, with os.register_at_fork)."""
    return hasattr(gc, 'freeze') and hasattr(os, 'register_at_fork')


def freeze_before_forks(enabled):
    """Freeze the collector's objects before every later fork of this process (``enabled``), or stop doing so.
    Returns whether the hook is now active."""
    _STATE['enabled'] = bool(enabled) and supported()
    if _STATE['enabled'] and not _STATE['registered']:
        os.register_at_fork(before=_before_fork)
        _STATE['registered'] = True
    return _STATE['enabled']


def active():
    return _STATE['enabled']
