# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Whether a deploy lock's holder still runs on this controller: a pid that a later process was given is not it."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import socket
import subprocess
import sys
import time

from ansible_collections.failsafe.deploy.plugins.action import transaction as action


def test_a_live_holder_is_alive_and_a_pid_given_to_a_later_process_is_not_the_holder():
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
    try:
        started = action.process_started(proc.pid)
        assert started is not None and abs(started - time.time()) < 60
        host = socket.gethostname()
        lock = {'run_id': 'other', 'controller': host, 'pid': proc.pid, 'acquired': time.time()}
        # the holder took the lock after it started: it is alive
        assert not action.holder_dead(lock, 'mine', host, os.getpid())
        # a lock taken a minute before this process started cannot be its: the pid was given to it later
        assert action.holder_dead(dict(lock, acquired=started - 60), 'mine', host, os.getpid())
        # a lock without its time is judged by the pid alone
        assert not action.holder_dead(dict(lock, acquired=None), 'mine', host, os.getpid())
    finally:
        proc.kill()
        proc.wait()
    assert action.holder_dead(dict(lock), 'mine', host, os.getpid())   # gone
