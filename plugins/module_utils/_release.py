# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Release directories, the atomic ``current`` switch and the release ledger.

Layout under an application root::

    releases/<id>/          one directory per release, staged atomically (temp dir beside it, then rename)
    current -> releases/<id> relative symlink, switched with a temp symlink and os.replace
    shared/<p>              persistent paths, linked into every release as releases/<id>/<p>
    .failsafe/ledger.json   the state of every release: staged, active, verified or failed

Every ``ensure_<state>()`` function reads the current state, plans, and acts only when ``check_mode`` is false.
It returns a plain dict for ``exit_json`` and raises ReleaseError (message plus structured details) on refusal.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy
import errno
import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import (
    _crash_point,
    fsync_dir,
    fsync_tree,
    makedirs_durable,
    read_json,
    replace_symlink,
    write_json_atomic,
)

RELEASE_ID_RE = re.compile(r'^[A-Za-z0-9._-]+\Z')  # \Z: a trailing newline is not a name
LEDGER_VERSION = 1
LEDGER_MODE = 0o644

# Ledger state -> the timestamp field recording when a release last entered it.
TIME_FIELDS = {
    'staged': 'staged',
    'active': 'activated',
    'verified': 'verified',
    'failed': 'failed',
}

_CHUNK = 1024 * 1024

# Check mode cannot see what an earlier check-mode task would have staged.
CHECK_MODE_UNSTAGED = ('release %s is not staged yet; in check mode this assumes an earlier task stages it '
                       '(a real run fails here if nothing does)')


class ReleaseError(FailsafeError):
    """A refusal or failure with a human message and structured details for fail_json."""


def iso(t):
    """ISO-8601 UTC string for an epoch time (None stays None)."""
    if t is None:
        return None
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))


def validate_release_id(release_id, option='id'):
    """Refuse anything that is not a plain directory name made of [A-Za-z0-9._-]."""
    if release_id is None:
        raise ReleaseError('%s is required' % option)
    if not isinstance(release_id, str) or not RELEASE_ID_RE.match(release_id) or release_id in ('.', '..'):
        raise ReleaseError("invalid release id %r: use only letters, digits, '.', '_' and '-' (not '.' or '..')"
                           % (release_id,), id=release_id)
    return release_id


def validate_shared_path(p):
    """A shared path is relative, normalised and stays inside the release. Returns it without trailing slashes."""
    if not isinstance(p, str) or not p.strip('/'):
        raise ReleaseError('shared path %r is empty' % (p,), shared=p)
    if p.startswith('/'):
        raise ReleaseError('shared path %r must be relative to the release directory' % p, shared=p)
    clean = p.rstrip('/')
    parts = clean.split('/')
    if any(part in ('', '.', '..') for part in parts):
        raise ReleaseError("shared path %r must be normalised and may not contain '.' or '..' components" % p,
                           shared=p)
    return clean


def shared_link_target(p):
    """Relative symlink target for releases/<id>/<p> -> shared/<p>, e.g. ``../../shared/log``."""
    return '/'.join(['..'] * (p.count('/') + 2) + ['shared', p])


# --- checksums -------------------------------------------------------------------------------------------------

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def tree_checksum(top):
    """sha256 over a directory tree: relative paths, types, permission bits, file contents and link targets.

    Refuses special files (devices, FIFOs, sockets): a release is made of files, directories and symlinks.
    """
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, top)
        st = os.lstat(dirpath)
        h.update(('D %s %o\n' % (rel_dir, stat.S_IMODE(st.st_mode))).encode('utf-8', 'surrogateescape'))
        names = sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))])
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                h.update(('L %s -> %s\n' % (rel, os.readlink(full))).encode('utf-8', 'surrogateescape'))
            elif stat.S_ISREG(st.st_mode):
                h.update(('F %s %o %s\n' % (rel, stat.S_IMODE(st.st_mode), sha256_file(full)))
                         .encode('utf-8', 'surrogateescape'))
            else:
                raise ReleaseError('%s is not a regular file, directory or symlink: a release cannot contain it'
                                   % full, path=full)
    return h.hexdigest()


# --- archive extraction ----------------------------------------------------------------------------------------

def _safe_member_name(archive, name):
    """Normalise a member name; refuse absolute names and '..' components."""
    if name.startswith('/') or re.match(r'^[A-Za-z]:', name):
        raise ReleaseError('archive %s: member %r escapes the release directory (absolute path); refusing to '
                           'extract it' % (archive, name), path=archive, member=name)
    parts = [p for p in name.split('/') if p not in ('', '.')]
    if '..' in parts:
        raise ReleaseError("archive %s: member %r escapes the release directory ('..' in its path); refusing to "
                           "extract it" % (archive, name), path=archive, member=name)
    return '/'.join(parts)


def _check_symlink_member(archive, name, linkname):
    if linkname.startswith('/'):
        raise ReleaseError('archive %s: symlink %r points outside the release (absolute target %r); refusing to '
                           'extract it' % (archive, name, linkname), path=archive, member=name, target=linkname)
    resolved = os.path.normpath(os.path.join(os.path.dirname(name), linkname))
    if resolved == '..' or resolved.startswith('../'):
        raise ReleaseError('archive %s: symlink %r points outside the release (target %r); refusing to extract it'
                           % (archive, name, linkname), path=archive, member=name, target=linkname)


def scan_archive(archive):
    """Read-only pass over an archive: the same name, link and type checks extraction makes. Returns members."""
    count = 0
    try:
        with tarfile.open(archive, 'r:*') as tf:
            for member in tf:
                name = _safe_member_name(archive, member.name)
                if member.issym():
                    _check_symlink_member(archive, name, member.linkname)
                elif member.islnk():
                    _safe_member_name(archive, member.linkname)
                elif not (member.isdir() or member.isreg()):
                    raise ReleaseError('archive %s: member %r is a device, FIFO or other special file; refusing '
                                       'to extract it' % (archive, member.name), path=archive, member=member.name)
                count += 1
    except (tarfile.TarError, EOFError) as e:
        raise ReleaseError('src %s is not a readable tar archive: %s' % (archive, e), path=archive)
    return count


def archive_size(archive):
    """The bytes extracting the archive writes, read from its members' headers: the declared sizes of its regular
    files (a hard link writes no data; directories and symlinks write none). One read-only pass over the archive."""
    total = 0
    try:
        with tarfile.open(archive, 'r:*') as tf:
            for member in tf:
                if member.isreg():
                    total += member.size
    except (tarfile.TarError, EOFError) as e:
        raise ReleaseError('src %s is not a readable tar archive: %s' % (archive, e), path=archive)
    return total


def human_size(size):
    """A size for a message: '15.2 KiB (15587 bytes)', '2.0 GiB (2147483648 bytes)', '512 bytes'."""
    for unit, factor in (('TiB', 1 << 40), ('GiB', 1 << 30), ('MiB', 1 << 20), ('KiB', 1 << 10)):
        if abs(size) >= factor:
            return '%.1f %s (%d bytes)' % (size / float(factor), unit, size)
    return '%d bytes' % size


def check_archive_size(archive, size, dest, free, keep_free=0, max_size=None, names=None):
    """Refuse a release archive whose files would not fit before anything is written: more than max_size bytes
    (None or 0: no limit), or more than the free space of dest's file system less keep_free, the space that must
    stay free. names maps 'max_size' and 'keep_free' to the settings they come from, for the message."""
    names = names or {}
    if max_size and size > max_size:
        raise ReleaseError(
            'release archive %s would write %s into %s: more than the largest release allowed (%s is %s). '
            'Refusing to stage it; nothing was written.'
            % (archive, human_size(size), dest, names.get('max_size', 'max_size'), human_size(max_size)),
            src=archive, releases_dir=dest, release_size=size, max_size=max_size)
    if size > free - keep_free:
        kept = ' (%s keeps %s of it free)' % (names.get('keep_free', 'keep_free'), human_size(keep_free)) \
            if keep_free else ''
        raise ReleaseError(
            'release archive %s would write %s into %s, whose file system has %s free%s. Refusing to stage it; '
            'nothing was written.' % (archive, human_size(size), dest, human_size(free), kept),
            src=archive, releases_dir=dest, release_size=size, free_bytes=free, keep_free_bytes=keep_free)
    return size


def archive_top_names(archive):
    """The top-level directory names of an archive, or None when a file or link sits at its top level."""
    tops = set()
    with tarfile.open(archive, 'r:*') as tf:
        for member in tf:
            parts = [p for p in member.name.split('/') if p not in ('', '.')]
            if not parts:
                continue
            if len(parts) == 1 and not member.isdir():
                return []
            tops.add(parts[0])
    return sorted(tops)


def check_layout(archive, top):
    """Refuse an archive whose files all sit in one wrapping directory (``app-1.2.0/app.py``): the release would
    stage without complaint and then fail to start, with the service looking for its files one level too high."""
    names = [n for n in os.listdir(top) if n not in ('.', '..')]
    if len(names) == 1 and os.path.isdir(os.path.join(top, names[0])) \
            and not os.path.islink(os.path.join(top, names[0])):
        raise ReleaseError(
            "archive %s holds everything under one top directory '%s/': a release archive must have the release's "
            "files at its top level (build it with: tar -czf <archive> -C <dir>/%s .)" % (archive, names[0], names[0]),
            path=archive, top_dir=names[0])


def _ensure_real_parents(dest, name, archive):
    """Create the parent directories of dest/name; refuse to go through a symlink (it could lead outside)."""
    parts = name.split('/')[:-1]
    path = dest
    for part in parts:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            os.mkdir(path, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ReleaseError('archive %s: member %r would be written through the symlink %r; refusing to '
                               'extract it' % (archive, name, os.path.relpath(path, dest)), path=archive, member=name)
        if not stat.S_ISDIR(st.st_mode):
            raise ReleaseError('archive %s: member %r needs %r to be a directory, but it is a file'
                               % (archive, name, os.path.relpath(path, dest)), path=archive, member=name)


def _clear_for(target, archive, name):
    """A later member replaces an earlier one of the same name (tar semantics), but never a directory."""
    try:
        st = os.lstat(target)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        raise
    if stat.S_ISDIR(st.st_mode):
        raise ReleaseError('archive %s: member %r would replace a directory' % (archive, name),
                           path=archive, member=name)
    os.unlink(target)


def _is_within(path, top):
    return path == top or path.startswith(top.rstrip('/') + '/')


def extract_archive(archive, dest):
    """Extract a tar archive (any compression tarfile knows) into the existing directory dest.

    Refuses members that escape dest: absolute names, '..' components, symlinks whose target leaves dest (checked
    on the member and again on the finished tree), hard links to anything but a regular file already extracted,
    writes through a symlink, and special files. Permission bits (0777) and mtimes are preserved; setuid, setgid
    and sticky bits and ownership are not.
    """
    real_dest = os.path.realpath(dest)
    dirs = []
    symlinks = []
    try:
        with tarfile.open(archive, 'r:*') as tf:
            for member in tf:
                name = _safe_member_name(archive, member.name)
                if not name:
                    if member.isdir():
                        dirs.append((dest, member.mode, member.mtime))
                        continue
                    raise ReleaseError('archive %s: member %r is not a directory but names the release itself'
                                       % (archive, member.name), path=archive, member=member.name)
                target = os.path.join(dest, name)
                _ensure_real_parents(dest, name, archive)
                if member.isdir():
                    try:
                        st = os.lstat(target)
                    except OSError as e:
                        if e.errno != errno.ENOENT:
                            raise
                        os.mkdir(target, 0o700)
                    else:
                        if not stat.S_ISDIR(st.st_mode):
                            raise ReleaseError('archive %s: directory member %r would replace a file or symlink'
                                               % (archive, name), path=archive, member=name)
                    dirs.append((target, member.mode, member.mtime))
                elif member.isreg():
                    _clear_for(target, archive, name)
                    source = tf.extractfile(member)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
                    with os.fdopen(fd, 'wb') as out:
                        shutil.copyfileobj(source, out, _CHUNK)
                    os.chmod(target, member.mode & 0o777)
                    os.utime(target, (member.mtime, member.mtime))
                elif member.issym():
                    _check_symlink_member(archive, name, member.linkname)
                    _clear_for(target, archive, name)
                    os.symlink(member.linkname, target)
                    symlinks.append((name, target))
                elif member.islnk():
                    link_name = _safe_member_name(archive, member.linkname)
                    if link_name == name:
                        raise ReleaseError('archive %s: hard link %r points at itself' % (archive, name),
                                           path=archive, member=name)
                    source_path = os.path.join(dest, link_name)
                    try:
                        st = os.lstat(source_path)
                    except OSError:
                        st = None
                    real_parent = os.path.realpath(os.path.dirname(source_path))
                    if st is None or not stat.S_ISREG(st.st_mode) or not _is_within(real_parent, real_dest):
                        raise ReleaseError('archive %s: hard link %r must point at a regular file extracted before '
                                           'it, not %r' % (archive, name, member.linkname),
                                           path=archive, member=name, target=member.linkname)
                    _clear_for(target, archive, name)
                    os.link(source_path, target)
                else:
                    raise ReleaseError('archive %s: member %r is a device, FIFO or other special file; refusing to '
                                       'extract it' % (archive, member.name), path=archive, member=member.name)
    except (tarfile.TarError, EOFError) as e:
        raise ReleaseError('src %s is not a readable tar archive: %s' % (archive, e), path=archive)
    # Symlinks can chain through each other; judge each one on the finished tree.
    for name, target in symlinks:
        if not _is_within(os.path.realpath(target), real_dest):
            raise ReleaseError('archive %s: symlink %r resolves outside the release (through %r); refusing it'
                               % (archive, name, os.readlink(target)), path=archive, member=name)
    # Directory modes last (deepest first), so a read-only directory does not stop its own extraction.
    for path, mode, mtime in sorted(dirs, key=lambda d: d[0].count('/'), reverse=True):
        os.chmod(path, mode & 0o777)
        os.utime(path, (mtime, mtime))
    return len(symlinks)


def copy_directory(src, dest):
    """Copy the directory tree src into the existing directory dest: modes and mtimes kept, symlinks copied as
    symlinks (not followed)."""
    shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)


# --- the application root --------------------------------------------------------------------------------------

def empty_ledger():
    return {'version': LEDGER_VERSION, 'releases': {}, 'current': None, 'last_verified': None}


class ReleaseRoot:
    """Paths and primitive operations of one application root."""

    def __init__(self, root):
        self.root = root
        self.releases_dir = os.path.join(root, 'releases')
        self.shared_dir = os.path.join(root, 'shared')
        self.current_link = os.path.join(root, 'current')
        self.ledger_dir = os.path.join(root, '.failsafe')
        self.ledger_path = os.path.join(self.ledger_dir, 'ledger.json')

    def release_path(self, release_id):
        return os.path.join(self.releases_dir, release_id)

    def has_release_dir(self, release_id):
        path = self.release_path(release_id)
        return os.path.isdir(path) and not os.path.islink(path)

    # current --------------------------------------------------------------------------------------------------
    def current_target(self):
        """Raw target of the current symlink, None when there is none. A real directory there is refused."""
        try:
            return os.readlink(self.current_link)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            if e.errno == errno.EINVAL:
                raise ReleaseError('%s exists but is not a symlink: move it away before failsafe.deploy manages '
                                   'releases here' % self.current_link, path=self.current_link)
            raise

    def read_current(self):
        """Release id that current points at (relative or absolute form), None when absent or pointing elsewhere."""
        target = self.current_target()
        if target is None:
            return None
        if os.path.isabs(target):
            norm = os.path.normpath(target)
            for base in (os.path.normpath(self.root), os.path.realpath(self.root)):
                if _is_within(norm, base):
                    rel = os.path.relpath(norm, base)
                    break
            else:
                return None
        else:
            rel = os.path.normpath(target)
        parts = rel.split('/')
        if len(parts) == 2 and parts[0] == 'releases' and RELEASE_ID_RE.match(parts[1]) \
                and parts[1] not in ('.', '..'):
            return parts[1]
        return None

    def switch_current(self, release_id):
        """Atomically point current at releases/<id> (relative). Returns True when it changed."""
        try:
            return replace_symlink(self.current_link, 'releases/%s' % release_id)
        except OSError as e:
            if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise ReleaseError('%s is a real directory, not a symlink: move it away before failsafe.deploy '
                                   'manages releases here' % self.current_link, path=self.current_link)
            raise

    def remove_current(self):
        os.unlink(self.current_link)
        fsync_dir(self.root)

    # ledger ---------------------------------------------------------------------------------------------------
    def load_ledger(self):
        try:
            data = read_json(self.ledger_path, default=None)
        except ValueError as e:
            raise ReleaseError(str(e), path=self.ledger_path)
        ledger = empty_ledger()
        if isinstance(data, dict):
            ledger.update(data)
        if not isinstance(ledger.get('releases'), dict):
            raise ReleaseError('%s has no "releases" object: refusing to overwrite it' % self.ledger_path,
                               path=self.ledger_path)
        return ledger

    def save_ledger(self, ledger):
        if not os.path.isdir(self.ledger_dir):
            makedirs_durable(self.ledger_dir, 0o755)
        write_json_atomic(self.ledger_path, ledger, mode=LEDGER_MODE)

    # directories ----------------------------------------------------------------------------------------------
    def _temp_name(self, release_id, kind):
        return tempfile.mkdtemp(prefix='.%s.%s-' % (release_id, kind), dir=self.releases_dir)

    def remove_release_dir(self, release_id):
        """Rename the release out of the way first (it disappears atomically), then delete it."""
        path = self.release_path(release_id)
        doomed = self._temp_name(release_id, 'old')
        os.rename(path, os.path.join(doomed, 'tree'))
        fsync_dir(self.releases_dir)
        _crash_point('release.removed-renamed')
        shutil.rmtree(doomed)

    def leftover_temp_dirs(self):
        """Temp dirs that a crashed staging or removal left behind in releases/."""
        try:
            names = os.listdir(self.releases_dir)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return []
            raise
        return sorted(n for n in names if n.startswith('.') and re.match(r'^\..+\.(tmp|old)-[^/]+$', n))

    def half_staged(self, release_id):
        """The temp dirs that a staging of ``release_id`` cut short left in releases/ (its half-unpacked copies)."""
        return [n for n in self.leftover_temp_dirs() if n.startswith('.%s.tmp-' % release_id)]

    def remove_half_staged(self, release_id):
        """Remove the half-unpacked copies of ``release_id`` (never a release, never the only copy of anything);
        returns their names."""
        names = self.half_staged(release_id)
        for name in names:
            shutil.rmtree(os.path.join(self.releases_dir, name))
        if names:
            fsync_dir(self.releases_dir)
        return names

    def free_bytes(self, path=None):
        """Free bytes for an unprivileged user on the file system of path (default the root), or of its nearest
        existing parent."""
        path = path or self.root
        while not os.path.exists(path):
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    # shared paths ---------------------------------------------------------------------------------------------
    def shared_links_needed(self, release_dir, shared):
        """Shared paths whose link in release_dir is missing or wrong."""
        needed = []
        for p in shared:
            link = os.path.join(release_dir, p)
            try:
                ok = os.readlink(link) == shared_link_target(p)
            except OSError:
                ok = False
            if not ok:
                needed.append(p)
        return needed

    def shared_dirs_missing(self, shared):
        return [p for p in shared if not os.path.lexists(os.path.join(self.shared_dir, p))]

    def link_shared(self, release_dir, shared):
        """Make release_dir/<p> a relative symlink to shared/<p> for every p, creating shared/<p> if missing."""
        real_release = os.path.realpath(release_dir)
        for p in shared:
            shared_path = os.path.join(self.shared_dir, p)
            if not os.path.lexists(shared_path):
                makedirs_durable(shared_path, 0o755)
            link = os.path.join(release_dir, p)
            parent = os.path.dirname(link)
            if not os.path.isdir(parent):
                makedirs_durable(parent, 0o755)
            if not _is_within(os.path.realpath(parent), real_release):
                raise ReleaseError('shared path %r: its parent directory in the release leads outside the release '
                                   'through a symlink' % p, shared=p, path=parent)
            if os.path.isdir(link) and not os.path.islink(link):
                shutil.rmtree(link)
            replace_symlink(link, shared_link_target(p))


# --- ledger bookkeeping ----------------------------------------------------------------------------------------

def _mark(ledger, release_id, state, t, event=None, reason=None, **fields):
    """Move a release to state, stamp the time and append to its history."""
    entry = ledger['releases'].setdefault(release_id, {'state': None, 'history': []})
    entry.setdefault('history', [])
    entry['state'] = state
    field = TIME_FIELDS.get(state)
    if field:
        entry[field] = t
        entry[field + '_iso'] = iso(t)
    entry.pop('removed', None)
    entry.pop('removed_iso', None)
    record = {'state': state, 'time': t, 'iso': iso(t)}
    if event:
        record['event'] = event
    if reason:
        record['reason'] = reason
        entry['reason'] = reason
    entry['history'].append(record)
    entry.update(fields)
    return entry


def _record_activation(ledger, release_id, t, event):
    """A release that becomes current: 'active', except a verified release stays 'verified' (known good)."""
    entry = ledger['releases'].get(release_id)
    if entry is not None and entry.get('state') == 'verified':
        entry['activated'] = t
        entry['activated_iso'] = iso(t)
        entry.setdefault('history', []).append({'state': 'verified', 'time': t, 'iso': iso(t), 'event': event})
        return entry
    return _mark(ledger, release_id, 'active', t, event=event)


def is_verified_candidate(entry):
    """A release to go back to: verified, not failed, not removed, and not reverted since its verification (a
    recovery undid the run that verified it: it is one again once verified again)."""
    if not isinstance(entry, dict):
        return False
    verified = entry.get('verified')
    reverted = entry.get('reverted')
    if verified is None or entry.get('state') == 'failed' or entry.get('removed'):
        return False
    return reverted is None or reverted < verified


def select_rollback_target(ledger, exclude=(), exists=None):
    """The release to roll back to: the most recently verified one that is not failed, not excluded, and (when
    exists is given) still on disk. Staged or active releases that were never verified are never chosen.
    Returns None when there is no such release."""
    best = None
    for release_id, entry in ledger.get('releases', {}).items():
        if release_id in exclude or not is_verified_candidate(entry):
            continue
        if exists is not None and not exists(release_id):
            continue
        key = (entry['verified'], release_id)
        if best is None or key > best[0]:
            best = (key, release_id)
    return best[1] if best else None


def verified_newest_first(ledger, exists=None):
    items = [(entry['verified'], rid) for rid, entry in ledger['releases'].items()
             if is_verified_candidate(entry) and (exists is None or exists(rid))]
    return [rid for dummy, rid in sorted(items, reverse=True)]


def plan_prune(ledger, keep, current, protect=(), prune_failed=False, exists=None):
    """Release ids that retention removes, and why each of the others stays.

    Keeps the `keep` most recently verified releases, the current release, the last verified release, any id in
    protect, and failed releases (kept for investigation) unless prune_failed. Releases that were never verified
    and are not current (abandoned stagings) are removed.
    """
    if keep < 0:
        raise ReleaseError('keep must be 0 or more, not %d' % keep, keep=keep)
    kept = {}
    for rid in verified_newest_first(ledger, exists)[:keep]:
        kept[rid] = 'newest verified'
    if ledger.get('last_verified'):
        kept[ledger['last_verified']] = 'last verified'
    if current:
        kept[current] = 'current'
    for rid in protect:
        kept[rid] = 'protected'
    remove = []
    for rid in sorted(ledger['releases']):
        entry = ledger['releases'][rid]
        if rid in kept or entry.get('removed'):
            continue
        if exists is not None and not exists(rid):
            continue
        if entry.get('state') == 'failed' and not prune_failed:
            kept[rid] = 'failed (quarantined)'
            continue
        remove.append(rid)
    return remove, kept


def _forget(ledger, release_id, t):
    """Drop a removed release from the ledger; a failed one stays (with removed time) so it stays quarantined."""
    entry = ledger['releases'].get(release_id)
    if entry is None:
        return
    if entry.get('state') == 'failed':
        entry['removed'] = t
        entry['removed_iso'] = iso(t)
    else:
        del ledger['releases'][release_id]


def _refresh_last_verified(ledger, exists=None):
    """last_verified must name a verified, non-failed release; fall back to the newest remaining one."""
    lv = ledger.get('last_verified')
    if lv and is_verified_candidate(ledger['releases'].get(lv)) and (exists is None or exists(lv)):
        return
    ledger['last_verified'] = select_rollback_target(ledger, exists=exists)


# --- states ----------------------------------------------------------------------------------------------------

class _Call:
    """What every state reads first and returns: ledger, current before the call, and the result skeleton."""

    def __init__(self, rr):
        self.rr = rr
        self.ledger = rr.load_ledger()
        self.before_ledger = copy.deepcopy(self.ledger)
        self.previous = rr.read_current()
        self.current = self.previous
        self.t = time.time()

    def exists(self, release_id):
        return self.rr.has_release_dir(release_id)

    def quarantined_error(self, release_id, action):
        entry = self.ledger['releases'][release_id]
        reason = entry.get('reason')
        return ReleaseError(
            'release %s is quarantined: the ledger marks it failed since %s%s. Refusing to %s it; fix the cause and '
            'pass force=true to %s it anyway, or deploy a new release id.'
            % (release_id, entry.get('failed_iso') or iso(entry.get('failed')) or 'an earlier run',
               ' (%s)' % reason if reason else '', action, action),
            id=release_id, quarantined=True, reason=reason)

    def result(self, changed, release_id=None, target=None, diff_ids=(), check_mode=False, **extra):
        self.ledger['current'] = self.current
        ids = [i for i in diff_ids if i]
        before = {'current': self.previous}
        after = {'current': self.current}
        for rid in ids:
            key = 'release' if len(ids) == 1 else 'release %s' % rid
            before[key] = self.before_ledger['releases'].get(rid)
            after[key] = self.ledger['releases'].get(rid)
        res = {
            'changed': changed,
            'id': release_id,
            'current': self.current,
            'previous': self.previous,
            'last_verified': self.ledger.get('last_verified'),
            'target': target,
            'ledger': self.ledger,
            'diff': {'before': before, 'after': after,
                     'before_header': '%s (ledger)' % self.rr.root, 'after_header': '%s (ledger)' % self.rr.root},
        }
        res.update(extra)
        return res

    def save(self, check_mode):
        if not check_mode:
            self.ledger['current'] = self.current
            self.rr.save_ledger(self.ledger)


def ensure_query(rr):
    call = _Call(rr)
    res = call.result(False)
    res['releases'] = call.ledger['releases']
    res['free_bytes'] = rr.free_bytes()
    res.pop('diff')
    return res


def ensure_staged(rr, release_id, src, shared=None, force=False, check_mode=False, max_size=None, keep_free=0,
                  names=None):
    """Stage release_id from src. An archive is bounded before anything is written: its members' declared sizes
    must fit in the free space of the releases directory's file system less keep_free bytes, and in max_size bytes
    when given (names: the settings these come from, for the refusal's message; see check_archive_size)."""
    validate_release_id(release_id)
    shared = [validate_shared_path(p) for p in (shared or [])]
    if not src:
        raise ReleaseError('src is required for state=staged', id=release_id)
    if not os.path.exists(src):
        if check_mode:
            # In check mode the task that uploads src did not run either: plan the staging, still refuse quarantine.
            call = _Call(rr)
            entry = call.ledger['releases'].get(release_id)
            if entry is not None and entry.get('state') == 'failed' and not force:
                raise call.quarantined_error(release_id, 'stage')
            return call.result(not rr.has_release_dir(release_id), release_id, diff_ids=[release_id],
                               check_mode=True, path=rr.release_path(release_id),
                               msg='src %s is not on the target yet: staging planned, not inspected' % src)
        raise ReleaseError('src %s does not exist on the target' % src, path=src, id=release_id)
    if os.path.isdir(src):
        kind = 'directory'
        checksum = tree_checksum(src)
    else:
        if not tarfile.is_tarfile(src):
            raise ReleaseError('src %s is neither a directory nor a tar archive (.tar, .tar.gz, .tgz)' % src,
                               path=src, id=release_id)
        kind = 'archive'
        checksum = sha256_file(src)

    call = _Call(rr)
    entry = call.ledger['releases'].get(release_id)
    path = rr.release_path(release_id)
    exists = rr.has_release_dir(release_id)
    failed = entry is not None and entry.get('state') == 'failed'
    if failed and not force:
        raise call.quarantined_error(release_id, 'stage')
    if os.path.lexists(path) and not exists:
        raise ReleaseError('%s exists but is not a directory: refusing to replace it' % path, path=path,
                           id=release_id)

    if not exists:
        extract, why = True, 'new'
    elif entry is None:
        if call.current == release_id and not force:
            raise ReleaseError('%s is the current release but is not in the ledger: refusing to replace it without '
                               'force=true' % path, path=path, id=release_id)
        extract, why = True, 'untracked directory replaced'
    elif entry.get('checksum') != checksum:
        if not force:
            raise ReleaseError(
                'release %s is already staged from different content (checksum %s, src now %s). Release ids are '
                'immutable: use a new id, or force=true to replace it.' % (release_id, entry.get('checksum'), checksum),
                id=release_id, path=path, checksum=checksum, ledger_checksum=entry.get('checksum'))
        extract, why = True, 'content changed (force)'
    elif failed:
        extract, why = True, 'quarantined release restaged (force)'
    else:
        extract, why = False, None

    links = list(shared) if extract else rr.shared_links_needed(path, shared)
    shared_missing = rr.shared_dirs_missing(shared)
    # Same content of a release the ledger knows (directory lost, say): put it back but keep its state.
    state_change = entry is None or failed or entry.get('checksum') != checksum
    changed = bool(extract or links or shared_missing or state_change)

    if extract and kind == 'archive':
        # What the archive's members declare against the room there is, before anything is written (an archive of
        # a few MB can expand to GBs), in check mode too.
        check_archive_size(src, archive_size(src), rr.releases_dir, rr.free_bytes(rr.releases_dir),
                           keep_free=keep_free, max_size=max_size, names=names)
    if extract and kind == 'archive' and check_mode:
        scan_archive(src)  # report a dangerous archive, or one wrapped in a top directory, in check mode too
        with tempfile.TemporaryDirectory() as tops:
            for name in archive_top_names(src):
                os.mkdir(os.path.join(tops, name))
            check_layout(src, tops)

    if changed and not check_mode:
        if not os.path.isdir(rr.releases_dir):
            makedirs_durable(rr.releases_dir, 0o755)
        if extract:
            tmp = rr._temp_name(release_id, 'tmp')
            try:
                if kind == 'archive':
                    os.chmod(tmp, 0o755)
                    extract_archive(src, tmp)
                    check_layout(src, tmp)
                else:
                    copy_directory(src, tmp)
                rr.link_shared(tmp, shared)
                # The unpacked tree is written without fsyncs: on disk whole before its name is, or a power cut
                # after the commit leaves a verified release of empty files (or none at all).
                fsync_tree(tmp)
                _crash_point('release.staged-tmp')
                if exists:
                    old = rr._temp_name(release_id, 'old')
                    os.rename(path, os.path.join(old, 'tree'))
                    os.rename(tmp, path)
                    fsync_dir(rr.releases_dir)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.rename(tmp, path)
                    fsync_dir(rr.releases_dir)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _crash_point('release.staged-renamed')
        else:
            rr.link_shared(path, shared)

    if state_change:
        entry = call.ledger['releases'].get(release_id)
        if entry is not None:
            # New content (or a quarantined release given another chance) has not been activated or verified yet.
            for field in ('activated', 'verified', 'reason'):
                entry.pop(field, None)
                entry.pop(field + '_iso', None)
        _mark(call.ledger, release_id, 'staged', call.t, event='staged' if why == 'new' else why,
              checksum=checksum, src=src, kind=kind)
    elif extract:
        entry['history'].append({'state': entry['state'], 'time': call.t, 'iso': iso(call.t),
                                 'event': 'directory restaged'})
    if changed:
        entry = call.ledger['releases'][release_id]
        entry['shared'] = shared
        call.save(check_mode)
    return call.result(changed, release_id, diff_ids=[release_id], check_mode=check_mode, path=path,
                       checksum=checksum, linked=links, extracted=extract)


def ensure_active(rr, release_id, force=False, check_mode=False):
    validate_release_id(release_id)
    call = _Call(rr)
    entry = call.ledger['releases'].get(release_id)
    notes = {}
    if not rr.has_release_dir(release_id):
        if not check_mode:
            raise ReleaseError('release %s is not staged: %s does not exist'
                               % (release_id, rr.release_path(release_id)),
                               id=release_id, path=rr.release_path(release_id))
        notes['msg'] = CHECK_MODE_UNSTAGED % release_id
    if entry is not None and entry.get('state') == 'failed' and not force:
        raise call.quarantined_error(release_id, 'activate')
    switch = call.current != release_id
    mark = entry is None or entry.get('state') not in ('active', 'verified')
    changed = switch or mark
    if switch and not check_mode:
        rr.switch_current(release_id)
        _crash_point('release.switched')
    if changed:
        _record_activation(call.ledger, release_id, call.t, 'activated')
    call.current = release_id
    if changed:
        call.save(check_mode)
    return call.result(changed, release_id, diff_ids=[release_id], path=rr.release_path(release_id), **notes)


def ensure_verified(rr, release_id, force=False, check_mode=False):
    validate_release_id(release_id)
    call = _Call(rr)
    entry = call.ledger['releases'].get(release_id)
    notes = {}
    if entry is None and not rr.has_release_dir(release_id):
        if not check_mode:
            raise ReleaseError('release %s is not in the ledger and %s does not exist'
                               % (release_id, rr.release_path(release_id)), id=release_id)
        notes['msg'] = CHECK_MODE_UNSTAGED % release_id
    if entry is not None and entry.get('state') == 'failed' and not force:
        raise call.quarantined_error(release_id, 'verify')
    changed = entry is None or entry.get('state') != 'verified' or call.ledger.get('last_verified') != release_id
    if changed:
        _mark(call.ledger, release_id, 'verified', call.t, event='verified')
        call.ledger['last_verified'] = release_id
        call.save(check_mode)
    return call.result(changed, release_id, diff_ids=[release_id], **notes)


def ensure_failed(rr, release_id, reason=None, check_mode=False):
    validate_release_id(release_id)
    call = _Call(rr)
    entry = call.ledger['releases'].get(release_id)
    changed = entry is None or entry.get('state') != 'failed'
    if changed:
        _mark(call.ledger, release_id, 'failed', call.t, event='failed', reason=reason or 'marked failed')
        _refresh_last_verified(call.ledger, call.exists)
        call.save(check_mode)
    return call.result(changed, release_id, diff_ids=[release_id])


def ensure_rolled_back(rr, release_id=None, reason=None, check_mode=False, quarantine=True, event='rolled back'):
    """Switch back to the last verified release other than release_id. With quarantine, release_id is marked
    failed first. Without it (the release was never shown bad: its deploy failed before activation, or nobody
    confirmed it in time, or a recovery undid the run that died) it is not quarantined, so a later run deploys it
    without force: a release that never ran keeps its entry as it is; one that ran (``active``, or ``verified`` on
    a host that committed a run the recovery undid on every host) goes back to ``staged``, with ``event`` and
    ``reason`` in its history and the time in ``reverted``: it is no longer a release to go back to."""
    if release_id is not None:
        validate_release_id(release_id)
    call = _Call(rr)
    changed = False
    if release_id is not None:
        entry = call.ledger['releases'].get(release_id)
        if quarantine and (entry is None or entry.get('state') != 'failed'):
            _mark(call.ledger, release_id, 'failed', call.t, event=event, reason=reason or 'rolled back')
            changed = True
        elif not quarantine and entry is not None and entry.get('state') in ('active', 'verified'):
            # it ran and was not shown bad: on disk beside the others, not current, not verified, not failed
            entry['state'] = 'staged'
            entry['reverted'] = call.t
            entry['reverted_iso'] = iso(call.t)
            record = {'state': 'staged', 'time': call.t, 'iso': iso(call.t), 'event': event}
            if reason:
                record['reason'] = reason
            entry.setdefault('history', []).append(record)
            changed = True
        _refresh_last_verified(call.ledger, call.exists)
    exclude = (release_id,) if release_id else ()
    target = select_rollback_target(call.ledger, exclude=exclude, exists=call.exists)
    if target is not None:
        if call.current != target:
            if not check_mode:
                rr.switch_current(target)
                _crash_point('release.rolled-back')
            _record_activation(call.ledger, target, call.t, 'rollback target%s' % (
                ' (from %s)' % release_id if release_id else ''))
            call.current = target
            changed = True
    elif release_id is not None and call.current == release_id:
        # Nothing verified to go back to: at least stop pointing at the failed release.
        if not check_mode:
            rr.remove_current()
        call.current = None
        changed = True
    if changed:
        call.save(check_mode)
    marked = (call.ledger['releases'].get(release_id) or {}).get('state') == 'failed' if release_id else False
    return call.result(changed, release_id, target=target, diff_ids=[release_id, target], quarantined=marked)


def ensure_absent(rr, release_id, check_mode=False):
    validate_release_id(release_id)
    call = _Call(rr)
    if call.current == release_id:
        raise ReleaseError('release %s is current: activate or roll back to another release before removing it'
                           % release_id, id=release_id, path=rr.release_path(release_id))
    entry = call.ledger['releases'].get(release_id)
    on_disk = rr.has_release_dir(release_id)
    forget = entry is not None and not (entry.get('state') == 'failed' and entry.get('removed'))
    changed = on_disk or forget
    if on_disk and not check_mode:
        rr.remove_release_dir(release_id)
    if forget:
        _forget(call.ledger, release_id, call.t)
        _refresh_last_verified(call.ledger, lambda rid: rid != release_id and call.exists(rid))
    if changed:
        call.save(check_mode)
    return call.result(changed, release_id, diff_ids=[release_id], removed=[release_id] if on_disk else [])


def ensure_pruned(rr, keep=5, prune_failed=False, release_id=None, check_mode=False):
    if release_id is not None:
        validate_release_id(release_id)
    call = _Call(rr)
    protect = (release_id,) if release_id else ()
    remove, kept = plan_prune(call.ledger, keep, call.current, protect=protect, prune_failed=prune_failed,
                              exists=call.exists)
    leftovers = rr.leftover_temp_dirs()
    if not check_mode:
        for rid in remove:
            rr.remove_release_dir(rid)
        for name in leftovers:
            shutil.rmtree(os.path.join(rr.releases_dir, name), ignore_errors=True)
    for rid in remove:
        _forget(call.ledger, rid, call.t)
    changed = bool(remove or leftovers)
    if remove:
        call.save(check_mode)
    res = call.result(changed, release_id, removed=remove, kept=kept, cleaned=leftovers)
    res['diff'] = {
        'before': {'current': call.previous, 'releases': sorted(call.before_ledger['releases'])},
        'after': {'current': call.current, 'releases': sorted(call.ledger['releases'])},
    }
    return res
