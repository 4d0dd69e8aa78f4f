# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Snapshot store: capture paths (content, mode, owner, symlinks, absence) and restore them exactly.

Layout of a store directory:
  objects/ab/abcdef...   file contents by sha256, shared by every snapshot (written atomically, read-only)
  manifests/<id>.json    one snapshot: roots, entries, labels, and a sha256 over its own canonical JSON
  statcache.json         path -> (size, mtime_ns, inode, ctime_ns, dev, sha256) so unchanged files are not re-read
  tmp/                   partial objects; anything left here by a crash is discarded on the next write
  lock                   flock()ed by every writer
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import stat
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import (
    _crash_point, atomic_write_bytes, discard, discarded_on_error, fsync_dir, makedirs_durable, read_json,
    write_json_atomic,
)

FORMAT = 1
CHUNK = 1024 * 1024
# A file whose ctime is this close to the moment it was read may still change within the same timestamp tick
# without its stat changing ("racy git"): such entries are re-checked before they enter the stat cache.
RACY_NS = 50 * 1000 * 1000
# Up to this many new objects are flushed one by one; a larger batch is flushed with a single sync() (much faster).
SYNC_EACH = 64
ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')
SHA_RE = re.compile(r'^[0-9a-f]{64}$')
TYPES = ('file', 'dir', 'link', 'absent')
DRIFT_KINDS = ('content', 'mode', 'owner', 'group', 'type', 'target', 'missing', 'unexpected')
O_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
O_CLOEXEC = getattr(os, 'O_CLOEXEC', 0)


class SnapshotError(FailsafeError):
    """A failure with a message naming the path and the reason, plus structured details for fail_json."""


def new_snapshot_id():
    return '%s-%s' % (time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()), os.urandom(4).hex())


def check_id(snapshot_id):
    if not isinstance(snapshot_id, str) or not ID_RE.match(snapshot_id):
        raise SnapshotError('invalid snapshot id %r: use letters, digits, ".", "_" and "-" (at most 128), '
                            'starting with a letter or digit' % (snapshot_id,), id=snapshot_id)
    return snapshot_id


def iso_utc(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


def canonical_json(data):
    return json.dumps(data, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode('utf-8')


def _signed_part(manifest):
    """The manifest without its own checksum field, and that part's canonical JSON (what the checksum covers)."""
    body = dict((k, v) for k, v in manifest.items() if k != 'checksum')
    return body, canonical_json(body)


def manifest_checksum(manifest):
    """sha256 over the canonical JSON of the manifest without its own checksum field."""
    return hashlib.sha256(_signed_part(manifest)[1]).hexdigest()


def sign_manifest(manifest):
    manifest['checksum'] = manifest_checksum(manifest)
    return manifest


def signed_manifest_bytes(manifest):
    """Sign manifest (set its checksum) and return the content of its file, the canonical JSON of the signed
    manifest, encoding the (large) entry list once instead of twice."""
    body, raw = _signed_part(manifest)
    manifest['checksum'] = hashlib.sha256(raw).hexdigest()
    if body and min(body) > 'checksum':
        # "checksum" sorts before every other key: the signed form is the body with it put in front
        return b'{"checksum":"' + manifest['checksum'].encode('ascii') + b'",' + raw[1:] + b'\n'
    return canonical_json(manifest) + b'\n'


def _is_under(path, root):
    return path == root or path.startswith(root.rstrip('/') + '/')


def _clean_abs(value):
    if not isinstance(value, str):
        return False
    return value.startswith('/') and '\x00' not in value and os.path.normpath(value) == value and not value.startswith('//')


def validate_manifest(manifest, where):
    """Refuse a manifest that was altered or that reaches outside its own roots. Returns the manifest."""
    def bad(why, **details):
        raise SnapshotError('refusing snapshot manifest %s: %s' % (where, why), manifest=where, **details)

    if not isinstance(manifest, dict):
        bad('not a JSON object')
    if manifest.get('checksum') != manifest_checksum(manifest):
        bad('checksum mismatch (the manifest was modified or corrupted)')
    if manifest.get('format') != FORMAT:
        bad('unknown format %r' % (manifest.get('format'),))
    roots = manifest.get('roots')
    if not isinstance(roots, list) or not roots:
        bad('no roots')
    for root in roots:
        if not _clean_abs(root) or root == '/':
            bad('root %r is not a normalized absolute path below /' % (root,), path=root)
    entries = manifest.get('entries')
    if not isinstance(entries, list):
        bad('no entries')
    types = {}
    for entry in entries:
        if not isinstance(entry, dict):
            bad('entry is not an object')
        path = entry.get('path')
        if not _clean_abs(path):
            bad('entry path %r is not a normalized absolute path (no "..", no "//")' % (path,), path=path)
        owners = [r for r in roots if _is_under(path, r)]
        if not owners:
            bad('entry %s lies outside the captured roots %s' % (path, ', '.join(roots)), path=path)
        kind = entry.get('type')
        if kind not in TYPES:
            bad('entry %s has unknown type %r' % (path, kind), path=path)
        if path in types:
            bad('entry %s appears twice' % path, path=path)
        types[path] = kind
        if kind == 'absent':
            if path not in roots:
                bad('entry %s: only a root can be recorded as absent' % path, path=path)
            continue
        for key in ('uid', 'gid'):
            if not isinstance(entry.get(key), int) or entry[key] < 0:
                bad('entry %s has an invalid %s' % (path, key), path=path)
        if kind == 'link':
            if not isinstance(entry.get('target'), str) or '\x00' in entry['target'] or not entry['target']:
                bad('entry %s has an invalid link target' % path, path=path)
            continue
        if not isinstance(entry.get('mode'), int) or not 0 <= entry['mode'] <= 0o7777:
            bad('entry %s has an invalid mode' % path, path=path)
        if kind == 'file':
            if not isinstance(entry.get('sha256'), str) or not SHA_RE.match(entry['sha256']):
                bad('entry %s has an invalid sha256' % path, path=path)
            if not isinstance(entry.get('size'), int) or entry['size'] < 0:
                bad('entry %s has an invalid size' % path, path=path)
    for path, kind in types.items():
        if path in roots:
            continue
        parent = os.path.dirname(path)
        if types.get(parent) != 'dir':
            bad('entry %s: its parent %s is not recorded as a directory (restoring through it could escape '
                'the root)' % (path, parent), path=path)
    return manifest


def _excluded(rel, patterns):
    name = rel.rsplit('/', 1)[-1]
    for pattern in patterns:
        if '/' in pattern.strip('/'):
            if fnmatch.fnmatchcase(rel, pattern.strip('/')):
                return True
        elif fnmatch.fnmatchcase(name, pattern.strip('/')) or fnmatch.fnmatchcase(rel, pattern.strip('/')):
            return True
    return False


def _type_of(st):
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return 'file'
    if stat.S_ISDIR(mode):
        return 'dir'
    if stat.S_ISLNK(mode):
        return 'link'
    return 'special'


def walk(root, exclude):
    """Return {path: lstat} for root and everything below it; symlinks are never followed.

    A missing root gives {}. Excluded paths (and everything under an excluded directory) are left out.
    """
    found = {}
    try:
        st = os.lstat(root)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return found
        raise SnapshotError('cannot read %s: %s' % (root, e.strerror), path=root)
    found[root] = st
    if not stat.S_ISDIR(st.st_mode):
        return found
    prefix_len = len(root.rstrip('/')) + 1
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                children = list(it)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue  # vanished while walking: reported as missing by the caller
            raise SnapshotError('cannot list directory %s: %s' % (directory, e.strerror), path=directory)
        for child in children:
            path = child.path
            if exclude and _excluded(path[prefix_len:], exclude):
                continue
            try:
                cst = child.stat(follow_symlinks=False)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    continue
                raise SnapshotError('cannot stat %s: %s' % (path, e.strerror), path=path)
            found[path] = cst
            if stat.S_ISDIR(cst.st_mode):
                stack.append(path)
    return found


def _same_content_stat(a, b):
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino, a.st_dev) == \
        (b.st_size, b.st_mtime_ns, b.st_ctime_ns, b.st_ino, b.st_dev)


def _writer(create):
    """Run a store method under the store's writer lock (not in check mode, and not on a store that does not exist
    when the method only removes things)."""
    def decorate(method):
        def wrapper(self, *args, **kwargs):
            take = (not kwargs.get('check_mode') and self._lock_fd is None and (create or self.exists()))
            if take:
                self.lock()
            try:
                return method(self, *args, **kwargs)
            finally:
                if take:
                    self.unlock()
        wrapper.__name__ = method.__name__
        wrapper.__doc__ = method.__doc__
        return wrapper
    return decorate


class SnapshotStore(object):
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.objects = os.path.join(self.root, 'objects')
        self.manifests = os.path.join(self.root, 'manifests')
        self.tmp = os.path.join(self.root, 'tmp')
        self.cache_path = os.path.join(self.root, 'statcache.json')
        self._cache = None
        self._cache_dirty = False
        self._lock_fd = None
        self._object_dirs = set()
        self._pending = set()
        self.counters = {}
        self.reset_counters()
        self.warnings = []

    # ------------------------------------------------------------------ plumbing
    def reset_counters(self):
        self.counters = dict(hashed=0, rechecked=0, bytes_hashed=0, bytes_new=0, objects_new=0, cache_hits=0,
                             files=0, dirs=0, links=0)

    def exists(self):
        return os.path.isdir(self.manifests)

    def create(self):
        parent = os.path.dirname(self.root)
        if not os.path.isdir(parent):
            try:
                makedirs_durable(parent, 0o755)
            except OSError as e:
                raise SnapshotError('cannot create %s for the snapshot store: %s' % (parent, e.strerror), path=parent)
        for directory in (self.root, self.objects, self.manifests, self.tmp):
            try:
                os.mkdir(directory, 0o700)
                # its name durable in its parent: the manifests and objects flushed inside it depend on it
                fsync_dir(os.path.dirname(directory))
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise SnapshotError('cannot create snapshot store directory %s: %s' % (directory, e.strerror),
                                        path=directory)
                if not os.path.isdir(directory) or os.path.islink(directory):
                    raise SnapshotError('snapshot store path %s exists and is not a directory' % directory,
                                        path=directory)

    def lock(self):
        """Take the store's writer lock (blocks while another writer holds it)."""
        if self._lock_fd is None:
            self.create()
            fd = os.open(os.path.join(self.root, 'lock'), os.O_RDWR | os.O_CREAT | O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            self._clean_tmp()

    def unlock(self):
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _clean_tmp(self):
        try:
            names = os.listdir(self.tmp)
        except OSError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self.tmp, name))
            except OSError:
                pass

    def object_path(self, sha):
        return '%s/%s/%s' % (self.objects, sha[:2], sha)  # not os.path.join: called once per file

    def manifest_path(self, snapshot_id):
        return os.path.join(self.manifests, check_id(snapshot_id) + '.json')

    def _has_object(self, sha, size):
        try:
            return os.lstat(self.object_path(sha)).st_size == size
        except OSError:
            return False

    # ------------------------------------------------------------------ stat cache
    def _load_cache(self):
        if self._cache is None:
            try:
                data = read_json(self.cache_path, default={}) or {}
            except ValueError:
                data = {}  # a damaged cache only costs re-hashing
            entries = data.get('entries') if isinstance(data, dict) else None
            self._cache = entries if isinstance(entries, dict) else {}
        return self._cache

    def _cache_get(self, path, st):
        hit = self._load_cache().get(path)
        if isinstance(hit, list) and len(hit) == 6 and \
                hit[:5] == [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_dev]:
            return hit[5]
        return None

    def _cache_put(self, path, st, sha):
        self._load_cache()[path] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_dev, sha]
        self._cache_dirty = True

    def _cache_drop(self, path):
        if self._load_cache().pop(path, None) is not None:
            self._cache_dirty = True

    def _save_cache(self):
        if self._cache_dirty and self._cache is not None and self.exists():
            write_json_atomic(self.cache_path, {'format': FORMAT, 'entries': self._cache}, compact=True)
            self._cache_dirty = False

    # ------------------------------------------------------------------ reading files
    @staticmethod
    def _open_nofollow(path):
        try:
            return os.open(path, os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        except OSError as e:
            raise SnapshotError('cannot open %s: %s' % (path, e.strerror), path=path)

    def hash_file(self, path, counter='hashed'):
        """sha256 and stat of a regular file, read in 1 MiB chunks without following symlinks."""
        fd = self._open_nofollow(path)
        try:
            before = os.fstat(fd)
            digest = hashlib.sha256()
            size = 0
            while True:
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
            after = os.fstat(fd)
        except OSError as e:
            raise SnapshotError('cannot read %s: %s' % (path, e.strerror), path=path)
        finally:
            os.close(fd)
        self.counters[counter] += 1
        self.counters['bytes_hashed'] += size
        return digest.hexdigest(), before, _same_content_stat(before, after) and size == after.st_size

    def _new_object_dir(self, sha):
        directory = os.path.join(self.objects, sha[:2])
        if directory not in self._object_dirs:
            try:
                os.mkdir(directory, 0o700)
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise SnapshotError('cannot create %s: %s' % (directory, e.strerror), path=directory)
            self._object_dirs.add(directory)
        return directory

    def _write_tmp(self):
        name = os.path.join(self.tmp, 'obj-%s' % os.urandom(8).hex())
        return name, os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o400)

    def _commit_object(self, tmp_name, fd, sha):
        """Flush a complete temporary object and rename it to its content address (removing it on failure)."""
        with discarded_on_error(tmp_name):
            try:
                if self.counters['objects_new'] <= SYNC_EACH or not hasattr(os, 'sync'):
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_name, os.path.join(self._new_object_dir(sha), sha))

    def ingest(self, path, st, check_mode=False):
        """Store the content of regular file path (lstat st) and return (sha256, stat as read, size).

        The file is read exactly once: content up to 1 MiB stays in memory and is written only if its object is
        new; a larger file is streamed into a temporary object while it is hashed. Memory stays under 2 MiB.
        """
        for dummy in range(3):
            got = self._ingest_once(path, st, check_mode)
            if got is not None:
                return got
        raise SnapshotError('%s kept changing while being snapshotted (tried 3 times)' % path, path=path)

    def _ingest_once(self, path, st, check_mode):
        fd = self._open_nofollow(path)
        tmp = [None, None]  # name, fd of the temporary object

        def discard():
            if tmp[1] is not None:
                os.close(tmp[1])
                os.unlink(tmp[0])
                tmp[0] = tmp[1] = None

        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or before.st_ino != st.st_ino or before.st_dev != st.st_dev:
                raise SnapshotError('%s changed type while being snapshotted' % path, path=path)
            digest = hashlib.sha256()
            size = 0
            buffered = []
            while True:
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                if check_mode:
                    continue
                if tmp[1] is None and size <= CHUNK:
                    buffered.append(chunk)
                    continue
                if tmp[1] is None:
                    tmp[0], tmp[1] = self._write_tmp()
                    for piece in buffered:
                        _write_all(tmp[1], piece)
                    buffered = []
                _write_all(tmp[1], chunk)
            after = os.fstat(fd)
        except OSError as e:
            discard()
            raise SnapshotError('cannot snapshot %s: %s' % (path, e.strerror), path=path)
        except BaseException:
            discard()
            raise
        finally:
            os.close(fd)
        if not (_same_content_stat(before, after) and size == after.st_size):
            discard()
            return None  # modified while being read: read it again
        sha = digest.hexdigest()
        self.counters['hashed'] += 1
        self.counters['bytes_hashed'] += size
        if sha in self._pending or self._has_object(sha, size):
            discard()
            return sha, after, size
        self._pending.add(sha)
        self.counters['bytes_new'] += size
        self.counters['objects_new'] += 1
        if check_mode:
            return sha, after, size
        try:
            if tmp[1] is None:
                tmp[0], tmp[1] = self._write_tmp()
                for piece in buffered:
                    _write_all(tmp[1], piece)
            tmp_name, tmp_fd = tmp
            tmp[0] = tmp[1] = None
            self._commit_object(tmp_name, tmp_fd, sha)
        except OSError as e:
            discard()
            raise SnapshotError('cannot store the content of %s in %s: %s' % (path, self.root, e.strerror),
                                path=path)
        return sha, after, size

    # ------------------------------------------------------------------ manifests
    def list_ids(self):
        try:
            names = os.listdir(self.manifests)
        except OSError:
            return []
        return sorted(n[:-5] for n in names if n.endswith('.json') and ID_RE.match(n[:-5]))

    def load_manifest(self, snapshot_id):
        path = self.manifest_path(snapshot_id)
        try:
            manifest = read_json(path)
        except ValueError as e:
            raise SnapshotError('refusing snapshot manifest %s: %s' % (path, e), manifest=path)
        if manifest is None:
            raise SnapshotError('snapshot %s not found in store %s (no %s)' % (snapshot_id, self.root, path),
                                manifest=path, id=snapshot_id)
        validate_manifest(manifest, path)
        if manifest.get('id') != snapshot_id:
            raise SnapshotError('refusing snapshot manifest %s: it records id %r' % (path, manifest.get('id')),
                                manifest=path)
        return manifest

    def summaries(self):
        """Every snapshot, newest first: {id, created, created_iso, labels, entries, roots}."""
        out = []
        for snapshot_id in self.list_ids():
            path = self.manifest_path(snapshot_id)
            try:
                manifest = read_json(path) or {}
            except ValueError:
                manifest = {}
            ok = isinstance(manifest, dict) and manifest.get('checksum') == manifest_checksum(manifest)
            if not ok:
                self.warnings.append('snapshot manifest %s is unreadable or fails its checksum' % path)
                manifest = {}
            out.append(dict(id=snapshot_id, created=manifest.get('created'), created_iso=manifest.get('created_iso'),
                            labels=manifest.get('labels') or {}, entries=len(manifest.get('entries') or []),
                            roots=manifest.get('roots') or [], valid=ok))
        out.sort(key=lambda s: (s['created'] or 0, s['id']), reverse=True)
        return out

    # ------------------------------------------------------------------ present
    @staticmethod
    def resolve_roots(paths):
        """Absolute, normalized roots whose parent directories contain no symlinks; nested roots dropped."""
        roots = []
        for path in paths:
            if not isinstance(path, str) or not path.startswith('/'):
                raise SnapshotError('path %r must be absolute' % (path,), path=path)
            norm = os.path.normpath(path)
            if norm.startswith('//'):
                norm = '/' + norm.lstrip('/')
            if norm == '/':
                raise SnapshotError('refusing to snapshot the filesystem root /', path=path)
            root = os.path.join(os.path.realpath(os.path.dirname(norm)), os.path.basename(norm))
            if root not in roots:
                roots.append(root)
        roots.sort()
        kept = []
        for root in roots:
            if not any(_is_under(root, k) for k in kept):
                kept.append(root)
        return kept

    def _refuse_store_overlap(self, roots):
        store = os.path.realpath(self.root)
        for root in roots:
            if _is_under(store, root) or _is_under(root, store):
                raise SnapshotError('refusing to use %s: it overlaps the snapshot store %s (a restore would '
                                    'destroy the store)' % (root, self.root), path=root)

    @_writer(create=True)
    def capture(self, paths, exclude=None, labels=None, snapshot_id=None, check_mode=False):
        """Take a snapshot. Returns dict(id, manifest, entries, changed, existed, stats...)."""
        exclude = list(exclude or [])
        labels = dict((str(k), str(v)) for k, v in (labels or {}).items())
        roots = self.resolve_roots(paths)
        self._refuse_store_overlap(roots)
        if snapshot_id is None:
            same = self._unchanged_snapshot(paths, exclude, labels)
            if same is not None:
                return same
            snapshot_id = new_snapshot_id()
        check_id(snapshot_id)
        manifest_file = self.manifest_path(snapshot_id)
        if os.path.exists(manifest_file):
            existing = self.load_manifest(snapshot_id)
            if existing.get('paths') != list(paths) or existing.get('exclude', []) != exclude:
                raise SnapshotError('snapshot %s already exists with other paths (%s): choose another id or '
                                    'remove it first' % (snapshot_id, ', '.join(existing.get('paths') or [])),
                                    manifest=manifest_file, id=snapshot_id)
            return dict(id=snapshot_id, manifest=manifest_file, entries=len(existing['entries']), changed=False,
                        roots=existing['roots'], existed=True)
        self._pending = set()
        entries = []
        racy = []
        for root in roots:
            found = walk(root, exclude)
            if not found:
                entries.append(dict(path=root, type='absent'))
                continue
            for path in sorted(found):
                st = found[path]
                kind = _type_of(st)
                if kind == 'special':
                    self.warnings.append('%s is a socket, fifo or device: not captured' % path)
                    continue
                entry = dict(path=path, type=kind, uid=st.st_uid, gid=st.st_gid)
                if kind == 'link':
                    try:
                        entry['target'] = os.readlink(path)
                    except OSError as e:
                        raise SnapshotError('cannot read symlink %s: %s' % (path, e.strerror), path=path)
                    self.counters['links'] += 1
                elif kind == 'dir':
                    entry['mode'] = stat.S_IMODE(st.st_mode)
                    self.counters['dirs'] += 1
                else:
                    entry['mode'] = stat.S_IMODE(st.st_mode)
                    self.counters['files'] += 1
                    sha = self._cache_get(path, st)
                    if sha is not None and (self._has_object(sha, st.st_size) or sha in self._pending):
                        self.counters['cache_hits'] += 1
                        size = st.st_size
                    else:
                        sha, st, size = self.ingest(path, st, check_mode=check_mode)
                        entry['uid'], entry['gid'], entry['mode'] = st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
                        if time.time_ns() - st.st_ctime_ns < RACY_NS:
                            racy.append((path, st, sha))
                        elif not check_mode:
                            self._cache_put(path, st, sha)
                    entry['sha256'] = sha
                    entry['size'] = size
                entries.append(entry)
                _crash_point('snapshot.entry-captured')
        if racy and not check_mode:
            self._settle(racy)
        created = time.time()
        manifest = dict(format=FORMAT, id=snapshot_id, created=created, created_iso=iso_utc(created),
                        roots=roots, paths=list(paths), exclude=exclude, labels=labels, entries=entries,
                        stats=dict(files=self.counters['files'], dirs=self.counters['dirs'],
                                   links=self.counters['links'],
                                   bytes=sum(e.get('size', 0) for e in entries)))
        content = signed_manifest_bytes(manifest)
        if not check_mode:
            if self.counters['objects_new']:
                if self.counters['objects_new'] > SYNC_EACH and hasattr(os, 'sync'):
                    os.sync()  # one flush for a large batch of new objects, before the manifest refers to them
                for directory in self._object_dirs:
                    fsync_dir(directory)
                fsync_dir(self.objects)
            atomic_write_bytes(manifest_file, content, mode=0o600)
            self._save_cache()
        return dict(id=snapshot_id, manifest=manifest_file, entries=len(entries), changed=True, roots=roots,
                    existed=False)

    def _unchanged_snapshot(self, paths, exclude, labels):
        """The newest snapshot of the same paths, exclusions and labels, when the live paths still match it exactly.

        Taking a snapshot again before anything changed (a step run twice in one run) then reuses that snapshot
        instead of writing a second, identical one: the host is left as it was and the task reports no change.
        Labels carry the run and release, so another run still gets its own snapshot.
        """
        for summary in self.summaries():
            if not summary['valid'] or summary['labels'] != labels:
                continue
            manifest = self.load_manifest(summary['id'])
            if manifest.get('paths') != list(paths) or (manifest.get('exclude') or []) != exclude:
                continue
            drift, dummy = self.drift(manifest)
            if drift:
                return None
            return dict(id=manifest['id'], manifest=self.manifest_path(manifest['id']),
                        entries=len(manifest['entries']), changed=False, roots=manifest['roots'], existed=True)
        return None

    def _settle(self, racy):
        """Let the timestamp tick pass, then cache only the recently changed files that are provably unchanged."""
        newest = max(st.st_ctime_ns for dummy, st, dummy2 in racy)
        wait = (newest + RACY_NS - time.time_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)
        for path, st, sha in racy:
            try:
                now = os.lstat(path)
            except OSError:
                continue
            if not _same_content_stat(st, now):
                continue
            again, seen, stable = self.hash_file(path, counter='rechecked')
            if stable and again == sha and _same_content_stat(seen, st):
                self._cache_put(path, st, sha)

    # ------------------------------------------------------------------ drift
    def drift(self, manifest, full=False):
        """Compare the live filesystem with a manifest.

        Returns (drift, current) where drift is a list of {path, kind} and current the walked lstat map.
        full=True re-reads every file; otherwise a file whose stat matches the stat cache is not re-read.
        """
        exclude = manifest.get('exclude') or []
        wanted = dict((e['path'], e) for e in manifest['entries'])
        current = {}
        for root in manifest['roots']:
            current.update(walk(root, exclude))
        out = []
        for path in sorted(wanted):
            entry = wanted[path]
            st = current.get(path)
            if entry['type'] == 'absent':
                if st is not None:
                    out.append(dict(path=path, kind='unexpected'))
                continue
            if st is None:
                out.append(dict(path=path, kind='missing'))
                continue
            kind = _type_of(st)
            if kind != entry['type']:
                out.append(dict(path=path, kind='type'))
                continue
            if kind == 'link':
                try:
                    target = os.readlink(path)
                except OSError:
                    target = None
                if target != entry['target']:
                    out.append(dict(path=path, kind='target'))
            else:
                if kind == 'file' and not self._content_matches(path, st, entry, full):
                    out.append(dict(path=path, kind='content'))
                if stat.S_IMODE(st.st_mode) != entry['mode']:
                    out.append(dict(path=path, kind='mode'))
            if st.st_uid != entry['uid']:
                out.append(dict(path=path, kind='owner'))
            if st.st_gid != entry['gid']:
                out.append(dict(path=path, kind='group'))
        for path in sorted(current):
            if path in wanted or _type_of(current[path]) == 'special':
                continue
            parent = os.path.dirname(path)
            if parent in wanted and wanted[parent]['type'] == 'dir' and _type_of(current[parent]) == 'dir':
                out.append(dict(path=path, kind='unexpected'))
        return out, current

    def _content_matches(self, path, st, entry, full):
        if st.st_size != entry['size']:
            return False
        if not full:
            cached = self._cache_get(path, st)
            if cached is not None:
                self.counters['cache_hits'] += 1
                return cached == entry['sha256']
        sha, seen, stable = self.hash_file(path)
        if stable and _same_content_stat(seen, st) and time.time_ns() - st.st_ctime_ns >= RACY_NS:
            self._cache_put(path, st, sha)
        return sha == entry['sha256']

    # ------------------------------------------------------------------ restore
    @staticmethod
    def _check_parent(path, roots):
        """Refuse to act on path when any directory above it is a symlink (it could lead outside the roots)."""
        parent = os.path.dirname(path)
        if os.path.realpath(parent) != parent:
            raise SnapshotError('refusing to restore %s: its parent %s is (or passes through) a symlink, which '
                                'could lead outside the captured roots' % (path, parent), path=path)
        if not any(_is_under(path, r) for r in roots):
            raise SnapshotError('refusing to restore %s: outside the captured roots' % path, path=path)

    @staticmethod
    def _remove(path):
        try:
            st = os.lstat(path)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return
            raise
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _write_file(self, entry):
        path = entry['path']
        sha = entry['sha256']
        directory, base = os.path.split(path)
        obj = self.object_path(sha)
        try:
            src = os.open(obj, os.O_RDONLY | O_CLOEXEC)
        except OSError as e:
            raise SnapshotError('cannot restore %s: content object %s is missing from the store (%s)'
                                % (path, obj, e.strerror), path=path, object=obj)
        tmp = os.path.join(directory, '.%s.fsrestore-%s' % (base[:200], os.urandom(4).hex()))
        try:
            dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        except OSError as e:
            os.close(src)
            raise SnapshotError('cannot restore %s: cannot create %s: %s' % (path, tmp, e.strerror), path=path)
        try:
            digest = hashlib.sha256()
            while True:
                chunk = os.read(src, CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
            if digest.hexdigest() != sha:
                raise SnapshotError('cannot restore %s: content object %s is corrupt (sha256 mismatch)'
                                    % (path, obj), path=path, object=obj)
            st = os.fstat(dst)
            if (st.st_uid, st.st_gid) != (entry['uid'], entry['gid']):
                os.fchown(dst, entry['uid'], entry['gid'])
            os.fchmod(dst, entry['mode'])
            os.fsync(dst)
            os.close(dst)
            dst = None
            _crash_point('restore.file-tmp-written')
            os.replace(tmp, path)
        except BaseException:
            if dst is not None:
                os.close(dst)
            discard(tmp)
            raise
        finally:
            os.close(src)

    def _write_link(self, entry):
        path = entry['path']
        directory, base = os.path.split(path)
        tmp = os.path.join(directory, '.%s.fsrestore-%s' % (base[:200], os.urandom(4).hex()))
        os.symlink(entry['target'], tmp)
        with discarded_on_error(tmp):
            os.lchown(tmp, entry['uid'], entry['gid'])
            _crash_point('restore.link-tmp-created')
            os.replace(tmp, path)

    @staticmethod
    def _remove_stale_temps(root):
        """Remove temporaries a restore killed mid-way left beside a root (inside a root they count as drift)."""
        parent, base = os.path.split(root)
        pattern = re.compile(r'^\.%s\.fsrestore-[0-9a-f]{8}$' % re.escape(base[:200]))
        try:
            names = os.listdir(parent)
        except OSError:
            return
        for name in names:
            path = os.path.join(parent, name)
            if pattern.match(name) and (os.path.islink(path) or not os.path.isdir(path)):
                os.unlink(path)

    @staticmethod
    def _set_meta(entry, st):
        path = entry['path']
        if entry['type'] == 'link':
            if (st.st_uid, st.st_gid) != (entry['uid'], entry['gid']):
                os.lchown(path, entry['uid'], entry['gid'])
            return
        if (st.st_uid, st.st_gid) != (entry['uid'], entry['gid']):
            os.lchown(path, entry['uid'], entry['gid'])
        if stat.S_IMODE(st.st_mode) != entry['mode'] or (st.st_uid, st.st_gid) != (entry['uid'], entry['gid']):
            os.chmod(path, entry['mode'])  # after chown, which clears setuid/setgid bits

    @_writer(create=False)
    def restore(self, snapshot_id, verify=True, check_mode=False):
        """Make every root of the snapshot exactly what it was. Idempotent; safe to re-run after a crash."""
        manifest = self.load_manifest(snapshot_id)
        manifest_file = self.manifest_path(snapshot_id)
        roots = manifest['roots']
        self._refuse_store_overlap(roots)
        for root in roots:
            parent = os.path.dirname(root)
            real = os.path.realpath(parent)
            if real != parent:
                raise SnapshotError('refusing to restore %s: its parent %s now resolves to %s through a symlink'
                                    % (root, parent, real), path=root)
        found, dummy = self.drift(manifest)
        result = dict(id=snapshot_id, manifest=manifest_file, entries=len(manifest['entries']), drift=found,
                      restored=sorted(set(d['path'] for d in found)), changed=bool(found))
        if check_mode:
            return result
        for root in roots:
            self._remove_stale_temps(root)
        wanted = dict((e['path'], e) for e in manifest['entries'])
        kinds = {}
        for d in found:
            kinds.setdefault(d['path'], set()).add(d['kind'])
        removals = [p for p, k in kinds.items() if 'unexpected' in k or 'type' in k]
        touched_dirs = set()
        try:
            # 1. remove what must not be there (deepest first), including things of the wrong type
            for path in sorted(removals, reverse=True):
                self._check_parent(path, roots)
                self._remove(path)
                _crash_point('restore.entry-removed')
                self._cache_drop(path)
                touched_dirs.add(os.path.dirname(path))
            _crash_point('restore.removed')
            # 2. recreate missing or wrong content, parents before children
            for path in sorted(kinds):
                entry = wanted.get(path)
                k = kinds[path]
                if entry is None or entry['type'] == 'absent':
                    continue
                if not k & set(('missing', 'type', 'content', 'target')):
                    continue
                self._check_parent(path, roots)
                parent = os.path.dirname(path)
                if path in roots and not os.path.isdir(parent):
                    os.makedirs(parent, 0o755)
                if entry['type'] == 'dir':
                    os.mkdir(path, 0o700)
                    _crash_point('restore.dir-created')
                elif entry['type'] == 'file':
                    self._write_file(entry)
                    self._cache_drop(path)
                else:
                    self._write_link(entry)
                touched_dirs.add(parent)
                _crash_point('restore.entry-restored')
            # 3. owner and mode, deepest first so a read-only directory is closed after its children are written
            for path in sorted(kinds, reverse=True):
                entry = wanted.get(path)
                if entry is None or entry['type'] == 'absent':
                    continue
                self._check_parent(path, roots)
                self._set_meta(entry, os.lstat(path))
                _crash_point('restore.entry-metadata')
            _crash_point('restore.metadata-restored')
            for directory in sorted(touched_dirs):
                if os.path.isdir(directory):
                    fsync_dir(directory)
        except OSError as e:
            where = getattr(e, 'filename', None) or '?'
            raise SnapshotError('restore of snapshot %s failed at %s: %s' % (snapshot_id, where, e.strerror),
                                path=where, id=snapshot_id, restored=result['restored'])
        finally:
            self._save_cache()
        if verify:
            remaining, dummy = self.drift(manifest, full=True)
            self._save_cache()
            if remaining:
                raise SnapshotError(
                    'restore of snapshot %s did not take: %d difference(s) remain: %s'
                    % (snapshot_id, len(remaining), _describe(remaining)),
                    drift=remaining, restored=result['restored'], id=snapshot_id, manifest=manifest_file)
        return result

    def verify(self, snapshot_id):
        """Read every captured path and compare it with the snapshot. Writes nothing."""
        manifest = self.load_manifest(snapshot_id)
        found, dummy = self.drift(manifest, full=True)
        return dict(id=snapshot_id, manifest=self.manifest_path(snapshot_id), entries=len(manifest['entries']),
                    drift=found, changed=False)

    # ------------------------------------------------------------------ removal
    @_writer(create=False)
    def remove(self, ids, check_mode=False):
        """Remove manifests, then garbage-collect objects no remaining manifest references."""
        ids = [i for i in ids if os.path.exists(self.manifest_path(i))]
        if not check_mode and ids:
            for snapshot_id in ids:
                os.unlink(self.manifest_path(snapshot_id))
            fsync_dir(self.manifests)
        gc = self.gc(exclude_ids=ids, check_mode=check_mode) if ids else dict(objects_removed=0, bytes_freed=0)
        return dict(removed=sorted(ids), changed=bool(ids), **gc)

    @_writer(create=False)
    def prune(self, keep, protect=None, check_mode=False):
        protect = set(protect or [])
        ordered = self.summaries()
        doomed = [s['id'] for s in ordered[max(keep, 0):] if s['id'] not in protect]
        result = self.remove(doomed, check_mode=check_mode)
        result['kept'] = [s['id'] for s in ordered if s['id'] not in doomed]
        return result

    def gc(self, exclude_ids=(), check_mode=False):
        """Delete objects no remaining manifest references; skipped (with a warning) if a manifest is unreadable."""
        referenced = set()
        for snapshot_id in self.list_ids():
            if snapshot_id in exclude_ids:
                continue
            try:
                manifest = self.load_manifest(snapshot_id)
            except SnapshotError as e:
                self.warnings.append('garbage collection skipped: %s' % e.msg)
                return dict(objects_removed=0, bytes_freed=0)
            referenced.update(e['sha256'] for e in manifest['entries'] if e['type'] == 'file')
        removed = freed = 0
        try:
            subdirs = os.listdir(self.objects)
        except OSError:
            subdirs = []
        for sub in subdirs:
            directory = os.path.join(self.objects, sub)
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            gone = False
            for name in names:
                if name in referenced:
                    continue
                path = os.path.join(directory, name)
                try:
                    freed += os.lstat(path).st_size
                    if not check_mode:
                        os.unlink(path)
                        gone = True
                    removed += 1
                except OSError:
                    pass
            if gone:
                fsync_dir(directory)
        if removed and not check_mode:
            cache = self._load_cache()
            for path in [p for p, v in cache.items() if not (isinstance(v, list) and v and v[-1] in referenced)]:
                self._cache_drop(path)
            self._save_cache()
        return dict(objects_removed=removed, bytes_freed=freed)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _describe(drift, limit=20):
    text = ', '.join('%s (%s)' % (d['path'], d['kind']) for d in drift[:limit])
    if len(drift) > limit:
        text += ', ... and %d more' % (len(drift) - limit)
    return text


def describe_drift(drift, limit=20):
    return _describe(drift, limit)
