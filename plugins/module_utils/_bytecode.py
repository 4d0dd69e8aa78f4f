# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compiled code of this collection's module_utils, kept on the host between module runs.

A module runs from its AnsiballZ payload, a zip file that Python imports from without writing bytecode anywhere:
every run compiles the module_utils it imports from source again (Python 3.11's zipimport compiles each one twice,
once to find it and once to run it), which for this collection's transaction module is most of the CPU time a call
costs the host beyond its real work. Importing this module first puts a finder before the path finder for this
collection's module_utils read from such a zip: it compiles each one once and keeps the code object in a cache
directory of the user the module runs as, keyed by a hash of the source and of the interpreter, and later runs
load it from there. Code from anywhere else (a checkout, Mitogen's importer) is imported as before.

The cache is ``$XDG_CACHE_HOME/failsafe-deploy/bytecode`` or ``~/.cache/failsafe-deploy/bytecode``, or the
directory ``FAILSAFE_BYTECODE_CACHE`` names; ``FAILSAFE_BYTECODE_CACHE=off`` turns it off. Only a directory that
the user owns and no one else can write to is used, and only files in it that the user owns; anything that does
not work out (no home, a read-only disk, a file that is not code) falls back to compiling, never to a failure. It
keeps at most ``MAX_ENTRIES`` files, the oldest going first.

The finder is put in place when this file is imported as the collection's module (a module's first import of it).
``install(CachedFinder(prefix, directory))`` puts one in place for other packages read from a payload zip, with a
cache directory of their own (the test fleet's hosts do so for ansible-core's module_utils: tests/fleet).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import importlib.machinery
import importlib.util
import marshal
import os
import stat
import sys
import tempfile
import zipimport

PREFIX = 'ansible_collections.failsafe.deploy.plugins.module_utils.'
MAX_ENTRIES = 512
_SALT = b''.join((importlib.util.MAGIC_NUMBER, sys.version.encode('utf-8', 'replace'),
                  repr(sys.flags.optimize).encode('ascii')))


def cache_dir():
    """The cache directory this process would use (not made or checked), or None when it is turned off."""
    named = os.environ.get('FAILSAFE_BYTECODE_CACHE', '')
    if named.lower() in ('off', '0', 'false', 'no'):
        return None
    if named:
        return named
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    if not os.path.isabs(base):
        return None
    return os.path.join(base, 'failsafe-deploy', 'bytecode')


def _usable(path):
    """True when ``path`` is a directory of this user's that no one else can write to (made if missing)."""
    try:
        os.makedirs(path, 0o700)
    except OSError:
        pass
    try:
        info = os.lstat(path)
    except OSError:
        return False
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022
    return private and os.access(path, os.W_OK | os.X_OK)


def _load(path):
    """The code object cached at ``path``, or None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
    except OSError:
        return None
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            return None
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        code = marshal.loads(b''.join(chunks))
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, type(_load.__code__)) else None


def _store(directory, path, code):
    """Write ``code`` to ``path`` atomically; the oldest entries go beyond MAX_ENTRIES. Errors are ignored."""
    try:
        names = os.listdir(directory)
        if len(names) >= MAX_ENTRIES:
            aged = []
            for name in names:
                try:
                    aged.append((os.lstat(os.path.join(directory, name)).st_mtime, name))
                except OSError:
                    pass
            for dummy, name in sorted(aged)[:len(aged) - MAX_ENTRIES // 2]:
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass
        fd, tmp = tempfile.mkstemp(prefix='.tmp-', dir=directory)
        try:
            with os.fdopen(fd, 'wb') as handle:
                handle.write(marshal.dumps(code))
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except (OSError, ValueError):
        pass


class _CachedLoader:
    """Loads one module_utils file of a payload zip from the cache, compiling and caching it on a miss."""

    def __init__(self, importer, fullname, inner, is_package, directory=None):
        self._importer = importer
        self._fullname = fullname
        self._inner = inner  # the file's path inside the zip: ansible_collections/.../_engine.py
        self._is_package = is_package
        self._directory = directory  # the cache directory; None: cache_dir()
        self.path = os.path.join(importer.archive, inner)

    def create_module(self, spec):  # pylint: disable=unused-argument
        return None  # the default module object

    def exec_module(self, module):
        exec(self.get_code(module.__name__), module.__dict__)  # pylint: disable=exec-used

    def _check(self, fullname):
        if fullname != self._fullname:
            raise ImportError('this loader loads %s, not %s' % (self._fullname, fullname), name=fullname)

    def is_package(self, fullname):
        self._check(fullname)
        return self._is_package

    def get_filename(self, fullname):
        self._check(fullname)
        return self.path

    def get_source(self, fullname):
        self._check(fullname)
        return self._importer.get_data(self._inner).decode('utf-8')

    def get_code(self, fullname):
        self._check(fullname)
        source = self._importer.get_data(self._inner)
        directory = self._directory or cache_dir()
        key = hashlib.sha256(_SALT + b'\0' + self._inner.encode('utf-8') + b'\0' + source).hexdigest()
        usable = directory is not None and _usable(directory)
        if usable:
            code = _load(os.path.join(directory, key))
            if code is not None:
                return code
        # the file name in tracebacks is the path inside the payload, the same in every run (the payload's own
        # temporary path changes with each run, and a cached code object keeps the name it was compiled with)
        code = compile(source, self._inner, 'exec', dont_inherit=True)
        if usable:
            _store(directory, os.path.join(directory, key), code)
        return code


class CachedFinder:
    """Finds the modules below ``prefix`` in a payload zip, cached in ``directory`` (default: cache_dir()); for
    the others None, and the usual finders go on."""

    failsafe_bytecode = True  # how install() recognises a finder put there by an earlier import of this module

    def __init__(self, prefix=PREFIX, directory=None):
        self.prefix = prefix
        self.directory = directory

    def find_spec(self, fullname, path=None, target=None):  # pylint: disable=unused-argument
        if not fullname.startswith(self.prefix) or not path:
            return None
        tail = fullname.rpartition('.')[2]
        for entry in path:
            if not isinstance(entry, str) or '.zip' not in entry:
                continue
            try:
                importer = zipimport.zipimporter(entry)
                is_package = importer.is_package(fullname)
            except (zipimport.ZipImportError, OSError, TypeError, ValueError):
                continue
            prefix = importer.prefix.replace(os.sep, '/')
            inner = prefix + tail + ('/__init__.py' if is_package else '.py')
            try:
                importer.get_data(inner)
            except OSError:
                continue  # bytecode only, or not there after all: the usual finders decide
            loader = _CachedLoader(importer, fullname, inner, is_package, self.directory)
            spec = importlib.machinery.ModuleSpec(fullname, loader, origin=loader.path, is_package=is_package)
            if is_package:
                spec.submodule_search_locations = [os.path.join(importer.archive, prefix + tail)]
            spec.has_location = True
            return spec
        return None


# the finder of this collection's module_utils
_CachedFinder = CachedFinder()


def install(cached=None):
    """Put ``cached`` (default: the finder of this collection's module_utils) in sys.meta_path just before the path
    finder, which would find the modules in the zip (once per interpreter and prefix; the finders before it, for
    built-in and frozen modules, never find these)."""
    cached = cached or _CachedFinder
    if (cached.directory or cache_dir()) is None:
        return
    if any(getattr(finder, 'failsafe_bytecode', False) and getattr(finder, 'prefix', PREFIX) == cached.prefix
           for finder in sys.meta_path):
        return
    for index, finder in enumerate(sys.meta_path):
        if finder is importlib.machinery.PathFinder:
            sys.meta_path.insert(index, cached)
            return
    sys.meta_path.append(cached)


if __name__ == PREFIX + '_bytecode':
    install()
