# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Less controller CPU per run: this collection's module payloads kept between ansible-playbook runs.

One job. Before a module runs, ansible-core builds its payload: a zip of the module and of every module_utils file it
imports, found by parsing each one. It keeps the payload for the rest of the run in the run's own temporary directory
(``ansiballz_cache`` below ``DEFAULT_LOCAL_TMP``) and removes it when the run ends, so every run parses the same
files again: for this collection's transaction module some 80 files, about 0.3 CPU-s of every deploy, rollback and
recovery run. ``PayloadCache.prime()`` (at playbook start, before any worker) copies the payloads of this
collection's modules that an earlier run built from a store into the run's cache, where ansible-core finds them as if
this run had built them; ``save()`` (at each task start and at the end) puts the ones this run built into the store.

An entry is used only under the key it was saved with: a hash of ansible-core's version and install path, the size
and modification time of each file of ansible-core's module_utils and of its payload builder, and the content of
each module, module_utils and routing file of this collection. Any change to what goes into a payload gives a new
key, and the payload is built again. Only payloads built without a debugger or coverage extension are kept (the
others are named differently by ansible-core and left alone).

The store is ``$XDG_CACHE_HOME/failsafe-deploy/payloads`` or ``~/.cache/failsafe-deploy/payloads`` unless a
directory is named. Its entries are code that runs on the managed hosts: only a directory that the user owns and no
one else can write to is used, and only files in it that the user owns and that load as a payload; anything that
does not work out leaves ansible-core to build the payload as it always did, never a failure. The store keeps the
entries of the ``MAX_KEYS`` keys used last.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import os
import re
import shutil
import stat
import tempfile

from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import discard, discarded_on_error

MAX_KEYS = 8
KEY_NAME = re.compile(r'^[0-9a-f]{32}$')
SUFFIX = '-none'  # ansible-core's name of a payload built with no extension (debugger, coverage)
_PLUGINS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION_ROOT = os.path.dirname(_PLUGINS)
# ansible-core names a cached payload after the module's Python name: ansible_collections.<ns>.<name>.plugins.modules.x
PREFIX = __name__.rsplit('.plugins.', 1)[0] + '.plugins.modules.' if '.plugins.' in __name__ else None


def default_store():
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    if not os.path.isabs(base):
        return None
    return os.path.join(base, 'failsafe-deploy', 'payloads')


def run_cache_dir():
    """ansible-core's payload cache of this run (it exists once the run has started)."""
    from ansible import constants as C  # pylint: disable=import-outside-toplevel
    return os.path.join(C.DEFAULT_LOCAL_TMP, 'ansiballz_cache')


def _files(top, suffixes):
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
        found.extend(os.path.join(dirpath, name) for name in sorted(filenames) if name.endswith(suffixes))
    return found


def key(collection_root=COLLECTION_ROOT):
    """The hash of everything a payload of this collection's modules is built from (see the module's docstring)."""
    import ansible  # pylint: disable=import-outside-toplevel
    from ansible.executor import module_common  # pylint: disable=import-outside-toplevel
    from ansible.release import __version__  # pylint: disable=import-outside-toplevel
    digest = hashlib.sha256()
    core = os.path.dirname(os.path.abspath(ansible.__file__))
    digest.update(('%s\0%s\0' % (__version__, core)).encode('utf-8'))
    builder = [os.path.abspath(module_common.__file__)]
    for path in builder + _files(os.path.join(core, 'module_utils'), ('.py', '.ps1', '.psm1', '.cs')):
        st = os.stat(path)
        digest.update(('%s\0%d\0%d\0' % (os.path.relpath(path, core), st.st_size, st.st_mtime_ns)).encode('utf-8'))
    ours = (_files(os.path.join(collection_root, 'plugins', 'modules'), ('.py',))
            + _files(os.path.join(collection_root, 'plugins', 'module_utils'), ('.py',))
            + [p for p in (os.path.join(collection_root, 'meta', 'runtime.yml'),) if os.path.exists(p)])
    for path in ours:
        digest.update(os.path.relpath(path, collection_root).encode('utf-8') + b'\0')
        with open(path, 'rb') as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()[:32]


def _private(path, is_kind):
    """True when ``path`` (not followed) is of the kind ``is_kind`` tests (stat.S_ISDIR, stat.S_ISREG), this user's,
    and no one else can write to it."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return is_kind(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _private_dir(path):
    """A private directory (see _private), made with mode 0700 if missing."""
    try:
        os.makedirs(path, 0o700, exist_ok=True)
    except OSError:
        return False
    return _private(path, stat.S_ISDIR)


def _loads(path):
    """Whether ansible-core can read the file as a payload of its cache."""
    try:
        from ansible.executor.module_common import _CachedModule  # pylint: disable=import-outside-toplevel
        return isinstance(_CachedModule.load(path), _CachedModule)
    except Exception:  # pylint: disable=broad-except
        return False


def _copy_atomic(src, dest_dir, name):
    """A copy that a reader sees whole or not at all (a cache: no fsync)."""
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % name, dir=dest_dir)
    with discarded_on_error(tmp):
        with os.fdopen(fd, 'wb') as out, open(src, 'rb') as handle:
            shutil.copyfileobj(handle, out)
        os.rename(tmp, os.path.join(dest_dir, name))


def for_run(enabled, store=None):
    """The cache of this run, or None when it is off. ``store``: the directory named (``~`` expanded), or the
    default when empty."""
    return PayloadCache(store=os.path.expanduser(store) if store else None) if enabled else None


def call(cache, what, warn):
    """``cache.prime()`` or ``cache.save()`` (``what``) when there is a cache. One that fails is said once through
    ``warn`` and then left alone: ansible-core builds the payloads as it always did."""
    if cache is None or cache.failed:
        return []
    try:
        return getattr(cache, what)()
    except Exception as exc:  # pylint: disable=broad-except
        cache.failed = True
        warn('payload_cache: %s failed, payloads are built as usual: %s: %s' % (what, type(exc).__name__, exc))
        return []


class PayloadCache(object):
    """The store of one run: ``prime()`` once at playbook start, ``save()`` as often as wanted (cheap when nothing
    new was built). Each returns the names of the payloads it copied."""

    def __init__(self, store=None, run_cache=None, collection_root=COLLECTION_ROOT, prefix=PREFIX):
        self.store = store or default_store()
        self.run_cache = run_cache
        self.collection_root = collection_root
        self.prefix = prefix
        self.primed = []
        self.failed = False
        self._key = None
        self._known = set()
        self._usable = None

    def _entry_dir(self):
        if self._usable is None:
            self._usable = False
            if self.store and self.prefix and os.path.isabs(self.store) and _private_dir(self.store):
                self._key = key(self.collection_root)
                self._usable = _private_dir(os.path.join(self.store, self._key))
        return os.path.join(self.store, self._key) if self._usable else None

    def _ours(self, name):
        return name.startswith(self.prefix) and name.endswith(SUFFIX) and os.sep not in name

    def prime(self):
        entries = self._entry_dir()
        if entries is None:
            return []
        run_cache = self.run_cache or run_cache_dir()
        os.makedirs(run_cache, exist_ok=True)
        try:
            os.utime(entries)  # used now: kept by the pruning of save()
            names = sorted(os.listdir(entries))
        except OSError:  # pruned by another run just now: nothing to prime
            return self.primed
        for name in names:
            path = os.path.join(entries, name)
            if not self._ours(name) or os.path.exists(os.path.join(run_cache, name)):
                continue
            if not _private(path, stat.S_ISREG) or not _loads(path):
                discard(path)
                continue
            try:
                _copy_atomic(path, run_cache, name)
            except OSError:  # gone meanwhile: ansible-core builds it
                continue
            self.primed.append(name)
            self._known.add(name)
        return self.primed

    def save(self):
        """Store the payloads of this collection's modules that this run built and the store lacks."""
        run_cache = self.run_cache or run_cache_dir()
        try:
            names = [n for n in os.listdir(run_cache) if n not in self._known and self._ours(n)]
        except OSError:
            return []
        if not names:
            return []
        entries = self._entry_dir()
        if entries is None:
            return []
        new = []
        for name in names:
            self._known.add(name)
            path = os.path.join(run_cache, name)
            if os.path.exists(os.path.join(entries, name)) or not _loads(path):
                continue
            try:
                _copy_atomic(path, entries, name)
            except OSError:  # the key's directory pruned by another run meanwhile
                continue
            new.append(name)
        if new:
            self._prune()
        return new

    def _prune(self):
        """Keep the entries of the MAX_KEYS keys used last. Only key directories (named as key() names them) are
        looked at: anything else in the store is not this cache's."""
        try:
            keys = [os.path.join(self.store, k) for k in os.listdir(self.store) if KEY_NAME.match(k)]
            keys = [k for k in keys if os.path.isdir(k) and not os.path.islink(k)]
            keys.sort(key=lambda k: os.stat(k).st_mtime, reverse=True)
        except OSError:
            return
        for old in keys[MAX_KEYS:]:
            if os.path.basename(old) != self._key:
                shutil.rmtree(old, ignore_errors=True)
