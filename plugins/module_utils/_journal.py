# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The per-host deploy lock and transaction journal.

Layout under a state directory, per deployment name::

    <path>/<name>/lock.json      who holds the deploy lock, until when
    <path>/<name>/journal.json   the open transaction, or the last one once closed
    <path>/<name>/history.jsonl  every closed transaction, one JSON object per line

lock.json and journal.json are replaced atomically (temp file, fsync, rename, fsync dir); a fresh lock is created
with link(2) so that two runs racing for a free lock cannot both win. history.jsonl grows by one O_APPEND write per
closed transaction, fsynced; a reader skips a torn last line.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import binascii
import copy
import errno
import getpass
import json
import os
import re
import socket
import tempfile
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import (
    _crash_point,
    dumps_json,
    fsync_dir,
    makedirs_durable,
    read_json,
    write_json_atomic,
)

NAME_RE = re.compile(r'^[A-Za-z0-9._-]+$')
CLOSED = ('committed', 'rolled_back', 'rollback_failed')
FILE_MODE = 0o600
DIR_MODE = 0o700
HISTORY_TAIL = 5
_TAIL_BYTES = 256 * 1024

# The keys of failsafe_transaction, which the auto_rollback callback reads.
TRANSACTION_KEYS = ('txid', 'run_id', 'name', 'state_dir', 'release', 'previous_release', 'app_root', 'status',
                    'build', 'forced', 'rca')


class JournalError(FailsafeError):
    """A refusal with a human message and structured details for fail_json."""


def _no_warn(msg):
    pass


def iso(t):
    if t is None:
        return None
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))


def new_txid(t=None):
    """`<UTC yyyymmddTHHMMSSZ>-<8 hex>`, sortable by time."""
    t = time.time() if t is None else t
    return '%s-%s' % (time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(t)), binascii.hexlify(os.urandom(4)).decode())


def default_owner():
    """`<user>@<host>` of the process running the module."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError, ImportError):
        user = 'uid%d' % os.getuid()
    return '%s@%s' % (user, socket.gethostname())


def lock_expired(lock, now=None):
    if not lock:
        return False
    expires = lock.get('expires')
    if expires is None:
        return False
    return (time.time() if now is None else now) >= expires


def holder(lock):
    """The parts of a lock that say who holds it."""
    if not lock:
        return None
    return dict((k, lock.get(k)) for k in
                ('owner', 'controller', 'pid', 'run_id', 'acquired', 'acquired_iso', 'expires', 'expires_iso'))


def describe_holder(lock):
    def val(v):
        return 'unknown' if v is None or v == '' else v
    return '%s (controller %s, pid %s, run %s) since %s, expires %s' % (
        val(lock.get('owner')), val(lock.get('controller')), val(lock.get('pid')), val(lock.get('run_id')),
        val(lock.get('acquired_iso') or iso(lock.get('acquired'))),
        val(lock.get('expires_iso') or iso(lock.get('expires'))))


def _create_exclusive(path, data, mode=FILE_MODE):
    """Create path with the JSON data only if it does not exist yet, complete or not at all. Returns False when
    the path already exists."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.%s.new-' % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(dumps_json(data).encode('utf-8'))
            os.fchmod(f.fileno(), mode)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except OSError as e:
            if e.errno == errno.EEXIST:
                return False
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            # A file system without hard links: O_EXCL keeps the exclusivity, at the cost of a torn file on a crash.
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except OSError as e2:
                if e2.errno == errno.EEXIST:
                    return False
                raise
            with os.fdopen(out, 'wb') as f:
                f.write(dumps_json(data).encode('utf-8'))
                os.fsync(f.fileno())
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    fsync_dir(directory)
    return True


class DeployState:
    """The lock, journal and history of one deployment name under a state directory."""

    def __init__(self, path, name):
        if not isinstance(name, str) or not NAME_RE.match(name) or name in ('.', '..'):
            raise JournalError("invalid deployment name %r: use only letters, digits, '.', '_' and '-'" % (name,),
                               name=name)
        self.path = path
        self.name = name
        self.dir = os.path.join(path, name)
        self.lock_path = os.path.join(self.dir, 'lock.json')
        self.journal_path = os.path.join(self.dir, 'journal.json')
        self.history_path = os.path.join(self.dir, 'history.jsonl')

    def _read(self, path):
        try:
            data = read_json(path, default=None)
        except ValueError as e:
            raise JournalError(str(e), path=path)
        if data is not None and not isinstance(data, dict):
            raise JournalError('%s does not hold a JSON object' % path, path=path)
        return data

    def read_lock(self):
        return self._read(self.lock_path)

    def read_journal(self):
        return self._read(self.journal_path)

    def _ensure_dir(self):
        if not os.path.isdir(self.dir):
            # durable in its parent, or a power cut loses the journal with its directory
            makedirs_durable(self.dir, DIR_MODE)

    def create_lock(self, lock):
        self._ensure_dir()
        return _create_exclusive(self.lock_path, lock)

    def write_lock(self, lock):
        self._ensure_dir()
        write_json_atomic(self.lock_path, lock, mode=FILE_MODE)

    def remove_lock(self):
        try:
            os.unlink(self.lock_path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            return False
        fsync_dir(self.dir)
        return True

    def write_journal(self, journal):
        self._ensure_dir()
        write_json_atomic(self.journal_path, journal, mode=FILE_MODE)

    def history_tail(self, count=HISTORY_TAIL):
        """The last `count` closed transactions (oldest first). Unparseable lines (a torn write) are skipped."""
        try:
            with open(self.history_path, 'rb') as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - _TAIL_BYTES))
                raw = f.read()
        except (IOError, OSError) as e:
            if e.errno == errno.ENOENT:
                return []
            raise
        lines = raw.split(b'\n')
        if size > _TAIL_BYTES:
            lines = lines[1:]  # the first one is probably cut
        records = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line.decode('utf-8'))
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(record, dict):
                records.append(record)
        return records[-count:] if count else records

    def append_history(self, record):
        """Append one closed transaction, unless its latest record there already has this status (a retry after a
        crash between the history append and the journal update)."""
        latest = None
        for old in self.history_tail(50):
            if old.get('txid') == record.get('txid'):
                latest = old
        if latest is not None and latest.get('status') == record.get('status'):
            return False
        self._ensure_dir()
        line = json.dumps(record, sort_keys=True, separators=(',', ':'), ensure_ascii=False) + '\n'
        created = not os.path.exists(self.history_path)
        fd = os.open(self.history_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b'\n':
                line = '\n' + line  # the previous writer died mid-line: start a fresh one
            data = line.encode('utf-8')
            while data:
                written = os.write(fd, data)
                data = data[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.dir)
        return True

    def transaction(self, journal, status=None):
        """failsafe_transaction: what the auto_rollback callback needs to find and undo this transaction."""
        view = dict((k, journal.get(k)) for k in TRANSACTION_KEYS)
        view['name'] = self.name
        view['state_dir'] = self.path
        if status is not None:
            view['status'] = status
        return view


def _summary(journal):
    if not journal:
        return None
    summary = {'txid': journal.get('txid'), 'run_id': journal.get('run_id'), 'status': journal.get('status'),
               'release': journal.get('release'), 'steps': [s.get('step') for s in journal.get('steps', [])]}
    if journal.get('would_open'):
        summary['would_open'] = journal['would_open']
    return summary


def _would_open(run_id, release, status, **fields):
    """Check mode, when no transaction is open yet: the one this run's (check mode) open would have opened. Its
    txid is only drawn when it really opens, so the plan says so in words, with the release it is for."""
    planned = {'txid': None, 'run_id': run_id, 'status': status, 'release': release,
               'would_open': 'a new transaction of run %s for release %s' % (
                   run_id, release if release else '(not given)')}
    planned.update(fields)
    return planned


def _diff(lock_before, lock_after, journal_before, journal_after):
    return {'before': {'lock': holder(lock_before), 'journal': _summary(journal_before)},
            'after': {'lock': holder(lock_after), 'journal': _summary(journal_after)}}


# --- lock ------------------------------------------------------------------------------------------------------

def ensure_locked(ds, run_id, owner, controller=None, pid=None, ttl=1800, force=False, check_mode=False,
                  warn=None, _retry=True):
    if ttl is None or ttl <= 0:
        raise JournalError('ttl must be a positive number of seconds, not %r' % (ttl,), ttl=ttl)
    if warn is None:
        warn = _no_warn
    t = time.time()
    lock = ds.read_lock()
    given = {'owner': owner, 'controller': controller, 'pid': pid}
    new = {'owner': owner or default_owner(), 'controller': controller, 'pid': pid, 'run_id': run_id, 'ttl': ttl,
           'acquired': t, 'acquired_iso': iso(t), 'expires': t + ttl, 'expires_iso': iso(t + ttl),
           'host': socket.gethostname()}
    result = {'changed': False, 'stale_takeover': False, 'previous_holder': None}
    if lock is None:
        if not check_mode and not ds.create_lock(new):
            if _retry:  # somebody took it between our read and our create: judge their lock instead
                return ensure_locked(ds, run_id, owner, controller, pid, ttl, force, check_mode, warn, _retry=False)
            raise JournalError("deploy lock for '%s' changed hands while taking it; try again" % ds.name,
                               lock_path=ds.lock_path)
        result['changed'] = True
    elif lock.get('run_id') == run_id:
        # Ours already: keep the acquisition time and what this call does not say, push the expiry. Not a change
        # anyone needs to see.
        for key in ('owner', 'controller', 'pid'):
            if given[key] is None:
                new[key] = lock.get(key)
        new['acquired'] = lock.get('acquired', t)
        new['acquired_iso'] = lock.get('acquired_iso', iso(new['acquired']))
        # A lease renewed at half-life: while the same holder keeps the same TTL and at least half of it is left,
        # the lock file is left as it is, so that a step that takes the lock again changes nothing on the host.
        same = all(lock.get(key) == new[key] for key in ('owner', 'controller', 'pid', 'ttl'))
        expires = lock.get('expires')
        if same and isinstance(expires, (int, float)) and expires - t >= ttl / 2.0:
            new = lock
        elif not check_mode:
            ds.write_lock(new)
    else:
        expired = lock_expired(lock, t)
        if not expired and not force:
            raise JournalError("deploy lock for '%s' is held by %s" % (ds.name, describe_holder(lock)),
                               holder=holder(lock), lock_path=ds.lock_path)
        if expired:
            warn("taking over the expired deploy lock for '%s' held by %s" % (ds.name, describe_holder(lock)))
            result['stale_takeover'] = True
        else:
            warn("breaking the deploy lock for '%s' held by %s (force=true)" % (ds.name, describe_holder(lock)))
        result['previous_holder'] = holder(lock)
        if not check_mode:
            ds.write_lock(new)
            mine = ds.read_lock()
            if not mine or mine.get('run_id') != run_id:
                raise JournalError("deploy lock for '%s' was taken by %s at the same time" % (
                    ds.name, describe_holder(mine or {})), holder=holder(mine), lock_path=ds.lock_path)
        result['changed'] = True
    result['lock'] = new
    result['diff'] = _diff(lock, new, None, None)
    return result


def ensure_unlocked(ds, run_id=None, force=False, check_mode=False, warn=None):
    if warn is None:
        warn = _no_warn
    lock = ds.read_lock()
    result = {'changed': False, 'lock': None, 'previous_holder': holder(lock)}
    if lock is None:
        result['diff'] = _diff(None, None, None, None)
        return result
    mine = run_id is not None and lock.get('run_id') == run_id
    if not mine:
        if force:
            warn("breaking the deploy lock for '%s' held by %s (force=true)" % (ds.name, describe_holder(lock)))
        elif lock_expired(lock):
            warn("removing the expired deploy lock for '%s' held by %s" % (ds.name, describe_holder(lock)))
        else:
            raise JournalError("deploy lock for '%s' is held by %s, not by run %s: not releasing it (force=true "
                               "breaks it)" % (ds.name, describe_holder(lock), run_id),
                               holder=holder(lock), lock_path=ds.lock_path)
    if not check_mode:
        ds.remove_lock()
    result['changed'] = True
    result['diff'] = _diff(lock, None, None, None)
    return result


# --- journal ---------------------------------------------------------------------------------------------------

def _planned(ds, result, journal, lock):
    """Check mode: report the transaction as it would be, marked planned so no one mistakes it for an open one."""
    result['failsafe_transaction'] = ds.transaction(journal, status='planned')
    result['journal'] = journal
    result['lock'] = lock
    return result


def ensure_open(ds, run_id, release=None, previous_release=None, app_root=None, snapshots=None, data=None,
                owner=None, controller=None, pid=None, force=False, check_mode=False, warn=None, layers=None,
                build=None, forced=None, rca=None):
    if warn is None:
        warn = _no_warn
    t = time.time()
    journal = ds.read_journal()
    lock = ds.read_lock()
    result = {'changed': False}
    if journal and journal.get('status') == 'open':
        if journal.get('run_id') == run_id:
            if journal.get('release') == release:
                result.update(failsafe_transaction=ds.transaction(journal), journal=journal, lock=lock,
                              diff=_diff(lock, lock, journal, journal))
                return result
            raise JournalError(
                "transaction %s of this run is already open for release %s: close it before opening one for %s"
                % (journal.get('txid'), journal.get('release'), release), open_transaction=journal)
        if not force:
            raise JournalError(
                "a previous transaction %s (run %s, release %s, opened %s by %s) is still open for '%s' and must be "
                "recovered (rolled back or committed) before a new one can open; force=true abandons it"
                % (journal.get('txid'), journal.get('run_id'), journal.get('release'), journal.get('opened_iso'),
                   journal.get('owner'), ds.name), open_transaction=journal)
        warn("abandoning the open transaction %s of run %s (force=true): it is recorded as abandoned in %s"
             % (journal.get('txid'), journal.get('run_id'), ds.history_path))
        if not check_mode:
            abandoned = dict(journal, status='abandoned', closed=t, closed_iso=iso(t))
            ds.append_history(abandoned)
    new = {
        'txid': new_txid(t), 'run_id': run_id, 'name': ds.name, 'status': 'open', 'release': release,
        'previous_release': previous_release, 'app_root': app_root, 'snapshots': dict(snapshots or {}),
        'steps': [], 'opened': t, 'opened_iso': iso(t), 'owner': owner or default_owner(), 'controller': controller,
        'pid': pid,
        'data': dict(data or {}), 'status_history': [{'status': 'open', 'time': t, 'iso': iso(t)}],
    }
    if build:
        # which build the transaction deploys (archive checksum, collection version, playbook commit)
        new['build'] = dict(build)
    if rca:
        # the root-cause note attached to this deploy (a path or URL): it reopens the redeploy gate
        new['rca'] = rca
    if forced:
        # who forced this deploy (failsafe_force), why, and which refusals the force overrode
        new['forced'] = dict(forced)
    if layers is not None:
        # the undo log of the transaction engine: only the layers listed (and those recorded later) are undone
        new['layers'] = list(layers)
    result['changed'] = True
    result['diff'] = _diff(lock, lock, journal, new)
    if check_mode:
        return _planned(ds, result, new, lock)
    ds.write_journal(new)
    _crash_point('journal.opened')
    result.update(failsafe_transaction=ds.transaction(new), journal=new, lock=lock)
    return result


def _owned(ds, journal, run_id, force, action):
    if journal.get('run_id') != run_id and not force:
        raise JournalError(
            "the transaction %s in the journal for '%s' belongs to run %s, not %s: refusing to %s it (force=true "
            "overrides)" % (journal.get('txid'), ds.name, journal.get('run_id'), run_id, action),
            open_transaction=journal if journal.get('status') == 'open' else None, journal=journal)


def ensure_step(ds, run_id, step, status='ok', snapshots=None, data=None, force=False, check_mode=False,
                release=None):
    t = time.time()
    journal = ds.read_journal()
    lock = ds.read_lock()
    record = {'step': step, 'status': status, 'time': t, 'iso': iso(t), 'data': dict(data or {})}
    result = {'changed': True, 'step': record}
    if not journal or journal.get('status') != 'open':
        if check_mode:
            # The transaction this step belongs to would have been opened by an earlier (check mode) task.
            planned = _would_open(run_id, release, 'open', steps=[record], snapshots=dict(snapshots or {}))
            result['diff'] = _diff(lock, lock, journal, planned)
            return _planned(ds, result, planned, lock)
        raise JournalError("no open transaction for '%s' to record step %r in (journal status: %s)"
                           % (ds.name, step, journal.get('status') if journal else 'none'), journal=journal)
    _owned(ds, journal, run_id, force, 'record a step in')
    # A step recorded again with the same status, data and snapshots (a step run twice, a retry) is already in
    # the journal: the latest record of that step stands and nothing is written.
    latest = None
    for old in journal.get('steps') or []:
        if old.get('step') == step:
            latest = old
    known = journal.get('snapshots') or {}
    recorded = all(known.get(k) == v for k, v in (snapshots or {}).items())
    if recorded and latest is not None and latest.get('status') == status and latest.get('data', {}) == record['data']:
        result.update(changed=False, step=latest, diff=_diff(lock, lock, journal, journal),
                      failsafe_transaction=ds.transaction(journal), journal=journal, lock=lock)
        return result
    new = copy.deepcopy(journal)
    new.setdefault('steps', []).append(record)
    new.setdefault('snapshots', {}).update(snapshots or {})
    result['diff'] = _diff(lock, lock, journal, new)
    if check_mode:
        return _planned(ds, result, new, lock)
    ds.write_journal(new)
    result.update(failsafe_transaction=ds.transaction(new), journal=new, lock=lock)
    return result


def ensure_closed(ds, status, run_id, data=None, force=False, check_mode=False, release=None):
    """Close the transaction as committed, rolled_back or rollback_failed.

    committed closes an open transaction. rolled_back and rollback_failed also close a transaction again after a
    commit or a failed rollback (a rollback that comes later, or a retry). The same status again changes nothing.
    The closed transaction goes to history.jsonl, and the lock is released if this run or the transaction's run
    holds it.
    """
    if status not in CLOSED:
        raise JournalError('cannot close a transaction as %r' % (status,))
    t = time.time()
    journal = ds.read_journal()
    lock = ds.read_lock()
    result = {'changed': False}
    if not journal or (journal.get('run_id') != run_id and journal.get('status') != 'open'):
        if check_mode:
            planned = _would_open(run_id, release, status)
            result['changed'] = True
            result['diff'] = _diff(lock, lock, journal, planned)
            return _planned(ds, result, planned, lock)
        raise JournalError("no transaction of run %s to close as %s for '%s' (journal: %s)"
                           % (run_id, status, ds.name,
                              '%s of run %s, %s' % (journal.get('txid'), journal.get('run_id'), journal.get('status'))
                              if journal else 'none'), journal=journal)
    _owned(ds, journal, run_id, force, 'close')
    current = journal.get('status')
    release_lock = lock is not None and lock.get('run_id') in (run_id, journal.get('run_id'))
    if current == status:
        new = journal
    else:
        if status == 'committed' and current != 'open':
            raise JournalError("transaction %s is already closed as %s: it cannot be committed"
                               % (journal.get('txid'), current), journal=journal)
        new = copy.deepcopy(journal)
        new['status'] = status
        new['closed'] = t
        new['closed_iso'] = iso(t)
        if data:
            new['outcome'] = dict(data)
        new.setdefault('status_history', []).append({'status': status, 'time': t, 'iso': iso(t)})
        result['changed'] = True
    lock_after = None if release_lock else lock
    result['changed'] = result['changed'] or release_lock
    result['diff'] = _diff(lock, lock_after, journal, new)
    if check_mode:
        if new is journal:
            result.update(failsafe_transaction=ds.transaction(new), journal=new, lock=lock_after)
            return result
        return _planned(ds, result, new, lock_after)
    if new is not journal:
        ds.append_history(new)
        _crash_point('journal.history-appended')
        ds.write_journal(new)
        _crash_point('journal.closed')
    if release_lock:
        ds.remove_lock()
    result.update(failsafe_transaction=ds.transaction(new), journal=new, lock=lock_after,
                  lock_released=release_lock)
    return result


def ensure_query(ds):
    journal = ds.read_journal()
    lock = ds.read_lock()
    return {
        'changed': False,
        'journal': journal,
        'lock': lock,
        'lock_expired': lock_expired(lock),
        'open': bool(journal and journal.get('status') == 'open'),
        'history_tail': ds.history_tail(HISTORY_TAIL),
    }
