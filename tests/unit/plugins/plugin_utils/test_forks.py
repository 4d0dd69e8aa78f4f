# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_forks.freeze_before_forks: before a real os.fork() the garbage is collected and the rest frozen, so the child
starts with the parent's objects in the permanent generation; turned off, a fork leaves the collector alone.

Each case runs in a Python process of its own (the hook cannot be unregistered, and freezing this test process
would keep its garbage), with the automatic collection off there so that only the hook collects."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import subprocess
import sys

import pytest

SCRIPT = r'''
import gc, os, sys, weakref
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _forks


class Node(object):
    pass


def garbage_cycle():
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


gc.disable()
for step in sys.argv[1].split(','):
    active = _forks.freeze_before_forks(step == 'on')
dead = garbage_cycle()
kept = [Node() for dummy in range(1000)]
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write_end, str(gc.get_freeze_count()).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(active, os.read(read_end, 64).decode(), dead() is None)
'''


def fork_once(steps):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, '-c', SCRIPT, steps], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    return out[0] == 'True', int(out[1]), out[2] == 'True'


def test_on_the_child_starts_with_the_parents_objects_frozen_and_the_garbage_was_collected_first():
    active, frozen_in_child, garbage_freed = fork_once('on')
    assert active
    assert frozen_in_child > 1000   # the 1000 kept objects and the interpreter's own
    assert garbage_freed            # the cycle was collected before the freeze, not frozen for good


@pytest.mark.parametrize('steps', ['off', 'on,off'])
def test_off_or_turned_off_again_a_fork_freezes_and_collects_nothing(steps):
    active, frozen_in_child, garbage_freed = fork_once(steps)
    assert not active
    assert frozen_in_child == 0
    assert not garbage_freed
