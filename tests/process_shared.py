# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the tests of one test process share: servers (tests/dbservers.py) and files built once (``once``).

Under ansible-test units each test runs in a fork of its own (its ansible_forked plugin), where no fixture outlives
the test: a module- or session-scoped fixture is set up again for every test, and the fork ends without its teardown.
So what is costly to make is made by the first test that needs it, kept in a directory of the test process (the
forks inherit its name in the environment), found there by the next tests, and removed by the process that forks
the tests when its session ends (tests/unit/conftest.py). Under plain pytest the process is the one that runs the
tests, and the same holds."""

import binascii
import fcntl
import os
import shutil
import tempfile

ENV = 'FAILSAFE_TEST_SHARED'


def begin():
    """Called once by the test process itself (pytest_configure), before any test or fork: names its directory in
    the environment (made on first use). Each process names its own: pytest-xdist's workers inherit the name from
    the process that started them and replace it."""
    os.environ[ENV] = os.path.join(tempfile.gettempdir(), 'failsafe-shared-%d-%s' % (
        os.getpid(), binascii.hexlify(os.urandom(4)).decode()))


def directory():
    """This test process's directory (made now if need be), or None outside a test process that called begin()."""
    path = os.environ.get(ENV)
    if path:
        os.makedirs(path, exist_ok=True)
    return path


def end():
    """Removes the directory and forgets it (after the servers in it were stopped)."""
    path = os.environ.pop(ENV, None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


class Lock(object):
    """An exclusive lock on ``name`` in the shared directory (tests of pytest-xdist workers never share one, but
    a test may start another pytest)."""

    def __init__(self, name):
        self.path = os.path.join(directory(), name + '.lock')
        self.handle = None

    def __enter__(self):
        self.handle = open(self.path, 'a')
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.handle.close()


def once(name, make):
    """The path of ``name`` in the shared directory, made by ``make(path)`` by the first test that asks (made
    again if ``make`` failed). Tests must only read it. Without a shared directory (a process that did not call
    begin()), ``make`` runs into a new temporary directory each time."""
    base = directory()
    if not base:
        path = os.path.join(tempfile.mkdtemp(prefix='failsafe-once-'), name)
        make(path)
        return path
    path = os.path.join(base, name)
    with Lock(name):
        done = path + '.done'
        if not os.path.exists(done):
            shutil.rmtree(path, ignore_errors=True)
            make(path)
            open(done, 'w').close()
    return path


def alive(pid):
    """Whether process ``pid`` runs (a zombie does not: it is reaped if it is this process's child): a server that
    one test process started and another one may reuse or stop."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except (OSError, IndexError):
        return False
