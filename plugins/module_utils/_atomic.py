# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Crash-safe file operations shared by the target-side code.

Every state file is written the same way: a temporary file in the destination directory, fsync, os.replace over
the destination, fsync of the directory. A reader therefore sees either the old or the new content, never a torn
write, even if the machine loses power in between.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import errno
import json
import os
import signal
import stat
import tempfile
import time

CRASH_ENV = 'FAILSAFE_CRASH_AT'
CRASH_SCOPE_ENV = 'FAILSAFE_CRASH_SCOPE'
HOLD_ENV = 'FAILSAFE_CRASH_HOLD'
HOLD_LIMIT = 600


_CRASH_HITS = {}


def _hold(marker):
    """Write this process's pid to ``marker`` and wait while the file exists (at most HOLD_LIMIT seconds)."""
    with open(marker, 'wb') as f:
        f.write(b'%d\n' % os.getpid())
    waited = 0.0
    while os.path.exists(marker) and waited < HOLD_LIMIT:
        time.sleep(0.05)
        waited += 0.05


def _crash_point(name):
    """Die abruptly here when FAILSAFE_CRASH_AT names this point (used by crash-consistency tests).

    ``FAILSAFE_CRASH_AT=<name>`` dies the first time the point is reached, ``<name>@<n>`` the n-th time (for points
    inside loops). os._exit skips every cleanup handler, like a SIGKILL or a power cut would. With
    ``FAILSAFE_CRASH_HOLD=<file>`` the process first writes its pid to that file and waits there until the file is
    removed, so that a test can crash the host, cut its network or kill the controller at exactly this point.
    ``FAILSAFE_CRASH_SCOPE=controller`` (local connection only) SIGKILLs the ansible-playbook that runs this module
    first, with its process group: the controller dies mid-task, so no rescue section of the play runs.
    """
    wanted = os.environ.get(CRASH_ENV)
    if not wanted or not wanted.startswith(name):
        return
    point, dummy, nth = wanted.partition('@')
    if point != name:
        return
    _CRASH_HITS[name] = _CRASH_HITS.get(name, 0) + 1
    if _CRASH_HITS[name] >= int(nth or 1):
        if os.environ.get(HOLD_ENV):
            _hold(os.environ[HOLD_ENV])
        if os.environ.get(CRASH_SCOPE_ENV) == 'controller':
            _kill_controller()
        os._exit(137)


def _kill_controller():
    """SIGKILL the process group of the ansible-playbook above this module (the parent of its worker, which leads
    this session), then this module's own group (the worker)."""
    try:
        with open('/proc/%d/stat' % os.getsid(0)) as f:
            ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        os.killpg(os.getpgid(ppid), signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


def fsync_dir(path, best_effort=False):
    """Flush a directory's entries (renames, new names) to stable storage. ``best_effort``: no error at all (the
    controller's reports: the file is in place whatever the directory's fsync says)."""
    flags = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0)
    try:
        fd = os.open(path or '.', flags)
    except OSError:
        if best_effort:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems (and some platforms) refuse fsync on a directory; the rename is still done.
        if not best_effort and e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def makedirs_durable(path, mode=0o777):
    """os.makedirs that makes the directories it creates durable: each new directory's name is flushed in its
    parent (an fsync of the parent after the mkdir), so that the files later made durable inside it are not lost
    with it at a power cut. Missing parents are made with the default mode, the leaf with ``mode``, as os.makedirs
    does. Returns the directories it created."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    made = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode if directory == missing[0] else 0o777)
        except OSError as e:
            if e.errno != errno.EEXIST or not os.path.isdir(directory):
                raise
            continue
        made.append(directory)
        fsync_dir(os.path.dirname(directory))
    return made


def fsync_tree(root):
    """Flush every regular file and every directory below ``root`` (each directory after its entries): a tree
    written without fsyncs (an unpacked archive) is on disk whole before it is renamed into place."""
    for top, dummy, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(top, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(top)


def discard(path):
    """Remove the file or symlink ``path`` if it is there (a temporary that will not be used)."""
    try:
        os.unlink(path)
    except OSError:
        pass


@contextlib.contextmanager
def discarded_on_error(tmp):
    """Around the steps that make the temporary ``tmp`` the final file: when one fails or is interrupted,
    ``tmp`` is removed and the error raised, so that no temporary is left beside the file."""
    try:
        yield
    except BaseException:
        discard(tmp)
        raise


def _tmp_name(path, kind):
    directory, base = os.path.split(path)
    return directory or '.', '.%s.%s-' % (base, kind)


def atomic_write_bytes(path, data, mode=0o600, controller=False):
    """Write bytes to path atomically with the given permission bits. Creates missing parent directories.

    ``controller``: a write of the controller-side code (plugin_utils): no crash points (they stand for a target
    dying mid-write, and the controller's environment may arm them for its local hosts), and the directory's fsync
    is best effort.
    """
    directory, prefix = _tmp_name(path, 'tmp')
    if not os.path.isdir(directory):
        if controller:
            os.makedirs(directory, exist_ok=True)
        else:
            makedirs_durable(directory)
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    with discarded_on_error(tmp):
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not controller:
            _crash_point('write.tmp-synced')
        os.replace(tmp, path)
    if not controller:
        _crash_point('write.replaced')
    fsync_dir(directory, best_effort=controller)


def dumps_json(data, compact=False):
    """Stable JSON (sorted keys) used for every state file: indented for people, or compact for large files
    (an indent makes the json module fall back from its C encoder to pure Python, about ten times slower)."""
    if compact:
        return json.dumps(data, sort_keys=True, separators=(',', ':'), ensure_ascii=False) + '\n'
    return json.dumps(data, sort_keys=True, indent=2, separators=(',', ': '), ensure_ascii=False) + '\n'


def write_json_atomic(path, data, mode=0o600, compact=False):
    """Serialise data as JSON and write it to path atomically."""
    atomic_write_bytes(path, dumps_json(data, compact=compact).encode('utf-8'), mode=mode)


def read_json(path, default=None):
    """Read a JSON file; a missing file gives default. A corrupt file raises ValueError naming the path."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except (IOError, OSError) as e:
        if e.errno == errno.ENOENT:
            return default
        raise
    try:
        return json.loads(raw.decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError('%s is not valid JSON: %s' % (path, e))


def _remove_stale_links(directory, prefix):
    """Remove temporary symlinks an earlier switch killed before its os.replace left beside the link."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        rest = name[len(prefix):]
        if name.startswith(prefix) and len(rest) == 8 and all(c in '0123456789abcdef' for c in rest):
            path = os.path.join(directory, name)
            if os.path.islink(path):
                os.unlink(path)


def replace_symlink(link_path, target):
    """Point link_path at target atomically: a temporary symlink beside it, os.replace over it, fsync the directory.

    Returns True when the link changed, False when it already pointed at target. A real directory (not a
    symlink) at link_path is refused with an OSError: os.replace cannot swap it atomically.
    """
    try:
        if os.readlink(link_path) == target:
            return False
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EINVAL):
            raise
    directory, prefix = _tmp_name(link_path, 'link')
    _remove_stale_links(directory, prefix)
    tmp = None
    for dummy in range(100):
        candidate = os.path.join(directory, prefix + os.urandom(4).hex())
        try:
            os.symlink(target, candidate)
        except OSError as e:
            if e.errno == errno.EEXIST:
                continue
            raise
        tmp = candidate
        break
    if tmp is None:
        raise OSError(errno.EEXIST, 'could not create a temporary symlink beside %s' % link_path)
    _crash_point('symlink.tmp-created')
    with discarded_on_error(tmp):
        if os.path.isdir(link_path) and not os.path.islink(link_path):
            raise OSError(errno.EISDIR, '%s is a directory, not a symlink: refusing to replace it' % link_path)
        os.replace(tmp, link_path)
    _crash_point('symlink.replaced')
    fsync_dir(directory)
    _crash_point('symlink.synced')
    return True
