# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The signal handling the auto_rollback callback arms at playbook start (plugin_utils/_launcher.SignalGuard), in
a real process that receives real signals. The end-to-end behaviour (a rollback before ansible-playbook exits) is
proved on the fleet by the sigint/sigterm cells of test_fault_matrix.py."""

import os
import subprocess
import sys
import textwrap

from support import ROOT

SCRIPT = textwrap.dedent('''
    import os, signal, sys, time
    sys.path.insert(0, %(collections)r)
    from ansible_collections.failsafe.deploy.plugins.plugin_utils._launcher import SignalGuard

    seen = []

    def ansible_sigint(signum, frame):          # what ansible's TaskQueueManager installs
        seen.append('ansible handler got %%d' %% signum)
        signal.signal(signum, signal.SIG_DFL)
        raise KeyboardInterrupt()

    signal.signal(signal.SIGINT, ansible_sigint)
    signal.signal(signal.SIGTERM, lambda s, f: os._exit(143))
    guard = SignalGuard(on_signal=lambda name: seen.append('callback told ' + name)).arm()
    try:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        time.sleep(5)
        print('no KeyboardInterrupt')
    except KeyboardInterrupt:
        print('KeyboardInterrupt fired=%%s' %% guard.fired)
    print(';'.join(seen))
    # While the exit handler rolls back: one more signal only warns, the next one aborts.
    os.kill(os.getpid(), signal.SIGINT)
    print('still running after one more signal, extra=%%d' %% guard.extra)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except KeyboardInterrupt:
        print('aborted by the second one')
''')


def run(signame):
    code = SCRIPT % {'collections': os.path.join(ROOT, '.build', 'collections')}
    return subprocess.run([sys.executable, '-c', code, signame], capture_output=True, text=True, timeout=60,
                          check=False)


def test_sigterm_ends_the_run_the_way_sigint_does():
    """Given the guard armed over ansible's SIGINT handler, when SIGTERM arrives, then ansible's SIGINT path runs
    (KeyboardInterrupt, workers told) instead of the process dying, and the callback learns which signal it was."""
    proc = run('SIGTERM')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == 'KeyboardInterrupt fired=SIGTERM'
    assert lines[1] == 'callback told SIGTERM;ansible handler got %d' % 2
    assert 'SIGTERM received: stopping the run' in proc.stderr


def test_sigint_is_recorded_and_further_signals_protect_the_rollback():
    """Given an interrupted run, one more signal during the exit-time rollback only warns, a second aborts it."""
    proc = run('SIGINT')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        'KeyboardInterrupt fired=SIGINT',
        'callback told SIGINT;ansible handler got 2',
        'still running after one more signal, extra=1',
        'aborted by the second one',
    ]
    assert 'send it once more to abort the rollback' in proc.stderr
