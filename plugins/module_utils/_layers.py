# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Layers: the kinds of state a transaction changes on a host, each behind one small interface.

A transaction is an ordered undo log of layers kept in the host's journal (``journal['layers']``). Each layer
kind implements:

- ``capture(params)``: before the change, record what its undo needs (a dict stored in the journal);
- ``apply(params, record)``: make the change (may be done in several calls: applying twice is harmless);
- ``undo(record)``: put back what ``capture`` recorded; idempotent, so a rollback cut short and run again finishes
  the job;
- ``verify(record)``: prove the undo took; returns a list of problems (empty: proven).

Kinds here: ``files`` (files and configuration, through the snapshot store), ``release`` (the ``current`` pointer
and the ledger) and ``service`` (supervisor or systemd). A rollback undoes them in a fixed order: the snapshot restore
(files, configuration and the ``current`` link as they were), then the release pointer (back to the last verified
release), and a layer whose ``restarts`` is true (the service) last: a restart reads what the other layers restored.
Layers that live on other hosts (a load balancer, a database server, a flag service) are undone by their own plays.

More kinds plug in through ``register``: a class with ``kind``, ``stage`` (one of ``STAGES``, declared: a kind
without one, or with a stage the rollback does not run, is refused) and the four methods, built as
``cls(options, run)`` from the ``layer`` option of the transaction module's ``apply`` phase. Across a fleet, and on
one host, layers are undone stage by stage in the order of ``STAGES`` (flags, then traffic, then code and
configuration, then the database), and within a stage in the reverse order of their application. A registered kind
of the code stage is undone after the snapshot restore and the release pointer, before the service restarts.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import subprocess

from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._release import (
    ReleaseRoot, ensure_active, ensure_rolled_back,
)
from ansible_collections.failsafe.deploy.plugins.module_utils._snapshot import SnapshotStore, describe_drift


class LayerError(FailsafeError):
    """A layer could not apply, undo or verify; ``details`` go into the module's failure result."""


# The order in which a rollback undoes layers, across the fleet and on each host: the kill switch first, traffic
# back next, then code and configuration (files, release pointer, service), the database last.
STAGES = ('flags', 'traffic', 'code', 'database')

# kind -> class of the layers applied through the ``apply`` phase (filled by ``register``)
KINDS = {}

# The kinds the engine undoes itself in the code stage (files, release pointer, service); every other kind a journal
# holds is undone through ``KINDS``, or the rollback fails naming it.
BUILT_IN_KINDS = ('files', 'release', 'service')


def register(cls):
    """Class decorator: make a layer kind available to the ``apply`` phase and to the rollback. A kind declares its
    rollback stage; one that declares none, or a stage the rollback does not run (``STAGES``), is refused: the
    rollback would never undo it."""
    if not cls.kind or cls.kind in BUILT_IN_KINDS:
        raise ValueError('layer kind %r: a registered kind needs a name of its own (not empty, not one of %s)'
                         % (cls.kind, ', '.join(BUILT_IN_KINDS)))
    if cls.stage is None:
        raise ValueError('layer kind %s declares no rollback stage: set its stage to one of %s'
                         % (cls.kind, ', '.join(STAGES)))
    if cls.stage not in STAGES:
        raise ValueError('layer kind %s: stage %r is not one the rollback runs (%s)'
                         % (cls.kind, cls.stage, ', '.join(STAGES)))
    KINDS[cls.kind] = cls
    return cls


class Layer(object):
    """The interface every layer kind implements.

    Registered kinds are built as ``cls(options, run)``: ``options`` is the ``layer`` dict of the ``apply`` phase
    (its ``kind`` and ``id`` keys included), ``run`` a callable(argv) -> (rc, out, err). ``describe(options)`` says
    in words what ``apply`` would change (check mode); ``apply`` returns a dict with at least ``changed``.
    """

    kind = None
    # the rollback stage (one of STAGES): every kind declares its own
    stage = None
    restarts = False
    # options never written to the journal (passwords, tokens); the rollback gets them again in ``layer_secrets``
    secret_options = ()

    def describe(self, options):
        return 'apply the %s layer' % self.kind

    def plan(self, options):
        """Check mode: what ``apply`` would change, without changing it (``changed``, ``msg``, optional ``diff``)."""
        return {'changed': True, 'msg': 'check mode: would %s' % self.describe(options)}

    def capture(self, params):  # pragma: no cover - interface
        raise NotImplementedError

    def apply(self, params, record):  # pragma: no cover - interface
        raise NotImplementedError

    def undo(self, record):  # pragma: no cover - interface
        raise NotImplementedError

    def verify(self, record):  # pragma: no cover - interface
        raise NotImplementedError


class FilesLayer(Layer):
    """Files and configuration: a snapshot of the paths the deploy may change. Applying is whatever writes those
    paths (the release pointer, configuration files); undo restores the snapshot, verify reads every path back."""

    kind = 'files'
    stage = 'code'

    def __init__(self, store_dir):
        self.store = SnapshotStore(store_dir)

    def capture(self, params):
        res = self.store.capture(params['paths'], exclude=params.get('exclude') or [], labels=params.get('labels'))
        return {'snapshot': res['id'], 'entries': res['entries'], 'reused': not res['changed']}

    def apply(self, params, record):
        return {'changed': False}

    def undo(self, record):
        res = self.store.restore(record['snapshot'], verify=True)
        return {'changed': res['changed'], 'restored': res['restored']}

    def verify(self, record):
        res = self.store.verify(record['snapshot'])
        return [describe_drift(res['drift'])] if res['drift'] else []


class ReleaseLayer(Layer):
    """The ``current`` pointer. Undo switches back to the last verified release other than the failed one, and
    quarantines the failed release only when the engine says it was shown bad on this host after its activation."""

    kind = 'release'
    stage = 'code'

    def __init__(self, app_root):
        self.root = ReleaseRoot(app_root)

    def capture(self, params):
        return {'release': params['release'], 'previous': self.root.read_current()}

    def apply(self, params, record):
        return ensure_active(self.root, params['release'], force=params.get('force', False))

    def undo(self, record, reason=None, quarantine=True, event='rolled back'):
        res = ensure_rolled_back(self.root, record.get('release'), reason=reason, quarantine=quarantine, event=event)
        return {'changed': res['changed'], 'target': res['current'], 'quarantined': res.get('quarantined', False)}

    def verify(self, record):
        target = record.get('target')
        current = self.root.read_current()
        if current != target:
            return ['current is %s, not the rollback target %s' % (current, target)]
        return []


def _tail(text, lines=8):
    return ' | '.join(text.strip().splitlines()[-lines:]) if text and text.strip() else ''


class ServiceLayer(Layer):
    """The process that serves the release, under supervisor or systemd (or ``none``: not managed).

    ``settings``: manager, name, supervisorctl, supervisord, conf, start (start supervisord when it is not
    running), log (the program's log file, named in messages). ``run`` is a callable(argv) -> (rc, out, err).
    """

    kind = 'service'
    stage = 'code'
    restarts = True
    NOT_SERVING = ('RUNNING', 'STARTING', 'BACKOFF')

    def __init__(self, settings, run=None):
        self.s = dict(settings or {})
        self.s.setdefault('manager', 'supervisor')
        self.run = run or _run

    # -- supervisor
    def _ctl(self, *args):
        return self.run([self.s.get('supervisorctl') or 'supervisorctl', '-c', self.s['conf']] + list(args))

    def _status_words(self):
        rc, out, err = self._ctl('status', self.s['name'])
        return out.split()

    def running(self):
        manager = self.s['manager']
        if manager == 'supervisor':
            return 'RUNNING' in self._status_words()
        if manager == 'systemd':
            rc, out, err = self.run(['systemctl', 'is-active', self.s['name']])
            return out.strip() == 'active'
        return True

    def _ensure_supervisord(self):
        rc, out, err = self._ctl('pid')
        if out.strip().isdigit():
            return False
        if not self.s.get('start'):
            return False
        rc, out, err = self.run([self.s.get('supervisord') or 'supervisord', '-c', self.s['conf']])
        if rc != 0:
            raise LayerError('supervisord did not start (rc %s): %s' % (rc, (out + ' ' + err).strip()))
        return True

    def capture(self, params):
        return {'was_running': self.running()}

    def apply(self, params, record, restart=True):
        """Start or restart the service. ``restart`` false: only start it if it is not running."""
        manager = self.s['manager']
        if manager == 'none':
            return {'changed': False}
        if manager == 'systemd':
            self.run(['systemctl', 'daemon-reload'])
            if not restart and self.running():
                return {'changed': False}
            rc, out, err = self.run(['systemctl', 'restart' if restart else 'start', self.s['name']])
            if rc != 0:
                raise LayerError('%s did not start under systemd (rc %s): %s. See journalctl -u %s.'
                                 % (self.s['name'], rc, (out + ' ' + err).strip(), self.s['name']))
            return {'changed': True}
        started = self._ensure_supervisord()
        rc, out, err = self._ctl('update')
        changed = started or bool(out.strip())
        if not restart and 'RUNNING' in self._status_words():
            return {'changed': changed}
        rc, out, err = self._ctl('restart', self.s['name'])
        if rc != 0 or ('%s: started' % self.s['name']) not in out:
            dummy, log, dummy2 = self._ctl('tail', '-1500', self.s['name'])
            where = ('Its log is %s.' % self.s['log']) if self.s.get('log') else "See the program's log in supervisor."
            tail = _tail(log)
            raise LayerError('%s did not start under supervisor (%s). %s%s'
                             % (self.s['name'], (out + ' ' + err).strip(), where,
                                (' It ends with: ' + tail) if tail else ''), log=self.s.get('log'))
        return {'changed': True}

    def undo(self, record, serving=True):
        """Restart on the restored release; with ``serving`` false (nothing to go back to) stop and unload it."""
        if serving:
            return self.apply({}, record, restart=True)
        manager = self.s['manager']
        if manager == 'supervisor':
            rc, out, err = self._ctl('update')
            return {'changed': bool(out.strip()), 'unloaded': True}
        if manager == 'systemd':
            rc, out, err = self.run(['systemctl', 'stop', self.s['name']])
            return {'changed': True, 'unloaded': True}
        return {'changed': False}

    def verify(self, record, serving=True):
        manager = self.s['manager']
        if manager == 'none':
            return []
        if serving:
            return [] if self.running() else ['%s is not running after the restart' % self.s['name']]
        if manager == 'supervisor':
            words = self._status_words()
            if any(w in words for w in self.NOT_SERVING):
                return ['supervisor still runs %s (%s), which has no release to serve'
                        % (self.s['name'], ' '.join(words))]
            return []
        return ['%s still runs, which has no release to serve' % self.s['name']] if self.running() else []


def _run(argv):
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, LC_ALL='C'))
        out, err = proc.communicate()
    except OSError as e:
        return 127, '', '%s: %s' % (argv[0], e.strerror)
    return proc.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')
