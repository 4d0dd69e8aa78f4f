# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Drives the power-cut filesystem (tests/powercut/fs.py) for the tests: mount, cut the power, mount again.

    mount = PowerCutMount(store_dir, mountpoint).mount()
    ...                       # writes through mountpoint
    mount.power_cut()         # what was not fsynced is gone; mounted again from what was durable
    mount.unmount()

Needs root, /dev/fuse, Debian's fuse3 (scripts/powercut-prereqs.sh) and the mfusepy wheel (requirements-dev.txt).
"""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREREQS_SCRIPT = os.path.join(ROOT, 'scripts', 'powercut-prereqs.sh')


class PowerCutError(Exception):
    pass


def missing():
    """Why the power-cut filesystem cannot run here, or None."""
    if os.geteuid() != 0:
        return 'the power-cut filesystem mounts FUSE as root'
    if not os.path.exists('/dev/fuse'):
        return 'no /dev/fuse'
    try:
        import mfusepy  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    except (ImportError, OSError) as e:
        return 'mfusepy (with libfuse3) cannot be loaded: %s' % e
    return None


def ensure_prereqs():
    """Installs Debian's fuse3 if it is missing (root)."""
    if os.geteuid() == 0:
        subprocess.run(['bash', PREREQS_SCRIPT], check=True)


def _mounted(path):
    path = os.path.realpath(path)
    with open('/proc/self/mountinfo', encoding='utf-8') as handle:
        return any(line.split()[4] == path for line in handle)


class PowerCutMount:
    """One power-cut filesystem: its store (the backing folder and the cut control) and its mount point."""

    def __init__(self, store, mountpoint):
        self.store = os.path.abspath(store)
        self.mountpoint = os.path.abspath(mountpoint)
        self.proc = None
        self.cuts = 0

    def mounted(self):
        return _mounted(self.mountpoint)

    @property
    def backing(self):
        return os.path.join(self.store, 'live')

    def mount(self, timeout=20.0):
        for name in ('cut', 'cut-done', 'cut-failed'):
            if os.path.exists(os.path.join(self.store, name)):
                os.unlink(os.path.join(self.store, name))
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mountpoint, exist_ok=True)
        log = open(os.path.join(self.store, 'fs.log'), 'ab')  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, '-m', 'tests.powercut.fs', self.store, self.mountpoint], cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not _mounted(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.unmount()
                raise PowerCutError('the power-cut filesystem did not mount at %s: see %s/fs.log'
                                    % (self.mountpoint, self.store))
            time.sleep(0.02)
        return self

    def cut(self, timeout=60.0):
        """Cut the power: the filesystem freezes (EIO) and its backing folder becomes what was durable."""
        with open(os.path.join(self.store, 'cut'), 'w', encoding='ascii'):
            pass
        deadline = time.monotonic() + timeout
        while not os.path.exists(os.path.join(self.store, 'cut-done')):
            failed = os.path.join(self.store, 'cut-failed')
            if os.path.exists(failed):
                with open(failed, encoding='utf-8') as handle:
                    raise PowerCutError('the cut failed: %s' % handle.read().strip())
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise PowerCutError('the cut did not finish: see %s/fs.log' % self.store)
            time.sleep(0.02)
        self.cuts += 1

    def unmount(self):
        """Unmount (lazily if something still holds it) and end the daemon. Safe to call twice."""
        if _mounted(self.mountpoint):
            if subprocess.run(['umount', self.mountpoint], capture_output=True, check=False).returncode != 0:
                subprocess.run(['umount', '-l', self.mountpoint], capture_output=True, check=False)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def power_cut(self):
        """Cut the power, then mount again from what was durable."""
        self.cut()
        self.unmount()
        self.mount()
